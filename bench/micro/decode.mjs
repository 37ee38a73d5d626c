// @ts-check
// Micro-benchmark of request decoding alone: the RequestDecoder of a build decodes pipelined
// `PUBLISH sb-1 <128-byte event>` commands (the bench's event), 200 per received chunk, in CPU
// nanoseconds per command (best of 9 rounds). No sockets, no dispatch. Not part of `npm run bench`.
//
//   node bench/micro/decode.mjs [buildDir=dist] [channels=1]
// `channels` > 1: the commands go round that many channels (`sb-100`, `sb-101`, ...), as a
// publisher writing to many sandboxes does, so no command repeats the channel of the one before.
// The decoder is made as a connection makes it (with `reuseCommands`, which a build before the
// eleventh round ignores), and each command is done with before the next is decoded.
// (`npm run build` first; pass a copy of an older dist/ as buildDir to compare before/after.)
import { buildModules } from '../lib/build.js';

const [buildArg = 'dist', channelsArg = '1'] = process.argv.slice(2);
const CHANNELS = Number(channelsArg);
const modules = buildModules(buildArg);
const { RequestDecoder } = await modules.requestDecoder();

const PER_CHUNK = 200;
const CHUNKS = 2_000;
const payload = `{"type":"bench.tick","data":{"t":"0000000000000","p":"${'x'.repeat(72)}"}}`;
const command = (channel) =>
  `*3\r\n$7\r\nPUBLISH\r\n$${channel.length}\r\n${channel}\r\n$${Buffer.byteLength(payload)}\r\n${payload}\r\n`;
const chunk = Buffer.from(
  Array.from({ length: PER_CHUNK }, (_, k) => command(CHANNELS === 1 ? 'sb-1' : `sb-${100 + (k % CHANNELS)}`)).join(''),
);
// The daemon's limits after AUTH (src/config.ts defaults).
const limits = {
  maxArgs: 1024,
  maxBulkBytes: 1024 * 1024,
  maxInlineBytes: 64 * 1024,
  maxRequestBytes: 2 * 1024 * 1024,
};
// As the daemon's connection makes it: PUBLISH's event is handed over as the bytes received
// (a build before the seventh round ignores the argument and decodes it as text).
const decoder = new RequestDecoder((name) => name === 'PUBLISH', { reuseCommands: true });

function round() {
  const cpu0 = process.cpuUsage();
  let commands = 0;
  for (let k = 0; k < CHUNKS; k++) {
    decoder.push(Buffer.from(chunk)); // a fresh chunk, as a socket read is
    while (decoder.next(limits) !== undefined) commands += 1;
  }
  const cpu = process.cpuUsage(cpu0);
  return ((cpu.user + cpu.system) * 1000) / commands;
}

round(); // warm-up (JIT)
let best = Number.POSITIVE_INFINITY;
for (let r = 0; r < 9; r++) best = Math.min(best, round());
console.log(`${modules.dir}: ${best.toFixed(0)} ns CPU per decoded PUBLISH (best of 9)`);
