// @ts-check
// What Node itself costs for a fan-out case, beside Redis and the broker, in one run: a plain
// server that does only what no broker can skip (read pipelined PUBLISH, copy each payload into
// a frame, write the frames to each subscriber) and nothing a broker must add (no JSON
// validation, no ids, no store, no limits, no auth check). Its frames of one channel in one
// event-loop turn go into one buffer, and each subscriber gets that same buffer in one write per
// turn, so a subscriber costs nothing per event. Bench case 1, 2 or 3's load (bench/lib/fanout.js)
// runs against redis-server, `sandbox-events serve --store memory` from `buildDir` and the floor,
// alternated `runs` times; each server's CPU comes from /proc/<pid>/stat. Not part of
// `npm run bench` (docs/performance.md, "What Node itself costs").
//
//   node bench/micro/node-floor.mjs [buildDir=dist] [runs=3] [case=2] [measureMs=8000]
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

if (process.argv[2] === '--serve') serveFloor();
else await compare();

/** The floor server (a child process, so that its CPU is its own): RESP in, frames out. */
function serveFloor() {
  /** @typedef {{ subscribers: Set<import('node:net').Socket>, head: Buffer, frames: Buffer, used: number }} FloorChannel */
  /** @type {Map<string, FloorChannel>} */
  const channels = new Map();
  /** @type {Set<FloorChannel>} */
  const written = new Set();
  let flushing = false;
  const flush = () => {
    flushing = false;
    for (const channel of written) {
      const run = channel.frames.subarray(0, channel.used);
      for (const socket of channel.subscribers) socket.write(run);
      // The sockets hold `run` until it is written: the next turn's frames go to a new buffer.
      channel.frames = Buffer.allocUnsafe(Math.max(65_536, channel.used));
      channel.used = 0;
    }
    written.clear();
  };
  const CR = 13;
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    /** @type {Buffer | undefined} */
    let rest;
    socket.on('data', (chunk) => {
      const input = rest === undefined ? chunk : Buffer.concat([rest, chunk]);
      rest = undefined;
      /** @type {Buffer[]} */
      const replies = [];
      let at = 0;
      // Each command: *<n>\r\n then n times $<len>\r\n<bytes>\r\n; a command cut by the chunk's end waits.
      parse: while (at < input.length) {
        const start = at;
        let end = input.indexOf(CR, at);
        if (end < 0) {
          rest = input.subarray(start);
          break;
        }
        const count = Number(input.toString('latin1', at + 1, end));
        at = end + 2;
        /** @type {Buffer[]} */
        const args = [];
        for (let i = 0; i < count; i++) {
          end = input.indexOf(CR, at);
          const length = end < 0 ? 0 : Number(input.toString('latin1', at + 1, end));
          if (end < 0 || end + 2 + length + 2 > input.length) {
            rest = input.subarray(start);
            break parse;
          }
          at = end + 2;
          args.push(input.subarray(at, at + length));
          at += length + 2;
        }
        const name = args[0]?.toString('latin1').toUpperCase();
        if (name === 'PUBLISH' && args.length === 3) {
          const channel = channels.get(args[1].toString('latin1'));
          const payload = args[2];
          const receivers = channel?.subscribers.size ?? 0;
          if (channel !== undefined && receivers > 0) {
            const lengthLine = `$${payload.length}\r\n`;
            const need = channel.head.length + lengthLine.length + payload.length + 2;
            if (channel.used + need > channel.frames.length) {
              const grown = Buffer.allocUnsafe(Math.max(channel.frames.length * 2, channel.used + need));
              channel.frames.copy(grown, 0, 0, channel.used);
              channel.frames = grown;
            }
            channel.used += channel.head.copy(channel.frames, channel.used);
            channel.used += channel.frames.write(lengthLine, channel.used, 'latin1');
            channel.used += payload.copy(channel.frames, channel.used);
            channel.frames[channel.used++] = CR;
            channel.frames[channel.used++] = 10;
            written.add(channel);
            if (!flushing) {
              flushing = true;
              setImmediate(flush);
            }
          }
          replies.push(Buffer.from(`:${receivers}\r\n`));
        } else if (name === 'SUBSCRIBE') {
          for (let i = 1; i < args.length; i++) {
            const channelName = args[i].toString('latin1');
            let channel = channels.get(channelName);
            if (channel === undefined) {
              const head = Buffer.from(`*3\r\n$7\r\nmessage\r\n$${channelName.length}\r\n${channelName}\r\n`);
              channel = { subscribers: new Set(), head, frames: Buffer.allocUnsafe(65_536), used: 0 };
              channels.set(channelName, channel);
            }
            channel.subscribers.add(socket);
            replies.push(Buffer.from(`*3\r\n$9\r\nsubscribe\r\n$${channelName.length}\r\n${channelName}\r\n:${i}\r\n`));
          }
        } else if (name === 'AUTH') replies.push(Buffer.from('+OK\r\n'));
        else if (name === 'PING') replies.push(Buffer.from('+PONG\r\n'));
        else replies.push(Buffer.from(`-ERR the floor server does not know '${name}'\r\n`));
      }
      if (replies.length > 0) socket.write(replies.length === 1 ? replies[0] : Buffer.concat(replies));
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      for (const channel of channels.values()) channel.subscribers.delete(socket);
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    if (address !== null && typeof address === 'object') process.send?.({ port: address.port });
  });
}

/** Redis, the broker and the floor, alternated; medians of the server CPU per delivered message. */
async function compare() {
  const { buildModules } = await import('../lib/build.js');
  const { fanoutJob, TOPOLOGY } = await import('../lib/fanout.js');
  const { cleanUp, clockTicksPerSecond, runGenerator, startBroker, startRedis } = await import('../lib/servers.js');
  const [buildArg = 'dist', runsArg = '3', caseArg = '2', measureArg = '8000'] = process.argv.slice(2);
  const build = resolve(buildArg);
  const runs = Number(runsArg);
  const shape = TOPOLOGY[/** @type {1 | 2 | 3} */ (Number(caseArg))];
  if (shape === undefined) throw new Error('case must be 1, 2 or 3');
  const clkTck = clockTicksPerSecond();
  const timing = { clkTck, warmupMs: 2_000, measureMs: Number(measureArg) };
  const secret = randomBytes(32).toString('base64url');
  const { mintToken } = await buildModules(build).mint();
  const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
  const password = randomBytes(16).toString('hex');
  /** @type {import('node:child_process').ChildProcess | undefined} */
  let floor;
  process.on('exit', () => {
    floor?.kill('SIGKILL');
    cleanUp();
  });

  /** @type {Record<string, () => Promise<{ port: number, pid: number | undefined, auth: string, stop: () => Promise<void> | void }>>} */
  const targets = {
    redis: async () => ({ ...(await startRedis({ password })), auth: password }),
    broker: async () => ({ ...(await startBroker({ buildDir: build, store: 'memory', secret })), auth: token }),
    floor: async () => {
      const child = fork(fileURLToPath(import.meta.url), ['--serve'], { stdio: 'ignore' });
      floor = child;
      /** @type {number} */
      const port = await new Promise((done, fail) => {
        child.once('message', (message) => done(/** @type {{ port: number }} */ (message).port));
        child.once('exit', (code) => fail(new Error(`the floor server exited (${code})`)));
      });
      return { port, pid: child.pid, auth: 'floor', stop: () => void child.kill() };
    },
  };
  /** @type {Record<string, { cpu: number[], rate: number[] }>} */
  const figures = {};
  for (let run = 1; run <= runs; run++) {
    const line = [];
    for (const [name, start] of Object.entries(targets)) {
      const server = await start();
      try {
        const result = await runGenerator(fanoutJob(shape, { ...server, ...timing }), { timeoutMs: 120_000 });
        if (result.lost > 0 || result.dropped > 0)
          throw new Error(`${name}: lost ${result.lost}, dropped ${result.dropped}`);
        const cpu = ((result.srvBusy / 100) * 1e6) / result.delivered;
        figures[name] ??= { cpu: [], rate: [] };
        figures[name].cpu.push(cpu);
        figures[name].rate.push(result.delivered);
        line.push(`${name} ${cpu.toFixed(3)} µs/msg (${Math.round(result.delivered).toLocaleString('en')} msg/s)`);
      } finally {
        await server.stop();
      }
    }
    console.log(`run ${run}: ${line.join(', ')}`);
  }
  const median = (/** @type {number[]} */ values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const redisCpu = median(figures.redis.cpu);
  for (const [name, { cpu, rate }] of Object.entries(figures)) {
    console.log(
      `${name.padEnd(6)} server CPU per delivered message: median ${median(cpu).toFixed(3)} µs ` +
        `(${Math.min(...cpu).toFixed(3)}-${Math.max(...cpu).toFixed(3)}), ${(median(cpu) / redisCpu).toFixed(2)}x Redis; ` +
        `median ${Math.round(median(rate)).toLocaleString('en')} msg/s`,
    );
  }
  process.exit(0);
}
