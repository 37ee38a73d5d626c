// Micro-benchmark of the publish path without sockets: payload validation (from the payload's
// bytes as received: a build whose parsePublishPayload takes text decodes them first, as its
// RequestDecoder did), the store append
// (memory store), the Publisher, the fan-out to 10 subscribers whose sockets swallow the bytes,
// and the PUBLISH reply, in CPU nanoseconds per published event. It isolates the per-event work
// that cases 1, 2 and 4 of `npm run bench` pay before the fan-out. Not part of `npm run bench`.
//
//   [KEEP=<events kept per sandbox, 10000>] [TOKEN=workspace|sandbox] node bench/micro/publish.js [buildDir=dist] [subscribers=10] [perTurn=200] [observer=1]
// TOKEN=sandbox publishes with a sandbox token, which every publish takes from the rate limiter
// (set high enough here never to refuse); a workspace token, the default, is not rate limited.
// Each publish makes its receipt, as PUBLISH does: a Publication (a build whose publishWith takes
// one), or a receipt object for an older build's publishWith.
// (`npm run build` first; pass a copy of an older dist/ as buildDir to compare before/after.)
// @ts-check
import { buildModules } from '../lib/build.js';
import { nullSubscriberClass, outputBudget } from './null-subscriber.js';

const [buildArg = 'dist', subsArg = '10', perTurnArg = '200', observerArg = '1'] = process.argv.slice(2);
const modules = buildModules(buildArg);
const build = modules.dir;
const { Broker } = await modules.broker();
const { Publisher } = await modules.publisher();
const { MemoryStore } = await modules.memoryStore();
const { WritePath } = await modules.writePath();
const { parsePublishPayload, readPublishPayload } = /** @type {Record<string, any>} */ (await modules.event());

const SUBS = Number(subsArg);
const PER_TURN = Number(perTurnArg);

const Sub = nullSubscriberClass(WritePath, await outputBudget(modules));

const broker = new Broker();
const store = new MemoryStore({
  retention: { maxCount: Number(process.env.KEEP ?? 10_000), maxAgeMs: 86_400_000 },
  pruneIntervalMs: 0,
});
const SANDBOX_TOKEN = process.env.TOKEN === 'sandbox';
// A sandbox token's limit, high enough never to refuse: the limiter's cost is measured, not its verdict.
const publisher = new Publisher(store, broker, { perSecond: 1e12, burst: 1e12 });
if (observerArg === '1') {
  // Builds before the per-batch observer had stored()/delivered() per event.
  publisher.observer = /** @type {any} */ ({ batch() {}, stored() {}, delivered() {} });
}
for (let k = 0; k < SUBS; k++) {
  broker.subscribe(new Sub(), { key: '{1}sb-1', workspaceId: 1, sandboxId: 'sb-1', displayName: 'sb-1' });
}
/** @type {import('../../src/auth/principal.js').Principal} */
const principal = SANDBOX_TOKEN
  ? { role: 'sandbox', workspaceId: 1, sandboxId: 'sb-1', expiresAt: Number.POSITIVE_INFINITY }
  : { role: 'workspace', workspaceId: 1, expiresAt: Number.POSITIVE_INFINITY };
const ref = { workspaceId: 1, sandboxId: 'sb-1' };
// The bench's 128-byte event, as received.
const payloadBytes = Buffer.from(`{"type":"bench.tick","data":{"t":"0000000000000","p":"${'x'.repeat(72)}"}}`);
/**
 * The event's type and data as this build's publish path takes them: bytes (parsePublishPayload
 * of two arguments, the seventh round's), or the text it decoded the payload to before.
 * @returns {{ type: string, data: any }}
 */
const parse =
  parsePublishPayload.length === 2
    ? () => parsePublishPayload(payloadBytes, 65_536)
    : () => {
        const text = payloadBytes.toString();
        const { type, dataJson } = /** @type {any} */ (parsePublishPayload)(text, payloadBytes.length, 65_536);
        return { type, data: dataJson };
      };
/** @type {number[]} */
const replies = [];
const publisherModule = /** @type {Record<string, any>} */ (await modules.publisher());
/**
 * One publish as PUBLISH makes it: a Publication of its own (`publishWith(principal, publication)`),
 * or, for a build before it, a receipt of its own (`publishWith(principal, ref, type, data, receipt)`),
 * or the promise path of a build before publishWith (undefined).
 * @type {((type: string, data: Buffer) => void) | undefined}
 */
let publishOne;
/** One PUBLISH whose payload is read into its publication (readPublishPayload), when the build has it.
 * @type {(() => void) | undefined} */
let publishRead;
if (publisherModule.Publication !== undefined) {
  /** @type {typeof import('../../src/broker/publisher.js').Publication} */
  const Publication = publisherModule.Publication;
  class BenchPublication extends Publication {
    /** @param {unknown} _event @param {number} receivers */
    published(_event, receivers) {
      replies.push(receivers);
    }
    /** @param {unknown} error */
    failed(error) {
      throw error;
    }
  }
  const withPublication = /** @type {any} */ (publisher).publishWith.bind(publisher);
  publishOne = (type, data) => withPublication(principal, new BenchPublication(ref, type, data));
  if (readPublishPayload !== undefined) {
    // As PUBLISH does since the tenth round: the payload read into the publication, `data` left
    // where it lies in the received bytes.
    publishRead = () => {
      const publication = new BenchPublication(ref, '', payloadBytes, 0, payloadBytes.length);
      readPublishPayload(payloadBytes, 65_536, 0, payloadBytes.length, publication);
      withPublication(principal, publication);
    };
  }
} else if ('publishWith' in publisher) {
  class BenchReceipt {
    /** @param {unknown} _event @param {number} receivers */
    published(_event, receivers) {
      replies.push(receivers);
    }
    /** @param {unknown} error */
    failed(error) {
      throw error;
    }
  }
  const withReceipt = /** @type {any} */ (publisher).publishWith.bind(publisher);
  publishOne = (type, data) => withReceipt(principal, ref, type, data, new BenchReceipt());
}

async function round(turns) {
  const cpu0 = process.cpuUsage();
  let events = 0;
  for (let t = 0; t < turns; t++) {
    const pending = [];
    for (let i = 0; i < PER_TURN; i++) {
      if (publishRead !== undefined) {
        publishRead();
        continue;
      }
      const { type, data } = parse();
      if (publishOne !== undefined) publishOne(type, data);
      else pending.push(publisher.publish(principal, ref, type, data).then((r) => replies.push(r.receivers)));
    }
    await Promise.all(pending);
    replies.length = 0;
    events += PER_TURN;
    await new Promise((r) => setImmediate(r)); // the write path flushes here
  }
  const cpu = process.cpuUsage(cpu0);
  return ((cpu.user + cpu.system) * 1000) / events;
}

await round(500); // warm-up (JIT)
const results = [];
for (let r = 0; r < 7; r++) results.push(await round(1_000));
results.sort((a, b) => a - b);
console.log(
  `${build}: ${SUBS} subs, ${PER_TURN} publishes per turn: ` +
    `${results[0].toFixed(0)} ns (best) / ${results[3].toFixed(0)} ns (median) CPU per published event`,
);
