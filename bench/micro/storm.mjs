// @ts-check
// Server CPU per connecting client through the real daemon: bench case 6 (every client connects at
// once, AUTHs with its own HS256 token, SUBSCRIBEs to its sandbox) against `sandbox-events serve
// --store memory` from one or more build directories, alternated run by run, a fresh daemon each.
// The daemon's CPU over the storm window (first connect to last SUBSCRIBE confirmation, as bench
// case 6 measures it) comes from /proc/<pid>/stat, so the clients' own work and the machine's
// other jobs do not count; the event loop's share (/proc/<pid>/task/<pid>/stat) shows apart
// from the other threads' (V8's GC and compiler helpers, libuv's pool). Not part of
// `npm run bench`.
//
//   node bench/micro/storm.mjs [buildDirs=dist] [clients=5000] [runs=3] [storms=1] [profileDir]
// `buildDirs` is a comma-separated list (a copy of an older dist/ compares before/after; it must
// resolve node_modules and ../package.json). Prints, per build, the median and range of the CPU
// per client and the median event-loop share. `storms` > 1 runs more storms (fresh clients,
// fresh tokens) against each daemon and reports the later ones apart: the first storm of a
// fresh daemon, what bench case 6 measures, also pays for its JIT warm-up. With `profileDir`, the daemon runs under
// --cpu-prof (summarise with `node bench/profile-summary.js <file>`; the profile also holds
// startup and the clients' disconnection, which the figures leave out). STORM_NODE_ARGS adds
// node flags to the daemon's command line (say `--single-threaded-gc`, to see what the GC's
// helper threads cost); with `--trace-gc-nvp` among them, each storm's line also gives the
// collections during it, and the bytes allocated and promoted per client and the pauses' time
// per client as the collections report them (counted at collections, so roughly). With
// `--trace-opt --trace-deopt` among them, each storm's line gives the JIT's work during it, and
// apart from it during the clients' disconnection: functions optimized, deoptimizations
// (bailouts), and optimized code thrown away because a map it relied on changed (code
// dependencies); STORM_JIT_DETAIL=1 also lists, per storm, which functions were deoptimized or
// invalidated and why, most frequent first. STORM_PERF_DIR=<dir> records each storm's window
// with `perf record -e cpu-clock` attached to the daemon (<dir>/build<B>-run<R>-storm<S>.data,
// B counting `buildDirs` from 1): on-CPU samples of every thread, the kernel's included; add
// `--perf-basic-prof` to STORM_NODE_ARGS to name the JavaScript, then `perf report -i <file>
// --sort dso,sym`. STORM_COMMANDS=<list> changes what each client sends (default `AUTH,SUBSCRIBE`,
// as bench case 6): any of AUTH, SUBSCRIBE, PING and RESET, comma-separated, each answered by one
// reply; `RESET` alone is a client that authenticates nothing (the socket path, one command and
// its reply), `AUTH` alone leaves SUBSCRIBE out, so the differences tell what each part costs.
// STORM_TRACE_FILE=<file> appends every line the daemon prints (the traces above among them) to it.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { buildModules } from '../lib/build.js';
import { clockTicksPerSecond, ensureFileLimit, oneCommand, runGenerator, startBroker } from '../lib/servers.js';

const [buildsArg = 'dist', clientsArg = '5000', runsArg = '3', stormsArg = '1', profileDir] = process.argv.slice(2);
const STORMS = Number(stormsArg);
const builds = buildsArg.split(',').map((dir) => resolve(dir));
const CLIENTS = Number(clientsArg);
const RUNS = Number(runsArg);
const clkTck = clockTicksPerSecond();
ensureFileLimit(CLIENTS + 200);

const median = (/** @type {number[]} */ values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

/** Per client: µs of daemon CPU (all threads, and the main thread), and the storm's wall time. */
/** @typedef {{ total: number, main: number, seconds: number, gc: string, jit: string }} StormCost */

/** What `--trace-gc-nvp` lines report, summed: collections, bytes allocated and promoted, pause ms. */
function gcTally() {
  const tally = { collections: 0, allocated: 0, promoted: 0, pauseMs: 0 };
  const field = (/** @type {string} */ line, /** @type {string} */ name) =>
    Number(new RegExp(`\\b${name}=([0-9.]+)`).exec(line)?.[1] ?? 0);
  return {
    tally,
    onLine: (/** @type {string} */ line) => {
      if (!line.includes(' pause=')) return;
      tally.collections += 1;
      tally.allocated += field(line, 'allocated');
      tally.promoted += field(line, 'promoted');
      tally.pauseMs += field(line, 'pause');
    },
  };
}

const COMMANDS = (process.env.STORM_COMMANDS ?? 'AUTH,SUBSCRIBE').split(',');

const TRACING_JIT = process.env.STORM_NODE_ARGS?.includes('--trace-deopt') === true;

/**
 * What `--trace-opt --trace-deopt` lines report: functions optimized, deoptimizations, optimized
 * code invalidated, and which functions were deoptimized or invalidated and why. `take` returns
 * what came since it was last called.
 */
function jitTally() {
  let optimized = 0;
  let deopts = 0;
  let invalidated = 0;
  /** @type {Map<string, number>} */
  let functions = new Map();
  const note = (/** @type {string} */ what) => functions.set(what, (functions.get(what) ?? 0) + 1);
  return {
    onLine: (/** @type {string} */ line) => {
      if (line.startsWith('[completed optimizing')) {
        optimized += 1;
      } else if (line.startsWith('[bailout (kind: ')) {
        deopts += 1;
        const fn = /deoptimizing 0x[0-9a-f]+ <JSFunction ([^ >]*)/.exec(line)?.[1] || '(anonymous)';
        note(`${fn}: ${/reason: ([^)]*)\)/.exec(line)?.[1] ?? '?'}`);
      } else if (line.startsWith('[marking dependent code')) {
        invalidated += 1;
        const fn = /<SharedFunctionInfo ?([^>]*)>/.exec(line)?.[1] || '(anonymous)';
        note(`${fn}: invalidated, ${/reason: ([^\]]*)/.exec(line)?.[1] ?? '?'}`);
      }
    },
    take: () => {
      const counts = `${optimized} optimized, ${deopts} deopts, ${invalidated} invalidated`;
      const detail = [...functions]
        .sort((a, b) => b[1] - a[1])
        .map(([what, n]) => `    ${n} ${what}`)
        .join('\n');
      optimized = 0;
      deopts = 0;
      invalidated = 0;
      functions = new Map();
      return { counts, detail };
    },
  };
}

/** Resolves once the daemon has closed the last storm's connections (the one asking aside). */
async function allClosed(/** @type {number} */ port, /** @type {string} */ token) {
  for (;;) {
    const info = await oneCommand(port, ['INFO', 'clients'], token);
    if (/connected_clients:1\r\n/.test(info)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** `perf record` of the daemon's CPU until the returned function is called (STORM_PERF_DIR). */
async function perfRecord(/** @type {number} */ pid, /** @type {string} */ file) {
  const perf = spawn('perf', ['record', '-e', 'cpu-clock', '-F', '2000', '-p', String(pid), '-o', file], {
    stdio: 'ignore',
  });
  // perf attaches to the threads a moment after it starts.
  await new Promise((resolve) => setTimeout(resolve, 300));
  return async () => {
    perf.kill('SIGINT');
    await new Promise((resolve) => perf.once('exit', resolve));
  };
}

/** A `/proc/<pid>/status` field in KiB (VmRSS: the resident set). */
function statusKiB(/** @type {number} */ pid, /** @type {string} */ field) {
  const status = readFileSync(`/proc/${pid}/status`, 'latin1');
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN);
}

/** `STORMS` storms against a fresh daemon from `build`, one after the other (`run`: which run). */
async function daemonRun(/** @type {string} */ build, /** @type {number} */ run) {
  const secret = randomBytes(32).toString('base64url');
  const { mintToken } = await buildModules(build).mint();
  const spawned = performance.now();
  const broker = await startBroker({
    buildDir: build,
    store: 'memory',
    secret,
    maxClients: STORMS * CLIENTS + 100,
    nodeArgs: [
      ...(process.env.STORM_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      ...(profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${resolve(profileDir)}`]),
    ],
  });
  const startupMs = performance.now() - spawned;
  const rssKiB = statusKiB(Number(broker.pid), 'VmRSS');
  const gc = gcTally();
  const jit = jitTally();
  const traceFile = process.env.STORM_TRACE_FILE;
  Object.assign(broker.log, {
    onLine: (/** @type {string} */ line) => {
      gc.onLine(line);
      jit.onLine(line);
      if (traceFile !== undefined) appendFileSync(traceFile, `${line}\n`);
    },
  });
  const adminToken = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
  /** @type {StormCost[]} */
  const storms = [];
  try {
    for (let storm = 0; storm < STORMS; storm++) {
      const channels = Array.from({ length: CLIENTS }, (_, i) => `sb-${storm}-${i}`);
      const tokens = await Promise.all(
        channels.map((sandboxId) =>
          mintToken({ secret, workspaceId: 1, sandboxId, role: 'sandbox', ttlSeconds: 3600 }),
        ),
      );
      const gcBefore = { ...gc.tally };
      jit.take();
      /** @type {{ counts: string, detail: string } | undefined} */
      let stormJit;
      const perfDir = process.env.STORM_PERF_DIR;
      const perfStop =
        perfDir === undefined
          ? undefined
          : await perfRecord(
              Number(broker.pid),
              resolve(perfDir, `build${builds.indexOf(build) + 1}-run${run + 1}-storm${storm + 1}.data`),
            );
      const result = await runGenerator(
        {
          kind: 'storm',
          port: broker.port,
          pid: broker.pid,
          clkTck,
          auth: tokens,
          channels,
          commands: COMMANDS,
          timeoutMs: 30_000,
          holdUntilReleased: TRACING_JIT || perfStop !== undefined,
        },
        {
          timeoutMs: 60_000,
          // The storm's window ends while its clients are still connected: perf stops, and the
          // JIT's work of the storm is taken (a moment for the trace's last lines to come through
          // the pipe); what follows is their close.
          onReady: async () => {
            await perfStop?.();
            if (!TRACING_JIT) return;
            await new Promise((resolve) => setTimeout(resolve, 300));
            stormJit = jit.take();
          },
        },
      );
      if (result.subscribed !== CLIENTS) {
        throw new Error(`only ${result.subscribed} clients subscribed: ${result.firstError}`);
      }
      const perClient = (/** @type {number} */ busy) => ((busy / 100) * result.seconds * 1e6) / CLIENTS;
      const during = (/** @type {'collections' | 'allocated' | 'promoted' | 'pauseMs'} */ key) =>
        gc.tally[key] - gcBefore[key];
      const gcLine =
        during('collections') === 0
          ? ''
          : `, ${during('collections')} GCs: ${(during('allocated') / CLIENTS).toFixed(0)} B allocated, ${(during('promoted') / CLIENTS).toFixed(0)} B promoted, ${((during('pauseMs') * 1000) / CLIENTS).toFixed(0)} µs paused per client`;
      let closeJit = '';
      if (stormJit !== undefined) {
        // The clients' disconnection runs the close paths: their JIT work is told apart.
        await allClosed(broker.port, adminToken);
        // The trace's last lines may still be in the pipe: a moment for them.
        await new Promise((resolve) => setTimeout(resolve, 200));
        const closing = jit.take();
        closeJit = ` (then closing: ${closing.counts})`;
        if (process.env.STORM_JIT_DETAIL === '1') {
          console.log(`  storm ${storm + 1}, deoptimized or invalidated:\n${stormJit.detail}`);
          console.log(`  storm ${storm + 1}'s close, deoptimized or invalidated:\n${closing.detail}`);
        }
      }
      storms.push({
        total: perClient(result.srvBusy),
        main: perClient(result.srvMainBusy),
        seconds: result.seconds,
        gc: gcLine,
        jit: stormJit === undefined ? '' : `, JIT: ${stormJit.counts}${closeJit}`,
      });
      if (storm + 1 < STORMS && !TRACING_JIT) await allClosed(broker.port, adminToken);
    }
  } finally {
    await broker.stop();
  }
  return { storms, startupMs, rssKiB };
}

/** @type {Map<string, StormCost[][]>} */
const results = new Map(builds.map((build) => [build, []]));
/** Per build, ms from spawning each daemon to its "listening" line. @type {Map<string, number[]>} */
const startups = new Map(builds.map((build) => [build, []]));
for (let run = 0; run < RUNS; run++) {
  for (const build of builds) {
    const { storms, startupMs, rssKiB } = await daemonRun(build, run);
    results.get(build)?.push(storms);
    startups.get(build)?.push(startupMs);
    console.log(
      `run ${run + 1} ${build}: start ${startupMs.toFixed(0)} ms, RSS ${(rssKiB / 1024).toFixed(1)} MiB; ${storms.map((one) => `${one.total.toFixed(0)} µs/client (main thread ${one.main.toFixed(0)}), storm ${one.seconds.toFixed(2)} s${one.gc}${one.jit}`).join('; ')}`,
    );
  }
}
const range = (/** @type {number[]} */ values) =>
  `median ${median(values).toFixed(0)} µs (${Math.min(...values).toFixed(0)}-${Math.max(...values).toFixed(0)})`;
for (const [build, runs] of results) {
  const report = (/** @type {string} */ label, /** @type {StormCost[]} */ costs) =>
    console.log(
      `${build} ${label}: server CPU per client ${range(costs.map((c) => c.total))}, main thread ${range(costs.map((c) => c.main))}, storm median ${median(costs.map((c) => c.seconds)).toFixed(2)} s of wall, ${costs.length} storms`,
    );
  const starts = startups.get(build) ?? [];
  console.log(
    `${build} start to listening: median ${median(starts).toFixed(0)} ms (${Math.min(...starts).toFixed(0)}-${Math.max(...starts).toFixed(0)})`,
  );
  report(
    'first storm',
    runs.map((storms) => storms[0]),
  );
  if (STORMS > 1)
    report(
      'later storms',
      runs.flatMap((storms) => storms.slice(1)),
    );
}
