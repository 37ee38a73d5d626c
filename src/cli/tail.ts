import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type { Command } from 'commander';
import { createPubSubClient, type GapInfo, type PubSubClient } from '../client/index.js';
import { SandboxEventsError } from '../errors.js';
import type { SandboxEvent } from '../event/event.js';
import { integerArgument, option } from './options.js';

/**
 * `sandbox-events tail <sandboxId|pattern>`: prints events as they arrive, through the package's
 * own client, so it reconnects (with backoff) and resumes exactly across broker restarts.
 * Events go to stdout (one JSON line each with --json, a readable line otherwise, coloured on
 * a terminal); connection notices and gaps go to stderr.
 */

/**
 * What the client-side commands (`tail`, `publish`) read and write, so tests can run them in
 * process. The defaults are the process's own streams and environment.
 */
export interface ClientCliIo {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable;
  env: NodeJS.ProcessEnv;
  /** Ends `tail` (default: SIGINT or SIGTERM). */
  signal?: AbortSignal;
}

export function processIo(): ClientCliIo {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/** The flags both client commands take. */
export interface ConnectionOptions {
  token?: string;
  host: string;
  port: number;
}

export function addConnectionOptions(command: Command): Command {
  return command
    .addOption(option('--token <token>', 'JWT to authenticate with (default: SANDBOX_EVENTS_TOKEN)'))
    .addOption(option('--host <host>', 'broker host').default('127.0.0.1'))
    .addOption(option('--port <port>', 'broker port').default(6380).argParser(integerArgument(1, 65535)));
}

export function requireToken(token: string | undefined): string {
  if (token === undefined || token.trim() === '') {
    throw new SandboxEventsError('INVALID_ARGUMENT', 'no token: pass --token or set SANDBOX_EVENTS_TOKEN');
  }
  return token.trim();
}

interface TailOptions extends ConnectionOptions {
  from?: string;
  json?: boolean;
  /** Type globs, filtered by the broker (repeatable, or comma-separated). */
  type?: string[];
}

/** A glob character makes the target a pattern (PSUBSCRIBE) instead of a sandbox id. */
export function isPattern(target: string): boolean {
  return /[*?[]/.test(target);
}

const ANSI = {
  dim: (text: string) => `\x1b[2m${text}\x1b[22m`,
  bold: (text: string) => `\x1b[1m${text}\x1b[22m`,
  cyan: (text: string) => `\x1b[36m${text}\x1b[39m`,
  yellow: (text: string) => `\x1b[33m${text}\x1b[39m`,
};
const PLAIN = { dim: String, bold: String, cyan: String, yellow: String };

/** `12:34:56.789  sb-1  execution.completed  {"exitCode":0}  1732361234567-0` */
export function formatEvent(event: SandboxEvent, color: boolean): string {
  const paint = color ? ANSI : PLAIN;
  const time = new Date(event.timestamp).toISOString().slice(11, 23);
  const data = JSON.stringify(event.data);
  return `${paint.dim(time)}  ${paint.cyan(event.sandboxId)}  ${paint.bold(paint.yellow(event.type))}  ${data}  ${paint.dim(event.id)}\n`;
}

function describeGap(gap: GapInfo): string {
  if (gap.reason === 'pattern') {
    return `gap: pattern ${gap.pattern} was subscribed again after a reconnect; events published meanwhile were not replayed (the broker keeps no order to resume it from)`;
  }
  if (gap.pattern !== undefined) {
    const what =
      gap.reason === 'trimmed'
        ? `events after ${gap.requestedId} were pruned before they could be replayed; what is retained follows`
        : `the broker never issued ${gap.requestedId} (a new or reset store); starting from its newest`;
    return `gap on pattern ${gap.pattern}: ${what} (newest cursor ${gap.lastId ?? 'none'})`;
  }
  const known = `earliest retained ${gap.earliestId ?? 'none'}, newest ${gap.lastId ?? 'none'}`;
  const what =
    gap.reason === 'trimmed'
      ? `events after ${gap.requestedId} were pruned before they could be replayed`
      : gap.reason === 'future'
        ? `the broker has no events up to ${gap.requestedId} (a new or reset store); starting from its newest`
        : `the broker never issued ${gap.requestedId}`;
  return `gap on ${gap.channel}: ${what} (${known})`;
}

export function useColor(io: ClientCliIo): boolean {
  if (io.env.NO_COLOR !== undefined && io.env.NO_COLOR !== '') return false;
  if (io.env.FORCE_COLOR !== undefined && io.env.FORCE_COLOR !== '0') return true;
  return io.stdout.isTTY === true;
}

/**
 * What ends `tail`: SIGINT/SIGTERM (or the caller's own signal instead), and stdout going away
 * (`tail ... | head` closes the pipe: EPIPE ends the command quietly).
 */
function stopSignal(io: ClientCliIo): { signal: AbortSignal; release: () => void } {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  io.stdout.on('error', stop);
  const signals: NodeJS.Signals[] = io.signal === undefined ? ['SIGINT', 'SIGTERM'] : [];
  for (const name of signals) process.once(name, stop);
  return {
    signal: io.signal === undefined ? controller.signal : AbortSignal.any([io.signal, controller.signal]),
    release: () => {
      io.stdout.off('error', stop);
      for (const name of signals) process.off(name, stop);
    },
  };
}

export async function runTail(target: string, options: TailOptions, io: ClientCliIo): Promise<void> {
  const token = requireToken(options.token);
  const pattern = isPattern(target);
  const types = (options.type ?? []).flatMap((value) => value.split(',')).filter((glob) => glob !== '');
  const client: PubSubClient = createPubSubClient({
    host: options.host,
    port: options.port,
    accessToken: token,
    ...(pattern ? {} : { sandboxId: target, from: options.from, types }),
    maxReconnectDelay: 5_000,
    clientName: 'sandbox-events-tail',
  });
  const note = (text: string): void => void io.stderr.write(`sandbox-events tail: ${text}\n`);
  client.on('disconnect', (cause) => note(`connection lost (${cause.message}); reconnecting`));
  client.on('reconnecting', ({ attempt, delay, cause }) => {
    if (attempt > 1) note(`attempt ${attempt} failed (${cause.message}); next in ${delay} ms`);
  });
  let connects = 0;
  client.on('connect', () => {
    connects += 1;
    if (connects > 1) note('reconnected');
  });
  client.on('gap', (gap) => note(describeGap(gap)));
  client.on('error', () => {}); // told through the notes above, or thrown by the loop below

  const { signal, release } = stopSignal(io);
  const color = options.json !== true && useColor(io);
  // Created before connect(): replayed events can arrive in the very chunk that confirms the subscription.
  const events = client.events({ signal, highWaterMark: 1_000 });
  // Stopping while the client is still connecting (or waiting to reconnect) ends it at once.
  const onStop = (): void => void client.disconnect();
  signal.addEventListener('abort', onStop, { once: true });
  try {
    if (pattern) await client.psubscribe(target, { from: options.from, types });
    try {
      await client.connect();
    } catch (error) {
      if (signal.aborted) return;
      throw error;
    }
    note(`following ${pattern ? `pattern ${target}` : target} on ${options.host}:${options.port}`);
    for await (const event of events) {
      const line = options.json === true ? `${JSON.stringify(event)}\n` : formatEvent(event, color);
      // A slow reader (a pipe into `less`) holds the loop, which holds the socket: nothing piles up.
      if (!io.stdout.write(line)) await once(io.stdout, 'drain', { signal }).catch(() => {});
    }
  } finally {
    signal.removeEventListener('abort', onStop);
    release();
    const last = pattern ? client.lastCursor(target) : client.lastEventId(target);
    await client.disconnect();
    if (last !== undefined && signal.aborted) note(`stopped after ${last} (continue with --from ${last})`);
  }
}

export function registerTail(program: Command, io: ClientCliIo = processIo()): void {
  addConnectionOptions(
    program
      .command('tail')
      .description(
        'Print the events of a sandbox (or of a pattern over sandbox ids) as they arrive; survives broker restarts',
      )
      .argument('<target>', 'a sandbox id, or a glob pattern such as "sb-*" (workspace and admin tokens)'),
  )
    .option(
      '--from <id>',
      "where to start: '$' (new events, default); for a sandbox '0' (every retained event) or an event id, for a pattern a cursor w<n>",
    )
    .option('--json', 'one JSON line per event')
    .option(
      '--type <glob>',
      "only events whose type matches (globs as PSUBSCRIBE; repeat or comma-separate for several, e.g. 'execution.*')",
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .action((target: string, options: TailOptions) => runTail(target, options, io));
}
