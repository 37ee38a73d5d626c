import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/store/memory-store.js';
import { LaggingStore } from '../support/lagging-store.js';
import { type RawClient, resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

/**
 * A connection's last error line (protocol error, token expiry) goes out after the replies of
 * the PUBLISHes it had already read, in request order: their events are stored, and a client
 * pairs replies with requests by order. The store holds those PUBLISHes' acknowledgements, as
 * a slow disk would, so that the error is due while they wait.
 */
let broker: TestServer;
let store: LaggingStore;

beforeAll(async () => {
  store = new LaggingStore(new MemoryStore({ retention: { maxCount: 100, maxAgeMs: 3_600_000 } }));
  broker = await startTestServer({ store, clockToleranceSeconds: 0 });
});
afterAll(() => broker.close());

/** Resolves once `check` holds, looking again on each turn of the event loop. */
async function until(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Runs `run` with an authenticated client of a server whose store holds appends until the test
 * lets them go (a LaggingStore over `inner`), at most `cap` PUBLISHes in flight per connection.
 */
async function withHeldAppends(
  cap: number,
  run: (client: RawClient, capped: LaggingStore, inner: MemoryStore) => Promise<void>,
): Promise<void> {
  const inner = new MemoryStore({ retention: { maxCount: 100, maxAgeMs: 3_600_000 } });
  const capped = new LaggingStore(inner);
  const server = await startTestServer({ store: capped, limits: { maxPipelinedPublishes: cap } });
  try {
    const client = await server.authed();
    capped.holdAppends = true;
    await run(client, capped, inner);
  } finally {
    await server.close();
  }
}

describe('the closing error line', () => {
  it('a protocol error waits for the replies of the PUBLISHes before it', async () => {
    const client = await broker.authed();
    store.holdAppends = true;
    client.send(`${resp('PUBLISH', 'sb-order', '{"type":"a"}') + resp('PUBLISH', 'sb-order', '{"type":"b"}')}*abc\r\n`);
    await until(() => store.appendsHeld === 2, 'both appends');
    expect(client.pending).toBe('');
    store.holdAppends = false;
    expect(store.releaseAppends()).toBe(2);
    const expected = ':0\r\n:0\r\n-ERR Protocol error: invalid multibulk length\r\n';
    expect(await client.read(expected)).toBe(expected);
    expect(await client.closedByServer()).toBe(true);
  });

  it('a token expiring while a PUBLISH waits: its reply first, then the expiry, then close', async () => {
    const client = await broker.authed({ ttlSeconds: 1 });
    store.holdAppends = true;
    client.send(resp('PUBLISH', 'sb-order', '{"type":"c"}'));
    await until(() => store.appendsHeld === 1, 'the append');
    // The expiry closes the connection to commands at once; its output drains later.
    await until(() => [...broker.server.context.connections].some((c) => c.closed), 'the expiry', 5_000);
    expect(client.pending).toBe('');
    store.holdAppends = false;
    expect(store.releaseAppends()).toBe(1);
    const expected = ':0\r\n-ERR token expired: send AUTH with a fresh token before exp\r\n';
    expect(await client.read(expected)).toBe(expected);
    expect(await client.closedByServer()).toBe(true);
  });

  it('a PUBLISH held behind the in-flight cap publishes its own event, though the decoder fills one command again', async () => {
    // The connection's decoder hands out one command object for a burst of input
    // (RequestDecoder reuseCommands): a held PUBLISH must run before the next one is decoded.
    await withHeldAppends(1, async (client, capped, inner) => {
      client.send(
        resp('PUBLISH', 'sb-held', '{"type":"a","data":{"n":1}}') +
          resp('PUBLISH', 'sb-held', '{"type":"b","data":{"n":2}}') +
          resp('PUBLISH', 'sb-held', '{"type":"c","data":{"n":3}}'),
      );
      await until(() => capped.appendsHeld === 1, 'the first append');
      capped.holdAppends = false;
      capped.releaseAppends();
      expect(await client.read(':0\r\n:0\r\n:0\r\n')).toBe(':0\r\n:0\r\n:0\r\n');
      const events = await inner.history({ workspaceId: 1, sandboxId: 'sb-held', limit: 10 });
      expect(events.map((event) => [event.type, JSON.parse(event.json).data])).toEqual([
        ['a', { n: 1 }],
        ['b', { n: 2 }],
        ['c', { n: 3 }],
      ]);
      client.close();
    });
  });

  it('a pipeline of PUBLISHes (past the in-flight cap), a refused one, SUBSCRIBE, PING and QUIT: replies in request order', async () => {
    await withHeldAppends(2, async (client, capped) => {
      client.send(
        resp('PUBLISH', 'sb-pipe', '{"type":"a"}') +
          resp('PUBLISH', 'sb-pipe', 'not json') +
          resp('PUBLISH', 'sb-pipe', '{"type":"b"}') +
          resp('SUBSCRIBE', 'sb-pipe') +
          resp('PING') +
          resp('QUIT'),
      );
      await until(() => capped.appendsHeld === 1, 'the first append');
      expect(client.pending).toBe('');
      capped.holdAppends = false;
      capped.releaseAppends();
      expect(await client.line()).toBe(':0\r\n');
      expect(await client.line()).toMatch(/^-ERR invalid event/);
      const rest = ':0\r\n*3\r\n$9\r\nsubscribe\r\n$7\r\nsb-pipe\r\n:1\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n+OK\r\n';
      expect(await client.read(rest)).toBe(rest);
      expect(await client.closedByServer()).toBe(true);
    });
  });
});
