/**
 * Fan-out runs (src/broker/slab.ts, ChannelRun): while every subscriber of a channel takes its
 * frames as they are, the broker only moves the channel's run on and each session's write path
 * takes the run's bytes later. Real sessions here, so that what makes a session leave a run
 * (a command reply, another channel's or a pattern's frame, a type filter, a protocol switch,
 * a subscriber joining or leaving, its output limit) is the code the daemon runs: each
 * session's bytes must be exactly what handing it every frame one by one would have written.
 */
import { EventEmitter } from 'node:events';
import { afterEach, expect, it, vi } from 'vitest';
import { Broker } from '../../src/broker/broker.js';
import { channelKey } from '../../src/broker/scope.js';
import type { StoredEvent } from '../../src/event/event.js';
import { deliveryFrame, type Protocol } from '../../src/protocol/encode.js';
import { compileGlob } from '../../src/protocol/glob.js';
import { OutputBudget, type OutputCut } from '../../src/runtime/output-budget.js';
import { Session } from '../../src/session/session.js';
import { TypeFilter } from '../../src/session/type-filter.js';
import { WritePath } from '../../src/session/write-path.js';
import type { EventStore } from '../../src/store/types.js';

afterEach(() => vi.restoreAllMocks());

/** A socket that keeps what it is given; `held`: its reader stopped, so its buffer only grows. */
class CapturingSocket extends EventEmitter {
  writableLength = 0;
  destroyed = false;
  held = false;
  private readonly chunks: Buffer[] = [];
  write(chunk: Buffer, done?: () => void): boolean {
    this.chunks.push(Buffer.from(chunk)); // as sent: the write's callback lets its slab be reused
    if (this.held) this.writableLength += chunk.length;
    if (done !== undefined) process.nextTick(done);
    return !this.held;
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
  end() {}
  destroy() {
    this.destroyed = true;
    this.emit('close');
  }
  cork() {}
  uncork() {}
  /** Its reader took everything. */
  drain(): void {
    this.writableLength = 0;
    this.emit('drain');
  }
}

/** A session and, beside it, what it must have received: its subscriptions as a model. */
class Reader {
  readonly socket = new CapturingSocket();
  readonly session: Session;
  readonly expected: Buffer[] = [];
  readonly channels = new Map<string, string | undefined>(); // sandbox id -> type glob
  readonly patterns: string[] = [];
  protocol: Protocol = 2;
  cutAt: number | undefined;
  cause: OutputCut | undefined;

  constructor(
    readonly name: string,
    broker: Broker,
    budget: OutputBudget,
    limit = 1 << 30,
  ) {
    this.session = new Session(
      {
        // A replay paces itself at a quarter of maxOutputBytes (64 KiB); no replay runs here.
        limits: { maxOutputBytes: 256 * 1024, closeGraceMs: 10_000 },
        clockToleranceMs: 0,
        outputBudget: budget,
        broker,
        store: undefined as unknown as EventStore,
      },
      this.socket,
      2,
      () => limit,
      {
        replayFrame: () => Buffer.alloc(0),
        isOpen: () => !this.socket.destroyed,
        overflow: (pending, cause) => {
          this.cutAt = pending;
          this.cause = cause;
          this.session.close();
          this.socket.destroy();
        },
        expired: () => {},
        eventsLost: () => {},
      },
    );
  }

  subscribe(sandboxId: string, typeGlob?: string): void {
    this.session.subscribe(target(sandboxId), typeGlob === undefined ? undefined : TypeFilter.from([typeGlob]));
    this.channels.set(sandboxId, typeGlob);
  }

  unsubscribe(sandboxId: string): void {
    this.session.unsubscribe({ workspaceId: 1, sandboxId });
    this.channels.delete(sandboxId);
  }

  psubscribe(pattern: string): void {
    this.session.psubscribe(pattern, 1);
    this.patterns.push(pattern);
  }

  punsubscribe(pattern: string): void {
    this.session.punsubscribe(pattern);
    this.patterns.splice(this.patterns.indexOf(pattern), 1);
  }

  reply(text: string): void {
    const bytes = Buffer.from(text);
    this.session.write(bytes);
    this.expected.push(bytes);
  }

  switchProtocol(protocol: Protocol): void {
    this.session.protocol = protocol;
    this.protocol = protocol;
  }

  /** What handing this reader `event` frame by frame writes: its message, then its pmessages. */
  expect(sandboxId: string, type: string, json: string): void {
    if (this.channels.has(sandboxId)) {
      const glob = this.channels.get(sandboxId);
      if (glob === undefined || compileGlob(glob)(type)) {
        this.expected.push(deliveryFrame(this.protocol, undefined, sandboxId, json));
      }
    }
    for (const pattern of this.patterns) {
      if (compileGlob(pattern)(sandboxId)) this.expected.push(deliveryFrame(this.protocol, pattern, sandboxId, json));
    }
  }
}

function target(sandboxId: string) {
  return { workspaceId: 1, sandboxId, key: channelKey(1, sandboxId), displayName: sandboxId };
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A deterministic stream of choices in [0, n) (mulberry32). */
function choices(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n);
  };
}

let seq = 0;
function publish(broker: Broker, readers: Reader[], sandboxId: string, type: string, pad = 0): void {
  const json = JSON.stringify({ id: `${seq}-0`, sandboxId, type, data: { seq, pad: 'x'.repeat(pad) } });
  const event = { workspaceId: 1, sandboxId, type, json, id: { ms: seq, seq: 0 } } as unknown as StoredEvent;
  seq += 1;
  for (const reader of readers) reader.expect(sandboxId, type, json);
  broker.fanOut(event);
}

it('a connection on two channels and a pattern, beside connections following each channel, gets every byte in order', async () => {
  const visits = vi.spyOn(Session.prototype, 'deliver');
  const joins = vi.spyOn(WritePath.prototype, 'writeInRun');
  const broker = new Broker();
  const budget = new OutputBudget(0);
  const both = new Reader('both+pattern', broker, budget); // sb-a, sb-b and, at times, sb-*
  const pair = new Reader('both', broker, budget); // sb-a and sb-b
  const onlyA = new Reader('a', broker, budget);
  const onlyB = new Reader('b', broker, budget);
  const alsoA = new Reader('a too', broker, budget);
  const joiner = new Reader('joins a', broker, budget);
  const readers = [both, pair, onlyA, onlyB, alsoA, joiner];
  both.subscribe('sb-a');
  both.subscribe('sb-b');
  pair.subscribe('sb-a');
  pair.subscribe('sb-b');
  onlyA.subscribe('sb-a');
  onlyB.subscribe('sb-b');
  alsoA.subscribe('sb-a');

  const pick = choices(7);
  for (let round = 0; round < 200; round += 1) {
    // While it holds the pattern, its frames leave the runs of both channels at every event.
    if (round % 40 === 0) both.psubscribe('sb-*');
    if (round % 40 === 10) both.punsubscribe('sb-*');
    // A filter or a protocol switch lasts till the end of its round.
    if (onlyA.channels.get('sb-a') !== undefined) onlyA.subscribe('sb-a');
    if (pair.protocol === 3) pair.switchProtocol(2);
    const events = 1 + pick(40);
    for (let i = 0; i < events; i += 1) {
      // Runs of one channel, broken by the other, with now and then something else in between.
      const sandboxId = pick(6) === 0 ? 'sb-b' : 'sb-a';
      publish(broker, readers, sandboxId, pick(3) === 0 ? 'keep.x' : 'drop.x', pick(8) === 0 ? 3000 : pick(200));
      switch (pick(120)) {
        case 0:
          pair.reply('+PONG\r\n');
          break;
        case 1:
          onlyA.reply('*2\r\n$4\r\npong\r\n$0\r\n\r\n');
          break;
        case 2:
          onlyA.subscribe('sb-a', 'keep.*');
          break;
        case 3:
          pair.switchProtocol(3);
          break;
        case 4:
          if (joiner.channels.has('sb-a')) joiner.unsubscribe('sb-a');
          else joiner.subscribe('sb-a');
          break;
        case 5:
          if (pair.channels.has('sb-b')) pair.unsubscribe('sb-b');
          else pair.subscribe('sb-b');
          break;
      }
    }
    await turn();
  }
  await turn();

  for (const reader of readers) {
    const want = Buffer.concat(reader.expected);
    const got = reader.socket.bytes;
    expect(got.length, reader.name).toBe(want.length);
    expect(got.equals(want), reader.name).toBe(true);
  }
  // Runs did carry many frames: fewer visits than deliveries by far.
  expect(visits.mock.calls.length + joins.mock.calls.length).toBeLessThan(broker.stats.delivered * 0.75);
});

it('a connection following a run is cut off at the very frame that takes it past its output limit', async () => {
  const broker = new Broker();
  const budget = new OutputBudget(0);
  const limit = 20_000;
  const slow = new Reader('slow', broker, budget, limit);
  const others = [new Reader('steady 1', broker, budget), new Reader('steady 2', broker, budget)];
  const readers = [slow, ...others];
  for (const reader of readers) reader.subscribe('sb-a');
  slow.socket.held = true; // its reader stopped: its socket's buffer keeps what it was given

  for (let round = 0; round < 20 && slow.cutAt === undefined; round += 1) {
    for (let i = 0; i < 30; i += 1) publish(broker, readers, 'sb-a', 't', 100 + ((round * 31 + i * 17) % 400));
    await turn();
  }
  // What handing it every frame would have cut it off at: the first frame over the limit.
  let pending = 0;
  for (const frame of slow.expected) {
    pending += frame.length;
    if (pending > limit) break;
  }
  expect(slow.cutAt).toBe(pending);
  // What it was written before is what it was sent, exactly; the others got everything.
  const sent = slow.socket.bytes;
  expect(sent.equals(Buffer.concat(slow.expected).subarray(0, sent.length))).toBe(true);
  await turn();
  for (const reader of others) expect(reader.socket.bytes.equals(Buffer.concat(reader.expected))).toBe(true);
});

/**
 * The same readers and events, delivered with runs and with every frame handed to each reader
 * (`deliverInRun` taken away): slow readers, readers cut off at their own limits, and readers
 * cut off by a daemon-wide budget, which measures every output when the total crosses it.
 */
function limitsAndBudget(runs: boolean) {
  const broker = new Broker();
  const budget = new OutputBudget(160 * 1024);
  const limits = [12 * 1024, 1 << 30, 40 * 1024, 1 << 30, 1 << 30, 1 << 30, 64 * 1024, 1 << 30];
  const readers = limits.map((limit, i) => new Reader(`reader ${i}`, broker, budget, limit));
  if (!runs) for (const reader of readers) (reader.session as { deliverInRun?: unknown }).deliverInRun = undefined;
  readers.forEach((reader, i) => {
    if (i <= 5) reader.subscribe('sb-a');
    if (i >= 4) reader.subscribe('sb-b');
    reader.socket.held = i % 3 !== 1; // readers 1, 4 and 7 take everything at once
  });
  return { broker, readers };
}

it('with runs, readers are cut off at their limits and by the budget exactly as frame by frame', async () => {
  const results = [];
  for (const runs of [true, false]) {
    const joins = vi.spyOn(WritePath.prototype, 'writeInRun');
    const { broker, readers } = limitsAndBudget(runs);
    seq = 0; // the same events
    const pick = choices(11);
    for (let round = 0; round < 40; round += 1) {
      for (let i = 0; i < 40; i += 1) {
        publish(broker, readers, pick(5) === 0 ? 'sb-b' : 'sb-a', 't', 100 + pick(1400));
      }
      await turn();
      if (round % 5 === 4) readers[3]!.socket.drain(); // a slow reader that catches up now and then
    }
    await turn();
    results.push({
      carried: runs ? broker.stats.delivered - joins.mock.calls.length : 0,
      cuts: readers.map((reader) => ({ at: reader.cutAt, cause: reader.cause })),
      sent: readers.map((reader) => reader.socket.bytes),
      expected: readers.map((reader) => Buffer.concat(reader.expected)),
    });
    joins.mockRestore();
  }
  const [withRuns, frameByFrame] = results;
  expect(withRuns!.cuts).toEqual(frameByFrame!.cuts);
  withRuns!.sent.forEach((sent, i) => {
    expect(sent.equals(frameByFrame!.sent[i]!), `reader ${i}`).toBe(true);
    // What each reader was sent is what it was delivered, up to where it was cut off.
    const want = withRuns!.expected[i]!;
    const whole = withRuns!.cuts[i]!.at === undefined;
    expect(sent.equals(whole ? want : want.subarray(0, sent.length)), `reader ${i}`).toBe(true);
  });
  // The cases the test is about did happen: runs carried frames, and both kinds of cut.
  expect(withRuns!.carried).toBeGreaterThan(1000);
  const causes = withRuns!.cuts.map((cut) => cut.cause);
  expect(causes).toContain('limit');
  expect(causes).toContain('budget');
  expect(causes).toContain(undefined);
});

it("the budget's measure counts the bytes a run's followers have not taken yet, as frame by frame", async () => {
  const totals = [];
  for (const runs of [true, false]) {
    const broker = new Broker();
    const budget = new OutputBudget(1 << 30);
    const readers = [new Reader('reader 1', broker, budget), new Reader('reader 2', broker, budget)];
    if (!runs) for (const reader of readers) (reader.session as { deliverInRun?: unknown }).deliverInRun = undefined;
    for (const reader of readers) reader.subscribe('sb-a');
    // One turn of events, none written to the sockets yet: INFO's and the budget's measure must
    // see all of them, those a follower has not taken yet among them.
    for (let i = 0; i < 20; i += 1) publish(broker, readers, 'sb-a', 't', 200);
    totals.push(budget.measure());
    await turn();
    for (const reader of readers) expect(reader.socket.bytes.equals(Buffer.concat(reader.expected))).toBe(true);
  }
  const delivered = 2 * 20;
  expect(totals[0]).toBeGreaterThan(delivered * 200);
  expect(totals[0]).toBe(totals[1]);
});
