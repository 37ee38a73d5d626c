/**
 * The memory store's events make their `json` only when read (docs/performance.md, "Eighth round:
 * the event's line as bytes"), while the ring chunk their line was written into is reused once
 * the event is dropped: an event kept from the publish must still read its own line afterwards,
 * and the fan-out's frames must carry it byte for byte.
 */
import { describe, expect, it } from 'vitest';
import { Broker, type Subscriber } from '../../src/broker/broker.js';
import { channelKey } from '../../src/broker/scope.js';
import { eventJson, type StoredEvent } from '../../src/event/event.js';
import { deliveryFrame } from '../../src/protocol/encode.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { Clock, T0 } from './helpers.js';
import { eventData } from '../support/event-data.js';

/** Payloads of one size, so that a later line lands exactly where an earlier one was. */
const dataOf = (n: number, pad = 0) => `{"n":"${String(n).padStart(4, '0')}","s":"é😀${'x'.repeat(pad)}"}`;

function lineOf(event: StoredEvent, n: number, pad = 0): string {
  return eventJson(event.id, 1, 'sb', 't', dataOf(n, pad), event.timestamp);
}

describe('memory store events kept past their ring bytes', () => {
  it('read their own line after the ring wrote over it (a count limit of one rewrites it at once)', async () => {
    const clock = new Clock(T0);
    const store = new MemoryStore({
      retention: { maxCount: 1, maxAgeMs: 86_400_000 },
      now: clock.now,
      pruneIntervalMs: 0,
    });
    const kept: StoredEvent[] = [];
    // Obtained at publish, as the fan-out gets them, and not read there.
    store.setListener((event) => {
      kept.push(event);
    });
    for (let n = 0; n < 5; n++) {
      await store.append({ workspaceId: 1, sandboxId: 'sb', type: 't', ...eventData(dataOf(n)) });
    }
    // Every event but the last was dropped, its bytes written over by the next one's.
    expect(kept.map((event) => event.json)).toEqual(kept.map((event, n) => lineOf(event, n)));
    expect((await store.history({ workspaceId: 1, sandboxId: 'sb', limit: 10 }))[0]!.json).toBe(lineOf(kept[4]!, 4));
    await store.close();
  });

  it('read their own line after other rings took the chunk it was in', async () => {
    const clock = new Clock(T0);
    const store = new MemoryStore({
      retention: { maxCount: 400, maxAgeMs: 86_400_000 },
      now: clock.now,
      pruneIntervalMs: 0,
    });
    const kept: StoredEvent[] = [];
    store.setListener((event) => {
      if (event.sandboxId === 'sb') kept.push(event);
    });
    // 400 events of 1 KB: full-size chunks, dropped into the spares, and taken again by
    // `other` (and by `sb` itself).
    for (let n = 0; n < 2_000; n++) {
      await store.append({ workspaceId: 1, sandboxId: 'sb', type: 't', ...eventData(dataOf(n, 1_000)) });
      await store.append({ workspaceId: 1, sandboxId: 'other', type: 't', ...eventData(dataOf(n, 2_000)) });
    }
    expect(kept.map((event) => event.json)).toEqual(kept.map((event, n) => lineOf(event, n, 1_000)));
    await store.close();
  });

  it('are framed by the fan-out byte for byte, and read their line later as well', async () => {
    const clock = new Clock(T0);
    const store = new MemoryStore({
      retention: { maxCount: 1, maxAgeMs: 86_400_000 },
      now: clock.now,
      pruneIntervalMs: 0,
    });
    const broker = new Broker();
    store.setListener((event) => broker.fanOut(event));
    const frames: Buffer[] = [];
    const events: StoredEvent[] = [];
    const subscriber: Subscriber = {
      protocol: 2,
      deliver(frame: Buffer, event: StoredEvent) {
        frames.push(Buffer.from(frame)); // a copy: the test reads it after later frames are written
        events.push(event);
      },
    };
    broker.subscribe(subscriber, { workspaceId: 1, sandboxId: 'sb', key: channelKey(1, 'sb'), displayName: 'sb' });
    for (let n = 0; n < 5; n++) {
      await store.append({ workspaceId: 1, sandboxId: 'sb', type: 't', ...eventData(dataOf(n)) });
    }
    expect(frames).toEqual(events.map((event, n) => deliveryFrame(2, undefined, 'sb', lineOf(event, n))));
    expect(events.map((event) => event.json)).toEqual(events.map((event, n) => lineOf(event, n)));
    await store.close();
  });
});
