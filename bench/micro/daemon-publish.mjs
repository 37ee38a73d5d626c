// @ts-check
// Server CPU per published event through the real daemon: `sandbox-events serve` (memory or
// SQLite store) from a build directory, 10 subscribers of one sandbox, one publisher pipelining
// PUBLISHes 200 at a time. The daemon's CPU comes from /proc/<pid>/stat, so the clients' own
// work and the machine's other jobs do not count. Not part of `npm run bench`.
//
//   node bench/micro/daemon-publish.mjs [buildDir=dist] [store=memory] [events=50000] [subscribers=10] [how=subscribe]
// (a copy of an older dist/ as buildDir compares before/after; it must resolve node_modules.)
// `how`: `subscribe` (SUBSCRIBE sb-1), `psubscribe` (PSUBSCRIBE sb-*: the shared pmessage
// frames) or `withcursor` (PRESUME sb-* $ WITHCURSOR: a frame per subscriber with its cursor).
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { buildModules } from '../lib/build.js';
import { cleanUp, clockTicksPerSecond, startBroker } from '../lib/servers.js';

const [buildArg = 'dist', storeArg = 'memory', eventsArg = '50000', subsArg = '10', how = 'subscribe'] =
  process.argv.slice(2);
/** @type {Record<string, string[]>} */
const SUBSCRIBE_COMMANDS = {
  subscribe: ['SUBSCRIBE', 'sb-1'],
  psubscribe: ['PSUBSCRIBE', 'sb-*'],
  withcursor: ['PRESUME', 'sb-*', '$', 'WITHCURSOR'],
};
const subscribeCommand = SUBSCRIBE_COMMANDS[how];
if (subscribeCommand === undefined) throw new Error(`how must be one of ${Object.keys(SUBSCRIBE_COMMANDS).join(', ')}`);
const build = resolve(buildArg);
const EVENTS = Number(eventsArg);
const SUBS = Number(subsArg);
const PIPELINE = 200;
const SECRET = 'daemon-publish-bench-secret-0123456789';
const { mintToken } = await buildModules(build).mint();
process.on('exit', cleanUp); // the daemon too when the bench stops early
const broker = await startBroker({ buildDir: build, store: storeArg, secret: SECRET, sqlitePath: undefined });
const { port } = broker;
const ticksPerSecond = clockTicksPerSecond();

/** RESP command bytes. */
const command = (/** @type {string[]} */ args) =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/** The daemon's CPU time so far (utime + stime), in µs. */
function cpuMicros() {
  const fields = readFileSync(`/proc/${broker.pid}/stat`, 'latin1').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / ticksPerSecond;
}

async function client(token) {
  const socket = connect(port, '127.0.0.1');
  await new Promise((done) => socket.once('connect', done));
  socket.setNoDelay(true);
  socket.write(command(['AUTH', token]));
  return socket;
}

const workspaceToken = await mintToken({ secret: SECRET, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
/** Resolves when every subscriber has seen the `bench.end` event. */
let subscribersDone = 0;
/** @type {(value?: unknown) => void} */
let allDone = () => {};
const subscribers = [];
/** Set once the figure is printed, when the bench closes its own sockets. */
let finished = false;
/**
 * A client the daemon cut off (a subscriber at its output limit, on an overloaded machine) never
 * sees `bench.end` or its replies: say so and stop, instead of waiting for good.
 */
function stopIfClosedEarly(/** @type {import('node:net').Socket} */ socket, /** @type {string} */ name) {
  socket.on('close', () => {
    if (finished) return;
    console.error(`${name} was disconnected by the daemon before the end (output limit?): no figure`);
    process.exit(1);
  });
}
for (let i = 0; i < SUBS; i++) {
  const socket = await client(workspaceToken);
  let tail = '';
  socket.on('data', (chunk) => {
    tail = (tail + chunk.toString('latin1')).slice(-256);
    if (tail.includes('bench.end')) {
      tail = '';
      if (++subscribersDone === SUBS) allDone();
    }
  });
  stopIfClosedEarly(socket, `subscriber ${i}`);
  socket.write(command(subscribeCommand));
  subscribers.push(socket);
}
const publisher = await client(workspaceToken);
stopIfClosedEarly(publisher, 'the publisher');
let replies = 0;
let repliesWanted = 1; // AUTH's
/** @type {(value?: unknown) => void} */
let onReplies = () => {};
publisher.on('data', (chunk) => {
  for (const byte of chunk) if (byte === 0x0a) replies++;
  if (replies >= repliesWanted) onReplies();
});
const payload = command(['PUBLISH', 'sb-1', `{"type":"bench.tick","data":{"p":"${'x'.repeat(90)}"}}`]);
const batch = payload.repeat(PIPELINE);

async function publishRound(events, last) {
  const done = new Promise((next) => {
    onReplies = next;
  });
  const ended = last
    ? new Promise((next) => {
        allDone = next;
      })
    : undefined;
  repliesWanted += events + (last ? 1 : 0);
  for (let sent = 0; sent < events; sent += PIPELINE) publisher.write(batch);
  if (last) publisher.write(command(['PUBLISH', 'sb-1', '{"type":"bench.end"}']));
  await done;
  await ended;
}

await new Promise((r) => setTimeout(r, 300)); // subscriptions confirmed
await publishRound(10_000, false); // warm-up (JIT)
const cpu0 = cpuMicros();
await publishRound(EVENTS, true);
const cpu = cpuMicros() - cpu0;
console.log(
  `${build} ${storeArg} ${how}: ${SUBS} subscribers, ${(cpu / EVENTS).toFixed(2)} µs server CPU per published event, ` +
    `${(cpu / (EVENTS * SUBS)).toFixed(3)} µs per delivered message`,
);
finished = true;
for (const socket of [...subscribers, publisher]) socket.destroy();
await broker.stop();
