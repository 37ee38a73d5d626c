// Redis's work per published event with 0 to 3 nodes watching the sandbox, without the
// workspace keys, and for ephemeral events (docs/scaling.md, "Figures"). Run by hand:
//
//   npm run build && node bench/scale/redis-cost.js [--events 2000]
//
// Starts a private redis-server on a free port (no persistence) and, per case, N engines in
// this process (the compiled dist/), each watching the sandbox as a node with a subscriber
// would. One engine appends the events one after another. Reported from Redis's own counters
// (INFO commandstats, INFO stats) as deltas over the run, per event: commands Redis executed
// (the script and the commands it ran), bytes Redis wrote to its clients
// (total_net_output_bytes: the script's reply plus every pushed message), and Redis's CPU time
// in the script (INFO commandstats usec of EVALSHA; varies with the machine's load); then Redis
// memory per retained event (MEMORY USAGE of the sandbox's stream and of the workspace's order
// stream, over their entries).
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { RedisEngine } = await import(pathToFileURL(path.join(root, 'dist/store/redis/redis-engine.js')).href);
const argv = process.argv.slice(2);
const at = argv.indexOf('--events');
const events = at >= 0 ? Number(argv[at + 1]) : 2000;

async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const port = await freePort();
const dir = mkdtempSync(path.join(os.tmpdir(), 'se-cost-'));
const redis = spawn(
  'redis-server',
  ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'],
  {
    stdio: 'ignore',
  },
);
const cli = (...args) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout;
for (let i = 0; i < 100 && cli('PING').trim() !== 'PONG'; i++) await new Promise((r) => setTimeout(r, 50));

function counters() {
  const stats = cli('INFO', 'stats');
  const commandstats = cli('INFO', 'commandstats');
  let calls = 0;
  const byCommand = {};
  for (const match of commandstats.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) {
    byCommand[match[1]] = Number(match[2]);
    calls += Number(match[2]);
  }
  // Redis's CPU time in the append script (the commands it runs included), in microseconds.
  const scriptUsec = Number(/cmdstat_evalsha:calls=\d+,usec=(\d+)/.exec(commandstats)?.[1] ?? 0);
  return { out: Number(/total_net_output_bytes:(\d+)/.exec(stats)[1]), calls, byCommand, scriptUsec };
}

const version = /redis_version:(\S+)/.exec(cli('INFO', 'server'))?.[1] ?? '?';
const retention = { maxCount: 1000, maxAgeMs: 24 * 3600 * 1000 };
const ref = { workspaceId: 1, sandboxId: 'cost-1' };
const rows = [];
// Cases: 0 to 3 nodes watching, with the default engine (the workspace keys: sandbox index and
// workspace order); the same without them (`workspaceKeys: false`, as a Redis Cluster needs);
// and ephemeral events (`--ephemeral-types`), which are not stored. An engine that does not know
// an option (an earlier build) ignores it, so the same script measures before and after.
const cases = [
  ...[0, 1, 2, 3].map((watching) => ({ name: `${watching} watching`, watching, options: {} })),
  { name: '0 watching, no workspace keys', watching: 0, options: { workspaceKeys: false } },
  { name: '0 watching, ephemeral', watching: 0, options: {}, ephemeral: true },
];
try {
  for (const { name, watching, options, ephemeral } of cases) {
    cli('FLUSHALL');
    const retentionOf = ephemeral ? { ...retention, ephemeralTypes: ['bench.*'] } : retention;
    const open = () => new RedisEngine({ url: `redis://127.0.0.1:${port}`, retention: retentionOf, ...options });
    const publisher = open();
    const watchers = Array.from({ length: watching }, open);
    for (const watcher of watchers) watcher.setInterest(ref, true);
    for (const engine of [publisher, ...watchers]) await engine.waitReady();
    // Warm up past the retention count, so trimming runs on every append as at steady state.
    for (let i = 0; i < retention.maxCount + 10; i++) await publisher.append({ ...ref, type: 't', dataJson: '{}' });
    const received = watchers.map((watcher) => watcher.stats.received);
    const before = counters();
    const data = JSON.stringify({ payload: 'x'.repeat(100) });
    for (let i = 0; i < events; i++) await publisher.append({ ...ref, type: 'bench.event', dataJson: data });
    for (const [i, watcher] of watchers.entries()) {
      while (watcher.stats.received < received[i] + events) await new Promise((r) => setTimeout(r, 10));
    }
    const after = counters();
    // Redis memory per retained event: the sandbox's stream, and the workspace's order stream.
    const perEntry = (key) => {
      const entries = Number(cli('XLEN', key).trim());
      return entries > 0 ? Math.round(Number(cli('MEMORY', 'USAGE', key, 'SAMPLES', '0').trim()) / entries) : '-';
    };
    const inScript = Object.entries(after.byCommand)
      .filter(
        ([name]) =>
          !['evalsha', 'info', 'ping', 'ssubscribe', 'subscribe', 'flushall', 'client|setname'].includes(name),
      )
      .map(([name, calls]) => [name, (calls - (before.byCommand[name] ?? 0)) / events])
      .filter(([, perEvent]) => perEvent > 0);
    rows.push({
      case: name,
      commands: ((after.calls - before.calls) / events).toFixed(1),
      scriptCommands: inScript.map(([name, n]) => `${name} ${n}`).join(', '),
      bytesOut: Math.round((after.out - before.out) / events),
      scriptUs: ((after.scriptUsec - before.scriptUsec) / events).toFixed(1),
      streamBytesPerEvent: perEntry('se:{1:cost-1}:events'),
      orderBytesPerEvent: perEntry('se:ws:1:order'),
    });
    await Promise.all([publisher, ...watchers].map((engine) => engine.close()));
  }
} finally {
  redis.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${events} events of 100 B data, one Redis ${version}`);
console.table(rows);
