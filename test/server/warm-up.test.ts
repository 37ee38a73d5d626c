import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { RawClient, resp } from '../support/raw-client.js';

/** `sandbox-events serve --warm-up <clients>` as users start it (docs/operations.md, "Warm start"). */
const SECRET = 'warm-up-test-secret-of-enough-length';
let dataDir: string;
let runs = 0;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-warm-up-'));
});
afterEach(() => killDaemons());
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

/** A daemon on a SQLite file of its own, logging at debug (every connection has a line). */
async function serve(args: string[], env: NodeJS.ProcessEnv = {}, fileLimit?: number) {
  const dbPath = path.join(dataDir, `events-${(runs += 1)}.db`);
  const daemon = await spawnDaemon(
    [
      ...['--port', '0', '--http-port', '0', '--data-dir', dataDir, '--store', `sqlite:${dbPath}`],
      ...['--jwt-secret', SECRET, '--log-level', 'debug', ...args],
    ],
    env,
    [],
    { fileLimit },
  );
  return { daemon, dbPath };
}

async function client(daemon: Daemon, sandboxId: string | undefined, role: 'sandbox' | 'admin' = 'sandbox') {
  const token = await mintToken({ secret: SECRET, workspaceId: 7, sandboxId, role, ttlSeconds: 600 });
  const raw = await RawClient.connect(daemon.port);
  raw.send(resp('AUTH', token));
  expect(await raw.line()).toBe('+OK\r\n');
  return raw;
}

/** The first real clients: a subscriber gets what a publisher sends; an admin's INFO stats. */
async function servedNormally(daemon: Daemon): Promise<string> {
  const subscriber = await client(daemon, 'sb-first');
  subscriber.send(resp('SUBSCRIBE', 'sb-first'));
  expect(await subscriber.read('*3\r\n$9\r\nsubscribe\r\n$8\r\nsb-first\r\n:1\r\n')).toBe(
    '*3\r\n$9\r\nsubscribe\r\n$8\r\nsb-first\r\n:1\r\n',
  );
  const publisher = await client(daemon, 'sb-first');
  publisher.send(resp('PUBLISH', 'sb-first', '{"type":"first","data":{}}'));
  expect(await publisher.line()).toBe(':1\r\n');
  await subscriber.waitFor((received) => received.includes('"type":"first"'));
  expect(subscriber.pending).toContain('"type":"first"');
  const admin = await client(daemon, undefined, 'admin');
  admin.send(resp('INFO', 'stats'));
  const info = (await admin.waitFor((received) => received.includes('rejected_connections'))).toString();
  for (const one of [subscriber, publisher, admin]) one.close();
  return info;
}

describe('serve --warm-up (docs/operations.md, "Warm start")', () => {
  it('is off by default', async () => {
    const { daemon } = await serve([]);
    expect(daemon.listening).not.toHaveProperty('warmUp');
  });

  it('runs its clients before listening and leaves no event, count or log line of them', async () => {
    const { daemon, dbPath } = await serve(['--warm-up', '300']);
    const warmUp = daemon.listening.warmUp as { clients: number; ms: number };
    // Fewer if they took over its time budget (a second) on a busy machine.
    expect(warmUp.clients).toBeGreaterThanOrEqual(100);
    expect(warmUp.clients).toBeLessThanOrEqual(300);
    const logged = daemon.stdout();
    expect(logged).not.toContain('connection opened');
    const info = await servedNormally(daemon);
    // The three clients above, their AUTHs, SUBSCRIBE, PUBLISH and INFO: none of the warm-up's.
    expect(info).toContain('total_connections_received:3\r\n');
    expect(info).toContain('total_commands_processed:6\r\n');
    expect(info).toContain('events_published:1\r\n');
    expect(daemon.stdout().match(/connection opened/g)).toHaveLength(3);
    const db = new Database(dbPath, { readonly: true, fileMustExist: true });
    try {
      const events = db.prepare('SELECT count(*) AS n FROM events').get() as { n: number };
      const sandboxes = db.prepare('SELECT sandbox_id FROM sandboxes').all() as { sandbox_id: string }[];
      expect(events.n).toBe(1);
      expect(sandboxes.map((row) => row.sandbox_id)).toEqual(['sb-first']);
    } finally {
      db.close();
    }
  });

  it('is set by the environment as well, and turned off by 0', async () => {
    const byEnv = await serve([], { SANDBOX_EVENTS_WARM_UP: '100' });
    expect(byEnv.daemon.listening.warmUp).toHaveProperty('clients');
    const off = await serve(['--warm-up', '0'], { SANDBOX_EVENTS_WARM_UP: '100' });
    expect(off.daemon.listening).not.toHaveProperty('warmUp');
  });

  it('starts cold, and says so, when the warm-up fails', async () => {
    // Enough open files for the daemon to start (it needs about 85: its modules load several
    // at a time) and serve a few clients, not for the warm-up's 100 clients and the sockets it
    // accepts for them (it fails at 120 and below).
    const { daemon } = await serve(['--warm-up', '300'], {}, 105);
    expect(daemon.listening.warmUp).toBe('failed');
    await servedNormally(daemon);
    const warning = daemon
      .stdout()
      .split('\n')
      .filter((line) => line.includes('WARM_UP_FAILED'))
      .map((line) => JSON.parse(line) as { level: number; msg: string });
    expect(warning).toHaveLength(1);
    expect(warning[0]!.level).toBe(40);
    expect(warning[0]!.msg).toMatch(/^warm-up failed: .*: the daemon started cold$/);
  });
});
