/** What a sandbox holds in the broker grows with what it does: a lone subscriber needs no Map, a quiet channel no slab of its own. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Broker, type Subscriber } from '../../src/broker/broker.js';
import { channelKey } from '../../src/broker/scope.js';
import type { StoredEvent } from '../../src/event/event.js';
import { deliveryFrame, type Protocol } from '../../src/protocol/encode.js';

const storedEvent = (sandboxId: string, n: number): StoredEvent => ({
  id: { ms: 1, seq: n },
  workspaceId: 1,
  sandboxId,
  type: 't',
  timestamp: 1,
  json: `{"id":"1-${n}","sandboxId":"${sandboxId}","workspaceId":1,"type":"t","data":{"n":${n}},"timestamp":1}`,
});

class Recorder implements Subscriber {
  readonly frames: string[] = [];
  last: Buffer | undefined;
  constructor(readonly protocol: Protocol) {}
  deliver(frame: Buffer): void {
    this.frames.push(frame.toString());
    this.last = frame;
  }
}

const target = (sandboxId: string, displayName = sandboxId) => ({
  workspaceId: 1,
  sandboxId,
  key: channelKey(1, sandboxId),
  displayName,
});

afterEach(() => vi.useRealTimers());

describe('one subscriber, then two, then one again', () => {
  it('delivers each its own form and counts exactly as subscribers come and go', () => {
    const broker = new Broker();
    const first = new Recorder(2);
    const second = new Recorder(3);
    const key = channelKey(1, 'sb');
    expect(broker.subscribe(first, target('sb'))).toBe(true);
    expect(broker.subscribe(first, target('sb'))).toBe(false);
    expect(broker.subscriberCount(key)).toBe(1);
    broker.fanOut(storedEvent('sb', 1));
    expect(broker.subscribe(second, target('sb', '{1}sb'))).toBe(true);
    expect(broker.subscribe(second, target('sb', '{1}sb'))).toBe(false);
    expect(broker.subscriberCount(key)).toBe(2);
    expect(broker.receiverCount({ workspaceId: 1, sandboxId: 'sb' })).toBe(2);
    broker.fanOut(storedEvent('sb', 2));
    // The first one leaves: the second is the lone subscriber, with its own name and protocol.
    expect(broker.unsubscribe(first, key)).toBe(true);
    expect(broker.unsubscribe(first, key)).toBe(false);
    expect(broker.subscriberCount(key)).toBe(1);
    broker.fanOut(storedEvent('sb', 3));
    const json = (n: number) => storedEvent('sb', n).json;
    expect(first.frames).toEqual([1, 2].map((n) => deliveryFrame(2, undefined, 'sb', json(n)).toString()));
    expect(second.frames).toEqual([2, 3].map((n) => deliveryFrame(3, undefined, '{1}sb', json(n)).toString()));
    expect(broker.unsubscribe(second, key)).toBe(true);
    expect(broker.channelCount).toBe(0);
    expect(broker.fanOut(storedEvent('sb', 4))).toBe(0);
  });

  it('with several subscribers, one joining or leaving between two events changes who gets the next', () => {
    const broker = new Broker();
    const [a, b, c, d] = [new Recorder(2), new Recorder(2), new Recorder(2), new Recorder(2)];
    const key = channelKey(1, 'sb');
    for (const subscriber of [a, b, c]) broker.subscribe(subscriber, target('sb'));
    expect(broker.fanOut(storedEvent('sb', 1))).toBe(3);
    broker.unsubscribe(b, key);
    expect(broker.fanOut(storedEvent('sb', 2))).toBe(2);
    broker.subscribe(d, target('sb'));
    expect(broker.fanOut(storedEvent('sb', 3))).toBe(3);
    broker.unsubscribe(a, key);
    broker.subscribe(b, target('sb'));
    expect(broker.fanOut(storedEvent('sb', 4))).toBe(3);
    const got = (recorder: Recorder) => recorder.frames.map((frame) => Number(/"n":(\d+)/.exec(frame)![1]));
    expect([got(a), got(b), got(c), got(d)]).toEqual([
      [1, 2, 3],
      [1, 4],
      [1, 2, 3, 4],
      [3, 4],
    ]);
  });

  it('keeps equal sandbox ids of two workspaces apart, by key and by event', () => {
    const broker = new Broker();
    const inOne = new Recorder(2);
    const inTwo = new Recorder(2);
    broker.subscribe(inOne, { workspaceId: 1, sandboxId: 'sb', key: channelKey(1, 'sb'), displayName: 'sb' });
    broker.subscribe(inTwo, { workspaceId: 12, sandboxId: 'sb', key: channelKey(12, 'sb'), displayName: 'sb' });
    expect(broker.channelCount).toBe(2);
    expect(broker.subscriberCount(channelKey(1, 'sb'))).toBe(1);
    expect(broker.subscriberCount(channelKey(12, 'sb'))).toBe(1);
    expect(broker.subscriberCount(channelKey(2, 'sb'))).toBe(0);
    expect(broker.subscriberCount('sb')).toBe(0);
    expect(broker.fanOut({ ...storedEvent('sb', 1), workspaceId: 12 })).toBe(1);
    expect([inOne.frames.length, inTwo.frames.length]).toEqual([0, 1]);
    expect(broker.unsubscribe(inTwo, channelKey(1, 'sb'))).toBe(false);
    expect(broker.unsubscribe(inTwo, channelKey(12, 'sb'))).toBe(true);
    expect(broker.channelCount).toBe(1);
  });

  it('an interrupt reaches the lone subscriber and every one of several', () => {
    const broker = new Broker();
    const cut: string[] = [];
    const subscriber = (name: string): Subscriber => ({
      protocol: 2,
      deliver: () => {},
      interrupt: (message) => cut.push(`${name}: ${message}`),
    });
    broker.subscribe(subscriber('a'), target('one'));
    broker.subscribe(subscriber('b'), target('two'));
    broker.subscribe(subscriber('c'), target('two'));
    expect(broker.interrupt({ workspaceId: 1, sandboxId: 'one' }, 'lost')).toBe(1);
    expect(broker.interrupt({ workspaceId: 1, sandboxId: 'two' }, 'lost')).toBe(2);
    expect(cut.sort()).toEqual(['a: lost', 'b: lost', 'c: lost']);
  });
});

describe('frame slabs follow the rate, not the number of channels', () => {
  it('10,000 channels with a few events each hold no slab of their own, and every frame is exact', () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    const broker = new Broker();
    const subscribers: Recorder[] = [];
    for (let i = 0; i < 10_000; i++) {
      const subscriber = new Recorder(2);
      broker.subscribe(subscriber, target(`sb-${i}`));
      subscribers.push(subscriber);
    }
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 10_000; i++) broker.fanOut(storedEvent(`sb-${i}`, round));
      vi.advanceTimersByTime(1_100);
    }
    expect(broker.frameSlabBytes()).toBe(0);
    // The last frames of two channels were written one after the other into the slab quiet
    // channels share (each with a slab of its own, they would be 2 KiB apart).
    const [a, b] = [subscribers[9_998]!.last!, subscribers[9_999]!.last!];
    expect(a.buffer === b.buffer && a.byteOffset + a.length === b.byteOffset).toBe(true);
    for (const i of [0, 1, 4_999, 9_999]) {
      expect(subscribers[i]!.frames).toEqual(
        [0, 1, 2].map((n) => deliveryFrame(2, undefined, `sb-${i}`, storedEvent(`sb-${i}`, n).json).toString()),
      );
    }
  });

  it('a channel that gets busy takes a slab of its own, adjacent frames included, and gives it back when quiet', () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    const broker = new Broker();
    const frames: Buffer[] = [];
    broker.subscribe({ protocol: 2, deliver: (frame) => frames.push(frame) }, target('busy'));
    for (let i = 0; i < 64; i++) broker.subscribe(new Recorder(2), target(`quiet-${i}`));
    for (let n = 0; n < 200; n++) broker.fanOut(storedEvent('busy', n));
    expect(broker.frameSlabBytes()).toBeGreaterThan(0);
    const [before, last] = frames.slice(-2) as [Buffer, Buffer];
    expect(before.buffer === last.buffer && before.byteOffset + before.length === last.byteOffset).toBe(true);
    // Two quiet seconds (other channels, one event each, keep the fan-out and so the sweep going).
    for (let second = 0; second < 2; second++) {
      vi.advanceTimersByTime(1_100);
      for (let i = 0; i < 64; i++) broker.fanOut(storedEvent(`quiet-${i}`, second));
    }
    expect(broker.frameSlabBytes()).toBe(0);
    broker.fanOut(storedEvent('busy', 1_000));
    expect(frames.at(-1)!.toString()).toBe(
      deliveryFrame(2, undefined, 'busy', storedEvent('busy', 1_000).json).toString(),
    );
    expect(frames[0]!.toString()).toBe(deliveryFrame(2, undefined, 'busy', storedEvent('busy', 0).json).toString());
  });
});

describe('the channel found last (Broker keeps it for the next event)', () => {
  it('is forgotten with its channel: a channel made again for the same sandbox gets the events', () => {
    const broker = new Broker();
    const first = new Recorder(2);
    const second = new Recorder(2);
    broker.subscribe(first, target('sb'));
    expect(broker.fanOut(storedEvent('sb', 1))).toBe(1);
    expect(broker.fanOut(storedEvent('other', 2))).toBe(0); // a sandbox nobody watches: nothing kept
    expect(broker.fanOut(storedEvent('sb', 3))).toBe(1);
    broker.leave(first, { workspaceId: 1, sandboxId: 'sb' }); // its last subscriber: the channel goes
    expect(broker.fanOut(storedEvent('sb', 4))).toBe(0);
    broker.subscribe(second, target('sb'));
    expect(broker.fanOut(storedEvent('sb', 5))).toBe(1);
    expect(first.frames).toEqual(
      [1, 3].map((n) => deliveryFrame(2, undefined, 'sb', storedEvent('sb', n).json).toString()),
    );
    expect(second.frames).toEqual([deliveryFrame(2, undefined, 'sb', storedEvent('sb', 5).json).toString()]);
  });

  it('is told apart from a sandbox of the same id in another workspace', () => {
    const broker = new Broker();
    const inOne = new Recorder(2);
    broker.subscribe(inOne, target('sb'));
    expect(broker.fanOut(storedEvent('sb', 1))).toBe(1);
    expect(broker.fanOut({ ...storedEvent('sb', 2), workspaceId: 2 })).toBe(0);
    expect(inOne.frames).toHaveLength(1);
  });
});
