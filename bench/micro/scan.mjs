// @ts-check
// Micro-benchmark of a PUBLISH payload's validation alone: `scanPublishPayload` (the byte scan,
// src/event/payload-scan.ts) and `parsePublishPayload` (the scan, the UTF-8 check when a string
// has a byte past ASCII, the type's text and `data`'s view: what PUBLISH pays per event), in CPU
// nanoseconds per payload for several shapes, best of N rounds. No sockets, no store.
//
//   node bench/micro/scan.mjs [buildDir=dist] [rounds=9] [shapes=all, comma-separated]
// (`npm run build` first; pass a copy of an older dist/ as buildDir to compare before/after,
// alternating the builds: one process per build.)
import { buildModules } from '../lib/build.js';
import { payload } from '../lib/resp.js';

const [buildArg = 'dist', roundsArg = '9', shapesArg = ''] = process.argv.slice(2);
const ROUNDS = Number(roundsArg);
const modules = buildModules(buildArg);
const { parsePublishPayload } = await modules.event();
const { scanPublishPayload } = await modules.payloadScan();

/** A payload of about `bytes` bytes: `data` holds records like a job's log would. */
function sized(bytes) {
  const lines = [];
  let size = 40;
  for (let k = 0; size < bytes; k++) {
    const line = {
      n: k,
      at: 1_765_000_000_000 + k * 17,
      level: k % 3 === 0 ? 'warn' : 'info',
      ok: k % 2 === 0,
      text: `step ${k} "compiled" src/module-${k}.ts in ${(k * 1.37).toFixed(2)} ms, café ✓`,
      tags: ['build', `w${k % 4}`],
    };
    size += JSON.stringify(line).length + 1;
    lines.push(line);
  }
  return JSON.stringify({ type: 'job.log', data: { job: 'j-42', lines } });
}

/** The shapes, each as the text a publisher sends. */
const SHAPES = {
  // The bench's 128-byte event (the load generator's, bench/lib/resp.js).
  bench: payload(128).bytes.toString('latin1'),
  nested: JSON.stringify({
    type: 'job.step',
    data: {
      job: { id: 'j-1', steps: [1, 2, 3].map((n) => ({ n, ok: n !== 2, tags: ['a', 'b'], out: null })) },
      meta: { a: { b: { c: { d: [[], {}, [[1]], { e: false }] } } } },
    },
  }),
  'long string': JSON.stringify({ type: 'log', data: { text: 'lorem ipsum dolor sit amet, '.repeat(40) } }),
  escapes: JSON.stringify({
    type: 'log',
    data: { text: 'a "quoted" C:\\path\\to\\file\n\ttabbed\r\n\u0001 '.repeat(8), more: '\\"'.repeat(16) },
  }),
  'non-ASCII': JSON.stringify({
    type: 'chat.message',
    data: { text: 'Grüße aus Köln, ça va? 你好，世界 — 😀🎉 '.repeat(6), user: 'zoë' },
  }),
  'long non-ASCII': JSON.stringify({
    type: 'doc.text',
    data: { text: '日本語のテキストと中文文本，한국어 텍스트, Ελληνικά, 😀🎉🚀 '.repeat(60) },
  }),
  numbers: JSON.stringify({
    type: 'metrics',
    data: {
      cpu: [0.25, 12.5, -3e-7, 1e21, 0, 100],
      counts: Array.from({ length: 24 }, (_, k) => k * 1_234_567),
      load: { m1: 1.85, m5: 1.51, m15: 1.94 },
    },
  }),
  '4 KiB': sized(4_096),
  '64 KiB': sized(65_536),
};

const wanted = shapesArg === '' ? Object.keys(SHAPES) : shapesArg.split(',');
/** Every shape's bytes, each inside a received chunk as PUBLISH takes it: a RESP header before it, CRLF after. */
const shapes = wanted.map((name) => {
  const text = SHAPES[/** @type {keyof typeof SHAPES} */ (name)];
  if (text === undefined) throw new Error(`unknown shape ${name}; shapes: ${Object.keys(SHAPES).join(', ')}`);
  const payload = Buffer.from(text);
  const head = Buffer.from(`*3\r\n$7\r\nPUBLISH\r\n$4\r\nsb-1\r\n$${payload.length}\r\n`);
  const chunk = Buffer.concat([head, payload, Buffer.from('\r\n')]);
  // About 5 ms of work per round at 1 ns per byte, at least 200 payloads.
  const repeat = Math.max(200, Math.ceil(5_000_000 / payload.length));
  return { name, chunk, start: head.length, end: head.length + payload.length, repeat };
});

const LIMIT = 65_536 * 2;
let sink = 0;

/** @param {(typeof shapes)[number]} shape @param {boolean} whole parsePublishPayload (true) or the scan alone */
function round(shape, whole) {
  const { chunk, start, end, repeat } = shape;
  const cpu0 = process.cpuUsage();
  if (whole) {
    for (let k = 0; k < repeat; k++) sink += parsePublishPayload(chunk, LIMIT, start, end).data.length;
  } else {
    for (let k = 0; k < repeat; k++) {
      const scanned = scanPublishPayload(chunk, start, end);
      sink += typeof scanned === 'number' ? scanned : scanned.dataEnd;
    }
  }
  const cpu = process.cpuUsage(cpu0);
  return ((cpu.user + cpu.system) * 1000) / repeat;
}

// Warm-up: every shape through both functions, so the JIT sees them all before a round counts.
for (let w = 0; w < 3; w++) {
  for (const shape of shapes) {
    round(shape, true);
    round(shape, false);
  }
}

console.log(`${modules.dir}: CPU ns per payload, best of ${ROUNDS} rounds (scan alone / parsePublishPayload)`);
for (const shape of shapes) {
  let scan = Number.POSITIVE_INFINITY;
  let whole = Number.POSITIVE_INFINITY;
  for (let r = 0; r < ROUNDS; r++) {
    scan = Math.min(scan, round(shape, false));
    whole = Math.min(whole, round(shape, true));
  }
  const bytes = shape.end - shape.start;
  console.log(
    `  ${shape.name.padEnd(12)} ${String(bytes).padStart(6)} B  scan ${scan.toFixed(0).padStart(7)} ns ` +
      `(${(scan / bytes).toFixed(2)} ns/B)  parse ${whole.toFixed(0).padStart(7)} ns (${(whole / bytes).toFixed(2)} ns/B)`,
  );
}
if (sink === 0) console.log('');
