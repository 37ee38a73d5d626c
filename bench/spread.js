// @ts-check
// The per-event cost targets over several full runs of `npm run bench`: each target's ratio in
// every run, and its spread (docs/performance.md, "Targets: where they stand"). Usage:
//
//   node bench/spread.js .bench-out/runs/full-1.json .bench-out/runs/full-2.json ...
//
// Each file is a run's raw results (`.bench-out/bench-full.json`, copied aside after each run).
import { readFileSync } from 'node:fs';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node bench/spread.js <bench-full.json>...');
  process.exit(2);
}
const runs = files.map((file) => JSON.parse(readFileSync(file, 'utf8')));

/** @param {any} r */
const cpu = (r) => (r?.srvBusy === undefined || !r?.delivered ? undefined : (r.srvBusy / 100 / r.delivered) * 1e6);
/** @param {any} r */
const rate = (r) => r?.delivered;

/**
 * One target: `value(results)` gives the ratio of one run (undefined when a figure is missing),
 * `met(ratio)` whether it meets the target.
 * @type {{ name: string, value: (results: any) => number | undefined, met?: (ratio: number) => boolean }[]}
 */
const TARGETS = [];
/**
 * @param {string} name
 * @param {string} key
 * @param {string} broker
 * @param {string} peer
 * @param {(r: any) => number | undefined} f
 * @param {(ratio: number) => boolean} [met] none: a figure without a target
 * @param {boolean} [inverse] peer / broker instead of broker / peer
 */
function target(name, key, broker, peer, f, met, inverse = false) {
  TARGETS.push({
    name,
    value: (results) => {
      const b = f(results[key]?.[broker]);
      const p = f(results[key]?.[peer]);
      if (b === undefined || p === undefined || !p || !b) return undefined;
      return inverse ? p / b : b / p;
    },
    met,
  });
}
const atLeast = (/** @type {number} */ x) => (/** @type {number} */ ratio) => ratio >= x;
const atMost = (/** @type {number} */ x) => (/** @type {number} */ ratio) => ratio <= x;

for (const [key, shape] of [
  ['2', '10 subs of 1 sandbox'],
  ['1', '1,000 subs over 100 sandboxes'],
]) {
  target(`case ${key} (${shape}): memory / redis PUBLISH, msg/s ≥ 1.0`, key, 'memory', 'redis', rate, atLeast(1));
  target(`case ${key}: memory / redis PUBLISH, CPU per msg ≤ 1.0`, key, 'memory', 'redis', cpu, atMost(1));
  target(`case ${key}: sqlite / redis XADD+PUBLISH, msg/s ≥ 1.0`, key, 'sqlite', 'redis-xadd', rate, atLeast(1));
  target(`case ${key}: sqlite / redis XADD+PUBLISH, CPU per msg ≤ 1.0`, key, 'sqlite', 'redis-xadd', cpu, atMost(1));
  target(`case ${key}: sqlite / NATS JetStream, msg/s (no target)`, key, 'sqlite', 'nats', rate);
}
target('case 3 (5,000 sandboxes × 1 sub): memory / redis, msg/s ≥ 0.8', '3', 'memory', 'redis', rate, atLeast(0.8));
target('case 3: sqlite / redis, msg/s ≥ 0.8', '3', 'sqlite', 'redis', rate, atLeast(0.8));
target('case 3: memory / redis, CPU per msg (no target)', '3', 'memory', 'redis', cpu);
target('case 3: sqlite / redis, CPU per msg (no target)', '3', 'sqlite', 'redis', cpu);
target('storm, own token each: memory / redis time ≤ 1.2', '6', 'memory', 'redis', (r) => r?.seconds, atMost(1.2));
target('storm: sqlite / redis time ≤ 1.2', '6', 'sqlite', 'redis', (r) => r?.seconds, atMost(1.2));
target('case 4 p99 at ½ redis case-1 rate: memory / redis ≤ 1.0', '4', 'memory', 'redis', (r) => r?.p99, atMost(1));
target('case 4 p99: sqlite / redis ≤ 1.0', '4', 'sqlite', 'redis', (r) => r?.p99, atMost(1));
target('light load (4b): sqlite / memory, CPU per msg ≤ 1.5', '4b', 'sqlite', 'memory', cpu, atMost(1.5));

const fmt = (/** @type {number | undefined} */ v) => (v === undefined ? '—' : `${v.toFixed(2)}x`);
const header = ['target', ...runs.map((_, i) => `run ${i + 1}`), 'spread', 'met'];
const lines = [header, header.map(() => '---')];
for (const t of TARGETS) {
  const values = runs.map((run) => t.value(run.results));
  const known = /** @type {number[]} */ (values.filter((v) => v !== undefined));
  const spread = known.length === 0 ? '—' : `${fmt(Math.min(...known))}–${fmt(Math.max(...known))}`;
  const met = t.met === undefined ? '—' : `${known.filter((v) => t.met?.(v)).length} of ${known.length}`;
  lines.push([t.name, ...values.map(fmt), spread, met]);
}
console.log(lines.map((cells) => `| ${cells.join(' | ')} |`).join('\n'));
console.log(
  `\nload average at the start of each run: ${runs.map((run) => run.loadBefore?.[0]?.toFixed(1) ?? '?').join(', ')}`,
);
