import { afterAll, beforeAll, expect, it } from 'vitest';
import { resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

let broker: TestServer;

beforeAll(async () => {
  broker = await startTestServer({ clockToleranceSeconds: 0 });
});
afterAll(() => broker.close());

it('a connection whose token expires is told why and closed, unless it sent a fresh AUTH first', async () => {
  const shortLived = await broker.token({ ttlSeconds: 2 });
  const stale = await broker.raw();
  const refreshed = await broker.raw();
  for (const client of [stale, refreshed]) {
    client.send(resp('AUTH', shortLived) + resp('SUBSCRIBE', 'sb-exp'));
    const expected = '+OK\r\n*3\r\n$9\r\nsubscribe\r\n$6\r\nsb-exp\r\n:1\r\n';
    expect(await client.read(expected)).toBe(expected);
  }
  // A fresh token for the same identity, sent while subscribed (RESP2), keeps it alive.
  refreshed.send(resp('AUTH', await broker.token({ ttlSeconds: 3600 })));
  expect(await refreshed.line()).toBe('+OK\r\n');

  expect(await stale.line(5_000)).toBe('-ERR token expired: send AUTH with a fresh token before exp\r\n');
  expect(await stale.closedByServer()).toBe(true);

  refreshed.send(resp('PING'));
  expect(await refreshed.read('*2\r\n$4\r\npong\r\n$0\r\n\r\n')).toBe('*2\r\n$4\r\npong\r\n$0\r\n\r\n');
  expect(refreshed.closed).toBe(false);
});

it('a client that stopped reading is cut off once its closing error had the grace period', async () => {
  // Its socket would otherwise stay half-closed, with its subscriptions, for as long as it lives
  // (a regression, for SSE streams as for TCP: the last bytes and the FIN are never read).
  const server = await startTestServer({ clockToleranceSeconds: 0, limits: { closeGraceMs: 200 } });
  try {
    const stalled = await server.raw();
    stalled.send(resp('AUTH', await server.token({ ttlSeconds: 1 })) + resp('SUBSCRIBE', 'sb-stall'));
    const expected = '+OK\r\n*3\r\n$9\r\nsubscribe\r\n$8\r\nsb-stall\r\n:1\r\n';
    expect(await stalled.read(expected)).toBe(expected);
    stalled.socket.pause();
    const { connections, broker } = server.server.context;
    expect(connections.size).toBe(1);
    // The expiry ends the connection: error line, FIN; 200 ms later it is destroyed unread.
    const deadline = Date.now() + 5_000;
    while (connections.size > 0 && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve));
    expect(connections.size).toBe(0);
    expect(
      broker.visibleChannels({ workspaceId: 1, role: 'workspace', expiresAt: Number.POSITIVE_INFINITY }, undefined),
    ).toEqual([]);
  } finally {
    await server.close();
  }
});
