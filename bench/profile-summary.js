// Summarises a V8 .cpuprofile (from `npm run bench -- --profile`): the functions with the most
// self time, and total (inclusive) time of the broker's own functions.
//   node bench/profile-summary.js .bench-out/prof/CPU.<...>.cpuprofile [top=30]
import { readFileSync } from 'node:fs';

const [file, topText] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/profile-summary.js <file.cpuprofile> [top]');
  process.exit(2);
}
const top = Number(topText ?? 30);
const profile = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(profile.nodes.map((node) => [node.id, node]));

// Self time per node from the samples and their time deltas (µs).
const self = new Map();
let total = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0;
  self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + dt);
  total += dt;
}
const parent = new Map();
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);

const where = (frame) => {
  // The broker's modules (dist/ or a copy of it) show as src-relative paths, packages as nm/.
  const url = frame.url
    .replace(/^file:\/\//, '')
    .replace(/.*\/node_modules\//, 'nm/')
    .replace(/.*\/(?=(broker|connection|protocol|commands|store|event|server|auth|http|cli|engine)\/[^/]+\.js$)/, '');
  return url ? `${url}:${frame.lineNumber + 1}` : '';
};
const keyOf = (node) => `${node.callFrame.functionName || '(anonymous)'} ${where(node.callFrame)}`;

const selfBy = new Map();
const inclusiveBy = new Map();
for (const [id, us] of self) {
  const node = byId.get(id);
  selfBy.set(keyOf(node), (selfBy.get(keyOf(node)) ?? 0) + us);
  // Inclusive: charge every distinct function on the stack once.
  const seen = new Set();
  for (let at = id; at !== undefined; at = parent.get(at)) {
    const key = keyOf(byId.get(at));
    if (seen.has(key)) continue;
    seen.add(key);
    inclusiveBy.set(key, (inclusiveBy.get(key) ?? 0) + us);
  }
}

const idle = [...selfBy].filter(([k]) => k.startsWith('(idle)')).reduce((n, [, us]) => n + us, 0);
const busy = total - idle;
const pct = (us) => `${((us / busy) * 100).toFixed(1).padStart(5)} %`;
console.log(
  `${file}\nsampled ${(total / 1e6).toFixed(2)} s, busy ${(busy / 1e6).toFixed(2)} s (${((busy / total) * 100).toFixed(0)} %); percentages are of busy time\n`,
);
console.log('self time:');
for (const [key, us] of [...selfBy]
  .filter(([k]) => !k.startsWith('(idle)'))
  .sort((a, b) => b[1] - a[1])
  .slice(0, top)) {
  console.log(`  ${pct(us)}  ${key}`);
}
// Self time by area, to say what stands between the broker and a target.
const AREAS = [
  ['garbage collection', (k) => k.startsWith('(garbage collector)')],
  ['socket writes (syscalls)', (k) => /^(writeBuffer|writev|writeUtf8String|writeLatin1String) /.test(k)],
  [
    'fan-out: broker.ts, write-path.ts, encode.ts',
    (k) => /\s(broker\/broker|(?:connection|session)\/write-path|protocol\/encode)\.js:/.test(k),
  ],
  ['publish: publisher.ts', (k) => /\sbroker\/publisher\.js:/.test(k)],
  ['event parse/validate/JSON: event.ts', (k) => /\sevent\/event\.js:/.test(k)],
  [
    'commands, connection, RESP decode (incl. redis-parser)',
    (k) => /\s(commands|connection\/connection|protocol\/request-decoder|protocol\/inline)[/.]|redis-parser/.test(k),
  ],
  ['store (incl. better-sqlite3)', (k) => /\sstore\/|better-sqlite3/.test(k)],
  ['auth: JWT (jose, WebCrypto)', (k) => /\sauth\/|jose|internal\/crypto|webcrypto/.test(k)],
  [
    'node net/streams/timers internals',
    (k) => /node:(net|internal\/(streams|stream_base_commons|timers|net|process|buffer)|buffer|events|timers)/.test(k),
  ],
];
const areas = new Map(AREAS.map(([name]) => [name, 0]));
let otherUs = 0;
for (const [key, us] of selfBy) {
  if (key.startsWith('(idle)')) continue;
  const area = AREAS.find(([, test]) => test(key));
  if (area) areas.set(area[0], areas.get(area[0]) + us);
  else otherUs += us;
}
console.log('\nself time by area:');
for (const [name, us] of [...areas].sort((a, b) => b[1] - a[1])) console.log(`  ${pct(us)}  ${name}`);
console.log(`  ${pct(otherUs)}  other (native, program, startup)`);

console.log('\ninclusive time, broker code (src/):');
for (const [key, us] of [...inclusiveBy]
  .filter(([k]) => /\s(broker|connection|protocol|commands|store|event|server|auth)\//.test(k))
  .sort((a, b) => b[1] - a[1])
  .slice(0, top)) {
  console.log(`  ${pct(us)}  ${key}`);
}
