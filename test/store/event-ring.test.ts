/**
 * The memory store's compact event ring: events read back exactly as appended (any text,
 * any sizes, through wraps, growth and compaction), types are interned and forgotten, and what
 * a ring holds follows what it retains.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { eventJson, eventLineHead, eventLineMiddle, type StoredEvent } from '../../src/event/event.js';
import { EventRing, RingContext } from '../../src/store/event-ring.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { Clock, T0, newEvent } from './helpers.js';
import { ringData } from '../support/event-data.js';

/** The data text each event of `stored` was made with. */
const dataOf = new WeakMap<StoredEvent, string>();

function stored(ms: number, seq: number, type: string, dataJson: string, sandboxId = 'sb-1'): StoredEvent {
  const event = {
    id: { ms, seq },
    workspaceId: 7,
    sandboxId,
    type,
    timestamp: ms - (seq % 3),
    json: eventJson({ ms, seq }, 7, sandboxId, type, dataJson, ms - (seq % 3)),
  };
  dataOf.set(event, dataJson);
  return event;
}

/** Pushes the event as the memory store does: its line's head and its data's UTF-8. */
function push(ring: EventRing, event: StoredEvent): void {
  const head = eventLineHead(eventLineMiddle(event.workspaceId, event.sandboxId), JSON.stringify(event.type));
  const size = ring.push(event.id, event.timestamp, event.type, head, ...ringData(dataOf.get(event)!));
  const json = ring.newestChunk.toString('utf8', ring.newestLineEnd - size, ring.newestLineEnd);
  expect(json).toBe(event.json); // the line written as bytes is the line built as text
}

function contents(ring: EventRing): StoredEvent[] {
  const out: StoredEvent[] = [];
  for (let i = 0; i < ring.length; i++) out.push(ring.eventAt(i));
  return out;
}

describe('EventRing', () => {
  it('gives back every event field by field, whatever its text', () => {
    const ring = new EventRing(7, 'sb-1', new RingContext(), 100);
    const texts = [
      '{}',
      '{"a":"plain ascii"}',
      '{"a":"é ü ß"}', // latin1 range, two UTF-8 bytes each
      '{"a":"€ 漢字 😀"}', // three- and four-byte UTF-8
      '{"a":"\\ud800 lone high, escaped"}', // a lone surrogate can only come escaped (data is UTF-8)
      '{"a":"lone low \\udc00"}',
      '{"odd":"x"}',
      `{"big":"${'x'.repeat(5_000)}"}`,
    ];
    const events = texts.map((text, i) => stored(T0 + i, i, i % 2 === 0 ? 'a' : 'b.c', text));
    for (const event of events) push(ring, event);
    expect(contents(ring)).toEqual(events);
    expect(ring.eventAt(4).json).toBe(events[4]!.json); // its escape intact
    expect(ring.lowerBound(T0 + 3, 0)).toBe(3);
    expect(ring.lowerBound(T0 + 3, 4)).toBe(4);
    expect(ring.idAt(2)).toEqual({ ms: T0 + 2, seq: 2 });
    expect(ring.idEquals(2, { ms: T0 + 2, seq: 2 })).toBe(true);
    expect(ring.idEquals(2, { ms: T0 + 2, seq: 3 })).toBe(false);
  });

  it('keeps the chunks that rings written in step let go together, for the chunks they take next', () => {
    // A publisher going round its sandboxes moves their rings in step: 40 rings let go of their
    // oldest full-size chunk in the same few events, then take a new one in the same few.
    const context = new RingContext();
    const rings = Array.from({ length: 40 }, (_, r) => new EventRing(7, `sb-${r}`, context, 100_000));
    const data = JSON.stringify({ p: 'x'.repeat(2_000) });
    let seq = 0;
    const pushAll = () => {
      for (const ring of rings) push(ring, stored(T0, seq++, 't', data, ring.sandboxId));
    };
    while (rings[0]!.chunkCount < 24) pushAll();
    for (const ring of rings) {
      const chunks = ring.chunkCount;
      while (ring.chunkCount > chunks - 10) ring.shift();
    }
    // More than the fixed 32 the list used to hold: every ring's full-size chunk let go is kept.
    const kept = context.spareChunks;
    expect(kept).toBeGreaterThanOrEqual(40);
    const lengths = rings.map((ring) => ring.length);
    while (rings.some((ring, r) => ring.length < lengths[r]! + 60)) pushAll();
    expect(context.spareChunks).toBeLessThan(kept);
    expect(contents(rings[3]!).every((event) => event.json.includes(data))).toBe(true);
    // Spares follow what rings take: the first trim keeps what was taken since the start, the
    // next (nothing taken in between) only the minimum.
    for (const ring of rings) while (ring.length > 1) ring.shift();
    const spares = context.spareChunks;
    expect(spares).toBeGreaterThan(32);
    context.trimSpare();
    expect(context.spareChunks).toBe(spares);
    context.trimSpare();
    expect(context.spareChunks).toBe(32);
  });

  it('interns types and forgets those no retained event has', () => {
    const context = new RingContext();
    const { types } = context;
    const ring = new EventRing(7, 'sb-1', context, 3);
    push(ring, stored(T0, 0, 'a', '{}'));
    push(ring, stored(T0, 1, 'b', '{}'));
    push(ring, stored(T0, 2, 'a', '{}'));
    expect(types.size).toBe(2);
    expect(ring.typeAt(0)).toBe(ring.typeAt(2));
    expect(ring.typeAt(0)).toBe(types.lookup('a'));
    ring.shift();
    ring.shift();
    expect(types.lookup('b')).toBeUndefined();
    expect(types.size).toBe(1);
    push(ring, stored(T0, 3, 'c', '{}'));
    expect(contents(ring).map((e) => e.type)).toEqual(['a', 'c']);
  });

  it("does not take a type's number back once another type has it (a ring remembers its last type's)", () => {
    const context = new RingContext();
    const { types } = context;
    const ring = new EventRing(7, 'sb-1', context, 3);
    const other = new EventRing(7, 'sb-2', context, 3);
    push(ring, stored(T0, 0, 'a', '{}'));
    ring.shift(); // 'a' forgotten: its number is free
    push(other, stored(T0, 1, 'b', '{}', 'sb-2')); // and now 'b''s
    push(ring, stored(T0, 2, 'a', '{}'));
    expect(ring.typeAt(0)).not.toBe(other.typeAt(0));
    expect(contents(ring).map((e) => e.type)).toEqual(['a']);
    expect(contents(other).map((e) => e.type)).toEqual(['b']);
    push(ring, stored(T0, 3, 'a', '{}'));
    expect(ring.typeAt(1)).toBe(ring.typeAt(0));
    ring.shift();
    expect(types.lookup('a')).toBe(ring.typeAt(0)); // the second push counted its use
    expect(types.size).toBe(2);
  });

  it('agrees with an array through random pushes, shifts and compactions', () => {
    const op = fc.oneof(
      {
        weight: 5,
        arbitrary: fc.record({
          kind: fc.constant('push' as const),
          size: fc.nat(700),
          text: fc.constantFrom('x', 'é', '€', '😀', '\ud800'),
        }),
      },
      {
        weight: 3,
        arbitrary: fc.record({ kind: fc.constant('shift' as const), count: fc.integer({ min: 1, max: 8 }) }),
      },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('compact' as const) }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: 1, max: 40 }), (ops, maxCount) => {
        const context = new RingContext();
        const { types } = context;
        const ring = new EventRing(7, 'sb-1', context, maxCount);
        const model: StoredEvent[] = [];
        let seq = 0;
        for (const step of ops) {
          if (step.kind === 'push') {
            if (model.length >= maxCount) {
              model.shift();
              ring.shift();
            }
            const event = stored(T0, seq, `t${seq % 4}`, JSON.stringify({ p: step.text.repeat(step.size) }));
            seq++;
            model.push(event);
            push(ring, event);
          } else if (step.kind === 'shift') {
            for (let k = 0; k < step.count && model.length > 0; k++) {
              model.shift();
              ring.shift();
            }
          } else {
            ring.compact();
          }
          expect(ring.length).toBe(model.length);
          expect(ring.slotCapacity).toBeLessThanOrEqual(Math.max(maxCount, 4));
        }
        expect(contents(ring)).toEqual(model);
        expect(types.size).toBe(new Set(model.map((e) => e.type)).size);
        ring.compact();
        expect(contents(ring)).toEqual(model);
        // After compaction the bytes held are within a small factor of the bytes retained.
        const live = model.reduce((sum, e) => sum + Buffer.byteLength(e.json) * 2, 0);
        expect(ring.byteCapacity).toBeLessThanOrEqual(Math.max(256, 4 * live));
      }),
      { numRuns: 300 },
    );
  });
});

describe('MemoryStore memory', () => {
  const week = 7 * 24 * 3_600_000;

  it('keeps many small sandboxes small', async () => {
    const clock = new Clock();
    const store = new MemoryStore({
      retention: { maxCount: 10_000, maxAgeMs: week },
      now: clock.now,
      pruneIntervalMs: 0,
    });
    for (let s = 0; s < 5_000; s++) {
      for (let k = 0; k < 3; k++) await store.append(newEvent(`sb-${s}`, 'bench.tick', { p: 'x'.repeat(72) }));
    }
    // 3 events of about 175 bytes each: at most two small chunks and four slots per sandbox.
    expect(store.retainedBytes() / 5_000).toBeLessThanOrEqual(2 * 512 + 4 * 40);
    await store.close();
  });

  it('gives memory back once age retention empties or shrinks a sandbox', async () => {
    const clock = new Clock();
    const store = new MemoryStore({
      retention: { maxCount: 20_000, maxAgeMs: 1_000 },
      now: clock.now,
      pruneIntervalMs: 0,
    });
    for (let k = 0; k < 10_000; k++) await store.append(newEvent('busy', 'x', { p: 'x'.repeat(200) }));
    const full = store.retainedBytes();
    expect(full).toBeGreaterThan(10_000 * 200);
    clock.advance(500);
    for (let k = 0; k < 3; k++) await store.append(newEvent('busy', 'x', { p: 'x'.repeat(200) }));
    clock.advance(600);
    expect(await store.prune()).toBe(10_000);
    expect(store.retainedBytes()).toBeLessThan(4_096);
    const h = await store.history({ workspaceId: 1, sandboxId: 'busy', limit: 100 });
    expect(h).toHaveLength(3);
    clock.advance(1_000);
    await store.prune();
    expect(store.retainedBytes()).toBe(0);
    expect(store.stats().sandboxes).toBe(0);
    await store.close();
  });

  it('follows the current event size under the count limit', async () => {
    const clock = new Clock();
    const store = new MemoryStore({ retention: { maxCount: 100, maxAgeMs: week }, now: clock.now, pruneIntervalMs: 0 });
    for (let k = 0; k < 100; k++) await store.append(newEvent('sb', 'x', { p: 'x'.repeat(20_000) }));
    expect(store.retainedBytes()).toBeGreaterThan(100 * 20_000);
    for (let k = 0; k < 100; k++) await store.append(newEvent('sb', 'x', { p: 'x'.repeat(100) }));
    await store.prune();
    expect(store.retainedBytes()).toBeLessThan(100 * 1_000);
    const events = await store.history({ workspaceId: 1, sandboxId: 'sb', limit: 1_000 });
    expect(events).toHaveLength(100);
    expect(events.every((e) => e.json.length < 300)).toBe(true);
    await store.close();
  });

  it('returns history and replay events equal to what append returned', async () => {
    const store = new MemoryStore({ retention: { maxCount: 50, maxAgeMs: week }, now: () => T0, pruneIntervalMs: 0 });
    const appended: StoredEvent[] = [];
    for (let k = 0; k < 120; k++) {
      appended.push(await store.append(newEvent('sb', k % 3 === 0 ? 'a' : 'b', { k, s: 'é😀'.repeat(k % 5) })));
    }
    const kept = appended.slice(70);
    expect(await store.history({ workspaceId: 1, sandboxId: 'sb', limit: 1_000 })).toEqual(kept);
    expect(await store.history({ workspaceId: 1, sandboxId: 'sb', type: 'a', limit: 1_000 })).toEqual(
      kept.filter((e) => e.type === 'a'),
    );
    const replay = await store.replayAfter({ workspaceId: 1, sandboxId: 'sb' }, appended[69]!.id, 1_000);
    expect(replay).toMatchObject({ complete: true, earliestId: kept[0]!.id, lastId: kept[49]!.id });
    expect(replay.events).toEqual(kept);
    await store.close();
  });
});
