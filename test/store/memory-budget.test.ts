/**
 * The memory store's byte limits: `--retention-bytes` per sandbox and `--memory-store-max` over
 * all sandboxes (docs/operations.md, "Retention"). What a sandbox holds is the bytes of its event
 * lines as delivered, the same bytes HISTORY returns.
 */
import { describe, expect, it } from 'vitest';
import { formatEventId, parseEventId } from '../../src/event/event.js';
import { EVICT_TO, MemoryStore } from '../../src/store/memory-store.js';
import { MIN_RETENTION_BYTES } from '../../src/store/semantics.js';
import { BIG, Clock, newEvent } from './helpers.js';

const KIB = 1024;

function store(options: { maxBytes?: number; maxTotalBytes?: number; clock?: Clock } = {}): MemoryStore {
  return new MemoryStore({
    retention: { ...BIG, ...(options.maxBytes === undefined ? {} : { maxBytes: options.maxBytes }) },
    ...(options.maxTotalBytes === undefined ? {} : { maxTotalBytes: options.maxTotalBytes }),
    now: (options.clock ?? new Clock()).now,
    pruneIntervalMs: 0,
  });
}

/** An event whose data is `size` bytes of text, numbered so order can be checked. */
function sized(sandboxId: string, n: number, size: number) {
  return newEvent(sandboxId, 'terminal.output', { n, text: 'x'.repeat(size) });
}

async function retained(memory: MemoryStore, sandboxId: string): Promise<{ bytes: number; ns: number[] }> {
  const events = await memory.history({ workspaceId: 1, sandboxId, limit: Infinity });
  return {
    bytes: events.reduce((sum, event) => sum + Buffer.byteLength(event.json), 0),
    ns: events.map((event) => (JSON.parse(event.json) as { data: { n: number } }).data.n),
  };
}

describe('retention by bytes, per sandbox', () => {
  it('keeps the newest events that fit, oldest dropped first, at every step', async () => {
    const limit = MIN_RETENTION_BYTES;
    const memory = store({ maxBytes: limit });
    let peak = 0;
    for (let n = 1; n <= 100; n++) {
      await memory.append(sized('sb-1', n, 3 * KIB + ((n * 37) % 1000)));
      const { bytes, ns } = await retained(memory, 'sb-1');
      peak = Math.max(peak, bytes);
      expect(bytes).toBeLessThanOrEqual(limit);
      expect(ns.at(-1)).toBe(n);
      expect(ns).toEqual(Array.from({ length: ns.length }, (_, i) => n - ns.length + 1 + i));
    }
    // It is full, not just small: one more event of the largest size in the run would not fit.
    expect(peak).toBeGreaterThan(limit - 5 * KIB);
    expect(memory.stats().retainedBytes).toBe((await retained(memory, 'sb-1')).bytes);
    await memory.close();
  });

  it('answers a resume into what byte retention dropped with trimmed', async () => {
    const memory = store({ maxBytes: MIN_RETENTION_BYTES });
    const first = await memory.append(sized('sb-1', 1, 60 * KIB));
    for (let n = 2; n <= 5; n++) await memory.append(sized('sb-1', n, 60 * KIB));
    const replay = await memory.replayAfter({ workspaceId: 1, sandboxId: 'sb-1' }, first.id, 100);
    expect(replay.complete).toBe(false);
    expect(replay.gap).toBe('trimmed');
    await memory.close();
  });

  it('refuses a byte retention too small to hold one event of the largest size', () => {
    expect(() => store({ maxBytes: 1000 })).toThrow(/retention bytes must be at least/);
  });
});

describe('the memory store total budget', () => {
  it('stays under the budget, evicting the least recently active sandboxes first', async () => {
    const clock = new Clock();
    const budget = 1024 * KIB;
    const memory = store({ maxTotalBytes: budget, clock });
    // Four sandboxes take turns, then sb-0 goes quiet while the others go on.
    for (let round = 0; round < 20; round++) {
      for (let s = 0; s < 4; s++) {
        clock.advance(1);
        await memory.append(sized(`sb-${s}`, round, 8 * KIB));
      }
    }
    for (let round = 20; round < 60; round++) {
      for (let s = 1; s < 4; s++) {
        clock.advance(1);
        await memory.append(sized(`sb-${s}`, round, 8 * KIB));
        expect(memory.stats().retainedBytes).toBeLessThanOrEqual(budget);
      }
    }
    const quiet = await retained(memory, 'sb-0');
    const busy = await Promise.all([1, 2, 3].map((s) => retained(memory, `sb-${s}`)));
    // The idlest sandbox lost its events first; the busy ones kept their newest, in order.
    expect(quiet.ns).toEqual([]);
    for (const { ns } of busy) {
      expect(ns.at(-1)).toBe(59);
      expect(ns).toEqual(Array.from({ length: ns.length }, (_, i) => 60 - ns.length + i));
    }
    const total = quiet.bytes + busy.reduce((sum, { bytes }) => sum + bytes, 0);
    expect(total).toBe(memory.stats().retainedBytes);
    expect(total).toBeLessThanOrEqual(budget);
    // An eviction pass goes below the budget by a margin, not one event at a time.
    expect(memory.stats().evicted).toBeGreaterThan(0);
    expect(total).toBeGreaterThan(budget * EVICT_TO - 64 * KIB);
    await memory.close();
  });

  it('a sandbox that lost its events to the budget resumes as trimmed, and ids go on', async () => {
    const clock = new Clock();
    const memory = store({ maxTotalBytes: 256 * KIB, clock });
    const old = await memory.append(sized('sb-old', 1, 10 * KIB));
    for (let n = 0; n < 40; n++) {
      clock.advance(1);
      await memory.append(sized('sb-new', n, 10 * KIB));
    }
    const replay = await memory.replayAfter({ workspaceId: 1, sandboxId: 'sb-old' }, parseEventId('0-0')!, 100);
    expect(replay.gap).toBe('trimmed');
    const next = await memory.append(sized('sb-old', 2, 10));
    expect(formatEventId(next.id) > formatEventId(old.id)).toBe(true);
    await memory.close();
  });
});
