/**
 * Fan-out slabs are written again once every view of them is gone (src/broker/slab.ts): every
 * frame a subscriber receives is still exact, byte for byte, with readers that stop reading (the
 * socket holds frames of a slab long after its writer moved on), readers that toggle, readers
 * that disconnect mid-write and readers cut off at their output limit. Real sockets, as Node's
 * socket.write keeping the Buffer it is given until the write's callback is what the reuse
 * relies on: a Unix socket, whose small kernel buffer makes Node hold frames soon, with a high
 * write watermark, so that a reader that stopped has most of its frames held by Node (written,
 * as far as the write path can tell) rather than queued in its write path.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { Broker, type Subscriber } from '../../src/broker/broker.js';
import { channelKey } from '../../src/broker/scope.js';
import type { StoredEvent } from '../../src/event/event.js';
import type { Protocol } from '../../src/protocol/encode.js';
import { OutputBudget } from '../../src/runtime/output-budget.js';
import { type OutputStream, WritePath } from '../../src/session/write-path.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanUp of cleanups.splice(0)) cleanUp();
});

/**
 * steady: reads all along; paused: reads nothing until round PAUSED_UNTIL; toggling: stops and
 * starts every few rounds; leaver: reads nothing and disconnects at round LEAVES_AT; limited:
 * reads nothing and is cut off at LIMITED_BYTES.
 */
type Reader = 'steady' | 'paused' | 'toggling' | 'leaver' | 'limited';
const READERS: Reader[] = ['steady', 'paused', 'toggling', 'leaver', 'limited'];
const LIMITED_BYTES = 96 * 1024;
const ROUNDS = 240;
const PAUSED_UNTIL = 150;
const LEAVES_AT = 120;

class Sub implements Subscriber {
  readonly out: WritePath;
  /** Every frame delivered, in order: what the client must have received (or a prefix of it). */
  readonly expected: Buffer[] = [];
  readonly received: Buffer[] = [];
  receivedBytes = 0;
  serverClosed = false;
  private waitingFor: { bytes: number; resolve: () => void } | undefined;

  constructor(
    readonly protocol: Protocol,
    readonly reader: Reader,
    readonly channels: string[],
    readonly server: net.Socket,
    readonly client: net.Socket,
    stream: OutputStream,
  ) {
    this.out = new WritePath(
      stream,
      () => (reader === 'limited' ? LIMITED_BYTES : 1 << 30),
      () => server.destroy(),
      10_000,
      new OutputBudget(0),
    );
    server.on('close', () => {
      this.serverClosed = true;
    });
    client.on('data', (chunk: Buffer) => {
      this.received.push(chunk);
      this.receivedBytes += chunk.length;
      if (this.waitingFor !== undefined && this.receivedBytes >= this.waitingFor.bytes) this.waitingFor.resolve();
    });
    client.on('error', () => {});
    server.on('error', () => {});
  }

  deliver(frame: Buffer): void {
    // What the frame said when it was delivered: a copy, since the slab may be reused later.
    this.expected.push(Buffer.from(frame));
    this.out.write(frame);
  }

  /** Resolves once `bytes` have arrived, or the connection is gone. */
  receivedAll(bytes: number): Promise<void> {
    if (this.receivedBytes >= bytes || this.client.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.waitingFor = { bytes, resolve };
      this.client.once('close', () => resolve());
    });
  }
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Subscribers of three channels, one of each reader kind per channel, fed a few thousand events
 * in bursts of varying size (slabs grow, fill, retire and are taken again), and two readers of
 * two channels of large events. `wrap` stands
 * between the write path and the server's socket. Returns the subscribers that received bytes
 * other than the frames they were delivered, and the pool's counts.
 */
async function run(wrap: (socket: net.Socket) => OutputStream) {
  const dir = mkdtempSync(join(tmpdir(), 'slab-reuse-'));
  const path = join(dir, 'sock');
  const server = net.createServer({ highWaterMark: 4 * 1024 * 1024 });
  const accepted: net.Socket[] = [];
  const sockets: net.Socket[] = [];
  server.on('connection', (socket) => {
    accepted.push(socket);
    sockets.push(socket);
  });
  cleanups.push(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));

  const broker = new Broker();
  const subs: Sub[] = [];
  /** `channels`: sandbox ids, or one pattern (`?`: every one of them, through pmessage frames). */
  const subscribe = async (reader: Reader, channels: string[], protocol: Protocol = 2) => {
    const client = net.connect(path);
    sockets.push(client);
    while (accepted.length === 0) await new Promise((resolve) => server.once('connection', resolve));
    const serverSide = accepted.shift()!;
    const sub = new Sub(protocol, reader, channels, serverSide, client, wrap(serverSide));
    if (reader === 'paused' || reader === 'limited' || reader === 'leaver') client.pause();
    for (const channel of channels) {
      if (channel === '?') broker.psubscribe(sub, channel, 1);
      else
        broker.subscribe(sub, {
          workspaceId: 1,
          sandboxId: channel,
          key: channelKey(1, channel),
          displayName: channel,
        });
    }
    subs.push(sub);
  };
  for (const channel of ['a', 'b', 'c']) for (const reader of READERS) await subscribe(reader, [channel]);
  // Large events of two channels, taken together: each frame is a run of its own, and a turn's
  // few large runs go out as one writev (WritePath.flush), each run with its own callback.
  await subscribe('steady', ['d', 'e']);
  await subscribe('paused', ['d', 'e']);
  // Other forms: RESP3 frames of a channel, and pattern frames of every channel.
  await subscribe('toggling', ['a'], 3);
  await subscribe('steady', ['?']);
  await subscribe('paused', ['?']);

  let seq = 0;
  for (let round = 0; round < ROUNDS; round += 1) {
    const burst = 1 + ((round * 37) % 90);
    for (let i = 0; i < burst; i += 1) {
      const sandboxId = ['a', 'b', 'c'][seq % 3]!;
      const json = JSON.stringify({
        id: `${seq}-0`,
        sandboxId,
        type: 't',
        data: { seq, pad: 'x'.repeat((seq * 7) % 700) },
      });
      broker.fanOut({ workspaceId: 1, sandboxId, json, id: { ms: seq, seq: 0 } } as unknown as StoredEvent);
      seq += 1;
    }
    for (let i = 0; i < 1 + (round % 3); i += 1) {
      const sandboxId = i % 2 === 0 ? 'd' : 'e';
      const json = JSON.stringify({
        id: `${seq}-0`,
        sandboxId,
        type: 't',
        data: { seq, pad: 'y'.repeat(4000 + ((seq * 13) % 2000)) },
      });
      broker.fanOut({ workspaceId: 1, sandboxId, json, id: { ms: seq, seq: 0 } } as unknown as StoredEvent);
      seq += 1;
    }
    await turn();
    for (const sub of subs) {
      if (sub.reader === 'toggling' && round % 9 === 0) {
        if (sub.client.isPaused()) sub.client.resume();
        else sub.client.pause();
      }
      // Gone mid-write: its socket holds frames it will never send.
      if (sub.reader === 'leaver' && round === LEAVES_AT) sub.client.destroy();
      if (sub.reader === 'paused' && round === PAUSED_UNTIL) sub.client.resume();
    }
  }
  for (const sub of subs) sub.client.resume();
  await Promise.all(subs.map((sub) => sub.receivedAll(Buffer.concat(sub.expected).length)));

  const corrupted: string[] = [];
  for (const sub of subs) {
    const want = Buffer.concat(sub.expected);
    const got = Buffer.concat(sub.received);
    const whole = sub.reader !== 'leaver' && sub.reader !== 'limited';
    const exact = whole ? got.equals(want) : got.equals(want.subarray(0, got.length));
    if (!exact) corrupted.push(`${sub.reader} ${sub.channels.join('+')}`);
  }
  return { subs, corrupted, pool: broker.slabPool };
}

it('every frame arrives exact while slabs are reused behind slow, toggling, leaving and cut-off readers', async () => {
  const { subs, corrupted, pool } = await run((socket) => socket);
  expect(corrupted).toEqual([]);
  // The cases the test is about did happen:
  expect(pool.reused).toBeGreaterThan(20); // slabs were written again...
  for (const sub of subs) {
    if (sub.reader === 'limited') expect(sub.serverClosed).toBe(true); // ...while cut-off readers' sockets
    if (sub.reader === 'leaver') expect(sub.receivedBytes).toBeLessThan(Buffer.concat(sub.expected).length); // left unsent
    if (sub.reader === 'steady' || sub.reader === 'paused') {
      expect(sub.receivedBytes).toBe(Buffer.concat(sub.expected).length);
    }
  }
});

it('the check above catches a slab reused while a socket still holds its frames', async () => {
  // A stream that says "done" as soon as it is given a chunk, before the socket wrote it: the
  // slab's views are given back too early, as if the count ignored Node's write callback.
  const early = (socket: net.Socket): OutputStream =>
    new Proxy(socket, {
      get(target, key) {
        if (key === 'write') {
          return (chunk: Buffer, done?: () => void) => {
            const ok = target.write(chunk);
            done?.();
            return ok;
          };
        }
        const value = Reflect.get(target, key, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as unknown as OutputStream;
  const { corrupted } = await run(early);
  expect(corrupted.length).toBeGreaterThan(0);
});
