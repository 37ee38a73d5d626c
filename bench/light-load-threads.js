// @ts-check
// Case 4b's load (1,000 publishes/s in the case-1 layout: 100 sandboxes x 10 subscribers, 10
// publishers, 128-byte events, open loop) against one broker, with the broker's CPU split by
// thread: server CPU per delivered message, the event loop's part, and each thread's share of
// the process's CPU over the measured window (/proc/<pid>/task/<tid>/stat). The event loop is
// the thread whose id is the pid; V8's platform threads start with the process, so in a SQLite
// broker the thread started last is the WAL checkpoint worker (src/store/sqlite/checkpointer.ts).
// With --wal, the size of the SQLite WAL file every 250 ms (docs/performance.md, "Seventh round:
// SQLite at light load"). Not run by tests.
//
//   npm run build && node bench/light-load-threads.js [--build dist] [--store sqlite|memory]
//       [--seconds 8] [--wal]
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModules } from './lib/build.js';
import { cleanUp, clockTicksPerSecond, runGenerator, startBroker } from './lib/servers.js';
import { option, flag } from './lib/args.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const buildDir = resolve(root, option('--build', 'dist'));
const store = option('--store', 'sqlite');
const seconds = Number(option('--seconds', '8'));
const traceWal = flag('--wal');
const WARMUP_MS = 1_000;

process.on('exit', cleanUp);
const { mintToken } = await buildModules(buildDir).mint();
const secret = randomBytes(32).toString('base64url');
const auth = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
const server = await startBroker({ buildDir, store, secret });
const clkTck = clockTicksPerSecond();

/** utime + stime of every thread of the broker, in clock ticks, by thread id. */
function threadTicks() {
  /** @type {Map<number, number>} */
  const ticks = new Map();
  for (const tid of readdirSync(`/proc/${server.pid}/task`)) {
    try {
      const fields = readFileSync(`/proc/${server.pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ');
      ticks.set(Number(tid), Number(fields[11]) + Number(fields[12]));
    } catch {
      // the thread ended meanwhile
    }
  }
  return ticks;
}

/** @type {number[]} */
const walKiB = [];
const walFile = join(server.dir, 'events.db-wal');
const walTimer = traceWal
  ? setInterval(() => {
      try {
        walKiB.push(Math.round(statSync(walFile).size / 1024));
      } catch {
        walKiB.push(0);
      }
    }, 250)
  : undefined;

// The generator's window starts after its connections are up and WARMUP_MS have passed; the
// thread counts start at WARMUP_MS and end with the job, so they cover about the same window.
/** @type {Map<number, number>} */
let before = new Map();
setTimeout(() => {
  before = threadTicks();
}, WARMUP_MS);
const result = await runGenerator(
  {
    kind: 'latency',
    port: server.port,
    pid: server.pid,
    clkTck,
    auth,
    dialect: 'resp',
    payloadSize: 128,
    rate: 1_000,
    warmupMs: WARMUP_MS,
    measureMs: seconds * 1000,
    drainMs: 3_000,
    channels: Array.from({ length: 100 }, (_, i) => `sb-${i}`),
    subsPerChannel: 10,
    publishers: 10,
  },
  { timeoutMs: 120_000 },
);
const after = threadTicks();
clearInterval(walTimer);
await server.stop();

const perMessage = (busyPercent) => ((busyPercent / 100) * 1e6) / result.delivered;
let total = 0;
for (const [tid, ticks] of after) total += ticks - (before.get(tid) ?? 0);
const shares = [...after]
  .map(([tid, ticks]) => ({ tid, share: total > 0 ? (ticks - (before.get(tid) ?? 0)) / total : 0 }))
  .filter(({ share }) => share > 0);
console.log(
  `${store}: server CPU per delivered message ${perMessage(result.srvBusy).toFixed(2)} µs ` +
    `(event loop ${perMessage(result.srvMainBusy).toFixed(2)}), p50 ${result.p50.toFixed(2)} ms, ` +
    `p99 ${result.p99.toFixed(2)} ms, ${Math.round(result.delivered)} msg/s`,
);
console.log(
  `threads, share of the process's CPU: ${shares
    .map(({ tid, share }) => `${tid === server.pid ? 'event loop' : tid} ${(share * 100).toFixed(1)} %`)
    .join(', ')}`,
);
if (traceWal) console.log(`WAL size every 250 ms (KiB): ${walKiB.join(' ')}`);
