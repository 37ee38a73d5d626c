/**
 * The daemon-wide output budget (docs/operations.md, "Output budget") over real write paths:
 * what each path queues, its socket holds and its owner holds back is counted once (as it grows
 * by a step, and when it is written); past the budget the largest are cut first, a client under
 * 32 KiB never; released bytes leave the count.
 * The sockets are in-memory writables whose buffer the test drains, so every figure is exact;
 * test/e2e/output-budget.test.ts runs the same through the daemon.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import {
  COUNT_STEP,
  NEVER_CUT_BELOW,
  OutputBudget,
  type OutputCut,
  recheckAfter,
} from '../../src/runtime/output-budget.js';
import { WritePath } from '../../src/session/write-path.js';

const KIB = 1024;

/** A socket whose peer reads nothing until `take` is called. */
class StalledSocket extends EventEmitter {
  writableLength = 0;
  destroyed = false;
  write(data: Buffer): boolean {
    this.writableLength += data.length;
    return this.writableLength < 16 * KIB;
  }
  /** The peer read `bytes`: the buffer shrinks, with no event unless it emptied (as Node's). */
  take(bytes: number): void {
    this.writableLength = Math.max(0, this.writableLength - bytes);
    if (this.writableLength === 0) this.emit('drain');
  }
  end() {}
  destroy() {
    if (this.destroyed) return;
    this.destroyed = true;
    this.writableLength = 0;
    queueMicrotask(() => this.emit('close'));
  }
  cork() {}
  uncork() {}
}

class Client {
  readonly socket = new StalledSocket();
  readonly cuts: OutputCut[] = [];
  readonly path: WritePath;
  constructor(
    readonly name: string,
    budget: OutputBudget,
    limit = 64 * 1024 * KIB,
  ) {
    this.path = new WritePath(
      this.socket,
      () => limit,
      (_pending, cause) => {
        this.cuts.push(cause);
        this.socket.destroy();
      },
      10_000,
      budget,
    );
  }
  write(bytes: number): void {
    this.path.write(Buffer.alloc(bytes));
  }
  get cut(): boolean {
    return this.cuts.length > 0;
  }
}

/** Lets the write paths' once-per-turn flush run. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('OutputBudget over write paths', () => {
  it('counts queued, socket and held bytes once, and releases them when a client closes', async () => {
    const budget = new OutputBudget(0);
    const a = new Client('a', budget);
    const b = new Client('b', budget);
    a.write(10 * KIB);
    b.write(20 * KIB);
    expect(budget.total).toBe(0); // under a step each: counted when written
    await nextTurn(); // flushed: the bytes moved from the queues to the sockets
    expect(budget.total).toBe(30 * KIB);
    expect(budget.measure()).toBe(30 * KIB);
    a.path.hold(5 * KIB);
    expect(budget.total).toBe(35 * KIB);
    a.path.unhold(5 * KIB);
    b.socket.take(20 * KIB); // emptied: 'drain'
    expect(budget.total).toBe(10 * KIB);
    a.socket.destroy();
    await nextTurn();
    expect(budget.total).toBe(0);
    expect(budget.measure()).toBe(0);
    expect(a.cut || b.cut).toBe(false);
  });

  it('counts growth a step at a time: the total never lags by more than a step per client', () => {
    const budget = new OutputBudget(0);
    const client = new Client('a', budget);
    for (let n = 1; n <= 200; n++) {
      client.write(KIB);
      expect(budget.total).toBeLessThanOrEqual(n * KIB);
      expect(budget.total).toBeGreaterThanOrEqual(n * KIB - COUNT_STEP);
    }
    expect(budget.measure()).toBe(200 * KIB);
  });

  it('past the budget, cuts the clients holding the most first, until back within it', async () => {
    const budget = new OutputBudget(1024 * KIB);
    const clients = ['a', 'b', 'c', 'd'].map((name) => new Client(name, budget));
    const [a, b, c, d] = clients as [Client, Client, Client, Client];
    a.write(400 * KIB);
    b.write(300 * KIB);
    c.write(200 * KIB);
    expect(budget.total).toBe(900 * KIB);
    expect(clients.some((client) => client.cut)).toBe(false);
    // 900 + 200 = 1,100 KiB: cutting the largest (a, 400 KiB) is enough.
    d.write(200 * KIB);
    expect(a.cuts).toEqual(['budget']);
    expect([b.cut, c.cut, d.cut]).toEqual([false, false, false]);
    expect(budget.total).toBe(700 * KIB);
    expect(budget.cuts).toBe(1);
    // A burst to c makes it the largest: it goes, then b.
    c.write(800 * KIB);
    expect(c.cuts).toEqual(['budget']);
    expect(b.cut || d.cut).toBe(false);
    expect(budget.total).toBeLessThanOrEqual(1024 * KIB);
    await nextTurn();
    expect(budget.measure()).toBe(500 * KIB);
  });

  it('never cuts a client holding under 32 KiB, even over the budget', () => {
    const budget = new OutputBudget(16 * KIB);
    const small = [1, 2, 3].map((n) => new Client(`small-${n}`, budget));
    for (const client of small) client.write(NEVER_CUT_BELOW - 1);
    const big = new Client('big', budget);
    big.write(NEVER_CUT_BELOW + 1);
    expect(big.cuts).toEqual(['budget']);
    expect(small.some((client) => client.cut)).toBe(false);
    expect(budget.total).toBe(3 * (NEVER_CUT_BELOW - 1));
    // Over the budget with nothing it may cut: the next check waits for the total to grow.
    expect(budget.trigger).toBe(budget.total + recheckAfter(16 * KIB));
  });

  it('measures afresh before cutting: bytes a reader took without an event are not held against it', async () => {
    const budget = new OutputBudget(256 * KIB);
    const reader = new Client('reader', budget);
    const stalled = new Client('stalled', budget);
    reader.write(200 * KIB);
    await nextTurn();
    reader.socket.take(199 * KIB); // the socket's buffer shrank; no 'drain' (not empty)
    expect(budget.total).toBe(200 * KIB); // an upper bound until measured
    stalled.write(100 * KIB); // 300 KiB counted, 101 KiB real
    expect(reader.cut || stalled.cut).toBe(false);
    expect(budget.total).toBe(101 * KIB);
  });

  it('frames held back by a resume count, and can get a client cut', () => {
    const budget = new OutputBudget(128 * KIB);
    const resuming = new Client('resuming', budget);
    const other = new Client('other', budget);
    other.write(60 * KIB);
    resuming.write(10 * KIB);
    resuming.path.hold(100 * KIB);
    expect(resuming.cuts).toEqual(['budget']);
    expect(other.cut).toBe(false);
    expect(budget.total).toBe(60 * KIB);
  });

  it('a client cut at its own limit leaves the count and is not counted as a budget cut', () => {
    const budget = new OutputBudget(1024 * KIB);
    const client = new Client('limited', budget, 64 * KIB);
    client.write(65 * KIB);
    expect(client.cuts).toEqual(['limit']);
    expect(budget.total).toBe(0);
    expect(budget.cuts).toBe(0);
  });

  it('0 is no budget; setLimit applies to the next write', () => {
    const budget = new OutputBudget(0);
    const a = new Client('a', budget);
    const b = new Client('b', budget);
    a.write(512 * KIB);
    b.write(64 * KIB);
    expect(a.cut || b.cut).toBe(false);
    budget.setLimit(256 * KIB);
    b.write(COUNT_STEP + 1); // past a step of b's output: counted, and the total checked
    expect(a.cuts).toEqual(['budget']);
    expect(b.cut).toBe(false);
  });

  it('a write path made for a socket already gone is never counted nor kept', () => {
    const budget = new OutputBudget(1024 * KIB);
    const socket = new StalledSocket();
    socket.destroyed = true;
    const path = new WritePath(
      socket,
      () => KIB,
      () => {},
      10_000,
      budget,
    );
    path.write(Buffer.alloc(100));
    expect(path.isClosed).toBe(true);
    expect(budget.total).toBe(0);
    expect(budget.measure()).toBe(0);
  });
});
