// Redis's work per published event with 0 to 3 nodes watching the sandbox, with a pattern held,
// without the workspace keys, and for ephemeral events (docs/scaling.md, "Figures"). Run by hand:
//
//   npm run build && node bench/scale/redis-cost.js [--events 2000] [--cluster]
//
// Starts a private redis-server on a free port (no persistence), or with --cluster a private
// Redis Cluster of 3 masters with a replica each, and, per case, N engines in this process (the
// compiled dist/), each watching the sandbox as a node with a subscriber would. One engine
// appends the events one after another. Reported from Redis's own counters (INFO commandstats,
// INFO stats, CLUSTER INFO), summed over the masters, as deltas over the run, per event:
// commands Redis executed (the script and the commands it ran), bytes Redis wrote to its clients
// (total_net_output_bytes less replication: the script's reply plus every pushed message), Redis's
// CPU time in the script (INFO commandstats usec of EVALSHA, the commands it runs included; varies
// with the machine's load), and in Cluster the bytes sent to replicas and the PUBLISH messages sent
// over the cluster bus; then Redis memory per retained event (MEMORY USAGE of the sandbox's
// stream and of the workspace's order stream, over their entries). Last, the upkeep of the pattern
// registry (src/store/redis/pattern-interest.ts) of one node holding no pattern, over 5 s: what
// each node pays to publish on workspace channels only while some node holds a pattern.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cli, startCluster } from '../lib/cluster.js';
import { freePort } from '../lib/servers.js';
import { eventData } from '../lib/event-data.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { RedisEngine } = await import(pathToFileURL(path.join(root, 'dist/store/redis/redis-engine.js')).href);
const { PatternInterest } = await import(pathToFileURL(path.join(root, 'dist/store/redis/pattern-interest.js')).href);
const { Cluster, Redis } = await import('ioredis');
const argv = process.argv.slice(2);
const at = argv.indexOf('--events');
const events = at >= 0 ? Number(argv[at + 1]) : 2000;
const clustered = argv.includes('--cluster');

/** One redis-server, or a cluster: its URL, its masters' ports, and a stop. */
async function startServers() {
  if (clustered) {
    const cluster = await startCluster(3);
    return {
      url: cluster.url,
      masters: () => cluster.masters().map((n) => n.port),
      all: cluster.nodes.map((n) => n.port),
      stop: cluster.stop,
    };
  }
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'se-cost-'));
  const redis = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  for (let i = 0; i < 100 && cli(port, 'PING') !== 'PONG'; i++) await new Promise((r) => setTimeout(r, 50));
  return {
    url: `redis://127.0.0.1:${port}`,
    masters: () => [port],
    all: [port],
    stop: () => {
      redis.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const servers = await startServers();

function counters() {
  let out = 0;
  let repl = 0;
  let busPublish = 0;
  // Redis's CPU time in the append script (the commands it runs included), in microseconds.
  let scriptUsec = 0;
  const byCommand = {};
  // Redis's CPU time per command (usec of INFO commandstats, a script's own calls included).
  const usecByCommand = {};
  for (const port of servers.masters()) {
    const stats = cli(port, 'INFO', 'stats');
    const commandstats = cli(port, 'INFO', 'commandstats');
    for (const match of commandstats.matchAll(/cmdstat_([a-z|]+):calls=(\d+),usec=(\d+)/g)) {
      byCommand[match[1]] = (byCommand[match[1]] ?? 0) + Number(match[2]);
      usecByCommand[match[1]] = (usecByCommand[match[1]] ?? 0) + Number(match[3]);
    }
    scriptUsec += Number(/cmdstat_evalsha:calls=\d+,usec=(\d+)/.exec(commandstats)?.[1] ?? 0);
    out += Number(/total_net_output_bytes:(\d+)/.exec(stats)[1]);
    repl += Number(/total_net_repl_output_bytes:(\d+)/.exec(stats)?.[1] ?? '0');
  }
  if (clustered) {
    for (const port of servers.all) {
      busPublish += Number(/cluster_stats_messages_publish_sent:(\d+)/.exec(cli(port, 'CLUSTER', 'INFO'))?.[1] ?? '0');
    }
  }
  return { out, repl, busPublish, scriptUsec, byCommand, usecByCommand };
}

/** Redis memory per retained event in `key` (on the master that holds it); '-' for no entries. */
function bytesPerEntry(key) {
  for (const port of servers.masters()) {
    // A master that does not hold the key's slot answers MOVED, not a number.
    const entries = Number(cli(port, 'XLEN', key));
    if (!Number.isInteger(entries)) continue;
    return entries > 0 ? Math.round(Number(cli(port, 'MEMORY', 'USAGE', key, 'SAMPLES', '0')) / entries) : '-';
  }
  return '-';
}

/** Commands of the engines' own upkeep (connects, slot map, pattern registry), not of an append. */
const UPKEEP = new Set([
  'info',
  'ping',
  'ssubscribe',
  'subscribe',
  'psubscribe',
  'flushall',
  'client|setname',
  'cluster|slots',
  'cluster|info',
  'zadd',
  'zremrangebyscore',
  'zrangebyscore',
  'readonly',
  'script|load',
  'command',
  'multi',
  'exec',
  'get',
  'incr',
  'zrange',
]);

const version = /redis_version:(\S+)/.exec(cli(servers.masters()[0], 'INFO', 'server'))?.[1] ?? '?';
const retention = { maxCount: 1000, maxAgeMs: 24 * 3600 * 1000 };
const ref = { workspaceId: 1, sandboxId: 'cost-1' };
// Cases: 0 to 3 nodes watching with the default engine (on one Redis: with the workspace keys,
// sandbox index and workspace order); 3 watching with a pattern held in the workspace at one of
// them; on one Redis the same as the first without the workspace keys (`workspaceKeys: false`:
// what a cluster always runs, so not a case there); and ephemeral events (`--ephemeral-types`),
// which are not stored. An engine that does not know an option (an earlier build) ignores it,
// so the same script measures before and after.
const cases = [
  ...[0, 1, 2, 3].map((watching) => ({ name: `${watching} watching`, watching, options: {} })),
  { name: '3 watching + pattern', watching: 3, options: {}, pattern: true },
  ...(clustered
    ? []
    : [
        { name: '0 watching, no workspace keys', watching: 0, options: { workspaceKeys: false } },
        // What the pattern registry would save on one Redis while no node holds a pattern.
        { name: '0 watching, no workspace channel', watching: 0, options: { workspaceChannels: false } },
      ]),
  { name: '0 watching, ephemeral', watching: 0, options: {}, ephemeral: true },
];
/** Redis's CPU time per call of `command` between two `counters()`, in microseconds. */
function usecPerCall(before, after, command) {
  const calls = (after.byCommand[command] ?? 0) - (before.byCommand[command] ?? 0);
  if (calls === 0) return '-';
  return (((after.usecByCommand[command] ?? 0) - (before.usecByCommand[command] ?? 0)) / calls).toFixed(2);
}

/** The pattern registry's upkeep at one node holding no pattern: commands and Redis CPU per second. */
async function registryUpkeep(seconds) {
  const client = clustered
    ? new Cluster(servers.all.map((port) => ({ host: '127.0.0.1', port })))
    : new Redis(servers.url);
  await new Promise((resolve) => client.once('ready', resolve));
  const before = counters();
  const interest = new PatternInterest(
    client,
    'bench-node',
    async () => {},
    () => {},
    () => {},
  );
  await new Promise((r) => setTimeout(r, seconds * 1000));
  interest.close();
  const after = counters();
  client.disconnect();
  let calls = 0;
  let usec = 0;
  for (const [name, n] of Object.entries(after.byCommand)) {
    if (name === 'info' || name === 'cluster|info') continue; // this script's own reads of the counters
    calls += n - (before.byCommand[name] ?? 0);
    usec += (after.usecByCommand[name] ?? 0) - (before.usecByCommand[name] ?? 0);
  }
  return { commandsPerSecond: (calls / seconds).toFixed(1), redisUsPerSecond: (usec / seconds).toFixed(0) };
}

const rows = [];
let upkeep;
try {
  for (const { name, watching, options, pattern, ephemeral } of cases) {
    for (const port of servers.masters()) cli(port, 'FLUSHALL');
    const retentionOf = ephemeral ? { ...retention, ephemeralTypes: ['bench.*'] } : retention;
    const open = () => new RedisEngine({ url: servers.url, retention: retentionOf, ...options });
    const publisher = open();
    const watchers = Array.from({ length: watching }, open);
    for (const watcher of watchers) watcher.setInterest(ref, true);
    for (const engine of [publisher, ...watchers]) await engine.waitReady(30_000);
    if (pattern) {
      watchers[0].setPatternInterest(1, true);
      // In Cluster every node reads the pattern registry once a second: let the publisher learn of it.
      await new Promise((r) => setTimeout(r, 3_000));
    }
    // Warm up past the retention count, so trimming runs on every append as at steady state.
    for (let i = 0; i < retention.maxCount + 10; i++)
      await publisher.append({ ...ref, type: 't', ...eventData(Buffer.from('{}')) });
    const received = watchers.map((watcher) => watcher.stats.received);
    const before = counters();
    const data = Buffer.from(JSON.stringify({ payload: 'x'.repeat(100) }));
    for (let i = 0; i < events; i++) await publisher.append({ ...ref, type: 'bench.event', ...eventData(data) });
    for (const [i, watcher] of watchers.entries()) {
      while (watcher.stats.received < received[i] + events) await new Promise((r) => setTimeout(r, 10));
    }
    const after = counters();
    const perEvent = Object.entries(after.byCommand)
      .filter(([name]) => !UPKEEP.has(name))
      .map(([name, calls]) => [name, (calls - (before.byCommand[name] ?? 0)) / events])
      .filter(([, n]) => n > 0.05);
    const row = {
      case: name,
      commands: perEvent.reduce((sum, [, n]) => sum + n, 0).toFixed(1),
      byCommand: perEvent.map(([command, n]) => `${command} ${n.toFixed(1)}`).join(', '),
      // Redis 7 counts replication in total_net_output_bytes too: clients' share apart.
      bytesToClients: Math.round((after.out - after.repl - (before.out - before.repl)) / events),
      scriptUs: ((after.scriptUsec - before.scriptUsec) / events).toFixed(1),
      // Redis's CPU time per workspace-channel PUBLISH (the script's), '-' where none ran.
      publishUs: usecPerCall(before, after, 'publish'),
    };
    if (clustered) {
      row.bytesToReplicas = Math.round((after.repl - before.repl) / events);
      row.busPublishes = ((after.busPublish - before.busPublish) / events).toFixed(1);
    }
    // Redis memory per retained event: the sandbox's stream, and the workspace's order stream
    // (ephemeral events are not retained: what is there is the warm-up's).
    row.streamBytesPerEvent = ephemeral ? '-' : bytesPerEntry('se:{1:cost-1}:events');
    if (!clustered) row.orderBytesPerEvent = ephemeral ? '-' : bytesPerEntry('se:ws:1:order');
    rows.push(row);
    await Promise.all([publisher, ...watchers].map((engine) => engine.close()));
  }
  upkeep = await registryUpkeep(5);
} finally {
  servers.stop();
}
console.log(
  `${events} events of 100 B data, ${clustered ? 'a Redis Cluster of 3 masters with a replica each' : 'one Redis'} ${version}`,
);
console.table(rows);
console.log(
  `pattern registry upkeep, one node holding no pattern: ${upkeep.commandsPerSecond} commands/s, ${upkeep.redisUsPerSecond} us/s of Redis CPU (commandstats)`,
);
process.exit(0);
