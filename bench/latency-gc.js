// @ts-check
// The case-4 shape (100 sandboxes × 10 subscribers, 10 publishers, 128-byte events, open loop)
// at a fixed publish rate, with the broker under --trace-gc: latency p50/p99/max, server CPU per
// delivered message, and young-generation collections (scavenges) per 100,000 deliveries
// (docs/performance.md, "Sixth round: latency and the collector"). The count depends on what
// the broker allocates, not on how much of the machine it got; with a fixed young generation
// (--node-args "--min-semi-space-size=16 --max-semi-space-size=16") a scavenge comes every
// 16 MB allocated. Pause times are wall-clock: on a shared machine they include waiting for a core.
// Collections are counted from the broker's start (subscribers' set-up included) to the end of
// the drain, over the deliveries of the warm-up and the measured window. Usage:
//
//   node bench/latency-gc.js [--build dist] [--store memory|sqlite] [--rate 8000] [--seconds 8]
//                            [--node-args "<flags for the broker's node>"] [--runs 1] [--fill 0]
//
// --fill N first appends N events to each of the 100 sandboxes (one pipelining client, no
// subscribers), as the full bench's case 4 finds them after case 1 filled them: with the default
// retention (10,000) the rings are full and each new event drops the oldest, so the memory store
// no longer grows during the run. Without it the store grows by every event of the run.
//
// --rate is publishes per second (each reaches 10 subscribers). --build runs another compiled
// tree (A/B runs): a copy of dist/ in a folder beside a copy of package.json and a node_modules
// link, as the broker reads ../package.json. GC_LINES=1 prints the collector's lines.
import { randomBytes } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModules } from './lib/build.js';
import { gcTally } from './lib/gc-trace.js';
import { cleanUp, clockTicksPerSecond, ensureFileLimit, runGenerator, startBroker } from './lib/servers.js';
import { option } from './lib/args.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const buildDir = resolve(root, option('--build') ?? 'dist');
const store = option('--store') ?? 'memory';
const rate = Number(option('--rate') ?? 8_000);
const seconds = Number(option('--seconds') ?? 8);
const runs = Number(option('--runs') ?? 1);
const nodeArgs = (option('--node-args') ?? '').split(' ').filter((a) => a !== '');
const fillPerSandbox = Number(option('--fill') ?? 0);
const WARMUP_MS = 1_000;
const SUBS_PER_CHANNEL = 10;

const CHANNELS = Array.from({ length: 100 }, (_, i) => `sb-${i}`);

async function once() {
  const { mintToken } = await buildModules(buildDir).mint();
  const secret = randomBytes(32).toString('base64url');
  const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
  const server = await startBroker({ buildDir, store, secret, nodeArgs: [...nodeArgs, '--trace-gc'] });
  if (fillPerSandbox > 0) {
    const payload = JSON.stringify({ type: 'bench.fill', data: { p: 'x'.repeat(96) } });
    await runGenerator(
      {
        kind: 'pipeline',
        port: server.port,
        pid: server.pid,
        clkTck: clockTicksPerSecond(),
        auth: token,
        commands: CHANNELS.map((channel) => ['PUBLISH', channel, payload]),
        total: fillPerSandbox * CHANNELS.length,
        depth: 1_000,
        batch: 100,
        warmupFraction: 0,
      },
      { timeoutMs: 300_000 },
    );
  }
  const { gc, reasons, read: readGcLine } = gcTally();
  /** Lines an instrumented build prints at exit (not the daemon's own). */
  /** @type {string[]} */
  const extra = [];
  // startBroker stops listening to the log once the broker is up: every line from here on is ours.
  /** @type {{ onLine?: (line: string) => void }} */ (server.log).onLine = (line) => {
    if (process.env.GC_LINES && !line.startsWith('{')) console.error(line);
    if (/^[A-Z]+ [[{]/.test(line)) extra.push(line);
    readGcLine(line);
  };
  try {
    const result = await runGenerator(
      {
        kind: 'latency',
        port: server.port,
        pid: server.pid,
        clkTck: clockTicksPerSecond(),
        auth: token,
        dialect: 'resp',
        payloadSize: 128,
        rate,
        warmupMs: WARMUP_MS,
        measureMs: seconds * 1000,
        drainMs: 3_000,
        channels: CHANNELS,
        subsPerChannel: SUBS_PER_CHANNEL,
        publishers: 10,
        depth: 512,
        batch: 50,
      },
      { timeoutMs: 120_000 },
    );
    await server.stop();
    // The broker's last lines (an instrumented build's figures at exit) may still be in the pipe.
    await new Promise((resolve) => setTimeout(resolve, 200));
    return { result, gc, reasons, extra };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

ensureFileLimit(4_000);
try {
  for (let run = 0; run < runs; run++) {
    const { result, gc, reasons, extra } = await once();
    const deliveries = rate * SUBS_PER_CHANNEL * (seconds + WARMUP_MS / 1000);
    const per100k = (/** @type {number} */ n) => ((n * 100_000) / deliveries).toFixed(2);
    const scavenge = gc.scavenge ?? { count: 0, pauseMs: 0, maxMs: 0 };
    const full = gc.full ?? { count: 0, pauseMs: 0, maxMs: 0 };
    const cpuPerMsg = (result.srvBusy / 100 / result.delivered) * 1e6;
    console.log(
      [
        `${store} ${buildDir.replace(`${root}/`, '')} ${nodeArgs.join(' ') || '(no flags)'}`,
        `p50 ${result.p50.toFixed(3)} p99 ${result.p99.toFixed(3)} max ${result.max.toFixed(3)} ms`,
        `cpu/msg ${cpuPerMsg.toFixed(2)} µs, server busy ${result.srvBusy.toFixed(0)} %, generator ${result.genBusy.toFixed(0)} %`,
        `scavenges/100k ${per100k(scavenge.count)} (pause ${per100k(scavenge.pauseMs)} ms/100k, max ${scavenge.maxMs.toFixed(2)} ms)`,
        `full GCs ${full.count} (max ${full.maxMs.toFixed(2)} ms)`,
        `main thread busy ${result.srvMainBusy?.toFixed(0)} %`,
        `deliveries per write call ${((result.delivered * result.seconds) / result.srvWriteCalls).toFixed(1)}`,
        `behind ${result.behind}`,
      ].join(' | '),
    );
    console.log(`  collections by reason: ${JSON.stringify(reasons)}`);
    for (const line of extra) console.log(`  ${line}`);
  }
} finally {
  cleanUp();
}
