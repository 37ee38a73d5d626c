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
  // A refresh token for the same identity is accepted while subscribed (AUTH is allowed in
  // RESP2 subscribed mode? No: Redis allows only (P)SUBSCRIBE/(P)UNSUBSCRIBE/PING/QUIT/RESET,
  // so a subscribed client refreshes through HELLO 3 ... AUTH or before subscribing).
  refreshed.send(resp('UNSUBSCRIBE'));
  await refreshed.read('*3\r\n$11\r\nunsubscribe\r\n$6\r\nsb-exp\r\n:0\r\n');
  refreshed.send(resp('AUTH', await broker.token({ ttlSeconds: 3600 })) + resp('SUBSCRIBE', 'sb-exp'));
  const resubscribed = '+OK\r\n*3\r\n$9\r\nsubscribe\r\n$6\r\nsb-exp\r\n:1\r\n';
  expect(await refreshed.read(resubscribed)).toBe(resubscribed);

  expect(await stale.line(5_000)).toBe('-ERR token expired: send AUTH with a fresh token before exp\r\n');
  expect(await stale.closedByServer()).toBe(true);

  refreshed.send(resp('PING'));
  expect(await refreshed.read('*2\r\n$4\r\npong\r\n$0\r\n\r\n')).toBe('*2\r\n$4\r\npong\r\n$0\r\n\r\n');
  expect(refreshed.closed).toBe(false);
});
