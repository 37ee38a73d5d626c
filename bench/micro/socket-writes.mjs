// @ts-check
// What one delivery costs when every event goes to a different subscriber (case 3 of
// `npm run bench`): one socket write per subscriber per event-loop turn. This process holds
// `sockets` loopback connections to a reader child (which takes and drops every byte) and, in
// event-loop turns about a millisecond apart, writes a delivery-sized frame to each of the next
// `perTurn` subscribers, either straight with socket.write (mode `bare`: Node's floor, its
// stream machinery and the write syscall) or through the broker's WritePath from `buildDir` (mode `path`: that floor plus
// our queueing, output-limit bookkeeping and per-turn flush list). It prints this process's CPU
// time per write (process.cpuUsage) and the write syscalls made per write (/proc/self/io
// `syscw`). Not part of `npm run bench`.
//
//   node bench/micro/socket-writes.mjs [mode=path] [buildDir=dist] [sockets=5000] [perTurn=25] [seconds=8] [frames=1]
//
// `frames`: frames queued per subscriber per turn (the case had about 3.7 per write). Alternate
// modes and builds run after run: the machine's load moves the figures more than most changes.
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { buildModules } from '../lib/build.js';
import { outputBudget } from './null-subscriber.js';

if (process.argv[2] === '--reader') {
  // The reader: connects, then takes and drops every byte.
  const [port, count] = process.argv.slice(3).map(Number);
  // A hundred at a time: a burst of thousands of SYNs overflows the accept backlog.
  for (let i = 0; i < count; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, count - i) }, () => {
        const socket = net.connect(port, '127.0.0.1');
        socket.on('data', () => {});
        socket.on('error', () => {});
        return new Promise((resolve) => socket.once('connect', resolve));
      }),
    );
  }
  process.send?.('connected');
  process.on('disconnect', () => process.exit(0));
} else {
  await main();
}

async function main() {
  const [mode = 'path', buildArg = 'dist', socketsArg = '5000', perTurnArg = '25', secondsArg = '8', framesArg = '1'] =
    process.argv.slice(2);
  if (mode !== 'path' && mode !== 'bare') throw new Error(`mode is path or bare, not ${mode}`);
  const sockets = Number(socketsArg);
  const perTurn = Number(perTurnArg);
  const seconds = Number(secondsArg);
  const framesPerWrite = Number(framesArg);

  const modules = buildModules(buildArg);
  const { WritePath } = await modules.writePath();
  const budget = await outputBudget(modules);

  /** @type {net.Socket[]} */
  const accepted = [];
  const server = net.createServer({ noDelay: true }, (socket) => {
    accepted.push(socket);
  });
  await new Promise((resolve) =>
    server.listen({ port: 0, host: '127.0.0.1', backlog: 1024 }, () => resolve(undefined)),
  );
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  const reader = fork(fileURLToPath(import.meta.url), ['--reader', String(address.port), String(sockets)]);
  await new Promise((resolve) => reader.once('message', resolve));
  while (accepted.length < sockets) await new Promise((resolve) => setImmediate(resolve));

  // Frames as the broker makes them: views of a slab, `*3 message <sandbox> <event json>`.
  const json = `{"id":"1732361234567-0","type":"process.stdout","sandbox":"sb-00000","ts":1732361234567,"data":{"line":"${'x'.repeat(60)}"}}`;
  const frameOf = (/** @type {number} */ i) => {
    const name = `sb-${String(i).padStart(5, '0')}`;
    return `*3\r\n$7\r\nmessage\r\n$${name.length}\r\n${name}\r\n$${json.length}\r\n${json}\r\n`;
  };
  const slab = Buffer.from(Array.from({ length: sockets }, (_, i) => frameOf(i).repeat(framesPerWrite)).join(''));
  const frameBytes = Buffer.byteLength(frameOf(0));
  /** @type {Buffer[][]} each subscriber's frames of a turn, adjacent in the slab (one run) */
  const frames = Array.from({ length: sockets }, (_, i) =>
    Array.from({ length: framesPerWrite }, (_, k) =>
      slab.subarray((i * framesPerWrite + k) * frameBytes, (i * framesPerWrite + k + 1) * frameBytes),
    ),
  );
  const whole = frames.map((list) =>
    slab.subarray(list[0]?.byteOffset ?? 0, (list.at(-1)?.byteOffset ?? 0) + frameBytes),
  );

  const paths =
    mode === 'path'
      ? accepted.map(
          (socket) =>
            new WritePath(
              socket,
              () => 32 * 1024 * 1024,
              () => {
                throw new Error('over the output limit');
              },
              10_000,
              // @ts-expect-error undefined for a build from before the output budget (null-subscriber.js)
              budget,
            ),
        )
      : [];

  let next = 0;
  let writes = 0;
  let refused = 0;
  const writeOne = () => {
    const i = next;
    next = next + 1 === sockets ? 0 : next + 1;
    if (mode === 'path') {
      const path = paths[i];
      for (const frame of frames[i] ?? []) path?.write(frame);
    } else if (!accepted[i]?.write(whole[i] ?? slab)) refused += 1;
    writes += 1;
  };

  const syscw = () => Number(/^syscw: (\d+)$/m.exec(readFileSync('/proc/self/io', 'latin1'))?.[1] ?? 0);
  // A turn about every millisecond (a timer), each writing to the next `perTurn` subscribers:
  // no catching up after a late turn, which would give a subscriber two frames in one turn.
  const run = (/** @type {number} */ ms) =>
    new Promise((resolve) => {
      const end = performance.now() + ms;
      const tick = () => {
        if (performance.now() >= end) {
          resolve(undefined);
          return;
        }
        for (let k = 0; k < perTurn; k++) writeOne();
        setTimeout(tick, 1);
      };
      tick();
    });

  await run(1000); // warm-up
  const writes0 = writes;
  const sys0 = syscw();
  const cpu0 = process.cpuUsage();
  await run(seconds * 1000);
  const cpu = process.cpuUsage(cpu0);
  const made = writes - writes0;
  const calls = syscw() - sys0;
  console.log(
    `${mode} ${buildArg}: ${sockets} sockets, ${perTurn} writes per turn (${Math.round(made / seconds)} per s) of ${framesPerWrite} x ${frameBytes} B: ` +
      `${((cpu.user + cpu.system) / made).toFixed(2)} µs CPU per write (user ${(cpu.user / made).toFixed(2)}, system ${(cpu.system / made).toFixed(2)}), ` +
      `${(calls / made).toFixed(2)} write syscalls per write, refused ${refused}; ` +
      `bytes written ${accepted.reduce((n, socket) => n + socket.bytesWritten, 0)} of ${writes * framesPerWrite * frameBytes} queued`,
  );
  reader.kill();
  for (const socket of accepted) socket.destroy();
  server.close();
}
