#!/usr/bin/env node
// Throws random and mutated command streams at a running daemon for a set time and reports
// crashes, hangs and memory growth (docs/security.md, "Fuzzing"). Not part of CI's time budget:
//
//   npm run fuzz                 # 60 s
//   npm run fuzz -- --seconds 600
//
// The daemon is the real one (bin/sandbox-events.js, built by `npm run build`), on 127.0.0.1
// and a free port, with the memory store. A canary client PINGs every 250 ms: an answer slower
// than 2 s is a hang. Inputs in flight when the daemon dies are written to fuzz-crash-*.bin.
import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const seconds = Number(args[args.indexOf('--seconds') + 1] ?? 60) || 60;
const concurrency = Number(args[args.indexOf('--concurrency') + 1] ?? 16) || 16;
const secret = randomBytes(24).toString('base64url');

const { mintToken } = await import(path.join(root, 'dist/auth/mint.js'));
const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: seconds + 3600 });

// A capped heap turns a leak into a crash the run reports, instead of RSS that merely looks high
// because V8 had no reason to collect yet.
const daemon = spawn(
  process.execPath,
  [
    '--max-old-space-size=192',
    path.join(root, 'bin/sandbox-events.js'),
    'serve',
    '--port',
    '0',
    '--http-port',
    '0',
    '--store',
    'memory',
    '--jwt-secret',
    secret,
    '--log-level',
    'info',
    '--max-clients',
    '2000',
  ],
  {
    stdio: ['ignore', 'pipe', 'inherit'],
  },
);
const port = await new Promise((resolve, reject) => {
  createInterface({ input: daemon.stdout }).on('line', (line) => {
    try {
      const record = JSON.parse(line);
      if (record.msg === 'sandbox-events listening') resolve(record.port);
    } catch {}
  });
  daemon.once('exit', (code) => reject(new Error(`daemon exited at start: ${code}`)));
});

const rss = () => {
  try {
    const status = readFileSync(`/proc/${daemon.pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
};

// ---- inputs -------------------------------------------------------------------------------
const resp = (...words) => `*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join('')}`;
const pick = (items) => items[randomInt(items.length)];
const COMMANDS = [
  'SUBSCRIBE',
  'UNSUBSCRIBE',
  'PSUBSCRIBE',
  'PUNSUBSCRIBE',
  'PUBLISH',
  'PING',
  'PUBSUB',
  'HISTORY',
  'RESUME',
  'HELLO',
  'CLIENT',
  'INFO',
  'COMMAND',
  'SELECT',
  'RESET',
  'AUTH',
  'QUIT',
  'GET',
  'FOO',
];
const WORDS = [
  'sb-1',
  'sb-*',
  '*',
  '?',
  '[a-',
  '{1}sb',
  '{2}x',
  '0',
  '$',
  '-1',
  '3',
  '2',
  'CHANNELS',
  'NUMSUB',
  'DOCS',
  'LIMIT',
  'NEWEST',
  'AFTER',
  'TYPE',
  'SETNAME',
  'AUTH',
  '1-0',
  '9999999999999-0',
  '{"type":"t","data":{}}',
  '{"type":"',
  '{}',
  '[]',
  'é€😀',
  '',
];

function validCommand() {
  const name = pick(COMMANDS);
  const count = randomInt(0, 5);
  const words = [
    name,
    ...Array.from({ length: count }, () => (randomInt(10) === 0 ? 'x'.repeat(randomInt(70_000)) : pick(WORDS))),
  ];
  return randomInt(4) === 0
    ? `${words.map((w) => (/[\s"']/.test(w) || w === '' ? `"${w}"` : w)).join(' ')}\r\n`
    : resp(...words);
}

function mutate(buffer) {
  const bytes = Buffer.from(buffer);
  const edits = randomInt(1, 6);
  let out = bytes;
  for (let i = 0; i < edits; i += 1) {
    const at = randomInt(Math.max(1, out.length));
    switch (randomInt(6)) {
      case 0: // flip a byte
        out[at] = randomInt(256);
        break;
      case 1: // delete a run
        out = Buffer.concat([out.subarray(0, at), out.subarray(at + randomInt(1, 16))]);
        break;
      case 2: // insert a header-like token
        out = Buffer.concat([
          out.subarray(0, at),
          Buffer.from(
            pick([
              '*',
              '$',
              '\r\n',
              '*3000000000\r\n',
              '$-10\r\n',
              '*1\r\n',
              '"',
              "'",
              '\x00',
              `$${randomInt(2 ** 31)}\r\n`,
            ]),
          ),
          out.subarray(at),
        ]);
        break;
      case 3: // duplicate a slice
        out = Buffer.concat([out, out.subarray(at, at + randomInt(1, 64))]);
        break;
      case 4: // nesting
        out = Buffer.concat([Buffer.from('*1\r\n'.repeat(randomInt(1, 2000))), out]);
        break;
      default: // random bytes
        out = Buffer.concat([out, randomBytes(randomInt(1, 256))]);
    }
  }
  return out;
}

function input() {
  const preamble = randomInt(3) === 0 ? '' : randomInt(2) ? resp('AUTH', token) : `AUTH ${token}\r\n`;
  const body = Array.from({ length: randomInt(1, 20) }, validCommand).join('');
  switch (randomInt(4)) {
    case 0:
      return Buffer.concat([Buffer.from(preamble), randomBytes(randomInt(1, 4096))]);
    case 1:
      return Buffer.from(preamble + body);
    default:
      return Buffer.concat([Buffer.from(preamble), mutate(Buffer.from(body))]);
  }
}

// ---- the run --------------------------------------------------------------------------------
const inFlight = new Set();
const stats = { sessions: 0, bytes: 0, closedByServer: 0, errorsReceived: 0, hangs: 0, maxPingMs: 0, crashed: false };
const rssSamples = [];
let stopping = false;

daemon.on('exit', (code, signal) => {
  if (stopping) return;
  stats.crashed = true;
  const file = path.join(root, `fuzz-crash-${Date.now()}.bin`);
  writeFileSync(file, Buffer.concat([...inFlight]));
  console.error(`daemon died (code ${code}, signal ${signal}); inputs in flight saved to ${file}`);
});

function session() {
  return new Promise((resolve) => {
    const data = input();
    inFlight.add(data);
    const socket = net.connect({ port, host: '127.0.0.1' });
    let received = '';
    const done = () => {
      inFlight.delete(data);
      socket.destroy();
      resolve();
    };
    socket.setTimeout(500, done);
    socket.on('error', done);
    socket.on('close', () => {
      stats.closedByServer += 1;
      done();
    });
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      if (received.length > 1 << 20) received = received.slice(-1024);
    });
    socket.on('connect', () => {
      // Random chunking: one write, or many small ones.
      let at = 0;
      while (at < data.length) {
        const size = randomInt(2) ? data.length : randomInt(1, 64);
        socket.write(data.subarray(at, at + size));
        at += size;
      }
      stats.bytes += data.length;
      setTimeout(
        () => {
          stats.errorsReceived += (received.match(/\r\n-/g) ?? []).length + (received.startsWith('-') ? 1 : 0);
          done();
        },
        randomInt(20, 200),
      );
    });
    stats.sessions += 1;
  });
}

async function worker(deadline) {
  while (Date.now() < deadline && !stats.crashed) await session();
}

const canary = net.connect({ port, host: '127.0.0.1' });
canary.write(resp('AUTH', token));
let pingSentAt = 0;
let canaryBuffer = '';
canary.on('data', (chunk) => {
  canaryBuffer += chunk.toString();
  if (canaryBuffer.includes('+PONG\r\n')) {
    canaryBuffer = '';
    stats.maxPingMs = Math.max(stats.maxPingMs, Date.now() - pingSentAt);
    pingSentAt = 0;
  }
});
canary.on('error', () => {});
const canaryTimer = setInterval(() => {
  if (pingSentAt !== 0 && Date.now() - pingSentAt > 2000) {
    stats.hangs += 1;
    console.error(`hang: no PONG for ${Date.now() - pingSentAt} ms`);
  }
  if (pingSentAt === 0) {
    pingSentAt = Date.now();
    canary.write(resp('PING'));
  }
}, 250);
const rssTimer = setInterval(() => rssSamples.push(rss()), 1000);

const started = Date.now();
const deadline = started + seconds * 1000;
const progress = setInterval(() => {
  console.log(
    `${Math.round((Date.now() - started) / 1000)} s: ${stats.sessions} sessions, ${(stats.bytes / 1e6).toFixed(1)} MB, rss ${(rss() / 1e6).toFixed(1)} MB, max ping ${stats.maxPingMs} ms`,
  );
}, 10_000);
rssSamples.push(rss());
await Promise.all(Array.from({ length: concurrency }, () => worker(deadline)));
clearInterval(progress);
clearInterval(canaryTimer);
clearInterval(rssTimer);
rssSamples.push(rss());
stopping = true;
canary.destroy();
daemon.kill('SIGTERM');

const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const third = Math.max(1, Math.floor(rssSamples.length / 3));
const early = Math.max(...rssSamples.slice(0, third));
const late = Math.max(...rssSamples.slice(-third));
console.log('\nfuzz summary');
console.log(`  duration            ${seconds} s, ${concurrency} concurrent sessions`);
console.log(`  sessions            ${stats.sessions} (${mb(stats.bytes)} sent)`);
console.log(`  closed by server    ${stats.closedByServer}`);
console.log(`  error replies seen  ${stats.errorsReceived}`);
console.log(`  crashes             ${stats.crashed ? 1 : 0}`);
console.log(`  hangs (PING > 2 s)  ${stats.hangs}; slowest PING ${stats.maxPingMs} ms`);
console.log(
  `  daemon RSS          start ${mb(rssSamples[0])}, peak ${mb(Math.max(...rssSamples))}, end ${mb(rssSamples.at(-1))}; peak of first third ${mb(early)}, of last third ${mb(late)}`,
);
process.exit(stats.crashed || stats.hangs > 0 ? 1 : 0);
