/**
 * A channel's run (src/broker/slab.ts, ChannelRun) is followed by exactly the channel's
 * subscribers: one that joins is handed the next frame, one that leaves is counted no more.
 * The broker keeps that itself (Channel.add and Channel.delete end the run), whatever its
 * subscribers do: here they follow every run they are offered and never leave one, so nothing
 * but the broker closes a run. (The daemon's sessions also leave a run when they close or
 * unsubscribe; test/session/fanout-runs.test.ts covers them.)
 */
import { expect, it } from 'vitest';
import { Broker, type Subscriber } from '../../src/broker/broker.js';
import { channelKey } from '../../src/broker/scope.js';
import type { ChannelRun } from '../../src/broker/slab.js';
import type { StoredEvent } from '../../src/event/event.js';

const storedEvent = (n: number): StoredEvent => ({
  id: { ms: 1, seq: n },
  workspaceId: 1,
  sandboxId: 'sb',
  type: 't',
  timestamp: 1,
  json: `{"id":"1-${n}","sandboxId":"sb","workspaceId":1,"type":"t","data":{"n":${n}},"timestamp":1}`,
});

const target = { workspaceId: 1, sandboxId: 'sb', key: channelKey(1, 'sb'), displayName: 'sb' };

/** Follows every run it opens a frame of, and records the events handed to it one by one. */
class Follower implements Subscriber {
  readonly protocol = 2 as const;
  readonly handed: number[] = [];
  deliver(_frame: Buffer, event: StoredEvent): void {
    this.handed.push(event.id.seq);
  }
  deliverInRun(_frame: Buffer, event: StoredEvent, run: ChannelRun): boolean {
    this.handed.push(event.id.seq);
    run.followers += 1;
    return true;
  }
}

it('a run counts exactly the subscribers of its channel as they join and leave', () => {
  const broker = new Broker();
  const [a, b, c, d] = [new Follower(), new Follower(), new Follower(), new Follower()];
  for (const follower of [a, b, c]) broker.subscribe(follower, target);

  expect(broker.fanOut(storedEvent(1))).toBe(3); // opens a run: each is handed the frame
  expect(broker.fanOut(storedEvent(2))).toBe(3); // extends it: nobody is visited
  expect(a.handed).toEqual([1]);

  broker.unsubscribe(c, target.key);
  expect(broker.fanOut(storedEvent(3))).toBe(2); // a new run, of the two left
  expect(broker.fanOut(storedEvent(4))).toBe(2);
  expect(a.handed).toEqual([1, 3]);
  expect(c.handed).toEqual([1]);

  broker.subscribe(d, target);
  expect(broker.fanOut(storedEvent(5))).toBe(3); // the newcomer is handed the next frame
  expect(d.handed).toEqual([5]);
  expect(broker.stats.delivered).toBe(3 + 3 + 2 + 2 + 3);
});
