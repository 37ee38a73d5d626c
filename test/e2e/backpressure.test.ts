/**
 * docs/security.md, "Limits": slow subscribers are cut off at the output limit without
 * holding anyone else back, what a stalled subscriber costs stays bounded, and one publish is
 * encoded once for any number of subscribers. Against the real server over TCP.
 */
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Broker, type Subscriber } from '../../src/broker/broker.js';
import type { Connection } from '../../src/connection/connection.js';
import type { StoredEvent } from '../../src/event/event.js';
import { type RawClient, resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** An event of about `size` bytes as a publisher sends it. */
function eventPayload(n: number, size: number): string {
  return JSON.stringify({ type: 'bench.tick', data: { n, pad: 'x'.repeat(size) } });
}

/**
 * A subscriber that reads as fast as it can and checks every message on the fly (a RawClient
 * keeps everything it received, which is quadratic over megabytes).
 */
class CountingSubscriber {
  readonly socket: net.Socket;
  received: number[] = [];
  ids: string[] = [];
  closed = false;
  private pending: Buffer = Buffer.alloc(0);
  private confirmed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () => {
      this.closed = true;
    });
    socket.on('error', () => {});
  }

  static async open(port: number, token: string, channel: string): Promise<CountingSubscriber> {
    const socket = net.connect({ port, host: '127.0.0.1' });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const subscriber = new CountingSubscriber(socket);
    socket.write(resp('AUTH', token) + resp('SUBSCRIBE', channel));
    await waitUntil(() => subscriber.confirmed);
    return subscriber;
  }

  private onData(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let text = this.pending.toString('latin1');
    if (!this.confirmed) {
      const end = text.indexOf(':1\r\n');
      if (end < 0) return;
      this.confirmed = true;
      text = text.slice(end + 4);
    }
    // Whole `*3 message <channel> <json>` frames; the JSON is one line, so split on CRLF.
    let at = 0;
    for (;;) {
      const match = /^\*3\r\n\$7\r\nmessage\r\n\$\d+\r\n[^\r]*\r\n\$(\d+)\r\n/.exec(text.slice(at, at + 64));
      if (match === null) break;
      const bodyStart = at + match[0].length;
      const bodyEnd = bodyStart + Number(match[1]);
      if (text.length < bodyEnd + 2) break;
      const event = JSON.parse(text.slice(bodyStart, bodyEnd)) as { id: string; data: { n: number } };
      this.received.push(event.data.n);
      this.ids.push(event.id);
      at = bodyEnd + 2;
    }
    this.pending = Buffer.from(text.slice(at), 'latin1');
  }
}

async function waitUntil(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The server's side of a client connection. */
function serverSide(test: TestServer, client: net.Socket): Connection {
  const address = `127.0.0.1:${client.localPort}`;
  const found = [...test.server.context.connections].find((connection) => connection.remoteAddress === address);
  if (found === undefined) throw new Error(`no server connection for ${address}`);
  return found;
}

/** Publishes `count` events, `batch` pipelined at a time, waiting for each batch's replies. */
async function publish(
  publisher: RawClient,
  channel: string,
  from: number,
  count: number,
  size: number,
  afterBatch?: () => void,
  batch = 50,
): Promise<void> {
  for (let start = from; start < from + count; start += batch) {
    const n = Math.min(batch, from + count - start);
    let commands = '';
    for (let i = 0; i < n; i++) commands += resp('PUBLISH', channel, eventPayload(start + i, size));
    publisher.send(commands);
    for (let i = 0; i < n; i++) expect(await publisher.line()).toMatch(/^:\d+\r\n$/);
    afterBatch?.();
  }
}

describe('a subscriber that stops reading', () => {
  it('is disconnected at the output limit, while another subscriber of the sandbox gets every event', async () => {
    const limit = 256 * 1024;
    server = await startTestServer({ limits: { maxOutputBytes: limit } });
    const token = await server.token({ workspaceId: 1 });
    const stalled = await CountingSubscriber.open(server.port, token, 'sb-hot');
    const reader = await CountingSubscriber.open(server.port, token, 'sb-hot');
    stalled.socket.pause();
    const publisher = await server.authed({ workspaceId: 1 });

    // Kernel buffers take a few MB before the server's own queue grows: publish until the
    // server cuts the stalled client off, then a while longer. (A paused socket does not see
    // the close until it reads again, so the server's side is what is watched.)
    const stats = server.server.context.stats;
    const stalledSide = serverSide(server, stalled.socket);
    let sent = 0;
    while (stats.slowConsumerDisconnects === 0 && sent < 20_000) {
      await publish(publisher, 'sb-hot', sent, 200, 4096);
      sent += 200;
    }
    expect(stats.slowConsumerDisconnects).toBe(1);
    expect(stalledSide.closed).toBe(true);
    await publish(publisher, 'sb-hot', sent, 200, 4096);
    sent += 200;

    expect(stats.slowConsumerDisconnects).toBe(1);
    await waitUntil(() => reader.received.length === sent);
    expect(reader.closed).toBe(false);
    expect(reader.received).toEqual(Array.from({ length: sent }, (_, i) => i));
    // Ids strictly increase: nothing repeated or reordered.
    const ids = reader.ids.map((id) => id.split('-').map(Number) as [number, number]);
    for (let i = 1; i < ids.length; i++) {
      const [ms, seq] = ids[i]!;
      const [lastMs, lastSeq] = ids[i - 1]!;
      expect(ms > lastMs || (ms === lastMs && seq > lastSeq)).toBe(true);
    }
    // What the stalled client did get, once it reads again, is a gapless prefix, then the close.
    stalled.socket.resume();
    await waitUntil(() => stalled.closed);
    expect(stalled.received.length).toBeLessThan(sent);
    expect(stalled.received).toEqual(Array.from({ length: stalled.received.length }, (_, i) => i));
  });

  it('costs at most the output limit in pending bytes while it sits on a hot sandbox', async () => {
    const limit = 512 * 1024;
    server = await startTestServer({ limits: { maxOutputBytes: limit } });
    const token = await server.token({ workspaceId: 1 });
    const stalled = await CountingSubscriber.open(server.port, token, 'sb-hot');
    const reader = await CountingSubscriber.open(server.port, token, 'sb-hot');
    stalled.socket.pause();
    const connection = serverSide(server, stalled.socket);
    const publisher = await server.authed({ workspaceId: 1 });

    let maxPending = 0;
    let sampledWhileOpen = 0;
    const sample = (): void => {
      if (connection.closed) return;
      sampledWhileOpen += 1;
      maxPending = Math.max(maxPending, connection.pendingOutputBytes);
    };
    // Sample after every publish reply batch and on every turn in between.
    const ticker = setInterval(sample, 1);
    try {
      let sent = 0;
      while (!connection.closed && sent < 20_000) {
        await publish(publisher, 'sb-hot', sent, 100, 4096, sample, 10);
        sent += 100;
      }
      await waitUntil(() => reader.received.length === sent);
    } finally {
      clearInterval(ticker);
    }
    expect(sampledWhileOpen).toBeGreaterThan(10);
    // The queue grew (the client really stalled) but never past the limit; once cut off, the
    // connection holds nothing at all.
    expect(maxPending).toBeGreaterThan(limit / 4);
    expect(maxPending).toBeLessThanOrEqual(limit);
    expect(connection.pendingOutputBytes).toBe(0);
    expect(server.server.context.connections.has(connection)).toBe(false);
  });
});

describe('frame slabs', () => {
  /** An event as the store hands it to the broker (about 250 bytes of JSON). */
  const storedEvent = (sandboxId: string, n: number): StoredEvent => ({
    id: { ms: 1, seq: n },
    workspaceId: 1,
    sandboxId,
    type: 't',
    timestamp: 1,
    json: `{"id":"1-${n}","sandboxId":"${sandboxId}","workspaceId":1,"type":"t","data":{"pad":"${'x'.repeat(160)}"},"timestamp":1}`,
  });

  it('a channel that was hot gives its large slab back once it trickles or sleeps', () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      const broker = new Broker();
      const frames: Buffer[] = [];
      const subscriber: Subscriber = { protocol: 2, deliver: (frame) => frames.push(frame) };
      for (const sandboxId of ['sb-hot', 'sb-other']) {
        broker.subscribe(subscriber, { key: `{1}${sandboxId}`, workspaceId: 1, sandboxId, displayName: sandboxId });
      }
      // A burst (the clock does not move: every slab fills "at once") grows the slab to its max.
      for (let n = 0; n < 4_000; n++) broker.fanOut(storedEvent('sb-hot', n));
      const peak = broker.frameSlabBytes();
      expect(peak).toBeGreaterThanOrEqual(128 * 1024);
      // Frames are adjacent in the slab: one run of bytes for the write path.
      const last = frames.at(-1)!;
      const before = frames.at(-2)!;
      expect(before.buffer === last.buffer && before.byteOffset + before.length === last.byteOffset).toBe(true);

      // A trickle: 64 events a second. Within a couple of sweeps it holds far less.
      for (let second = 0; second < 4; second++) {
        vi.advanceTimersByTime(1_100);
        for (let n = 0; n < 64; n++) broker.fanOut(storedEvent('sb-hot', 10_000 + second * 64 + n));
      }
      expect(broker.frameSlabBytes()).toBeLessThanOrEqual(64 * 1024);

      // Silence on sb-hot (another channel keeps the fan-out, and so the sweep, going).
      for (let second = 0; second < 3; second++) {
        vi.advanceTimersByTime(1_100);
        for (let n = 0; n < 64; n++) broker.fanOut(storedEvent('sb-other', second * 64 + n));
      }
      // sb-other's own slab is all that is held (it grows within each of its bursts of 64).
      expect(broker.frameSlabBytes()).toBeLessThanOrEqual(32 * 1024);
      // sb-hot starts over from a minimum slab: a slice of Node's 8 KiB shared pool.
      broker.fanOut(storedEvent('sb-hot', 20_000));
      expect(frames.at(-1)!.buffer.byteLength).toBeLessThanOrEqual(8 * 1024);
      // Frames handed out before stay intact.
      expect(frames[0]!.toString()).toMatch(/^\*3\r\n\$7\r\nmessage\r\n\$6\r\nsb-hot\r\n\$\d+\r\n\{"id":"1-0",/);
    } finally {
      vi.useRealTimers();
    }
  });

  it("a subscriber's frames of one event-loop turn stay one run of bytes as the slab fills up", async () => {
    // Turns 50 ms apart with 17 frames each (about 3.8 KiB), as a closed-loop fan-out produces
    // them: a slab must outlast several turns, or nearly every turn's frames span two slabs
    // and the write path copies them into one buffer per subscriber.
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      const broker = new Broker();
      let turnFrames: Buffer[] = [];
      const subscriber: Subscriber = { protocol: 2, deliver: (frame) => turnFrames.push(frame) };
      broker.subscribe(subscriber, {
        key: '{1}sb-turns',
        workspaceId: 1,
        sandboxId: 'sb-turns',
        displayName: 'sb-turns',
      });
      let n = 0;
      let split = 0;
      const turns = 64;
      for (let turn = 0; turn < turns; turn++) {
        turnFrames = [];
        for (let i = 0; i < 17; i++) broker.fanOut(storedEvent('sb-turns', n++));
        const runs = turnFrames.filter(
          (frame, i) =>
            i === 0 ||
            frame.buffer !== turnFrames[i - 1]!.buffer ||
            frame.byteOffset !== turnFrames[i - 1]!.byteOffset + turnFrames[i - 1]!.length,
        ).length;
        if (turn >= 16 && runs > 1) split += 1;
        vi.advanceTimersByTime(50);
        await new Promise((resolve) => setImmediate(resolve));
      }
      // Once the slab lasts 8 turns, at most one turn in 8 ends one slab and starts the next.
      expect(split).toBeLessThanOrEqual((turns - 16) / 8 + 1);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('encode once, write many', () => {
  it('one publish to N subscribers of the same form encodes one frame, and all get the same bytes', async () => {
    server = await startTestServer();
    const token = await server.token({ workspaceId: 3 });
    const subscribers: RawClient[] = [];
    for (let i = 0; i < 8; i++) {
      const client = await server.authed({ workspaceId: 3 });
      client.send(resp('SUBSCRIBE', 'sb-many'));
      await client.read('*3\r\n$9\r\nsubscribe\r\n$7\r\nsb-many\r\n:1\r\n');
      subscribers.push(client);
    }
    const stats = server.server.context.broker.stats;
    const before = stats.framesEncoded;
    const publisher = await server.raw();
    publisher.send(resp('AUTH', token) + resp('PUBLISH', 'sb-many', '{"type":"once","data":{"k":1}}'));
    expect(await publisher.read('+OK\r\n:8\r\n')).toBe('+OK\r\n:8\r\n');
    const frames = await Promise.all(
      subscribers.map((client) => client.waitFor((received) => received.toString().endsWith('}\r\n'))),
    );
    expect(stats.framesEncoded - before).toBe(1);
    const first = frames[0]!.toString();
    expect(first).toMatch(
      /^\*3\r\n\$7\r\nmessage\r\n\$7\r\nsb-many\r\n\$\d+\r\n\{"id":"\d+-\d+","sandboxId":"sb-many",/,
    );
    for (const frame of frames) expect(frame.toString()).toBe(first);
  });

  it('one frame per form: RESP2 and RESP3 subscribers, and a pattern, two clients each', async () => {
    server = await startTestServer();
    const token = await server.token({ workspaceId: 4 });
    const forms: RawClient[] = [];
    for (let i = 0; i < 2; i++) {
      const resp2 = await server.authed({ workspaceId: 4 });
      resp2.send(resp('SUBSCRIBE', 'sb-forms'));
      await resp2.read('*3\r\n$9\r\nsubscribe\r\n$8\r\nsb-forms\r\n:1\r\n');
      const resp3 = await server.raw();
      resp3.send(resp('HELLO', '3', 'AUTH', 'default', token) + resp('SUBSCRIBE', 'sb-forms'));
      await resp3.waitFor((received) =>
        received.toString().endsWith('>3\r\n$9\r\nsubscribe\r\n$8\r\nsb-forms\r\n:1\r\n'),
      );
      const pattern = await server.authed({ workspaceId: 4 });
      pattern.send(resp('PSUBSCRIBE', 'sb-*'));
      await pattern.read('*3\r\n$10\r\npsubscribe\r\n$4\r\nsb-*\r\n:1\r\n');
      forms.push(resp2, resp3, pattern);
    }
    const stats = server.server.context.broker.stats;
    const before = stats.framesEncoded;
    const publisher = await server.authed({ workspaceId: 4 });
    publisher.send(resp('PUBLISH', 'sb-forms', '{"type":"forms"}'));
    expect(await publisher.line()).toBe(':6\r\n');
    await Promise.all(forms.map((client) => client.waitFor((received) => received.toString().endsWith('}\r\n'))));
    expect(stats.framesEncoded - before).toBe(3);
    expect(forms[1]!.pending).toMatch(/>3\r\n\$7\r\nmessage\r\n\$8\r\nsb-forms\r\n\$\d+\r\n\{"id"/);
    expect(forms[2]!.pending).toMatch(/\*4\r\n\$8\r\npmessage\r\n\$4\r\nsb-\*\r\n\$8\r\nsb-forms\r\n\$\d+\r\n\{"id"/);
  });

  it('frames of several channels and a pattern reach one subscriber in publish order', async () => {
    server = await startTestServer();
    const subscriber = await server.authed({ workspaceId: 5 });
    subscriber.send(resp('SUBSCRIBE', 'sb-a', 'sb-b') + resp('PSUBSCRIBE', 'sb-*'));
    await subscriber.waitFor((received) =>
      received.toString().endsWith('*3\r\n$10\r\npsubscribe\r\n$4\r\nsb-*\r\n:3\r\n'),
    );
    await subscriber.take(subscriber.pending.length);
    const publisher = await server.authed({ workspaceId: 5 });
    let commands = '';
    for (let i = 0; i < 300; i++)
      commands += resp('PUBLISH', i % 3 === 0 ? 'sb-b' : 'sb-a', `{"type":"t","data":{"i":${i}}}`);
    publisher.send(commands);
    await publisher.read(':2\r\n'.repeat(300));
    const all = (
      await subscriber.waitFor((received) => (received.toString().match(/"i":/g) ?? []).length === 600)
    ).toString();
    // Each event: the channel message, then the pattern message (Redis's order), one event after another.
    const seen = [
      ...all.matchAll(
        /(\*3\r\n\$7\r\nmessage|\*4\r\n\$8\r\npmessage\r\n\$4\r\nsb-\*)\r\n\$4\r\n(sb-[ab])\r\n\$\d+\r\n\{[^\r]*"data":\{"i":(\d+)\}/g,
      ),
    ].map((m) => `${m[1]!.includes('pmessage') ? 'p' : 'm'}:${m[2]}:${m[3]}`);
    const expected = Array.from({ length: 300 }, (_, i) => {
      const channel = i % 3 === 0 ? 'sb-b' : 'sb-a';
      return [`m:${channel}:${i}`, `p:${channel}:${i}`];
    }).flat();
    expect(seen).toEqual(expected);
  });
});
