import { describe, expect, it } from 'vitest';
import type { BatchStream } from '../../src/store/sqlite/stream-cache.js';
import { StreamCache } from '../../src/store/sqlite/stream-cache.js';

function stream(workspaceId: number, sandboxId: string, retained: number): BatchStream {
  return {
    workspaceId,
    sandboxId,
    existed: true,
    hadFirst: retained > 0,
    lastId: { ms: 10, seq: retained },
    retained,
    bytes: retained * 100,
    firstId: retained > 0 ? { ms: 10, seq: 0 } : undefined,
    activeAt: 10,
    unsyncedFrom: 0,
  };
}

describe('the SQLite writer stream cache', () => {
  it('keeps every stream that retains events, past any fixed number', () => {
    const cache = new StreamCache();
    const streams = Array.from({ length: 40_000 }, (_, i) => stream(1 + (i % 3), `sb-${i}`, 1 + (i % 5)));
    for (let at = 0; at < streams.length; at += 1_000) cache.commit(streams.slice(at, at + 1_000));
    expect(cache.size).toBe(40_000);
    // The first streams written are still there after 40,000 more: no start-over.
    expect(cache.get(1, 'sb-0')).toEqual({ ...stream(1, 'sb-0', 1), existed: true });
    expect(cache.get(2, 'sb-39997')?.retained).toBe(3);
    expect(cache.get(1, 'sb-1')).toBeUndefined(); // sb-1 is in workspace 2
  });

  it('holds nothing for a stream that retains nothing, and lets go when one stops retaining', () => {
    const cache = new StreamCache();
    cache.commit([stream(1, 'a', 0), stream(1, 'b', 2)]);
    expect(cache.size).toBe(1);
    expect(cache.get(1, 'a')).toBeUndefined();
    cache.commit([stream(1, 'b', 0)]);
    expect(cache.size).toBe(0);
    expect(cache.get(1, 'b')).toBeUndefined();
  });

  it('hands out copies, so a batch that rolls back leaves the committed state', () => {
    const cache = new StreamCache();
    cache.commit([stream(7, 'x', 4)]);
    const copy = cache.get(7, 'x') as BatchStream;
    copy.retained = 99;
    copy.lastId = { ms: 20, seq: 0 };
    expect(cache.get(7, 'x')?.retained).toBe(4);
    expect(cache.get(7, 'x')?.lastId).toEqual({ ms: 10, seq: 4 });
    cache.forget(7, 'x');
    expect(cache.size).toBe(0);
    cache.forget(7, 'x'); // twice is harmless
    expect(cache.size).toBe(0);
  });

  it('tracks the entries whose rows lag, oldest first: one per stream, until a sync or a commit that wrote the row', () => {
    const cache = new StreamCache();
    const lagging = (workspaceId: number, sandboxId: string, retained: number, from: number): BatchStream => ({
      ...stream(workspaceId, sandboxId, retained),
      unsyncedFrom: from,
    });
    const order = (): string[] => [...cache.lagging()].map((s) => `${s.sandboxId}@${s.unsyncedFrom}`);
    cache.commit([lagging(1, 'a', 1, 1), lagging(1, 'b', 1, 2), stream(1, 'c', 1)]);
    expect(order()).toEqual(['a@1', 'b@2']);
    expect(cache.lastId(1, 'a')).toEqual({ ms: 10, seq: 1 });
    // A later batch's state replaces the entry's; still lagging, it keeps its place (a row sync
    // writes the rows that lagged first first), and 'c', lagging now, joins behind.
    cache.commit([lagging(1, 'c', 2, 3), lagging(1, 'a', 2, 1)]);
    expect(order()).toEqual(['a@1', 'b@2', 'c@3']);
    expect(cache.get(1, 'a')).toMatchObject({ retained: 2, unsyncedFrom: 1 });
    // A batch that wrote the row ends the lag; so does a sync of what it wrote.
    cache.commit([stream(1, 'a', 3)]);
    expect(order()).toEqual(['b@2', 'c@3']);
    cache.synced([...cache.lagging()]);
    expect(cache.laggingCount).toBe(0);
    expect(cache.get(1, 'b')).toMatchObject({ retained: 1, unsyncedFrom: 0 });
    cache.commit([lagging(1, 'b', 2, 9)]);
    expect(order()).toEqual(['b@9']);
    cache.forget(1, 'b');
    expect(cache.laggingCount).toBe(0);
  });
});
