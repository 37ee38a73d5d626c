// @ts-check
// The i3 history case of the full bench (HISTORY <random sandbox> LIMIT 100, one at a time, on a
// memory store holding 1,000,000 events over 1,000 sandboxes) with the broker under --trace-gc:
// p50/p99/max as the client sees them, the broker's CPU per query, and the collections that ran
// while the queries did (docs/performance.md, "Seventh round: latency"). Whether the tail is the
// collector shows in how many collections there were and how long they paused, against the
// number of queries over the p99. Usage:
//
//   node bench/history-gc.js [--build dist] [--events 1000000] [--sandboxes 1000] [--queries 5000]
//                            [--node-args "<flags for the broker's node>"] [--runs 1]
//
// --build runs another compiled tree (a copy of dist/ beside a copy of package.json and a
// node_modules link, as bench/latency-gc.js). GC_LINES=1 prints the broker's non-log lines.
import { randomBytes } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModules } from './lib/build.js';
import { gcTally } from './lib/gc-trace.js';
import { cleanUp, clockTicksPerSecond, ensureFileLimit, runGenerator, startBroker } from './lib/servers.js';
import { option } from './lib/args.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const buildDir = resolve(root, option('--build') ?? 'dist');
const events = Number(option('--events') ?? 1_000_000);
const sandboxes = Number(option('--sandboxes') ?? 1_000);
const queries = Number(option('--queries') ?? 5_000);
const runs = Number(option('--runs') ?? 1);
const nodeArgs = (option('--node-args') ?? '').split(' ').filter((a) => a !== '');

async function once() {
  const { mintToken } = await buildModules(buildDir).mint();
  const secret = randomBytes(32).toString('base64url');
  const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
  const server = await startBroker({ buildDir, store: 'memory', secret, nodeArgs: [...nodeArgs, '--trace-gc'] });
  try {
    const clkTck = clockTicksPerSecond();
    const channels = Array.from({ length: sandboxes }, (_, i) => `sb-${i}`);
    // The full bench's fill: a 128-byte event, sandbox after sandbox.
    const text = JSON.stringify({ type: 'bench.fill', data: { p: '' } });
    const payload = JSON.stringify({ type: 'bench.fill', data: { p: 'x'.repeat(128 - text.length) } });
    await runGenerator(
      {
        kind: 'pipeline',
        port: server.port,
        pid: server.pid,
        clkTck,
        auth: token,
        commands: channels.map((channel) => ['PUBLISH', channel, payload]),
        total: events,
        depth: 1_000,
        batch: 100,
        repeatEach: events / sandboxes,
        warmupFraction: 0,
      },
      { timeoutMs: 600_000 },
    );
    const { gc, read: readGcLine } = gcTally();
    // startBroker stops listening to the log once the broker is up: every line from here on is ours.
    /** @type {{ onLine?: (line: string) => void }} */ (server.log).onLine = (line) => {
      if (process.env.GC_LINES && !line.startsWith('{')) console.error(line);
      readGcLine(line);
    };
    const result = await runGenerator(
      {
        kind: 'query',
        port: server.port,
        pid: server.pid,
        clkTck,
        auth: token,
        commands: channels.map((channel) => ['HISTORY', channel, 'LIMIT', '100']),
        count: queries,
        warmup: 200,
      },
      { timeoutMs: 300_000 },
    );
    return { result, gc };
  } finally {
    await server.stop();
  }
}

ensureFileLimit(4_000);
try {
  for (let run = 0; run < runs; run++) {
    const { result, gc } = await once();
    const none = { count: 0, pauseMs: 0, maxMs: 0 };
    const scavenge = gc.scavenge ?? none;
    const full = gc.full ?? none;
    const cpuPerQuery = ((result.srvBusy / 100) * result.seconds * 1e6) / queries;
    console.log(
      [
        `${buildDir.replace(`${root}/`, '')} ${nodeArgs.join(' ') || '(no flags)'}`,
        `p50 ${result.p50.toFixed(3)} p99 ${result.p99.toFixed(3)} max ${result.max.toFixed(3)} ms`,
        `cpu/query ${cpuPerQuery.toFixed(0)} µs (main thread ${(((result.srvMainBusy / 100) * result.seconds * 1e6) / queries).toFixed(0)} µs)`,
        `scavenges ${scavenge.count} (pause ${scavenge.pauseMs.toFixed(1)} ms, max ${scavenge.maxMs.toFixed(2)} ms)`,
        `full GCs ${full.count} (pause ${full.pauseMs.toFixed(1)} ms, max ${full.maxMs.toFixed(2)} ms)`,
        `queries ${queries} (warm-up 200 more)`,
      ].join(' | '),
    );
  }
} finally {
  cleanUp();
}
