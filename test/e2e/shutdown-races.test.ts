import net from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { MemoryStore } from '../../src/store/memory-store.js';
import { LaggingStore } from '../support/lagging-store.js';
import { resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

/** Shutdown corner cases (docs/operations.md, "Stopping"); each test failed before its fix. */
let ts: TestServer | undefined;
const sockets: net.Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await ts?.close().catch(() => {});
  ts = undefined;
});

it('an HTTP publish acknowledged (201) while shutdown begins reaches the TCP subscribers', async () => {
  const store = new LaggingStore(new MemoryStore({ retention: { maxCount: 1000, maxAgeMs: 3_600_000 } }));
  ts = await startTestServer({ store, http: {} });
  const subscriber = await ts.authed();
  const confirmation = '*3\r\n$9\r\nsubscribe\r\n$7\r\nsb-down\r\n:1\r\n';
  subscriber.send(resp('SUBSCRIBE', 'sb-down'));
  expect(await subscriber.read(confirmation)).toBe(confirmation);
  store.holdAppends = true;
  const posted = fetch(`http://127.0.0.1:${ts.httpPort}/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await ts.sandboxToken('sb-down')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'last.words', data: { n: 1 } }),
  });
  const deadline = Date.now() + 5_000;
  while (store.appendsHeld === 0 && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve));
  const closing = ts.server.close();
  // A turn later the shutdown is past its quiet point; only then is the event durable and
  // fanned out (the store notifies its live copy, then acknowledges).
  await new Promise((resolve) => setImmediate(resolve));
  store.release();
  store.releaseAppends();
  expect((await posted).status).toBe(201);
  await closing;
  const received = await subscriber.waitFor((bytes) => bytes.includes('last.words'), 2_000);
  expect(received.toString('latin1')).toContain('"type":"last.words"');
});

it('a client refused at --max-clients that keeps its end open does not hang shutdown (exit within 5 s)', async () => {
  ts = await startTestServer({ limits: { maxClients: 1 } });
  const first = await ts.authed();
  expect(first.closed).toBe(false);
  // The second connection is refused; this client never closes its side (half-open peer).
  const refused = net.connect({ port: ts.port, host: '127.0.0.1', allowHalfOpen: true });
  sockets.push(refused);
  refused.on('error', () => {});
  let text = '';
  refused.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
  await new Promise<void>((resolve) => refused.once('end', () => resolve()));
  expect(text).toBe('-ERR max number of clients reached\r\n');
  expect(ts.server.context.stats.rejectedConnections).toBe(1);

  const started = Date.now();
  const closed = ts.server.close().then(() => 'closed' as const);
  const timeout = new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 6_000));
  const outcome = await Promise.race([closed, timeout]);
  expect(outcome, `server.close() still pending after ${Date.now() - started} ms`).toBe('closed');
}, 15_000);
