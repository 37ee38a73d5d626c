import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { RawClient, resp } from '../support/raw-client.js';

let dataDir: string;
const clients: RawClient[] = [];

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-shutdown-'));
});
afterAll(async () => {
  for (const client of clients) client.close();
  killDaemons();
  await rm(dataDir, { recursive: true, force: true });
});

it('SIGTERM under load: stops accepting, flushes, closes the store, exits 0 within 5 s, loses nothing acknowledged', async () => {
  const secret = randomBytes(24).toString('base64url');
  const daemon = await spawnDaemon(['--port', '0', '--http-port', '0', '--data-dir', dataDir, '--jwt-secret', secret]);
  const { child, port } = daemon;
  const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 600 });
  const connect = async (): Promise<RawClient> => {
    const client = await RawClient.connect(port);
    clients.push(client);
    client.send(resp('AUTH', token));
    expect(await client.line()).toBe('+OK\r\n');
    return client;
  };
  const subscriber = await connect();
  subscriber.send(resp('SUBSCRIBE', 'sb-stop'));
  await subscriber.read('*3\r\n$9\r\nsubscribe\r\n$7\r\nsb-stop\r\n:1\r\n');
  const publisher = await connect();

  let acknowledged = 0;
  let sent = 0;
  let signalled: number | undefined;
  while (!publisher.closed) {
    let batch = '';
    for (let i = 0; i < 100; i += 1, sent += 1)
      batch += resp('PUBLISH', 'sb-stop', JSON.stringify({ type: 'n', data: { i: sent } }));
    publisher.send(batch);
    await publisher.waitFor((received) => received.includes('\r\n') || publisher.closed);
    const text = publisher.pending;
    const complete = text.slice(0, text.lastIndexOf('\r\n') + 2);
    acknowledged += complete.split('\r\n').length - 1;
    await publisher.take(complete.length);
    if (signalled === undefined && sent >= 3000) {
      signalled = Date.now();
      child.kill('SIGTERM');
    }
  }
  expect(await daemon.exited).toBe(0);
  expect(Date.now() - signalled!).toBeLessThan(5_000);

  // New connections are refused once it has stopped.
  await expect(RawClient.connect(port)).rejects.toThrow();

  // The subscriber got every acknowledged event before its connection closed (flushed).
  await subscriber.closedByServer();
  const delivered = subscriber.pending.split('"type":"n"').length - 1;
  expect(delivered).toBeGreaterThanOrEqual(acknowledged);

  // The store was closed cleanly and holds every acknowledged event, in order.
  const store = SqliteStore.open({
    path: path.join(dataDir, 'events.db'),
    retention: { maxCount: 100_000, maxAgeMs: 86_400_000 },
  });
  try {
    const stored = [];
    let after = { ms: 0, seq: 0 };
    for (;;) {
      const page = await store.history({ workspaceId: 1, sandboxId: 'sb-stop', afterId: after, limit: 1000 });
      stored.push(...page);
      if (page.length < 1000) break;
      after = page[page.length - 1]!.id;
    }
    expect(stored.length).toBeGreaterThanOrEqual(acknowledged);
    expect(stored.map((event) => (JSON.parse(event.json) as { data: { i: number } }).data.i)).toEqual(
      Array.from({ length: stored.length }, (_, i) => i),
    );
  } finally {
    await store.close();
  }
});

// The daemon's log is its standard output (docs/operations.md, "Watching it"); supervisors,
// shells and log shippers read it through a pipe, and may stop reading it or go away.
describe('a reader of its output that is gone or does not read', () => {
  const secret = randomBytes(24).toString('base64url');
  /** A memory-store daemon: with the secret, or without one (development mode, which prints a banner). */
  const start = (withSecret = true, options: { stderrClosed?: boolean } = {}): Promise<Daemon> =>
    spawnDaemon(
      ['--port', '0', '--http-port', '0', '--store', 'memory', '--data-dir', dataDir].concat(
        withSecret ? ['--jwt-secret', secret] : [],
      ),
      {},
      [],
      options,
    );
  /**
   * Sends `count` AUTHs with a malformed token (each is logged), ten at a time: an
   * unauthenticated client may hold only 1 KiB of replies (docs/security.md).
   */
  const failAuth = async (port: number, count: number): Promise<void> => {
    const client = await RawClient.connect(port);
    clients.push(client);
    const batch = resp('AUTH', 'not-a-token').repeat(10);
    for (let sent = 0; sent < count; sent += 10) {
      client.send(batch);
      const received = await client.waitFor((bytes) => countLines(bytes) === 10);
      expect(countLines(received)).toBe(10);
      expect(await client.take(received.length)).toMatch(/^-WRONGPASS .* reason: malformed\r\n/);
    }
    client.close();
  };
  const countLines = (bytes: Buffer): number => {
    let lines = 0;
    for (let at = bytes.indexOf(10); at >= 0; at = bytes.indexOf(10, at + 1)) lines += 1;
    return lines;
  };

  it('stderr closed before it starts (the development banner meets EPIPE): serves on, exits 0 at SIGTERM', async () => {
    const daemon = await start(false, { stderrClosed: true });
    const client = await RawClient.connect(daemon.port);
    clients.push(client);
    client.send(resp('PING'));
    expect(await client.line()).toBe('-NOAUTH Authentication required.\r\n');
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
  });

  it('SIGTERM once the reader has closed its end (EPIPE): exits 0', async () => {
    const daemon = await start();
    daemon.child.stdout!.destroy();
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
  });

  it('SIGTERM while the reader does not read: exits 0, without waiting for it', async () => {
    const daemon = await start();
    daemon.child.stdout!.pause();
    // About 1.2 MB of log lines: more than the pipe and this side's stream buffer take.
    await failAuth(daemon.port, 10_000);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
  });

  it('a reader that falls behind: the daemon serves on, drops past its bound, and says how many once it catches up', async () => {
    const daemon = await start();
    const stdout = daemon.child.stdout!;
    stdout.pause();
    // 50,000 lines of about 130 bytes: more than the daemon holds (LOG_QUEUE_MAX_BYTES, 4 MiB).
    const failures = 50_000;
    await failAuth(daemon.port, failures);
    let logged = 0;
    let dropped: number | undefined;
    for await (const line of createInterface({ input: stdout })) {
      const record = JSON.parse(line) as { msg: string; dropped?: number };
      if (record.msg === 'authentication failed') logged += 1;
      if (record.msg === 'log lines dropped: standard output was not read fast enough') {
        dropped = record.dropped;
        break;
      }
    }
    expect(dropped).toBeGreaterThan(0);
    expect(logged + dropped!).toBe(failures);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
  });
});
