// @ts-check
// Rough store figures, not run by tests: append throughput (memory vs SQLite, 10,000 appends
// in flight) and history latency (LIMIT 100) on a file of 1,000,000 events over 1,000 sandboxes.
// Usage: npm run build && node bench/store/store-bench.mjs [events=1000000]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildModules } from '../lib/build.js';
import { eventData } from '../lib/event-data.js';

const TOTAL = Number(process.argv[2] ?? 1_000_000);
const SANDBOXES = 1_000;
const TYPES = ['execution.started', 'execution.completed', 'terminal.output', 'process.exited', 'metrics.sample'];
const retention = { maxCount: 10_000, maxAgeMs: 86_400_000 };

const dir = await mkdtemp(join(tmpdir(), 'store-bench-'));
// The compiled package (npm run build): Node 20 runs no TypeScript.
const modules = buildModules(new URL('../../dist', import.meta.url).pathname);
const { MemoryStore } = await modules.memoryStore();
const { SqliteStore } = await modules.sqliteStore();

let counter = 0;
function input(sandbox) {
  const n = counter++;
  return {
    workspaceId: 1 + (sandbox % 10),
    sandboxId: `sb-${sandbox}`,
    type: TYPES[Math.floor(Math.random() * TYPES.length)],
    ...eventData(
      Buffer.from(JSON.stringify({ n, exitCode: 0, output: 'hello from the sandbox, line of output text' })),
    ),
  };
}

/**
 * Appends `total` events keeping `inFlight` appends pending at all times. Returns events per
 * second of wall time, and per second of CPU time (all threads: the checkpoint worker too),
 * which shared cores do not distort.
 */
async function appendRate(store, total, inFlight, sandboxes, firstSandbox = 0) {
  let started = 0;
  const t0 = performance.now();
  const c0 = cpuNow();
  await new Promise((/** @type {(value?: unknown) => void} */ resolve, reject) => {
    let done = 0;
    const next = () => {
      if (started >= total) return;
      started++;
      store.append(input(firstSandbox + (started % sandboxes))).then(() => {
        if (++done === total) resolve();
        else next();
      }, reject);
    };
    for (let i = 0; i < inFlight; i++) next();
  });
  return { wall: total / ((performance.now() - t0) / 1000), cpu: total / ((cpuNow() - c0) / 1000) };
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

/** CPU time of this process in ms: unlike wall time, not inflated when other jobs share the cores. */
function cpuNow() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

async function latency(label, count, query) {
  const wall = [];
  const cpu = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const c0 = cpuNow();
    const events = await query(i);
    cpu.push(cpuNow() - c0);
    wall.push(performance.now() - t0);
    if (events.length === 0) throw new Error(`${label}: empty result`);
  }
  wall.sort((a, b) => a - b);
  cpu.sort((a, b) => a - b);
  const f = (sorted, p) => percentile(sorted, p).toFixed(3);
  console.log(
    `  ${label.padEnd(32)} wall p50 ${f(wall, 50)} p99 ${f(wall, 99)} max ${wall[wall.length - 1].toFixed(1)} | cpu p50 ${f(cpu, 50)} p99 ${f(cpu, 99)} ms`,
  );
}

try {
  console.log('append throughput, 10,000 appends in flight, 200,000 events:');
  for (const sandboxes of [1, 100, 1000]) {
    for (const kind of sandboxes === 1 ? ['memory', 'sqlite', 'sqlite-inline-checkpoints'] : ['memory', 'sqlite']) {
      const store =
        kind === 'memory'
          ? new MemoryStore({ retention, pruneIntervalMs: 0 })
          : SqliteStore.open({
              path: join(dir, `throughput-${kind}-${sandboxes}.db`),
              retention,
              pruneIntervalMs: 0,
              checkpoint: kind === 'sqlite' ? 'worker' : 'inline',
            });
      await appendRate(store, 20_000, 10_000, sandboxes); // warm-up
      const rate = await appendRate(store, 200_000, 10_000, sandboxes);
      const stats = store.stats();
      console.log(
        `  ${String(sandboxes).padStart(4)} sandboxes  ${kind.padEnd(26)} ${Math.round(rate.wall).toLocaleString('en')} events/s, ` +
          `${Math.round(rate.cpu).toLocaleString('en')} per CPU-second` +
          ('batches' in stats && stats.batches
            ? ` (${stats.batches} transactions, ${Math.round(stats.appended / stats.batches)} events each)`
            : ''),
      );
      await store.close();
    }
  }
  console.log('one append at a time (await each), SQLite:');
  {
    const store = SqliteStore.open({ path: join(dir, 'serial.db'), retention, pruneIntervalMs: 0 });
    const rate = await appendRate(store, 20_000, 1, 100);
    console.log(
      `  ${Math.round(rate.wall).toLocaleString('en')} events/s, ${(1000 / rate.wall).toFixed(3)} ms per append, ` +
        `${(1000 / rate.cpu).toFixed(3)} ms of CPU`,
    );
    await store.close();
  }

  const path = join(dir, 'history.db');
  let store = SqliteStore.open({ path, retention, pruneIntervalMs: 0 });
  const t0 = performance.now();
  // Ten sandboxes at a time: interleaving all 1,000 in every transaction is slow to fill (see
  // the 1,000-sandbox throughput line above) and the file ends up the same for reads.
  for (let group = 0; group < SANDBOXES / 10; group++) {
    await appendRate(store, TOTAL / (SANDBOXES / 10), 10_000, 10, group * 10);
  }
  console.log(
    `filled ${TOTAL.toLocaleString('en')} events over ${SANDBOXES} sandboxes in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  await store.close();
  store = SqliteStore.open({ path, retention, pruneIntervalMs: 0 }); // cold connection cache

  const ref = (i) => {
    const s = (i * 7919) % SANDBOXES;
    return { workspaceId: 1 + (s % 10), sandboxId: `sb-${s}` };
  };
  const ids = new Map();
  for (let s = 0; s < SANDBOXES; s++) {
    const r = ref(s);
    const mid = await store.history({ ...r, limit: 1, afterId: { ms: 0, seq: 0 } });
    ids.set(`${r.workspaceId}:${r.sandboxId}`, mid[0].id);
  }
  console.log('history, LIMIT 100, random sandbox, 10,000 queries each:');
  await latency('oldest 100', 10_000, (i) => store.history({ ...ref(i), limit: 100 }));
  await latency('newest 100', 10_000, (i) => store.history({ ...ref(i), limit: 100, newest: true }));
  await latency('type filter, oldest 100', 10_000, (i) =>
    store.history({ ...ref(i), limit: 100, type: TYPES[i % TYPES.length] }),
  );
  await latency('type filter, newest 100', 10_000, (i) =>
    store.history({ ...ref(i), limit: 100, type: TYPES[i % TYPES.length], newest: true }),
  );
  const middle = new Map();
  for (let s = 0; s < SANDBOXES; s++) {
    const r = ref(s);
    const newest = await store.history({ ...r, limit: 300, newest: true });
    middle.set(`${r.workspaceId}:${r.sandboxId}`, newest[0].timestamp);
  }
  await latency('since (300 from the end)', 10_000, (i) => {
    const r = ref(i);
    return store.history({ ...r, limit: 100, since: middle.get(`${r.workspaceId}:${r.sandboxId}`) });
  });
  await latency('replayAfter the first id, 100', 10_000, async (i) => {
    const r = ref(i);
    return (await store.replayAfter(r, ids.get(`${r.workspaceId}:${r.sandboxId}`), 100)).events;
  });
  await store.close();

  // Retention on that file: how long pruning takes and how long it holds the event loop.
  store = SqliteStore.open({ path, retention: { maxCount: 500, maxAgeMs: 86_400_000 }, pruneIntervalMs: 0 });
  let worstGap = 0;
  let worstCpuGap = 0;
  let last = performance.now();
  let lastCpu = cpuNow();
  const ticker = setInterval(() => {
    const now = performance.now();
    const cpuTime = cpuNow();
    worstGap = Math.max(worstGap, now - last);
    worstCpuGap = Math.max(worstCpuGap, cpuTime - lastCpu);
    last = now;
    lastCpu = cpuTime;
  }, 1);
  const p0 = performance.now();
  const pruned = await store.prune();
  clearInterval(ticker);
  console.log(
    `pruning ${pruned.toLocaleString('en')} events (to 500 per sandbox): ${((performance.now() - p0) / 1000).toFixed(1)} s, ` +
      `longest event-loop stall ${worstGap.toFixed(1)} ms wall, ${worstCpuGap.toFixed(1)} ms of CPU (all threads)`,
  );
  await store.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}
