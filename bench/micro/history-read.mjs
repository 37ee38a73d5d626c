// @ts-check
// Micro-benchmark of a memory-store HISTORY read without sockets: historyPages(LIMIT 100) of a
// random sandbox of a store holding 1,000,000 events over 1,000 sandboxes (the full bench's i3
// history case), every page read as the HISTORY command reads it. Prints CPU per query and the
// collections that ran meanwhile (v8.GCProfiler); with a fixed young generation a scavenge comes
// every 16 MB allocated, so the count gives the bytes allocated per query. Not part of
// `npm run bench`.
//
//   node --min-semi-space-size=16 --max-semi-space-size=16 bench/micro/history-read.mjs [buildDir=dist] [queries=20000]
// (`npm run build` first; pass a copy of an older dist/ as buildDir to compare before/after.)
import { GCProfiler, getHeapSpaceStatistics } from 'node:v8';
import { buildModules } from '../lib/build.js';
import { eventData } from '../lib/event-data.js';

const [buildArg = 'dist', queriesArg = '20000'] = process.argv.slice(2);
const { MemoryStore } = await buildModules(buildArg).memoryStore();
const QUERIES = Number(queriesArg);
const SANDBOXES = 1_000;
const PER_SANDBOX = 1_000;

const store = new MemoryStore({ retention: { maxCount: 10_000, maxAgeMs: 86_400_000 }, pruneIntervalMs: 0 });
const text = JSON.stringify({ p: '' });
const data = Buffer.from(JSON.stringify({ p: 'x'.repeat(128 - 29 - text.length) }));
for (let s = 0; s < SANDBOXES; s++) {
  for (let k = 0; k < PER_SANDBOX; k++)
    store.appendWith(
      { workspaceId: 1, sandboxId: `sb-${s}`, type: 'bench.fill', ...eventData(data) },
      {
        appended() {},
        refused(error) {
          throw error;
        },
      },
    );
}

const semiSpace = (getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.space_size ?? 0) / 2;
let seed = 12345;
const random = () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed / 0x7fffffff;
};
/** @param {number} count */
async function run(count) {
  let bytes = 0;
  for (let q = 0; q < count; q++) {
    const sandboxId = `sb-${Math.floor(random() * SANDBOXES)}`;
    const reply = await store.historyPages({ workspaceId: 1, sandboxId, limit: 100 });
    for await (const page of reply.pages()) for (const event of page) bytes += event?.json.length ?? 0;
  }
  return bytes;
}
await run(2_000); // warm-up
for (let round = 0; round < 5; round++) {
  const profiler = new GCProfiler();
  profiler.start();
  const cpu = process.cpuUsage();
  await run(QUERIES);
  const used = process.cpuUsage(cpu);
  const collections = profiler.stop()?.statistics ?? [];
  const scavenges = collections.filter((gc) => gc.gcType === 'Scavenge').length;
  const full = collections.length - scavenges;
  console.log(
    `${buildArg}: ${(((used.user + used.system) / QUERIES) * 1000).toFixed(0)} ns CPU per query, ` +
      `${scavenges} scavenges of ${(semiSpace / 2 ** 20).toFixed(0)} MB (≈ ${Math.round((scavenges * semiSpace) / QUERIES / 1024)} KiB allocated per query), ${full} full`,
  );
}
