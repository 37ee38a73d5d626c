import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

let broker: TestServer;

beforeAll(async () => {
  broker = await startTestServer({
    limits: { publishRatePerSecond: 5, publishBurst: 20, maxSubscriptionsPerConnection: 3 },
  });
});
afterAll(() => broker.close());

describe('publish rate limit per sandbox token', () => {
  it('refuses past the burst with -ERR rate limit exceeded and stores nothing of it', async () => {
    const sandbox = await broker.authed({ workspaceId: 1, role: 'sandbox', sandboxId: 'sb-fast' });
    sandbox.send(resp('PUBLISH', 'sb-fast', '{"type":"t"}').repeat(25));
    const expected = ':0\r\n'.repeat(20) + '-ERR rate limit exceeded\r\n'.repeat(5);
    expect(await sandbox.read(expected)).toBe(expected);
    sandbox.send(resp('HISTORY', 'sb-fast', 'LIMIT', '1000'));
    const history = await sandbox.waitFor(
      (received) => received.toString().startsWith('*20\r\n') && received.toString().endsWith('}\r\n'),
    );
    expect(history.toString().split('"type":"t"').length - 1).toBe(20);
  });

  it('workspace tokens and other sandboxes are not held to that bucket', async () => {
    const other = await broker.authed({ workspaceId: 1, role: 'sandbox', sandboxId: 'sb-calm' });
    other.send(resp('PUBLISH', 'sb-calm', '{"type":"t"}'));
    expect(await other.line()).toBe(':0\r\n');
    const app = await broker.authed({ workspaceId: 1 });
    app.send(resp('PUBLISH', 'sb-fast', '{"type":"t"}').repeat(30));
    expect(await app.read(':0\r\n'.repeat(30))).toBe(':0\r\n'.repeat(30));
  });
});

describe('subscriptions per connection', () => {
  it('refuses past the limit with a clear error, and subscribes to nothing of that command', async () => {
    const client = await broker.authed({ workspaceId: 2 });
    client.send(resp('SUBSCRIBE', 'a', 'b') + resp('SUBSCRIBE', 'c', 'd') + resp('PSUBSCRIBE', 'x*'));
    const expected =
      '*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n' +
      '-ERR subscription limit reached: at most 3 channels and patterns per connection\r\n' +
      '*3\r\n$10\r\npsubscribe\r\n$2\r\nx*\r\n:3\r\n';
    expect(await client.read(expected)).toBe(expected);
  });
});

describe('connection limits', () => {
  it('a client that does not authenticate in time is told why and closed; RESET re-arms the deadline', async () => {
    const strict = await startTestServer({ limits: { authTimeoutMs: 300 } });
    try {
      const idle = await strict.raw();
      expect(await idle.line(5_000)).toBe('-ERR authentication timeout: send AUTH within 0.3 s\r\n');
      expect(await idle.closedByServer()).toBe(true);

      const resetting = await strict.authed();
      resetting.send(resp('RESET'));
      expect(await resetting.line()).toBe('+RESET\r\n');
      expect(await resetting.line(5_000)).toBe('-ERR authentication timeout: send AUTH within 0.3 s\r\n');

      const prompt = await strict.authed(); // authenticated in time: kept
      prompt.send(resp('PING'));
      expect(await prompt.line()).toBe('+PONG\r\n');
    } finally {
      await strict.close();
    }
  });

  it('past --max-clients a connection gets -ERR max number of clients reached and is closed', async () => {
    const small = await startTestServer({ limits: { maxClients: 2 } });
    try {
      const first = await small.authed();
      await small.authed();
      const third = await small.raw();
      expect(await third.line()).toBe('-ERR max number of clients reached\r\n');
      expect(await third.closedByServer()).toBe(true);
      expect(small.server.context.stats.rejectedConnections).toBe(1);
      first.close();
      // Once a slot frees, new clients are accepted again.
      await new Promise<void>((resolve) => {
        const check = (): void => (small.server.context.connections.size < 2 ? resolve() : void setImmediate(check));
        check();
      });
      const fourth = await small.authed();
      fourth.send(resp('PING'));
      expect(await fourth.line()).toBe('+PONG\r\n');
    } finally {
      await small.close();
    }
  });
});
