// Micro-benchmark of the fan-out alone (Broker.fanOut -> WritePath -> one write per subscriber
// per turn), with sockets that swallow the bytes: the part of the delivered-message cost that
// lives in broker.ts, write-path.ts and encode.ts, measured in CPU time so that a busy machine
// skews it less than the end-to-end cases. Not part of `npm run bench`.
//
//   node bench/micro/fanout.js [buildDir=dist] [subscribers=10] [channels=1] [perTurn=20]
// (`npm run build` first; pass a copy of an older dist/ as buildDir to compare before/after.)
// @ts-check
import { buildModules } from '../lib/build.js';
import { nullSubscriberClass, outputBudget } from './null-subscriber.js';

const [buildArg = 'dist', subsArg = '10', channelsArg = '1', perTurnArg = '20'] = process.argv.slice(2);
const modules = buildModules(buildArg);
const build = modules.dir;
const { Broker } = await modules.broker();
const { WritePath } = await modules.writePath();

const SUBS = Number(subsArg);
const CHANNELS = Number(channelsArg);
const PER_TURN = Number(perTurnArg);

const Sub = nullSubscriberClass(WritePath, await outputBudget(modules));

const broker = new Broker();
const subs = [];
for (let c = 0; c < CHANNELS; c++) {
  for (let k = 0; k < SUBS; k++) {
    const sub = new Sub();
    subs.push(sub);
    broker.subscribe(sub, { key: `{1}sb-${c}`, workspaceId: 1, sandboxId: `sb-${c}`, displayName: `sb-${c}` });
  }
}

let seq = 0;
function event(c) {
  const id = { ms: 1732361234567, seq: seq++ };
  return {
    id,
    workspaceId: 1,
    sandboxId: `sb-${c}`,
    type: 'bench.tick',
    timestamp: 1732361234567,
    json: `{"id":"${id.ms}-${id.seq}","sandboxId":"sb-${c}","workspaceId":1,"type":"bench.tick","data":{"t":"0000000000000","p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"timestamp":1732361234567}`,
  };
}

const turn = () => new Promise((r) => setImmediate(r));

// A fixed set of events, reused: only the fan-out and the flush allocate while timed.
const EVENTS = Array.from({ length: 4096 }, (_, i) => event(i % CHANNELS));

async function round(turns) {
  const cpu0 = process.cpuUsage();
  let delivered = 0;
  let e = 0;
  for (let t = 0; t < turns; t++) {
    for (let i = 0; i < PER_TURN; i++) {
      delivered += broker.fanOut(EVENTS[e]);
      e = (e + 1) & 4095;
    }
    await turn(); // the write path flushes here
  }
  const cpu = process.cpuUsage(cpu0);
  return ((cpu.user + cpu.system) * 1000) / delivered; // ns per delivered message
}

await round(2_000); // warm-up (JIT)
const results = [];
for (let r = 0; r < 7; r++) results.push(await round(5_000));
results.sort((a, b) => a - b);
const writes = subs.reduce((n, s) => n + s.socket.writes, 0);
const bytes = subs.reduce((n, s) => n + s.socket.bytes, 0);
console.log(
  `${build}: ${SUBS} subs x ${CHANNELS} channels, ${PER_TURN} events per turn: ` +
    `${results[0].toFixed(0)} ns (best) / ${results[3].toFixed(0)} ns (median) CPU per delivered message; ` +
    `${(bytes / writes).toFixed(0)} bytes per socket write`,
);
