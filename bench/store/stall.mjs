// @ts-check
// How long one SQLite commit holds the event loop, with traffic spread over many streams: the
// row sync (src/store/sqlite/row-sync.ts) writes the `sandboxes` rows that lag their streams,
// and a commit that writes many of them is a pause for every client of the daemon. Appends of a
// 128-byte event go to <sandboxes> streams (a stride through them, <inFlight> in flight, so each
// commit holds about that many events), after one event per stream so that their rows exist;
// then <events> more are measured. Prints the time of each commit (the writer's synchronous
// flush: the transaction and the announcements after it) as the main thread's CPU time
// (/proc/thread-self/schedstat, in ns), which is the pause a commit makes on an idle machine
// (wall-clock time on a shared one adds whatever else ran): max, p99, median, the commits over
// 5 ms; and the process's CPU per event (all threads, so the checkpoint worker too; and the main
// thread's alone). The default row-sync interval (1 s). Also the most events above rows_synced
// after any commit from the first row sync of the measured appends on (the most the open after a
// crash would count again). STALL_TOP=n also prints the n longest commits (#index ms). Linux only. Not run by tests.
//
//   npm run build && node bench/store/stall.mjs [buildDir=dist] [sandboxes=20000] [events=200000] [inFlight=1000]
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { buildModules } from '../lib/build.js';
import { stridedAppends } from './strided-appends.mjs';

const [buildArg = 'dist', sandboxesArg = '20000', eventsArg = '200000', inFlightArg = '1000'] = process.argv.slice(2);
const SANDBOXES = Number(sandboxesArg);
const EVENTS = Number(eventsArg);
const IN_FLIGHT = Number(inFlightArg);
const { SqliteStore } = await buildModules(buildArg).sqliteStore();
const dir = await mkdtemp(join(tmpdir(), 'stall-'));
const path = join(dir, 'events.db');
const store = SqliteStore.open({
  path,
  retention: { maxCount: 1_000_000, maxAgeMs: 86_400_000 },
});
const data = Buffer.from(JSON.stringify({ output: 'x'.repeat(100) }));

// The writer's flush is private to the store; timing it is the point of this bench.
const writer = Reflect.get(store, 'writer');
const flushBatch = writer.flushBatch;
/** This thread's CPU time in ms (the first field of schedstat: ns on a CPU). */
const threadCpuMs = () => Number(readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ')[0]) / 1e6;
/** @type {number[]} */
let commitMs = [];
/** @type {number[]} */
let checkpointMs = [];
// A checkpoint the writer finishes itself (the worker fell behind: a loaded machine) is no part
// of what is measured here: timed apart and taken out of the commit's time.
const checkpointer = Reflect.get(store, 'checkpointer');
const beforeWrite = checkpointer.beforeWrite;
let inCheckpoint = 0;
checkpointer.beforeWrite = function timedBeforeWrite() {
  const start = threadCpuMs();
  beforeWrite.call(this);
  inCheckpoint += threadCpuMs() - start;
};
// After each commit, how many events are above rows_synced: what the open after a crash then
// would count again, at most (schema.ts).
const reader = new Database(path, { readonly: true });
const rowsSynced = reader.prepare('SELECT ord FROM rows_synced');
let mostAboveSynced = 0;
/** The order the measured appends start at: rows_synced is counted from its first sync past it. */
let measuredFrom = Infinity;
writer.flushBatch = function timedFlush() {
  inCheckpoint = 0;
  const start = threadCpuMs();
  flushBatch.call(this);
  commitMs.push(threadCpuMs() - start - inCheckpoint);
  if (inCheckpoint > 0.5) checkpointMs.push(inCheckpoint);
  const synced = /** @type {{ ord: number } | undefined} */ (rowsSynced.get())?.ord ?? 0;
  if (synced >= measuredFrom) mostAboveSynced = Math.max(mostAboveSynced, writer.lastOrder - synced);
};

const appendMany = stridedAppends(store, SANDBOXES, IN_FLIGHT, data);

await appendMany(SANDBOXES);
commitMs = [];
checkpointMs = [];
mostAboveSynced = 0;
measuredFrom = writer.lastOrder;
const cpuBefore = process.cpuUsage();
const mainBefore = threadCpuMs();
await appendMany(EVENTS);
const cpu = process.cpuUsage(cpuBefore);
const mainMs = threadCpuMs() - mainBefore;
const measured = commitMs;
reader.close();
await store.close();
await rm(dir, { recursive: true, force: true });

const sorted = [...measured].sort((a, b) => a - b);
const at = (/** @type {number} */ q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
const over5 = sorted.filter((ms) => ms > 5).length;
console.log(
  `${SANDBOXES} sandboxes, ${EVENTS} events, ${IN_FLIGHT} in flight: ${measured.length} commits ` +
    `(${(EVENTS / measured.length).toFixed(0)} events each)`,
);
console.log(
  `commit CPU ms: max ${at(1).toFixed(2)}, p99 ${at(0.99).toFixed(2)}, median ${at(0.5).toFixed(2)}, ` +
    `over 5 ms: ${over5}; CPU per event ${((cpu.user + cpu.system) / EVENTS).toFixed(2)} us ` +
    `(main thread ${((mainMs * 1000) / EVENTS).toFixed(2)} us)`,
);
console.log(`most events above rows_synced after a commit: ${mostAboveSynced}`);
if (checkpointMs.length > 0) {
  console.log(
    `${checkpointMs.length} checkpoint(s) by the writer, max ${Math.max(...checkpointMs).toFixed(1)} ms (left out)`,
  );
}
if (process.env.STALL_TOP) {
  const top = measured.map((ms, i) => ({ ms, i })).sort((a, b) => b.ms - a.ms);
  console.log(
    top
      .slice(0, Number(process.env.STALL_TOP))
      .map(({ ms, i }) => `#${i} ${ms.toFixed(1)}`)
      .join(', '),
  );
}
