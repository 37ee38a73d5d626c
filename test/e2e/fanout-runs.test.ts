import { afterAll, beforeAll, expect, it } from 'vitest';
import { deliveryFrame } from '../../src/protocol/encode.js';
import { compileGlob } from '../../src/protocol/glob.js';
import { type RawClient, resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

/**
 * Fan-out runs through the real daemon (src/broker/slab.ts, ChannelRun): a publisher pipelines
 * interleaved PUBLISHes to two channels, so that each channel's frames of a turn lie one after
 * another in its slab and the connections that hold only that channel follow its runs, while
 * one connection holds both channels and a pattern matching one of them, and another both
 * channels and sends PINGs.
 * Every connection must read exactly, byte for byte, the frames of the events it subscribed to,
 * in publish order, message before pmessage, each reply where it was answered.
 */
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

const PONG = '*2\r\n$4\r\npong\r\n$0\r\n\r\n';

interface Reader {
  client: RawClient;
  channels: string[];
  patterns: string[];
  /** What it must have read, as a list of pieces: an event's index, or a reply's bytes. */
  expected: (number | string)[];
}

async function reader(channels: string[], patterns: string[] = []): Promise<Reader> {
  const client = await server.authed();
  let confirmations = '';
  if (channels.length > 0) {
    client.send(resp('SUBSCRIBE', ...channels));
    channels.forEach((channel, i) => {
      confirmations += `*3\r\n$9\r\nsubscribe\r\n$${channel.length}\r\n${channel}\r\n:${i + 1}\r\n`;
    });
  }
  for (const [i, pattern] of patterns.entries()) {
    client.send(resp('PSUBSCRIBE', pattern));
    confirmations += `*3\r\n$10\r\npsubscribe\r\n$${pattern.length}\r\n${pattern}\r\n:${channels.length + i + 1}\r\n`;
  }
  expect(await client.read(confirmations)).toBe(confirmations);
  return { client, channels, patterns, expected: [] };
}

it('connections on one channel, two channels, and two channels plus a pattern read every byte in order', async () => {
  const a = 'sb-run-a';
  const b = 'sb-run-b';
  // Matching one of the channels: its frames follow the other's in the same connection.
  const pattern = 'sb-run-[b]';
  const both = await reader([a, b], [pattern]);
  const pinging = await reader([a, b]);
  const readers = [both, pinging, await reader([a]), await reader([a]), await reader([b]), await reader([b])];
  const publisher = await server.authed();

  // Runs of one channel broken by the other, in batches that each arrive in one read.
  const channelOf: string[] = [];
  let published = 0;
  for (let batch = 0; batch < 12; batch += 1) {
    let commands = '';
    const size = 20 + ((batch * 37) % 60);
    for (let i = 0; i < size; i += 1) {
      const channel = (published * 7) % 11 < 2 ? b : a;
      channelOf.push(channel);
      const payload = JSON.stringify({
        type: 'run.test',
        data: { n: published, pad: 'x'.repeat((published * 13) % 300) },
      });
      commands += resp('PUBLISH', channel, payload);
      for (const r of readers) {
        if (r.channels.includes(channel) || r.patterns.some((p) => compileGlob(p)(channel))) r.expected.push(published);
      }
      published += 1;
    }
    publisher.send(commands);
    for (let i = 0; i < size; i += 1) expect(await publisher.line()).toMatch(/^:\d+\r\n$/);
    if (batch % 3 === 1) {
      // Once its frames of the batch are all in, a PING: its reply comes after them.
      await pinging.client.waitFor((received) => count(received, '"n":') >= expectedEvents(pinging));
      pinging.client.send(resp('PING'));
      pinging.expected.push(PONG);
    }
  }

  // Every event's line, as the connection holding both channels and the pattern read it.
  const lines = new Map<number, string>();
  await both.client.waitFor(
    (received) => count(received, '"n":') >= expectedEvents(both) + channelOf.filter((c) => c === b).length,
  );
  for (const match of both.client.pending.matchAll(/\r\n(\{"id":[^\r\n]*\})\r\n/g)) {
    const line = match[1]!;
    lines.set((JSON.parse(line) as { data: { n: number } }).data.n, line);
  }
  expect(lines.size).toBe(published);

  for (const r of readers) {
    let want = '';
    for (const piece of r.expected) {
      if (typeof piece === 'string') {
        want += piece;
        continue;
      }
      const channel = channelOf[piece]!;
      const line = lines.get(piece)!;
      if (r.channels.includes(channel)) want += deliveryFrame(2, undefined, channel, line).toString('latin1');
      for (const p of r.patterns) {
        if (compileGlob(p)(channel)) want += deliveryFrame(2, p, channel, line).toString('latin1');
      }
    }
    expect(await r.client.read(want)).toBe(want);
    // Nothing more came: a PING's reply is next.
    r.client.send(resp('PING'));
    expect(await r.client.read(PONG)).toBe(PONG);
  }
});

function count(received: Buffer, needle: string): number {
  let n = 0;
  for (let at = received.indexOf(needle); at >= 0; at = received.indexOf(needle, at + 1)) n += 1;
  return n;
}

function expectedEvents(r: Reader): number {
  return r.expected.filter((piece) => typeof piece === 'number').length;
}
