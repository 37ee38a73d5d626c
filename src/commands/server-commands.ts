import os from 'node:os';
import { COMPATIBLE_REDIS_VERSION } from '../config.js';
import type { RespClient } from './client.js';
import {
  array,
  bulk,
  bulkArray,
  EMPTY_ARRAY,
  integer,
  map,
  nullArray,
  simpleString,
  verbatimText,
} from '../protocol/encode.js';
import { PACKAGE_VERSION } from '../version.js';
import { type CommandSpec, table } from './command.js';

/** Set by the dispatcher once the full table exists (COMMAND describes every command). */
let commandTable: ReadonlyMap<string, CommandSpec> = new Map();

export function registerCommandTable(commands: ReadonlyMap<string, CommandSpec>): void {
  commandTable = commands;
}

type InfoSection = [title: string, fields: [string, string | number][]];

/**
 * INFO's sections. An admin sees the whole broker; any other token sees its own workspace
 * (docs/protocol.md, "INFO"): the clients connected with a token of its workspace, the events
 * published to it through this node and the deliveries they made, the channels and patterns it
 * may see. The figures that belong to no workspace (the process's memory, connections and
 * commands before AUTH, refused connections, protocol and auth failures, slow consumers) are
 * left out for it, so one tenant never reads another's traffic.
 */
function infoSections(connection: RespClient): InfoSection[] {
  const context = connection.context;
  const { stats, broker, publisher, limits, outputBudget } = context;
  const principal = connection.principal!;
  const admin = principal.role === 'admin';
  const authFailures = Object.values(stats.authFailures).reduce((sum, n) => sum + n, 0);
  let connectedClients = context.connections.size;
  if (!admin) {
    connectedClients = 0;
    for (const client of context.connections) {
      if (client.principal?.workspaceId === principal.workspaceId) connectedClients++;
    }
  }
  const workspace = publisher.byWorkspace.get(principal.workspaceId);
  const brokerWide: [string, number][] = admin
    ? [
        ['total_connections_received', stats.connectionsReceived],
        ['total_commands_processed', stats.commandsProcessed],
        ['rejected_connections', stats.rejectedConnections],
      ]
    : [];
  const brokerWideErrors: [string, number][] = admin
    ? [
        ['slow_consumer_disconnects', stats.slowConsumerDisconnects],
        // Redis 7's name for the clients cut off at `maxmemory-clients`.
        ['evicted_clients', outputBudget.cuts],
        ['protocol_errors', stats.protocolErrors],
        ['auth_failures', authFailures],
      ]
    : [];
  return [
    [
      'Server',
      [
        ['redis_version', COMPATIBLE_REDIS_VERSION],
        ['sandbox_events_version', PACKAGE_VERSION],
        ['redis_mode', 'standalone'],
        ['os', `${os.type()} ${os.release()} ${os.arch()}`],
        ['arch_bits', 64],
        ['process_id', process.pid],
        ['tcp_port', context.port()],
        ['uptime_in_seconds', Math.floor((Date.now() - context.startedAt) / 1000)],
        ['node_version', process.versions.node],
      ],
    ],
    [
      'Clients',
      [
        ['connected_clients', connectedClients],
        ['maxclients', limits.maxClients],
        ['client_output_limit_bytes', limits.maxOutputBytes],
        ['client_output_budget_bytes', outputBudget.limit],
        // Every client's unsent output, measured now: a broker-wide figure.
        ...(admin ? ([['client_output_total_bytes', outputBudget.measure()]] as [string, number][]) : []),
      ],
    ],
    ['Memory', admin ? [['used_memory_rss', process.memoryUsage.rss()]] : []],
    [
      // ioredis waits for `loading:0` before it reports ready.
      'Persistence',
      [
        ['loading', 0],
        ['store', context.store.kind],
      ],
    ],
    [
      'Stats',
      [
        ...brokerWide,
        ['events_published', admin ? publisher.published : (workspace?.published ?? 0)],
        ['events_delivered', admin ? broker.stats.delivered : (workspace?.delivered ?? 0)],
        ...brokerWideErrors,
        // Counts of the scopes this token may see, as PUBSUB reports them.
        ['pubsub_channels', broker.visibleChannels(principal).length],
        ['pubsub_patterns', broker.patternCount(principal)],
      ],
    ],
  ];
}

function info(connection: RespClient, args: string[]): void {
  const wanted = new Set(args.slice(1).map((section) => section.toLowerCase()));
  const everything = wanted.size === 0 || wanted.has('all') || wanted.has('everything') || wanted.has('default');
  const text = infoSections(connection)
    .filter(([title]) => everything || wanted.has(title.toLowerCase()))
    .map(([title, fields]) => `# ${title}\r\n${fields.map(([key, value]) => `${key}:${value}\r\n`).join('')}`)
    .join('\r\n');
  connection.reply(verbatimText(connection.protocol, text));
}

function flagsOf(spec: CommandSpec): Buffer {
  const flags: string[] = [];
  if (spec.noAuth) flags.push('no_auth');
  if (spec.whileSubscribed) flags.push('pubsub');
  if (spec.group === 'connection') flags.push('fast');
  return array(flags.map((flag) => simpleString(flag)));
}

/** COMMAND INFO's 10-element entry (Redis 7 layout); these commands have no keys. */
function commandInfoEntry(spec: CommandSpec): Buffer {
  return array([
    bulk(spec.name),
    integer(spec.arity),
    flagsOf(spec),
    integer(0),
    integer(0),
    integer(0),
    array([simpleString(`@${spec.group}`)]),
    EMPTY_ARRAY,
    EMPTY_ARRAY,
    array([...(spec.subcommands?.values() ?? [])].map(commandInfoEntry)),
  ]);
}

/** COMMAND DOCS entry: interactive redis-cli builds its hints and HELP from these. */
function commandDocsEntry(connection: RespClient, spec: CommandSpec): Buffer {
  const entries: [Buffer, Buffer][] = [
    [bulk('summary'), bulk(spec.summary)],
    [bulk('since'), bulk(spec.since)],
    [bulk('group'), bulk(spec.group)],
  ];
  if (spec.subcommands !== undefined) {
    entries.push([
      bulk('subcommands'),
      map(
        connection.protocol,
        [...spec.subcommands.values()].map((sub) => [bulk(sub.name), commandDocsEntry(connection, sub)] as const),
      ),
    ]);
  }
  return map(connection.protocol, entries);
}

function selected(args: string[]): CommandSpec[] {
  if (args.length === 0) return [...commandTable.values()];
  return args.flatMap((name) => {
    const spec = commandTable.get(name.toLowerCase());
    return spec === undefined ? [] : [spec];
  });
}

function command(connection: RespClient): void {
  connection.reply(array(selected([]).map(commandInfoEntry)));
}

function commandCount(connection: RespClient): void {
  connection.reply(integer(commandTable.size));
}

function commandInfo(connection: RespClient, args: string[]): void {
  const names = args.slice(2);
  if (names.length === 0) {
    connection.reply(array(selected([]).map(commandInfoEntry)));
    return;
  }
  // Redis answers a null for each unknown name.
  connection.reply(
    array(
      names.map((name) => {
        const spec = commandTable.get(name.toLowerCase());
        return spec === undefined ? nullArray(connection.protocol) : commandInfoEntry(spec);
      }),
    ),
  );
}

function commandDocs(connection: RespClient, args: string[]): void {
  const specs = selected(args.slice(2));
  connection.reply(
    map(
      connection.protocol,
      specs.map((spec) => [bulk(spec.name), commandDocsEntry(connection, spec)] as const),
    ),
  );
}

function commandList(connection: RespClient): void {
  connection.reply(bulkArray(selected([]).map((spec) => spec.name)));
}

const server = { group: 'server', since: '2.8.13' } as const;

export const serverCommands: CommandSpec[] = [
  { ...server, name: 'info', arity: -1, since: '1.0.0', summary: 'Broker information and counters', run: info },
  {
    ...server,
    name: 'command',
    arity: -1,
    summary: 'Details about the commands the broker answers',
    run: command,
    subcommands: table([
      { ...server, name: 'command|count', arity: 2, summary: 'Number of commands', run: commandCount },
      {
        ...server,
        name: 'command|info',
        arity: -2,
        since: '2.8.13',
        summary: 'Details of the given commands',
        run: commandInfo,
      },
      {
        ...server,
        name: 'command|docs',
        arity: -2,
        since: '7.0.0',
        summary: 'Documentary information of commands',
        run: commandDocs,
      },
      {
        ...server,
        name: 'command|list',
        arity: -2,
        since: '7.0.0',
        summary: 'List of command names',
        run: commandList,
      },
    ]),
  },
];
