// Per-sandbox cost beside redis-server (docs/performance.md, "Per-sandbox cost"). Usage:
//
//   npm run build && node bench/sandboxes.js            sizes 100,10000,100000; memory and sqlite; 3 rounds
//   node bench/sandboxes.js --sizes 100,100000 --stores memory --rounds 3 --messages 200000
//   node bench/sandboxes.js --no-history                 leave out the HISTORY of 64 KiB events
//   node bench/sandboxes.js --build <dir>                the broker compiled in <dir> (A/B runs)
//   node bench/sandboxes.js --profile --no-redis ...      the broker under --cpu-prof (.bench-out/prof;
//                                                         node bench/profile-summary.js <file>)
//
// For each number of sandboxes N and each server (redis-server, the broker with each store, all
// started here with default settings on 127.0.0.1), a fresh server gets 100 subscriber
// connections holding N/100 SUBSCRIBEs each (one subscriber per sandbox: 100,000 sockets do not
// fit this machine, so a connection holds many subscriptions, in Redis as in the broker):
//
// - memory per subscribed sandbox: the server's memory after the subscriptions, minus before,
//   over N; then again after `--events` events were published to every sandbox (the broker keeps
//   them; Redis's pub/sub keeps nothing, so Redis is also measured keeping the same events in a
//   stream per sandbox, XADD, its nearest equivalent). The broker runs with --expose-gc and a
//   preloaded probe (bench/lib/gc-probe.cjs) that collects garbage before each reading, so its
//   figure is what live objects hold (V8 heap + external) as well as RSS; Redis's is VmRSS and
//   INFO used_memory.
// - server CPU per delivered message: `--messages` PUBLISHes of a 128-byte event spread evenly
//   over the N sandboxes (a stride through them, 1,000 in flight), utime + stime of the server
//   (/proc/<pid>/stat) from the first publish until the last message arrived, over the messages
//   delivered; `--rounds` windows, median and range.
//
// Then HISTORY of 64 KiB events: 100 events of 63 KiB in one sandbox, `HISTORY <sb> LIMIT 100`
// (Redis: XRANGE of the same payloads, one field each) `--history-calls` times one at a time:
// server CPU per call and reply bytes per server CPU second (and per wall second, noisy here).
//
// The machine is shared: every figure is CPU time or memory, never a rate over wall time.
// Everything started here is stopped, and its temp dir removed, at the end, on an error and on
// Ctrl-C.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModules } from './lib/build.js';
import { command, payload, ReplyScanner } from './lib/resp.js';
import { cleanUp, clockTicksPerSecond, ensureFileLimit, rssBytes, startBroker, startRedis } from './lib/servers.js';
import { option, flag } from './lib/args.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
if (flag('--help')) {
  console.log(
    readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(0, 33)
      .join('\n'),
  );
  process.exit(0);
}
const sizes = option('--sizes', '100,10000,100000').split(',').map(Number);
const stores = option('--stores', 'memory,sqlite').split(',');
const rounds = Number(option('--rounds', '3'));
const messages = Number(option('--messages', '200000'));
const eventsEach = Number(option('--events', '4'));
const connections = Number(option('--connections', '100'));
const historyCalls = Number(option('--history-calls', '30'));
const withHistory = !flag('--no-history');
const withRedis = !flag('--no-redis');
const profileDir = flag('--profile') ? join(root, '.bench-out', 'prof') : undefined;
const buildDir = resolve(root, option('--build', 'dist'));
const WINDOW = 1_000;
const BATCH = 200;
const CLK_TCK = clockTicksPerSecond();

process.on('exit', cleanUp);
process.on('SIGINT', () => process.exit(130));

const log = (text) => process.stderr.write(`${text}\n`);

/** utime + stime of a process in seconds (/proc/<pid>/stat fields 14 and 15). */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** A raw connection counting complete replies (and messages) without building values. */
class Conn {
  constructor(port) {
    this.scanner = new ReplyScanner();
    this.socket = net.connect({ host: '127.0.0.1', port });
    this.socket.setNoDelay(true);
    this.waiters = [];
    this.bytes = 0;
    this.closed = false;
    this.socket.on('data', (chunk) => {
      this.bytes += chunk.length;
      this.scanner.feed(chunk, 0, chunk.length, 0);
      this.onData?.();
      this.check();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.check();
    });
    this.socket.on('error', () => {});
  }

  /** Resolves once `frames` replies in all arrived (rejects on a close or an error reply). */
  until(frames) {
    return new Promise((resolve, reject) => {
      this.waiters.push({ frames, resolve, reject });
      this.check();
    });
  }

  check() {
    const error = this.scanner.errors > 0 ? new Error(`error reply: ${this.scanner.firstError}`) : undefined;
    this.waiters = this.waiters.filter((waiter) => {
      if (error !== undefined) waiter.reject(error);
      else if (this.scanner.frames >= waiter.frames) waiter.resolve();
      else if (this.closed) waiter.reject(new Error('connection closed'));
      else return true;
      return false;
    });
  }

  send(buffer) {
    return this.socket.write(buffer);
  }

  close() {
    this.socket.destroy();
  }
}

/** A command whose last argument is bytes (an event payload), the others text. */
function commandWithBody(args, body) {
  const head = [`*${args.length + 1}\r\n`];
  for (const arg of args) head.push(`$${Buffer.byteLength(arg)}\r\n${arg}\r\n`);
  head.push(`$${body.length}\r\n`);
  return Buffer.concat([Buffer.from(head.join('')), body, Buffer.from('\r\n')]);
}

/**
 * Sends `total` commands built by `build(i)` with at most WINDOW replies outstanding; resolves
 * once every reply arrived.
 */
function pipeline(conn, total, build) {
  return new Promise((resolve, reject) => {
    const base = conn.scanner.frames;
    let sent = 0;
    const pump = () => {
      if (conn.scanner.errors > 0) {
        conn.onData = undefined;
        reject(new Error(`error reply: ${conn.scanner.firstError}`));
        return;
      }
      const done = conn.scanner.frames - base;
      if (done >= total) {
        conn.onData = undefined;
        resolve();
        return;
      }
      while (sent < total && sent - done <= WINDOW - BATCH) {
        const parts = [];
        const end = Math.min(total, sent + BATCH);
        for (; sent < end; sent++) parts.push(build(sent));
        conn.send(Buffer.concat(parts));
      }
    };
    conn.onData = pump;
    pump();
  });
}

/** A stride through 0..n-1 that visits every sandbox once per n steps, not in id order. */
function spread(n) {
  let stride = Math.floor(n * 0.618) | 1;
  const gcd = (a, b) => (b === 0 ? a : gcd(b, a % b));
  while (gcd(stride, n) !== 1) stride += 2;
  return (i) => (i * stride) % n;
}

/** The broker's memory after a full collection (bench/lib/gc-probe.cjs), or Redis's. */
async function memory(server) {
  if (server.name === 'redis') {
    const info = await server.info('memory');
    return { rss: rssBytes(server.pid), live: Number(/used_memory:(\d+)/.exec(info)?.[1]) };
  }
  const reading = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no gc-probe line from the broker')), 20_000);
    server.log.onLine = (line) => {
      if (!line.includes('"gc-probe"')) return;
      clearTimeout(timer);
      server.log.onLine = undefined;
      const probe = JSON.parse(line);
      resolve({ rss: probe.rss, live: probe.heapUsed + probe.external });
    };
  });
  process.kill(server.pid, 'SIGUSR2');
  return reading;
}

/** Waits a moment for the server to finish what it queued (frees, flushes). */
const settle = (ms = 1_500) => new Promise((resolve) => setTimeout(resolve, ms));

async function sizeRun(target, n, event) {
  const server = await target.start();
  const conns = [];
  try {
    const name = (i) => `sb-${i}`;
    const publisher = new Conn(server.port);
    conns.push(publisher);
    publisher.send(command('AUTH', target.auth));
    await publisher.until(1);
    const subscribers = [];
    for (let c = 0; c < connections; c++) {
      const conn = new Conn(server.port);
      conn.send(command('AUTH', target.auth));
      conns.push(conn);
      subscribers.push(conn);
    }
    await Promise.all(subscribers.map((conn) => conn.until(1)));
    await settle();
    const before = await memory(server);

    // SUBSCRIBE: sandbox i on connection i % connections, up to 100 names per command; the
    // first half, a reading, then the second half and another reading. The second half's cost
    // is the marginal cost of a subscribed sandbox: what the first half made grow once (the
    // collector's young generation, buffers of the connections) is not in it.
    const names = subscribers.map(() => []);
    for (let i = 0; i < n; i++) names[i % connections].push(i);
    const firstHalf = Math.floor(n / 2);
    const subscribeHalf = (second) =>
      Promise.all(
        subscribers.map((conn, c) => {
          const part = names[c].filter((i) => i >= firstHalf === second).map(name);
          for (let at = 0; at < part.length; at += 100) conn.send(command('SUBSCRIBE', ...part.slice(at, at + 100)));
          conn.subscribed = (conn.subscribed ?? 1) + part.length;
          return conn.until(conn.subscribed);
        }),
      );
    await subscribeHalf(false);
    await settle();
    const halfSubscribed = await memory(server);
    await subscribeHalf(true);
    await settle();
    const subscribed = await memory(server);

    const delivered = () => subscribers.reduce((sum, conn) => sum + conn.scanner.frames - conn.subscribed, 0);
    const allDelivered = (count) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${delivered()} of ${count} messages arrived`)), 120_000);
        const check = () => {
          if (delivered() < count) return;
          clearTimeout(timer);
          for (const conn of subscribers) conn.onData = undefined;
          resolve();
        };
        for (const conn of subscribers) conn.onData = check;
        check();
      });

    // A few events in every sandbox.
    const order = spread(n);
    const publish = (i) => commandWithBody(['PUBLISH', name(order(i % n))], event);
    await pipeline(publisher, n * eventsEach, publish);
    await allDelivered(n * eventsEach);
    let withEvents;
    if (server.name === 'redis') {
      // Pub/sub keeps nothing: the same events kept in a stream per sandbox, as the broker keeps them.
      const xadd = (i) => commandWithBody(['XADD', name(order(i % n)), '*', 'e'], event);
      await settle();
      const pubsubOnly = await memory(server);
      await pipeline(publisher, n * eventsEach, xadd);
      await settle();
      withEvents = await memory(server);
      withEvents.pubsubOnly = pubsubOnly;
    } else {
      await settle();
      withEvents = await memory(server);
    }

    // CPU per delivered message.
    const cpu = [];
    let published = n * eventsEach;
    for (let round = 0; round < rounds; round++) {
      const from = published;
      const cpu0 = cpuSeconds(server.pid);
      const got0 = delivered();
      await pipeline(publisher, messages, (i) => publish(from + i));
      await allDelivered(published + messages);
      const cpu1 = cpuSeconds(server.pid);
      published += messages;
      cpu.push(((cpu1 - cpu0) / (delivered() - got0)) * 1e6);
    }
    const perSandbox = (m) => ({ rss: (m.rss - before.rss) / n, live: (m.live - before.live) / n });
    return {
      n,
      subscribed: perSandbox(subscribed),
      marginal: {
        rss: (subscribed.rss - halfSubscribed.rss) / (n - firstHalf),
        live: (subscribed.live - halfSubscribed.live) / (n - firstHalf),
      },
      withEvents: perSandbox(withEvents),
      pubsubOnlyWithEvents: withEvents.pubsubOnly ? perSandbox(withEvents.pubsubOnly) : undefined,
      cpuPerMessageUs: cpu,
      finalRss: rssBytes(server.pid),
    };
  } finally {
    for (const conn of conns) conn.close();
    await server.stop();
  }
}

async function historyRun(target) {
  const server = await target.start();
  const conn = new Conn(server.port);
  try {
    conn.send(command('AUTH', target.auth));
    await conn.until(1);
    const big = payload(63 * 1024).bytes;
    const count = 100;
    if (server.name === 'redis') {
      const xadd = commandWithBody(['XADD', 'big', '*', 'e'], big);
      await pipeline(conn, count, () => xadd);
    } else {
      const publish = commandWithBody(['PUBLISH', 'big'], big);
      await pipeline(conn, count, () => publish);
    }
    const query =
      server.name === 'redis'
        ? command('XRANGE', 'big', '-', '+', 'COUNT', count)
        : command('HISTORY', 'big', 'LIMIT', count);
    // One call first: its reply size, and a warm server.
    let frames = conn.scanner.frames;
    let bytes0 = conn.bytes;
    conn.send(query);
    await conn.until(++frames);
    const replyBytes = conn.bytes - bytes0;
    const cpu0 = cpuSeconds(server.pid);
    const t0 = performance.now();
    bytes0 = conn.bytes;
    for (let i = 0; i < historyCalls; i++) {
      conn.send(query);
      await conn.until(++frames);
    }
    const wall = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(server.pid) - cpu0;
    const bytes = conn.bytes - bytes0;
    return {
      replyBytes,
      cpuPerCallMs: (cpu / historyCalls) * 1000,
      bytesPerCpuSecond: bytes / cpu,
      bytesPerSecond: bytes / wall,
    };
  } finally {
    conn.close();
    await server.stop();
  }
}

const fmt = (value, digits = 0) =>
  value === undefined || Number.isNaN(value)
    ? '—'
    : value.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const range = (values, digits) =>
  `${fmt(median(values), digits)} (${fmt(Math.min(...values), digits)}–${fmt(Math.max(...values), digits)})`;

async function main() {
  execFileSync('redis-server', ['--version']);
  if (!existsSync(join(buildDir, 'cli', 'main.js')))
    throw new Error(`${buildDir} has no cli/main.js: run \`npm run build\` first`);
  ensureFileLimit(4_000);
  const { mintToken } = await buildModules(buildDir).mint();
  const secret = randomBytes(32).toString('base64url');
  const password = randomBytes(16).toString('hex');
  const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3 * 3600 });
  const probe = join(root, 'bench', 'lib', 'gc-probe.cjs');
  const targets = [
    ...(withRedis ? [{ name: 'redis', auth: password, start: () => startRedis({ password }) }] : []),
    ...stores.map((store) => ({
      name: store,
      auth: token,
      start: () =>
        startBroker({
          buildDir,
          store,
          secret,
          nodeArgs: [
            '--expose-gc',
            '--require',
            probe,
            ...(profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]),
          ],
        }),
    })),
  ];
  const event = payload(128).bytes;
  log(
    `${os.cpus().length} cpus, load ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}, build ${buildDir}`,
  );
  const results = {};
  for (const n of sizes) {
    for (const target of targets) {
      log(`${n} sandboxes, ${target.name}...`);
      const result = await sizeRun(target, n, event);
      results[`${n} ${target.name}`] = result;
      log(
        `  memory per subscribed sandbox: rss ${fmt(result.subscribed.rss)} B, live ${fmt(result.subscribed.live)} B ` +
          `(second half: rss ${fmt(result.marginal.rss)} B, live ${fmt(result.marginal.live)} B); ` +
          `with ${eventsEach} events: rss ${fmt(result.withEvents.rss)} B, live ${fmt(result.withEvents.live)} B; ` +
          `cpu per message ${range(result.cpuPerMessageUs, 2)} us`,
      );
    }
  }
  const history = {};
  if (withHistory) {
    for (const target of targets) {
      log(`HISTORY of 64 KiB events, ${target.name}...`);
      history[target.name] = await historyRun(target);
      const h = history[target.name];
      log(
        `  reply ${fmt(h.replyBytes)} B, cpu ${fmt(h.cpuPerCallMs, 2)} ms per call, ${fmt(h.bytesPerCpuSecond / 1e6)} MB per cpu-s`,
      );
    }
  }

  // The tables (Markdown, as docs/performance.md shows them).
  const brokers = targets.filter((t) => t.name !== 'redis').map((t) => t.name);
  const lines = [];
  const row = (cells) => lines.push(`| ${cells.join(' | ')} |`);
  const head = ['sandboxes', 'figure', 'redis', ...brokers.flatMap((b) => [`broker ${b}`, 'ratio'])];
  row(head);
  row(head.map(() => '---'));
  const ratio = (a, b) => (a === undefined || b === undefined || b <= 0 ? '—' : `${(a / b).toFixed(2)}x`);
  for (const n of sizes) {
    const redis = results[`${n} redis`];
    const cells = (label, pick, digits = 0) => {
      const out = [fmt(n), label, redis ? fmt(pick(redis), digits) : '—'];
      for (const b of brokers)
        out.push(fmt(pick(results[`${n} ${b}`]), digits), ratio(pick(results[`${n} ${b}`]), redis && pick(redis)));
      row(out);
    };
    cells('memory per subscribed sandbox, RSS (B)', (r) => r.subscribed.rss);
    cells('  live (broker: heap + external after GC; redis: used_memory) (B)', (r) => r.subscribed.live);
    cells('  second half of the subscriptions only, RSS (B)', (r) => r.marginal.rss);
    cells('  second half, live (B)', (r) => r.marginal.live);
    cells(`  with ${eventsEach} events kept, RSS (redis: XADD) (B)`, (r) => r.withEvents.rss);
    cells(`  with ${eventsEach} events kept, live (B)`, (r) => r.withEvents.live);
    const cpuCells = [
      fmt(n),
      `server CPU per delivered message, median of ${rounds} (µs)`,
      redis ? range(redis.cpuPerMessageUs, 2) : '—',
    ];
    for (const b of brokers) {
      const r = results[`${n} ${b}`];
      cpuCells.push(
        range(r.cpuPerMessageUs, 2),
        ratio(median(r.cpuPerMessageUs), redis && median(redis.cpuPerMessageUs)),
      );
    }
    row(cpuCells);
  }
  if (withHistory) {
    lines.push('');
    const hHead = [
      'HISTORY LIMIT 100 of 63 KiB events',
      'redis (XRANGE)',
      ...brokers.flatMap((b) => [`broker ${b}`, 'ratio']),
    ];
    row(hHead);
    row(hHead.map(() => '---'));
    const hRow = (label, pick, digits) => {
      const out = [label, history.redis ? fmt(pick(history.redis), digits) : '—'];
      for (const b of brokers)
        out.push(fmt(pick(history[b]), digits), ratio(pick(history[b]), history.redis && pick(history.redis)));
      row(out);
    };
    hRow('reply bytes', (h) => h.replyBytes, 0);
    hRow('server CPU per call (ms)', (h) => h.cpuPerCallMs, 2);
    hRow('reply MB per server CPU second', (h) => h.bytesPerCpuSecond / 1e6, 0);
    hRow('reply MB per wall second (shared machine: noisy)', (h) => h.bytesPerSecond / 1e6, 0);
  }
  console.log(lines.join('\n'));
  console.log(`\n<!-- raw: ${JSON.stringify({ results, history })} -->`);
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
