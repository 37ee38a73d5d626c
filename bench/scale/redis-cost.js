// Redis's work per published event with 0 to 3 nodes watching the sandbox (docs/scaling.md,
// "Figures"). Run by hand:
//
//   npm run build && node bench/scale/redis-cost.js [--events 2000] [--cluster]
//
// Starts a private redis-server on a free port (no persistence), or with --cluster a private
// Redis Cluster of 3 masters with a replica each, and, per case, N engines in this process (the
// compiled dist/), each watching the sandbox as a node with a subscriber would. One engine
// appends the events one after another. Reported from Redis's own counters (INFO commandstats,
// INFO stats, CLUSTER INFO), summed over the masters, as deltas over the run, per event:
// commands Redis executed (the script and the commands it ran), bytes Redis wrote to its clients
// (total_net_output_bytes less replication: the script's reply plus every pushed message), and in Cluster the
// bytes sent to replicas and the PUBLISH messages sent over the cluster bus. The last case holds
// a pattern in the workspace at one watching node, so workspace channels are published.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cli, startCluster } from '../lib/cluster.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { RedisEngine } = await import(pathToFileURL(path.join(root, 'dist/store/redis/redis-engine.js')).href);
const argv = process.argv.slice(2);
const at = argv.indexOf('--events');
const events = at >= 0 ? Number(argv[at + 1]) : 2000;
const clustered = argv.includes('--cluster');

async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

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
  let calls = 0;
  let busPublish = 0;
  const byCommand = {};
  for (const port of servers.masters()) {
    const stats = cli(port, 'INFO', 'stats');
    for (const match of cli(port, 'INFO', 'commandstats').matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) {
      byCommand[match[1]] = (byCommand[match[1]] ?? 0) + Number(match[2]);
      calls += Number(match[2]);
    }
    out += Number(/total_net_output_bytes:(\d+)/.exec(stats)[1]);
    repl += Number(/total_net_repl_output_bytes:(\d+)/.exec(stats)?.[1] ?? '0');
  }
  if (clustered) {
    for (const port of servers.all) {
      busPublish += Number(/cluster_stats_messages_publish_sent:(\d+)/.exec(cli(port, 'CLUSTER', 'INFO'))?.[1] ?? '0');
    }
  }
  return { out, repl, calls, busPublish, byCommand };
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
const rows = [];
try {
  for (const [watching, pattern] of [
    [0, false],
    [1, false],
    [2, false],
    [3, false],
    [3, true],
  ]) {
    for (const port of servers.masters()) cli(port, 'FLUSHALL');
    const publisher = new RedisEngine({ url: servers.url, retention });
    const watchers = Array.from({ length: watching }, () => new RedisEngine({ url: servers.url, retention }));
    for (const watcher of watchers) watcher.setInterest(ref, true);
    for (const engine of [publisher, ...watchers]) await engine.waitReady(30_000);
    if (pattern) {
      watchers[0].setPatternInterest(1, true);
      // Every node reads the registry once a second: let the publisher learn of it.
      await new Promise((r) => setTimeout(r, 3_000));
    }
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
    const perEvent = Object.entries(after.byCommand)
      .filter(([name]) => !UPKEEP.has(name))
      .map(([name, calls]) => [name, (calls - (before.byCommand[name] ?? 0)) / events])
      .filter(([, n]) => n > 0.05);
    const row = {
      watching: pattern ? `${watching} + pattern` : watching,
      commands: perEvent.reduce((sum, [, n]) => sum + n, 0).toFixed(1),
      byCommand: perEvent.map(([name, n]) => `${name} ${n.toFixed(1)}`).join(', '),
      // Redis 7 counts replication in total_net_output_bytes too: clients' share apart.
      bytesToClients: Math.round((after.out - after.repl - (before.out - before.repl)) / events),
    };
    if (clustered) {
      row.bytesToReplicas = Math.round((after.repl - before.repl) / events);
      row.busPublishes = ((after.busPublish - before.busPublish) / events).toFixed(1);
    }
    rows.push(row);
    await Promise.all([publisher, ...watchers].map((engine) => engine.close()));
  }
} finally {
  servers.stop();
}
console.log(
  `${events} events of 100 B data, ${clustered ? 'a Redis Cluster of 3 masters with a replica each' : 'one Redis'} ${version}`,
);
console.table(rows);
process.exit(0);
