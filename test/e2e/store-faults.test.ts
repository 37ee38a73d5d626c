import { unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import { resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';
import { mountTmpfs } from '../support/tmpfs.js';

/**
 * The store's disk fills up (docs/security.md, faults): a publish fails with a clear error, nothing is
 * acknowledged that isn't stored, live subscribers stay connected and served, and publishing
 * recovers once the disk does. A real full disk: a 4 MiB tmpfs (needs root, as in CI).
 */
const disk = mountTmpfs('4m', 'the full-disk test');
const { mounted, dir: mountPoint } = disk;

let broker: TestServer;
let store: SqliteStore;

beforeAll(async () => {
  if (!mounted) return;
  store = SqliteStore.open({
    path: path.join(mountPoint, 'events.db'),
    retention: { maxCount: 100_000, maxAgeMs: 86_400_000 },
  });
  broker = await startTestServer({ store });
});

afterAll(async () => {
  if (mounted) await broker.close();
  disk.remove();
});

describe.skipIf(!mounted)('a full disk', () => {
  it('fails publishes clearly, keeps subscribers served, and recovers when space returns', async () => {
    const subscriber = await broker.authed();
    subscriber.send(resp('SUBSCRIBE', 'sb-disk'));
    await subscriber.read('*3\r\n$9\r\nsubscribe\r\n$7\r\nsb-disk\r\n:1\r\n');
    const publisher = await broker.authed();
    const event = (n: number) => JSON.stringify({ type: 'fill', data: { n, blob: 'x'.repeat(60_000) } });

    // Fill the disk: the filler leaves 1.5 MiB for the database and its WAL to grow into and
    // then fail. It is larger than that room on purpose: once it is deleted, the checkpoint may
    // first copy the whole WAL into the database file (growing it by up to the WAL's size, which
    // is reset, not truncated), and the freed space must still leave room for the next commit.
    const filler = path.join(mountPoint, 'filler');
    writeFileSync(filler, Buffer.alloc(2.5 * 1024 * 1024));
    let acknowledged = 0;
    let failure = '';
    for (let n = 0; n < 200 && failure === ''; n += 1) {
      publisher.send(resp('PUBLISH', 'sb-disk', event(n)));
      const reply = await publisher.line();
      if (reply === ':1\r\n') acknowledged += 1;
      else failure = reply;
    }
    expect(failure).toMatch(/^-ERR store unavailable: .+\r\n$/);
    expect(acknowledged).toBeGreaterThan(0);

    // Subscribers are still connected and answer; another publish still fails cleanly.
    subscriber.send(resp('PING'));
    await subscriber.waitFor((received) => received.toString().endsWith('*2\r\n$4\r\npong\r\n$0\r\n\r\n'));
    const delivered = subscriber.pending.split('"type":"fill"').length - 1;
    expect(delivered).toBe(acknowledged); // nothing delivered that wasn't acknowledged as stored
    await subscriber.take(subscriber.pending.length);
    publisher.send(resp('PUBLISH', 'sb-disk', event(-1)));
    expect(await publisher.line()).toMatch(/^-ERR store unavailable/);

    // Space returns: publishing works again, and the subscriber gets the new event.
    unlinkSync(filler);
    publisher.send(resp('PUBLISH', 'sb-disk', '{"type":"recovered"}'));
    expect(await publisher.line()).toBe(':1\r\n');
    await subscriber.waitFor((received) => received.toString().includes('"type":"recovered"'));
    publisher.send(resp('HISTORY', 'sb-disk', 'NEWEST', 'LIMIT', '1'));
    await publisher.waitFor((received) => received.toString().endsWith('}\r\n'));
    expect(publisher.pending).toContain('"type":"recovered"');
  });
});
