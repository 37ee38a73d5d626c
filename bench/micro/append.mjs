// @ts-check
// Micro-benchmark of what happens between the publisher and the fan-out's slab: the memory
// store's append (its ring writing the event's line) and the broker framing it, for subscribers
// whose sockets swallow the bytes (null-subscriber.js), in CPU nanoseconds per appended event.
// No payload parsing, no publisher: the event's `data` is a view of a received payload's bytes,
// as parsePublishPayload hands it over. Several builds are measured in one process, their rounds
// alternating, so that a shared machine's load weighs on each alike (docs/performance.md,
// "Ninth round: the append and the frame"). Not part of `npm run bench`.
//
//   [KEEP=<events kept per sandbox, 10000>] node bench/micro/append.mjs <buildDir> [<buildDir> ...] [--subscribers=1] [--rounds=15]
// (`npm run build` first; pass copies of an older dist/ to compare before/after.)
import { buildModules } from '../lib/build.js';
import { nullSubscriberClass, outputBudget } from './null-subscriber.js';
import { eventData } from '../lib/event-data.js';

const options = process.argv.slice(2).filter((arg) => arg.startsWith('--'));
const option = (/** @type {string} */ name, /** @type {number} */ fallback) =>
  Number(options.find((arg) => arg.startsWith(`--${name}=`))?.split('=')[1] ?? fallback);
const dirs = process.argv.slice(2).filter((arg) => !arg.startsWith('--'));
const SUBSCRIBERS = option('subscribers', 1);
const ROUNDS = option('rounds', 15);
const PER_TURN = 200;
const TURNS = 300;

// The bench's 128-byte event as received; `data` is its view of the payload, as the scan makes it.
const payload = Buffer.from(`{"type":"bench.tick","data":{"t":"0000000000000","p":"${'x'.repeat(72)}"}}`);
const data = payload.subarray(payload.indexOf('{', 2), payload.length - 1);

/** One build's store and broker, its listener fanning out to SUBSCRIBERS null subscribers of one sandbox. */
async function setUp(/** @type {string} */ dir) {
  const modules = buildModules(dir);
  const { Broker } = await modules.broker();
  const { MemoryStore } = await modules.memoryStore();
  const { WritePath } = await modules.writePath();
  const Sub = nullSubscriberClass(WritePath, await outputBudget(modules));
  const broker = new Broker();
  const store = new MemoryStore({
    retention: { maxCount: Number(process.env.KEEP ?? 10_000), maxAgeMs: 86_400_000 },
    pruneIntervalMs: 0,
  });
  for (let k = 0; k < SUBSCRIBERS; k++) {
    broker.subscribe(new Sub(), { key: '{1}sb-1', workspaceId: 1, sandboxId: 'sb-1', displayName: 'sb-1' });
  }
  store.setListener((event) => {
    broker.fanOut(event);
    return undefined;
  });
  /** @type {import('../../src/store/types.js').AppendReceipt} */
  const receipt = {
    appended() {},
    refused(error) {
      throw error;
    },
  };
  const input = { workspaceId: 1, sandboxId: 'sb-1', type: 'bench.tick', ...eventData(data) };
  return { dir: modules.dir, append: () => store.appendWith(input, receipt), results: /** @type {number[]} */ ([]) };
}

/** CPU ns per appended event over `turns` event-loop turns of PER_TURN appends. */
async function round(/** @type {() => void} */ append, /** @type {number} */ turns) {
  const cpu0 = process.cpuUsage();
  for (let t = 0; t < turns; t++) {
    for (let i = 0; i < PER_TURN; i++) append();
    await new Promise((resolve) => setImmediate(resolve)); // the write paths flush here
  }
  const cpu = process.cpuUsage(cpu0);
  return ((cpu.user + cpu.system) * 1000) / (turns * PER_TURN);
}

const builds = [];
for (const dir of dirs.length > 0 ? dirs : ['dist']) builds.push(await setUp(dir));
for (const build of builds) await round(build.append, 500); // warm-up (JIT)
for (let r = 0; r < ROUNDS; r++) for (const build of builds) build.results.push(await round(build.append, TURNS));
for (const { dir, results } of builds) {
  results.sort((a, b) => a - b);
  const at = (/** @type {number} */ q) => results[Math.floor(q * (results.length - 1))].toFixed(0);
  console.log(
    `${dir}: ${SUBSCRIBERS} subs: ${at(0.5)} ns median (quartiles ${at(0.25)}–${at(0.75)}) CPU per appended event, ${ROUNDS} rounds`,
  );
}
