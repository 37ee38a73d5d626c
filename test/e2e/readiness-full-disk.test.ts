/**
 * `/readyz` tells the truth about writes (docs/operations.md, "Readiness"): 503 while the SQLite
 * store's commits fail on a full disk, and 200 again once space returns, by the store's own
 * probe write, with nobody publishing. A real full disk: a 4 MiB tmpfs (needs root, as in CI).
 */
import { unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import { resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';
import { mountTmpfs } from '../support/tmpfs.js';

const disk = mountTmpfs('4m', 'the /readyz full-disk test');
let broker: TestServer;

beforeAll(async () => {
  if (!disk.mounted) return;
  const store = SqliteStore.open({
    path: path.join(disk.dir, 'events.db'),
    retention: { maxCount: 100_000, maxAgeMs: 86_400_000 },
  });
  broker = await startTestServer({ store, http: {} });
});

afterAll(async () => {
  if (disk.mounted) await broker.close();
  disk.remove();
});

async function readyz(): Promise<{ status: number; store: string | undefined }> {
  const response = await fetch(`http://127.0.0.1:${broker.httpPort}/readyz`);
  const body = (await response.json()) as { checks?: { store?: string } };
  return { status: response.status, store: body.checks?.store };
}

describe.skipIf(!disk.mounted)('/readyz on a full disk', () => {
  it('answers 503 while commits fail, and 200 again once a probe write succeeds', async () => {
    expect(await readyz()).toEqual({ status: 200, store: 'ok' });
    const publisher = await broker.authed();
    const event = (n: number) => JSON.stringify({ type: 'fill', data: { n, blob: 'x'.repeat(60_000) } });
    // As in store-faults.test.ts: 1.5 MiB left for the database and its WAL to grow into and fail.
    const filler = path.join(disk.dir, 'filler');
    writeFileSync(filler, Buffer.alloc(2.5 * 1024 * 1024));
    let failure = '';
    for (let n = 0; n < 200 && failure === ''; n += 1) {
      publisher.send(resp('PUBLISH', 'sb-ready', event(n)));
      const reply = await publisher.line();
      if (reply !== ':0\r\n') failure = reply;
    }
    expect(failure).toMatch(/^-ERR store unavailable: .+\r\n$/);
    expect(await readyz()).toEqual({ status: 503, store: 'unavailable' });

    // Space returns; nobody publishes: the store's own probe write makes it ready again.
    unlinkSync(filler);
    await expect.poll(async () => (await readyz()).status, { timeout: 10_000, interval: 100 }).toBe(200);
    publisher.send(resp('PUBLISH', 'sb-ready', '{"type":"recovered"}'));
    expect(await publisher.line()).toBe(':0\r\n');
  });
});
