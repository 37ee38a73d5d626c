import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RawClient, resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

/**
 * What untrusted senders can throw at the port (docs/security.md). Each case asserts the exact reply,
 * and that a well-behaved subscriber on the same daemon still gets PONG and its events.
 */
let broker: TestServer;
let bystander: RawClient;
let published = 0;

beforeAll(async () => {
  broker = await startTestServer();
});
afterAll(() => broker.close());

beforeEach(async () => {
  bystander = await broker.authed({ workspaceId: 1 });
  bystander.send(resp('SUBSCRIBE', 'sb-bystander'));
  const confirmation = '*3\r\n$9\r\nsubscribe\r\n$12\r\nsb-bystander\r\n:1\r\n';
  expect(await bystander.read(confirmation)).toBe(confirmation);
});

afterEach(async () => {
  // The bystander is unaffected: it answers PING and receives a fresh event.
  published += 1;
  const publisher = await broker.authed({ workspaceId: 1 });
  publisher.send(resp('PUBLISH', 'sb-bystander', JSON.stringify({ type: 'still.alive', data: { n: published } })));
  expect(await publisher.line()).toBe(':1\r\n');
  await bystander.waitFor((received) => received.toString().includes(`"data":{"n":${published}}`));
  expect(bystander.pending).toContain('"type":"still.alive"');
  await bystander.take(bystander.pending.length);
  bystander.send(resp('PING'));
  expect(await bystander.read('*2\r\n$4\r\npong\r\n$0\r\n\r\n')).toBe('*2\r\n$4\r\npong\r\n$0\r\n\r\n');
  bystander.close();
  publisher.close();
});

async function expectProtocolError(client: RawClient, message: string): Promise<void> {
  const line = `-ERR Protocol error: ${message}\r\n`;
  expect(await client.read(line)).toBe(line);
  expect(await client.closedByServer()).toBe(true);
  expect(client.pending).toBe(''); // one error, nothing after it
}

describe('protocol abuse (Redis behaviour matched)', () => {
  it('empty lines and *-10 are ignored', async () => {
    const client = await broker.authed();
    client.send(`\r\n\r\n   \r\n*-10\r\n*0\r\n${resp('PING')}`);
    expect(await client.line()).toBe('+PONG\r\n');
  });

  it.each([
    ['*3000000000\r\n', 'invalid multibulk length'],
    ['*-\r\n', 'invalid multibulk length'],
    ['*abc\r\n', 'invalid multibulk length'],
    ['*1\r\n$-10\r\n', 'invalid bulk length'],
    ['*1\r\n$blabla\r\n', 'invalid bulk length'],
    ['*2\r\n$4\r\nPING\r\n$2000000\r\n', 'invalid bulk length'],
    ['*1\r\nfoo\r\n', "expected '$', got 'f'"],
    ['*1\r\n'.repeat(100_000), "expected '$', got '*'"],
    ['SUBSCRIBE "sb-1\r\n', 'unbalanced quotes in request'],
    ["SUBSCRIBE 'a'b\r\n", 'unbalanced quotes in request'],
  ])('%j: one protocol error, then closed', async (bytes, message) => {
    const client = await broker.authed();
    client.send(bytes);
    await expectProtocolError(client, message);
  });

  it.each([
    ['\x00', 'too big inline request'],
    ['*\x00', 'too big mbulk count string'],
    ['$\x00', 'too big inline request'],
  ])('%j then bytes with no newline: closed once past the inline limit', async (prefix, message) => {
    const client = await broker.authed();
    client.send(prefix + 'x'.repeat(70 * 1024));
    await expectProtocolError(client, message);
  });

  it('a header over the inline limit before AUTH is refused at the pre-auth size (16 KiB)', async () => {
    const client = await broker.raw();
    client.send('x'.repeat(17 * 1024));
    await expectProtocolError(client, 'too big inline request');
  });

  it("wrong argument counts get Redis's error and the connection stays open", async () => {
    const client = await broker.authed();
    client.send(`${resp('PUBLISH', 'a') + resp('SUBSCRIBE')}PING a b\r\n${resp('PING')}`);
    const expected =
      "-ERR wrong number of arguments for 'publish' command\r\n" +
      "-ERR wrong number of arguments for 'subscribe' command\r\n" +
      "-ERR wrong number of arguments for 'ping' command\r\n" +
      '+PONG\r\n';
    expect(await client.read(expected)).toBe(expected);
  });

  it('pipelined commands in one write, and one command split into single bytes, both work', async () => {
    const client = await broker.authed();
    client.send(`${resp('PING', 'one')}PING two\r\n${resp('PING', 'three')}`);
    const expected = '$3\r\none\r\n$3\r\ntwo\r\n$5\r\nthree\r\n';
    expect(await client.read(expected)).toBe(expected);
    const command = resp('PUBLISH', 'sb-split', '{"type":"é€😀","data":{"text":"ünïcödé"}}');
    for (const byte of Buffer.from(command)) client.send(Buffer.from([byte]));
    expect(await client.line()).toBe(':0\r\n');
    client.send(resp('HISTORY', 'sb-split'));
    await client.waitFor((received) => received.toString().endsWith('}\r\n'));
    expect(Buffer.from(client.pending, 'latin1').toString('utf8')).toContain('"type":"é€😀","data":{"text":"ünïcödé"}');
  });
});

describe('before authentication (CVE-2021-32675, CVE-2025-21605)', () => {
  it('more than 10 arguments: closed', async () => {
    const client = await broker.raw();
    client.send(resp('AUTH', ...Array.from({ length: 10 }, () => 'x')));
    await expectProtocolError(client, 'invalid multibulk length');
  });

  it('a bulk over 16 KiB: closed', async () => {
    const client = await broker.raw();
    client.send(`*2\r\n$4\r\nAUTH\r\n$${16 * 1024 + 1}\r\n`);
    await expectProtocolError(client, 'invalid bulk length');
  });

  it('after a valid AUTH in the same pipeline the normal limits apply at once', async () => {
    const client = await broker.raw();
    const big = JSON.stringify({ type: 'big', data: { blob: 'y'.repeat(40 * 1024) } });
    client.send(resp('AUTH', await broker.token()) + resp('PUBLISH', 'sb-big', big) + resp('PING', ...[]));
    expect(await client.read('+OK\r\n:0\r\n+PONG\r\n')).toBe('+OK\r\n:0\r\n+PONG\r\n');
  });

  it('an unauthenticated client that does not read is cut off past 1 KiB of pending output', async () => {
    const client = await broker.raw();
    client.socket.pause();
    const before = broker.server.context.stats.slowConsumerDisconnects;
    // Each PING earns a 34-byte NOAUTH; 3 MB of them overflow the kernel's buffers, then 1 KiB.
    const burst = resp('PING').repeat(4096);
    for (let i = 0; i < 50 && !client.closed; i += 1) client.send(burst);
    await waitUntil(() => broker.server.context.stats.slowConsumerDisconnects > before);
    client.socket.resume();
    expect(await client.closedByServer()).toBe(true);
  });
});

describe('abuse after authentication', () => {
  it('a pattern of thousands of *? does not stall the event loop', async () => {
    const client = await broker.authed({ workspaceId: 1 });
    // A naive backtracking matcher takes exponential time on `*a*a...*ab` against `aaa...a`.
    const matching = `${'*?'.repeat(100)}${'*'.repeat(800)}`;
    const pathological = `${'*a'.repeat(500)}b`;
    client.send(resp('PSUBSCRIBE', matching) + resp('PSUBSCRIBE', pathological));
    await client.waitFor((received) => received.toString().endsWith(':2\r\n'));
    const publisher = await broker.authed({ workspaceId: 1 });
    const longName = 'a'.repeat(256);
    publisher.send(resp('PUBLISH', longName, '{"type":"t"}'));
    expect(await publisher.line()).toBe(':1\r\n'); // matches the first, not the second
    client.send(resp('PSUBSCRIBE', 'x'.repeat(1025)));
    await client.waitFor((received) => received.toString().includes('-ERR'));
    expect(client.pending).toContain('-ERR pattern must be 1 to 1024 characters\r\n');
  });

  it('a subscriber to 100,000 channels meets the per-connection limit with a clear error', async () => {
    const client = await broker.authed({ workspaceId: 1 });
    const names = Array.from({ length: 1001 }, (_, i) => `sb-${i}`);
    client.send(resp('SUBSCRIBE', ...names.slice(0, 1000)));
    await client.waitFor((received) => received.toString().endsWith(':1000\r\n'));
    await client.take(client.pending.length);
    client.send(resp('SUBSCRIBE', 'sb-1000', 'sb-1001'));
    expect(await client.line()).toBe(
      '-ERR subscription limit reached: at most 1000 channels and patterns per connection\r\n',
    );
    client.send(resp('PING'));
    expect(await client.read('*2\r\n$4\r\npong\r\n$0\r\n\r\n')).toBe('*2\r\n$4\r\npong\r\n$0\r\n\r\n');
  });
});

/** Waits for a condition the server reaches on its own (checked every few ms, bounded). */
async function waitUntil(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('a PUBLISH payload whose bytes are not UTF-8 (docs/protocol.md, "Pub/sub")', () => {
  /** PUBLISH `channel` with `payload` as raw bytes. */
  function publishBytes(channel: string, payload: Buffer): Buffer {
    return Buffer.concat([
      Buffer.from(`*3\r\n$7\r\nPUBLISH\r\n$${channel.length}\r\n${channel}\r\n$${payload.length}\r\n`),
      payload,
      Buffer.from('\r\n'),
    ]);
  }
  const REPLACEMENT = Buffer.from('\ufffd');

  it('inside a string: each bad sequence becomes U+FFFD, delivered, stored and read back alike', async () => {
    const subscriber = await broker.authed({ workspaceId: 1 });
    subscriber.send(resp('SUBSCRIBE', 'sb-bytes'));
    await subscriber.read('*3\r\n$9\r\nsubscribe\r\n$8\r\nsb-bytes\r\n:1\r\n');
    const publisher = await broker.authed({ workspaceId: 1 });
    const bad = Buffer.concat([
      Buffer.from('{"type":"t","data":{"k":"a'),
      Buffer.from([0xff, 0xc3, 0x41, 0xe2, 0x82]), // a stray byte, a cut two-byte and three-byte sequence
      Buffer.from('"}}'),
    ]);
    publisher.send(publishBytes('sb-bytes', bad));
    expect(await publisher.line()).toBe(':1\r\n');
    const data = Buffer.concat([
      Buffer.from('{"k":"a'),
      REPLACEMENT,
      REPLACEMENT,
      Buffer.from('A'),
      REPLACEMENT,
      Buffer.from('"}'),
    ]);
    const delivered = Buffer.from(
      await subscriber.waitFor((received) => received.toString('latin1').endsWith('}\r\n')),
    );
    const line = delivered.subarray(delivered.indexOf('{"id"'), delivered.length - 2);
    expect(line.includes(Buffer.concat([Buffer.from('"data":'), data, Buffer.from(',"timestamp"')]))).toBe(true);
    expect(delivered.includes(Buffer.from(`$${line.length}\r\n{"id"`))).toBe(true); // framed by its byte size
    publisher.send(resp('HISTORY', 'sb-bytes'));
    const history = Buffer.from(await publisher.waitFor((received) => received.toString('latin1').endsWith('}\r\n')));
    expect(history.includes(line)).toBe(true);
    subscriber.close();
    publisher.close();
  });

  it('outside strings: refused as JSON.parse refuses the decoded text, and nothing is stored', async () => {
    const publisher = await broker.authed({ workspaceId: 1 });
    publisher.send(publishBytes('sb-bytes-refused', Buffer.from([...Buffer.from('{"type":"t",'), 0xff, 0x7d])));
    expect(await publisher.line()).toBe('-ERR invalid event: payload is not valid JSON\r\n');
    publisher.send(resp('HISTORY', 'sb-bytes-refused'));
    expect(await publisher.line()).toBe('*0\r\n');
    publisher.close();
  });
});
