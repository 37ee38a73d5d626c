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
// per client as the collections report them (counted at collections, so roughly).
import { randomBytes } from 'node:crypto';
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
/** @typedef {{ total: number, main: number, seconds: number, gc: string }} StormCost */

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

/** Resolves once the daemon has closed the last storm's connections (the one asking aside). */
async function allClosed(/** @type {number} */ port, /** @type {string} */ token) {
  for (;;) {
    const info = await oneCommand(port, ['INFO', 'clients'], token);
    if (/connected_clients:1\r\n/.test(info)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** `STORMS` storms against a fresh daemon from `build`, one after the other. */
async function daemonRun(/** @type {string} */ build) {
  const secret = randomBytes(32).toString('base64url');
  const { mintToken } = await buildModules(build).mint();
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
  const gc = gcTally();
  Object.assign(broker.log, { onLine: gc.onLine });
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
      const result = await runGenerator(
        { kind: 'storm', port: broker.port, pid: broker.pid, clkTck, auth: tokens, channels, timeoutMs: 30_000 },
        { timeoutMs: 60_000 },
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
      storms.push({
        total: perClient(result.srvBusy),
        main: perClient(result.srvMainBusy),
        seconds: result.seconds,
        gc: gcLine,
      });
      if (storm + 1 < STORMS) await allClosed(broker.port, adminToken);
    }
  } finally {
    await broker.stop();
  }
  return storms;
}

/** @type {Map<string, StormCost[][]>} */
const results = new Map(builds.map((build) => [build, []]));
for (let run = 0; run < RUNS; run++) {
  for (const build of builds) {
    const storms = await daemonRun(build);
    results.get(build)?.push(storms);
    console.log(
      `run ${run + 1} ${build}: ${storms.map((one) => `${one.total.toFixed(0)} µs/client (main thread ${one.main.toFixed(0)}), storm ${one.seconds.toFixed(2)} s${one.gc}`).join('; ')}`,
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
