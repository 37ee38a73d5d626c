/**
 * `serve --store memory --retention-bytes 8mb`: a sandbox that publishes 16 MB keeps at most
 * 8 MiB of events, its newest, through the real daemon and a real client; and the SQLite store,
 * which prunes in the background, gets there too and keeps its count across a restart; the Redis
 * engine trims on every append, whichever node appends (docs/operations.md, "Retention").
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BIN, type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { hasRedis, SharedRedis, spawnStoreDaemon } from '../support/engine.js';

const run = promisify(execFile);
let dataDir: string;
let daemon: Daemon;
const clients: Redis[] = [];
const redis = new SharedRedis();

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-retention-bytes-'));
  daemon = await spawnDaemon([
    ...['--port', '0', '--http-port', '0', '--data-dir', dataDir, '--store', 'memory'],
    ...['--retention-bytes', '8mb', '--max-output-buffer', '64mb'],
    ...['--publish-rate', '100000', '--publish-burst', '100000'],
  ]);
});
afterAll(async () => {
  for (const client of clients) client.disconnect();
  killDaemons();
  await redis.stop();
  await rm(dataDir, { recursive: true, force: true });
});

async function connect(...tokenArgs: string[]): Promise<Redis> {
  return connectTo(daemon, ...tokenArgs);
}

async function connectTo(server: Daemon, ...tokenArgs: string[]): Promise<Redis> {
  const { stdout } = await run(process.execPath, [BIN, 'token', '--data-dir', dataDir, ...tokenArgs]);
  const client = new Redis({ port: server.port, host: '127.0.0.1', password: stdout.trim(), lazyConnect: true });
  clients.push(client);
  await client.connect();
  return client;
}

it('keeps each sandbox at or under --retention-bytes, newest events first', async () => {
  const publisher = await connect('--workspace', '1', '--sandbox', 'sb-big');
  const count = 1_000;
  const text = 'y'.repeat(16 * 1024);
  for (let start = 0; start < count; start += 100) {
    const batch = publisher.pipeline();
    for (let n = start; n < start + 100; n++) {
      batch.publish('sb-big', JSON.stringify({ type: 'terminal.output', data: { n, text } }));
    }
    const results = await batch.exec();
    expect(results?.every(([error]) => error === null)).toBe(true);
  }

  const reader = await connect('--workspace', '1');
  const lines = (await reader.call('HISTORY', 'sb-big', 'LIMIT', '1000')) as string[];
  const bytes = lines.reduce((sum, line) => sum + Buffer.byteLength(line), 0);
  expect(bytes).toBeLessThanOrEqual(8 * 1024 * 1024);
  // Full to within one event, and exactly the newest ones, in order.
  expect(bytes).toBeGreaterThan(8 * 1024 * 1024 - Buffer.byteLength(lines[0]!));
  const ns = lines.map((line) => (JSON.parse(line) as { data: { n: number } }).data.n);
  expect(ns).toEqual(Array.from({ length: ns.length }, (_, i) => count - ns.length + i));
});

/** Publishes `count` events of about 16 KiB to sb-big, numbered from `from`. */
async function publishBig(publisher: Redis, from: number, count: number): Promise<void> {
  const text = 'y'.repeat(16 * 1024);
  const batch = publisher.pipeline();
  for (let n = from; n < from + count; n++) {
    batch.publish('sb-big', JSON.stringify({ type: 'terminal.output', data: { n, text } }));
  }
  const results = await batch.exec();
  expect(results?.every(([error]) => error === null)).toBe(true);
}

/** HISTORY of sb-big, asked again as each background prune (every 5 s) may have run, until it fits. */
async function historyWithin(reader: Redis, limit: number): Promise<string[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const lines = (await reader.call('HISTORY', 'sb-big', 'LIMIT', '1000')) as string[];
    const bytes = lines.reduce((sum, line) => sum + Buffer.byteLength(line), 0);
    if (bytes <= limit || Date.now() > deadline) return lines;
    await new Promise((resolve) => setTimeout(resolve, 200)); // polling for the timer's prune
  }
}

it('prunes the SQLite store to --retention-bytes, and keeps the count right across a restart', async () => {
  const limit = 1024 * 1024;
  const sqliteArgs = [
    ...[
      '--port',
      '0',
      '--http-port',
      '0',
      '--data-dir',
      dataDir,
      '--store',
      `sqlite:${path.join(dataDir, 'bytes.db')}`,
    ],
    ...['--retention-bytes', '1mb', '--publish-rate', '100000', '--publish-burst', '100000'],
  ];
  const expectFullAndNewest = (lines: string[], lastN: number): void => {
    const bytes = lines.reduce((sum, line) => sum + Buffer.byteLength(line), 0);
    expect(bytes).toBeLessThanOrEqual(limit);
    expect(bytes).toBeGreaterThan(limit - Buffer.byteLength(lines[0]!));
    const ns = lines.map((line) => (JSON.parse(line) as { data: { n: number } }).data.n);
    expect(ns).toEqual(Array.from({ length: ns.length }, (_, i) => lastN + 1 - ns.length + i));
  };

  const first = await spawnDaemon(sqliteArgs);
  const publisher = await connectTo(first, '--workspace', '1', '--sandbox', 'sb-big');
  const reader = await connectTo(first, '--workspace', '1');
  await publishBig(publisher, 0, 200);
  expectFullAndNewest(await historyWithin(reader, limit), 199);
  publisher.disconnect();
  reader.disconnect();
  first.child.kill('SIGTERM');
  expect(await first.exited).toBe(0);

  // The restarted daemon reads each sandbox's byte count back from the file: 20 more events
  // take sb-big over the limit again, and retention cuts back to it, no further.
  const second = await spawnDaemon(sqliteArgs);
  await publishBig(await connectTo(second, '--workspace', '1', '--sandbox', 'sb-big'), 200, 20);
  expectFullAndNewest(await historyWithin(await connectTo(second, '--workspace', '1'), limit), 219);
}, 60_000);

it.runIf(hasRedis)(
  'keeps each sandbox of the Redis engine within --retention-bytes on every append, across nodes',
  async () => {
    const limit = 1024 * 1024;
    const redisServer = await redis.get();
    redisServer.cli('FLUSHALL');
    const engineArgs = [
      ...['--port', '0', '--data-dir', dataDir, '--engine', redisServer.url],
      ...['--retention-bytes', '1mb', '--publish-rate', '100000', '--publish-burst', '100000'],
    ];
    const retained = (lines: string[]): number => lines.reduce((sum, line) => sum + Buffer.byteLength(line), 0);
    const expectFullAndNewest = (lines: string[], lastN: number): void => {
      expect(retained(lines)).toBeLessThanOrEqual(limit);
      expect(retained(lines)).toBeGreaterThan(limit - Buffer.byteLength(lines[0]!));
      const ns = lines.map((line) => (JSON.parse(line) as { data: { n: number } }).data.n);
      expect(ns).toEqual(Array.from({ length: ns.length }, (_, i) => lastN + 1 - ns.length + i));
      // The engine's byte counter (docs/scaling.md) is exactly what is retained.
      expect(Number(redisServer.cli('HGET', 'se:{1:sb-big}:meta', 'b').trim())).toBe(retained(lines));
    };
    const [a, b] = await Promise.all([spawnStoreDaemon(engineArgs), spawnStoreDaemon(engineArgs)]);
    await publishBig(await connectTo(a, '--workspace', '1', '--sandbox', 'sb-big'), 0, 200);
    // Trimmed by the append script itself: no background run to wait for.
    expectFullAndNewest(
      (await (await connectTo(b, '--workspace', '1')).call('HISTORY', 'sb-big', 'LIMIT', '1000')) as string[],
      199,
    );
    await publishBig(await connectTo(b, '--workspace', '1', '--sandbox', 'sb-big'), 200, 20);
    expectFullAndNewest(
      (await (await connectTo(a, '--workspace', '1')).call('HISTORY', 'sb-big', 'LIMIT', '1000')) as string[],
      219,
    );
  },
  60_000,
);
