// @ts-check
// What `--retention` rules (docs/operations.md, "Per-type retention") cost the embedded stores,
// not run by tests: CPU per event of appending, and of the retention runs that follow, with and
// without a rule, on the same workload: 100 sandboxes, each a lifecycle event per 20
// `sandbox.metrics`, 1,000 events kept per sandbox, metrics kept to 100 under the rule.
// CPU time (process.cpuUsage, all threads), not wall time, as the cores are shared.
// Usage: npm run build && node bench/store/type-retention.mjs [events=200000]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildModules } from '../lib/build.js';
import { eventData } from '../lib/event-data.js';

const TOTAL = Number(process.argv[2] ?? 200_000);
const SANDBOXES = 100;
/** Appends between two retention runs (the SQLite store runs one every 5 s in the background). */
const PRUNE_EVERY = 10_000;
const PLAIN = { maxCount: 1_000, maxAgeMs: 86_400_000 };
const RULES = { ...PLAIN, rules: [{ glob: 'sandbox.metrics', maxCount: 100 }] };

const modules = buildModules(new URL('../../dist', import.meta.url).pathname);
const { MemoryStore } = await modules.memoryStore();
const { SqliteStore } = await modules.sqliteStore();

function cpuNow() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

function input(n) {
  return {
    workspaceId: 1,
    sandboxId: `sb-${n % SANDBOXES}`,
    type: Math.floor(n / SANDBOXES) % 21 === 0 ? 'execution.completed' : 'sandbox.metrics',
    ...eventData(Buffer.from(JSON.stringify({ n, uptime_seconds: n, total_executions: 3, active_executions: 0 }))),
  };
}

/** Appends TOTAL events, 1,000 in flight, pruning every PRUNE_EVERY; CPU µs per event of each. */
async function run(store) {
  let appendMs = 0;
  let pruneMs = 0;
  for (let at = 0; at < TOTAL; at += PRUNE_EVERY) {
    const c0 = cpuNow();
    for (let i = at; i < at + PRUNE_EVERY; i += 1_000) {
      const batch = [];
      for (let j = i; j < i + 1_000; j++) batch.push(store.append(input(j)));
      await Promise.all(batch);
    }
    const c1 = cpuNow();
    await store.prune();
    pruneMs += cpuNow() - c1;
    appendMs += c1 - c0;
  }
  const kept = await store.history({ workspaceId: 1, sandboxId: 'sb-0', type: 'execution.completed', limit: 1000 });
  return { append: (appendMs * 1000) / TOTAL, prune: (pruneMs * 1000) / TOTAL, lifecycleKept: kept.length };
}

const rows = [];
/** @type {{ label: string, retention: import('../../src/store/types.js').RetentionPolicy }[]} */
const CASES = [
  { label: 'no rules', retention: PLAIN },
  { label: 'sandbox.metrics=100', retention: RULES },
];
for (const { label, retention } of CASES) {
  const memory = new MemoryStore({ retention, pruneIntervalMs: 0 });
  rows.push({ store: 'memory', label, ...(await run(memory)) });
  await memory.close();
  const dir = await mkdtemp(join(tmpdir(), 'type-retention-bench-'));
  const sqlite = SqliteStore.open({ path: join(dir, 'events.db'), retention, pruneIntervalMs: 0 });
  rows.push({ store: 'sqlite', label, ...(await run(sqlite)) });
  await sqlite.close();
  await rm(dir, { recursive: true, force: true });
}

console.log(`${TOTAL} events, ${SANDBOXES} sandboxes, retention run every ${PRUNE_EVERY} appends`);
console.log('store   rules                append µs/event  retention µs/event  lifecycle events kept (sb-0)');
for (const row of rows) {
  console.log(
    `${row.store.padEnd(7)} ${row.label.padEnd(20)} ${row.append.toFixed(2).padStart(16)} ${row.prune.toFixed(2).padStart(19)} ${String(row.lifecycleKept).padStart(29)}`,
  );
}
for (const store of ['memory', 'sqlite']) {
  const [plain, rules] = rows.filter((row) => row.store === store);
  console.log(
    `${store}: rules/no rules = ${((rules.append + rules.prune) / (plain.append + plain.prune)).toFixed(2)} (append + retention CPU)`,
  );
}
