/**
 * What every EventStore promises (src/store/types.ts), run against every store: memory, SQLite and the Redis engine on a real
 * redis-server and on a real Redis Cluster must behave identically. Where the engine legitimately differs (its ids come from
 * Redis's clock, which a test cannot set), the difference is spelled out below, test by test,
 * with docs/scaling.md ("Differences from the embedded stores") as the reference.
 */
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  compareEventIds,
  eventJson,
  formatEventId,
  parseEventId,
  type EventId,
  type StoredEvent,
} from '../../src/event/event.js';
import { MIN_RETENTION_BYTES } from '../../src/store/semantics.js';
import type { HistoryPages, RetentionPolicy } from '../../src/store/types.js';
import {
  BIG,
  Clock,
  clusterFactory,
  SharedCluster,
  T0,
  ids,
  memoryFactory,
  newEvent,
  redisFactory,
  SharedRedis,
  sqliteFactory,
  type StoreFactory,
  type TestStore,
} from './helpers.js';
import { hasRedis } from '../scale/support.js';

const id = (text: string): EventId => parseEventId(text) as EventId;
const compareIds = (a: StoredEvent, b: StoredEvent): number => compareEventIds(a.id, b.id);

const redisServer = new SharedRedis();
afterAll(() => redisServer.stop());
const redisCluster = new SharedCluster();
afterAll(() => redisCluster.stop(), 30_000);

const stores: [string, 'injected' | 'server', () => StoreFactory][] = [
  ['memory', 'injected', memoryFactory],
  ['sqlite', 'injected', () => sqliteFactory()],
];
if (hasRedis) {
  stores.push(['redis', 'server', () => redisFactory(redisServer)]);
  stores.push(['redis cluster', 'server', () => clusterFactory(redisCluster)]);
}

describe.each(stores)('%s store', (_kind, clockKind, makeFactory) => {
  let factory: StoreFactory;
  let clock: Clock;
  /**
   * A test that sets the store's clock (steps it back, jumps hours, asserts ids built from T0).
   * The Redis engine takes ids and timestamps from Redis's clock (docs/scaling.md, "Differences
   * from the embedded stores"), so these run on the embedded stores only, and the engine's own
   * clock behaviour is asserted by the `server clock` tests below instead.
   */
  // Not registered at all for the other stores (rather than skipped): CI runs with no skips.
  const notForThisStore = (_name: string, _body: () => Promise<void>): void => {};
  const withInjectedClock = clockKind === 'injected' ? it : notForThisStore;
  const withServerClock = clockKind === 'server' ? it : notForThisStore;

  beforeEach(() => {
    factory = makeFactory();
    clock = new Clock();
  });
  afterEach(async () => {
    await factory.cleanup();
  });

  const open = (retention: RetentionPolicy = BIG): Promise<TestStore> => factory.create({ retention, now: clock.now });

  /**
   * Moves the store's clock `step` ms past `event`. With Redis's clock (same machine, same
   * clock as this process) it waits until that millisecond has come, so that the next id is
   * `<later ms>-0` on every store.
   */
  async function tick(event: StoredEvent, step = 1): Promise<void> {
    if (clockKind === 'injected') {
      clock.advance(step);
      return;
    }
    while (Date.now() < event.id.ms + step) await new Promise((resolve) => setTimeout(resolve, 1));
  }

  /** Appends one event per entry, `step` ms apart (at least `step` ms with Redis's clock). */
  async function fill(store: TestStore, sandboxId: string, types: string[], step = 1): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    for (const [i, type] of types.entries()) {
      const event = await store.append(newEvent(sandboxId, type, { i }));
      out.push(event);
      if (step > 0) await tick(event, step);
    }
    return out;
  }

  describe('append', () => {
    withInjectedClock('assigns id and timestamp from the clock and builds the wire JSON', async () => {
      const store = await open();
      const event = await store.append(newEvent('sb-1', 'execution.completed', { exitCode: 0 }));
      expect(event).toEqual({
        id: { ms: T0, seq: 0 },
        workspaceId: 1,
        sandboxId: 'sb-1',
        type: 'execution.completed',
        timestamp: T0,
        json: `{"id":"${T0}-0","sandboxId":"sb-1","workspaceId":1,"type":"execution.completed","data":{"exitCode":0},"timestamp":${T0}}`,
      });
      const second = await store.append(newEvent('sb-1'));
      expect(formatEventId(second.id)).toBe(`${T0}-1`);
      clock.advance(5);
      expect(formatEventId((await store.append(newEvent('sb-1'))).id)).toBe(`${T0 + 5}-0`);
    });

    withInjectedClock('keeps ids strictly increasing when the clock steps back', async () => {
      const store = await open();
      await store.append(newEvent('sb-1'));
      clock.advance(-3_600_000);
      const back = await store.append(newEvent('sb-1'));
      expect(back.id).toEqual({ ms: T0, seq: 1 });
      expect(back.timestamp).toBe(T0 - 3_600_000);
      // The line carries the timestamp, not the id's millisecond (the memory store writes the
      // latter's digits once when they are the same); read back too, from what the store keeps.
      const line = eventJson(back.id, 1, 'sb-1', 'test.event', '{}', T0 - 3_600_000);
      expect(back.json).toBe(line);
      expect((await store.history({ workspaceId: 1, sandboxId: 'sb-1', limit: 10 }))[1]?.json).toBe(line);
      clock.advance(3_600_001);
      expect((await store.append(newEvent('sb-1'))).id).toEqual({ ms: T0 + 1, seq: 0 });
    });

    withServerClock(
      'server clock: the id is from Redis, the timestamp its millisecond, the JSON the same line',
      async () => {
        const store = await open();
        const before = Date.now();
        const event = await store.append(newEvent('sb-1', 'execution.completed', { exitCode: 0 }));
        const after = Date.now();
        expect(event.id.ms).toBeGreaterThanOrEqual(before);
        expect(event.id.ms).toBeLessThanOrEqual(after);
        expect(event.timestamp).toBe(event.id.ms);
        expect(event.json).toBe(eventJson(event.id, 1, 'sb-1', 'execution.completed', '{"exitCode":0}', event.id.ms));
        const next = await store.append(newEvent('sb-1'));
        expect(next.id.ms > event.id.ms || (next.id.ms === event.id.ms && next.id.seq === event.id.seq + 1)).toBe(true);
        expect(await store.history({ workspaceId: 1, sandboxId: 'sb-1', limit: 10 })).toEqual([event, next]);
      },
    );

    it('calls the listener once per event, in id order, before the append resolves', async () => {
      const store = await open();
      const seen: string[] = [];
      store.setListener((event) => seen.push(formatEventId(event.id)));
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          store.append(newEvent('sb-1', 't', { i })).then((event) => {
            // Its own id (and every earlier one) was announced before this promise resolved.
            expect(seen).toContain(formatEventId(event.id));
            return event;
          }),
        ),
      );
      expect(seen).toEqual(ids(results));
      expect(results.map((e) => JSON.parse(e.json).data.i)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    });

    it('rejects appends and reads with STORE_CLOSED after close (close is idempotent)', async () => {
      const store = await open();
      await store.append(newEvent('sb-1'));
      await store.close();
      await store.close();
      await expect(store.append(newEvent('sb-1'))).rejects.toMatchObject({ code: 'STORE_CLOSED' });
      await expect(store.history({ workspaceId: 1, sandboxId: 'sb-1', limit: 10 })).rejects.toMatchObject({
        code: 'STORE_CLOSED',
      });
      await expect(store.replayAfter({ workspaceId: 1, sandboxId: 'sb-1' }, id('0-0'), 10)).rejects.toMatchObject({
        code: 'STORE_CLOSED',
      });
    });
  });

  describe('history', () => {
    const ref = { workspaceId: 1, sandboxId: 'sb-1' };

    it('returns the oldest first, up to the limit', async () => {
      const store = await open();
      const all = await fill(store, 'sb-1', ['a', 'b', 'a', 'c', 'a']);
      expect(ids(await store.history({ ...ref, limit: 100 }))).toEqual(ids(all));
      expect(ids(await store.history({ ...ref, limit: 2 }))).toEqual(ids(all.slice(0, 2)));
      const first = (await store.history({ ...ref, limit: 1 }))[0] as StoredEvent;
      expect(first).toEqual(all[0]);
    });

    it('filters by exact type', async () => {
      const store = await open();
      const all = await fill(store, 'sb-1', ['a', 'b', 'a', 'ab', 'a', 'A']);
      expect(ids(await store.history({ ...ref, type: 'a', limit: 100 }))).toEqual(
        ids([all[0], all[2], all[4]] as StoredEvent[]),
      );
      expect(ids(await store.history({ ...ref, type: 'a', limit: 2 }))).toEqual(ids([all[0], all[2]] as StoredEvent[]));
      expect(await store.history({ ...ref, type: 'zzz', limit: 100 })).toEqual([]);
    });

    it('filters by afterId (strictly greater), also for ids that were never issued', async () => {
      const store = await open();
      const all = await fill(store, 'sb-1', ['a', 'b', 'c', 'd']);
      const second = all[1] as StoredEvent;
      expect(ids(await store.history({ ...ref, afterId: second.id, limit: 100 }))).toEqual(ids(all.slice(2)));
      expect(ids(await store.history({ ...ref, afterId: { ms: second.id.ms, seq: 7 }, limit: 100 }))).toEqual(
        ids(all.slice(2)),
      );
      expect(ids(await store.history({ ...ref, afterId: id('0-0'), limit: 100 }))).toEqual(ids(all));
      expect(await store.history({ ...ref, afterId: (all[3] as StoredEvent).id, limit: 100 })).toEqual([]);
    });

    withInjectedClock('filters by since (timestamp >= since), also after the clock stepped back', async () => {
      const store = await open();
      const all = await fill(store, 'sb-1', ['a', 'b', 'c', 'd'], 10); // T0, +10, +20, +30
      expect(ids(await store.history({ ...ref, since: T0 + 10, limit: 100 }))).toEqual(ids(all.slice(1)));
      expect(ids(await store.history({ ...ref, since: T0 + 11, limit: 100 }))).toEqual(ids(all.slice(2)));
      expect(ids(await store.history({ ...ref, since: 0, limit: 100 }))).toEqual(ids(all));
      // The clock steps back 25 ms: the next id stays after T0+30, its timestamp is T0+15.
      clock.t = T0 + 15;
      const late = await store.append(newEvent('sb-1', 'late'));
      expect(late.id).toEqual({ ms: T0 + 30, seq: 1 });
      expect(ids(await store.history({ ...ref, since: T0 + 20, limit: 100 }))).toEqual(ids(all.slice(2)));
      expect(ids(await store.history({ ...ref, since: T0 + 15, limit: 100 }))).toEqual(ids([...all.slice(2), late]));
    });

    it('returns the newest N, still oldest first, with filters', async () => {
      const store = await open();
      const all = await fill(store, 'sb-1', ['a', 'b', 'a', 'b', 'a', 'b']);
      expect(ids(await store.history({ ...ref, newest: true, limit: 2 }))).toEqual(ids(all.slice(4)));
      expect(ids(await store.history({ ...ref, newest: true, limit: 100 }))).toEqual(ids(all));
      expect(ids(await store.history({ ...ref, newest: true, type: 'a', limit: 2 }))).toEqual(
        ids([all[2], all[4]] as StoredEvent[]),
      );
      expect(
        ids(await store.history({ ...ref, newest: true, afterId: (all[3] as StoredEvent).id, limit: 100 })),
      ).toEqual(ids(all.slice(4)));
      expect(ids(await store.history({ ...ref, newest: false, limit: 2 }))).toEqual(ids(all.slice(0, 2)));
    });

    it('combines type, afterId, since and limit', async () => {
      const store = await open();
      const all = await fill(store, 'sb-1', ['a', 'a', 'b', 'a', 'a', 'a'], 10);
      const got = await store.history({
        ...ref,
        type: 'a',
        afterId: (all[0] as StoredEvent).id,
        since: (all[2] as StoredEvent).timestamp + 1,
        limit: 2,
      });
      expect(ids(got)).toEqual(ids([all[3], all[4]] as StoredEvent[]));
    });

    it('is empty for a sandbox that has no events, and rejects a bad limit', async () => {
      const store = await open();
      expect(await store.history({ ...ref, limit: 10 })).toEqual([]);
      await expect(store.history({ ...ref, limit: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(store.history({ ...ref, limit: 1.5 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    });
  });

  describe('workspace isolation', () => {
    it('keeps the same sandbox id in two workspaces apart', async () => {
      const store = await open();
      const a1 = await store.append(newEvent('sb-1', 'a', {}, 1));
      const b1 = await store.append(newEvent('sb-1', 'b', {}, 2));
      const a2 = await store.append(newEvent('sb-1', 'a', {}, 1));
      // Each stream numbers its own events; a new embedded stream starts above every id issued
      // so far. Redis numbers each stream from its own clock (docs/scaling.md, "Differences from
      // the embedded stores"): the two streams' ids are independent there.
      if (clockKind === 'injected') expect(ids([a1, b1, a2])).toEqual([`${T0}-0`, `${T0}-1`, `${T0}-1`]);
      expect(ids(await store.history({ workspaceId: 1, sandboxId: 'sb-1', limit: 10 }))).toEqual(ids([a1, a2]));
      const other = await store.history({ workspaceId: 2, sandboxId: 'sb-1', limit: 10 });
      expect(other).toEqual([b1]);
      expect(JSON.parse(b1.json).workspaceId).toBe(2);
      await tick(b1, clockKind === 'injected' ? 0 : 1);
      const a3 = await store.append(newEvent('sb-1', 'a', {}, 1));
      const replay = await store.replayAfter({ workspaceId: 2, sandboxId: 'sb-1' }, a3.id, 10);
      expect(replay).toMatchObject({ complete: false, gap: 'future', events: [] });
      expect(await store.history({ workspaceId: 3, sandboxId: 'sb-1', limit: 10 })).toEqual([]);
    });

    it('does not confuse ids that would collide when keys are joined naively', async () => {
      const store = await open();
      await store.append(newEvent('2:x', 'a', {}, 1));
      expect(await store.history({ workspaceId: 12, sandboxId: 'x', limit: 10 })).toEqual([]);
      expect(await store.history({ workspaceId: 1, sandboxId: '2:x', limit: 10 })).toHaveLength(1);
    });
  });

  describe('retention', () => {
    it('keeps the newest maxCount events per sandbox', async () => {
      const store = await open({ maxCount: 5, maxAgeMs: BIG.maxAgeMs });
      const a = await fill(store, 'sb-a', Array(12).fill('t'));
      const b = await fill(store, 'sb-b', Array(3).fill('t'));
      await store.prune();
      expect(ids(await store.history({ workspaceId: 1, sandboxId: 'sb-a', limit: 100 }))).toEqual(ids(a.slice(7)));
      expect(ids(await store.history({ workspaceId: 1, sandboxId: 'sb-b', limit: 100 }))).toEqual(ids(b));
      // Appending keeps the window sliding; nothing newer than the window is lost.
      const more = await fill(store, 'sb-a', Array(4).fill('t'));
      await store.prune();
      expect(ids(await store.history({ workspaceId: 1, sandboxId: 'sb-a', limit: 100 }))).toEqual(
        ids([...a.slice(11), ...more]),
      );
    });

    withInjectedClock('prunes events older than maxAgeMs by the injected clock', async () => {
      const store = await open({ maxCount: 1000, maxAgeMs: 1_000 });
      const early = await fill(store, 'sb-1', ['a', 'b'], 500); // T0, T0+500
      clock.t = T0 + 1_500;
      const late = await fill(store, 'sb-1', ['c'], 0); // T0+1500
      clock.t = T0 + 1_499;
      await store.prune(); // cutoff T0+499: only the first is past it
      expect(ids(await store.history({ workspaceId: 1, sandboxId: 'sb-1', limit: 100 }))).toEqual(
        ids([early[1], ...late] as StoredEvent[]),
      );
      clock.t = T0 + 2_100; // cutoff T0+1100
      await store.prune();
      expect(ids(await store.history({ workspaceId: 1, sandboxId: 'sb-1', limit: 100 }))).toEqual(ids(late));
      clock.t = T0 + 2_500; // exactly maxAgeMs old: kept
      await store.prune();
      expect(await store.history({ workspaceId: 1, sandboxId: 'sb-1', limit: 100 })).toHaveLength(1);
      clock.t = T0 + 2_501;
      await store.prune();
      expect(await store.history({ workspaceId: 1, sandboxId: 'sb-1', limit: 100 })).toEqual([]);
    });

    it('prunes exactly what is past the limits across many sandboxes', async () => {
      const store = await open({ maxCount: 10, maxAgeMs: 60_000 });
      const expected = new Map<string, string[]>();
      for (let round = 0; round < 30; round++) {
        for (let s = 0; s < 7; s++) {
          if (round >= s * 5) {
            const sandboxId = `sb-${s}`;
            const event = await store.append(newEvent(sandboxId, 't', { round }));
            expected.set(sandboxId, [...(expected.get(sandboxId) ?? []), formatEventId(event.id)]);
          }
        }
        clock.advance(1);
      }
      await store.prune();
      for (const [sandboxId, all] of expected) {
        const kept = await store.history({ workspaceId: 1, sandboxId, limit: 1000 });
        expect(ids(kept)).toEqual(all.slice(-10));
      }
      expect(await store.prune()).toBe(0);
    });

    withInjectedClock('forgets an idle empty sandbox but never reissues its ids', async () => {
      const store = await open({ maxCount: 100, maxAgeMs: 1_000 });
      const old = await fill(store, 'sb-1', ['a', 'b', 'c'], 0);
      clock.advance(5_000);
      await store.prune();
      // State dropped, but the store-wide high-water mark still knows those ids.
      expect(await store.replayAfter({ workspaceId: 1, sandboxId: 'sb-1' }, (old[0] as StoredEvent).id, 10)).toEqual({
        events: [],
        complete: false,
        gap: 'trimmed',
      });
      expect(await store.history({ workspaceId: 1, sandboxId: 'sb-1', limit: 10 })).toEqual([]);
      clock.t = T0 - 3_600_000; // the clock steps back below the forgotten ids
      const fresh = await store.append(newEvent('sb-1'));
      expect(fresh.id).toEqual({ ms: T0, seq: 3 });
      // A client holding an id of the forgotten stream is told its position is gone.
      expect(await store.replayAfter({ workspaceId: 1, sandboxId: 'sb-1' }, (old[2] as StoredEvent).id, 10)).toEqual({
        events: [fresh],
        complete: false,
        gap: 'trimmed',
        earliestId: fresh.id,
        lastId: fresh.id,
      });
    });
  });

  describe('historyPages', () => {
    const ref = { workspaceId: 1, sandboxId: 'sb-1' };

    async function readPages(pages: HistoryPages): Promise<(StoredEvent | undefined)[]> {
      return (await pagesOf(pages)).flat();
    }

    async function pagesOf(pages: HistoryPages): Promise<(StoredEvent | undefined)[][]> {
      const out: (StoredEvent | undefined)[][] = [];
      for await (const page of pages.pages()) out.push([...page]);
      return out;
    }

    it('counts the reply first, then gives what history gives, page by page', async () => {
      const store = await open();
      const all = await fill(
        store,
        'sb-1',
        Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? 'a' : 'b')),
        0,
      );
      const queries = [
        { ...ref, limit: 100 },
        { ...ref, limit: 5 },
        { ...ref, type: 'a', limit: 100 },
        { ...ref, newest: true, limit: 17 },
        { ...ref, newest: true, type: 'b', limit: 3 },
        { ...ref, afterId: (all[10] as StoredEvent).id, limit: 100 },
        { workspaceId: 1, sandboxId: 'nothing', limit: 100 },
      ];
      for (const query of queries) {
        const expected = await store.history(query);
        const pages = await store.historyPages!(query);
        expect(pages.count).toBe(expected.length);
        const got = await readPages(pages);
        expect(got).toEqual(expected);
      }
      // 40 events come in more than one page (the first holds 8).
      expect((await pagesOf(await store.historyPages!({ ...ref, limit: 100 }))).map((page) => page.length)).toEqual([
        8, 32,
      ]);
    });

    it('gives a hole for an event retention pruned after the count was taken', async () => {
      const store = await open({ maxCount: 10, maxAgeMs: BIG.maxAgeMs });
      const all = await fill(store, 'sb-1', Array(10).fill('t'), 0);
      const pages = await store.historyPages!({ ...ref, limit: 100 });
      expect(pages.count).toBe(10);
      await fill(store, 'sb-1', Array(4).fill('t'), 0);
      await store.prune();
      const got = await readPages(pages);
      expect(got.slice(0, 4)).toEqual([undefined, undefined, undefined, undefined]);
      expect(got.slice(4)).toEqual(all.slice(4));
    });
  });

  describe('byte retention', () => {
    const ref = { workspaceId: 1, sandboxId: 'sb-1' };
    const bytesOf = (events: readonly StoredEvent[]): number =>
      events.reduce((sum, event) => sum + Buffer.byteLength(event.json), 0);

    it('keeps the newest events whose lines fit in maxBytes; a resume into what went is trimmed', async () => {
      const store = await open({ ...BIG, maxBytes: MIN_RETENTION_BYTES });
      // Multi-byte characters: the limit counts UTF-8 bytes of the lines as delivered.
      const text = 'é'.repeat(3_000);
      const all = await fill(
        store,
        'sb-1',
        Array.from({ length: 40 }, () => 't'),
        0,
      ).then(() => store.history({ ...ref, limit: 1000 }));
      const other = await store.append(newEvent('sb-2', 't', { text }));
      const appended: StoredEvent[] = [];
      for (let i = 0; i < 40; i++) appended.push(await store.append(newEvent('sb-1', 't', { i, text })));
      await store.prune();
      const kept = await store.history({ ...ref, limit: 1000 });
      const size = Buffer.byteLength((appended[0] as StoredEvent).json);
      expect(bytesOf(kept)).toBeLessThanOrEqual(MIN_RETENTION_BYTES);
      expect(bytesOf(kept)).toBeGreaterThan(MIN_RETENTION_BYTES - size);
      expect(ids(kept)).toEqual(ids(appended.slice(-kept.length)));
      expect(kept.length).toBeLessThan(40);
      // The small events appended first went first.
      expect(ids(kept)).not.toContain(ids(all)[0]);
      const boundary = appended[appended.length - kept.length - 1] as StoredEvent;
      expect(await store.replayAfter(ref, boundary.id, 100)).toMatchObject({ complete: true });
      expect(await store.replayAfter(ref, (appended[0] as StoredEvent).id, 100)).toMatchObject({
        complete: false,
        gap: 'trimmed',
      });
      // Another sandbox keeps its own budget.
      expect(await store.history({ workspaceId: 1, sandboxId: 'sb-2', limit: 10 })).toEqual([other]);
    });

    it('always keeps the newest event, and counts what count retention dropped', async () => {
      const store = await open({ maxCount: 3, maxAgeMs: BIG.maxAgeMs, maxBytes: MIN_RETENTION_BYTES });
      const text = 'z'.repeat(60_000);
      for (let i = 0; i < 10; i++) await store.append(newEvent('sb-1', 't', { i, text }));
      await store.prune();
      // 3 by count, 2 of ~60 KB by bytes.
      const kept = await store.history({ ...ref, limit: 100 });
      expect(kept.map((event) => (JSON.parse(event.json) as { data: { i: number } }).data.i)).toEqual([8, 9]);
      // Small events after that: the counter knows the big ones left (the count drops them).
      const small = await fill(store, 'sb-1', ['s', 's', 's'], 0);
      await store.prune();
      expect(ids(await store.history({ ...ref, limit: 100 }))).toEqual(ids(small));
    });
  });

  describe('ephemeral events', () => {
    const ref = { workspaceId: 1, sandboxId: 'sb-1' };
    const ephemeral: RetentionPolicy = { maxCount: 2, maxAgeMs: BIG.maxAgeMs, ephemeralTypes: ['sandbox.*'] };

    it('are delivered with an id in the sandbox order, never stored, never counted by retention', async () => {
      const store = await open(ephemeral);
      const seen: string[] = [];
      store.setListener((event) => seen.push(`${event.type} ${formatEventId(event.id)}`));
      const types = ['done', 'sandbox.metrics', 'done', 'sandbox.metrics', 'sandbox.metrics', 'sandbox.cpu'];
      const all = await fill(store, 'sb-1', types, 0);
      await store.prune();
      expect(seen).toEqual(all.map((event) => `${event.type} ${formatEventId(event.id)}`));
      for (let i = 1; i < all.length; i++) {
        expect(ids([all[i - 1] as StoredEvent, all[i] as StoredEvent]).sort()).toEqual(
          ids([all[i - 1] as StoredEvent, all[i] as StoredEvent]),
        );
      }
      const stored = [all[0], all[2]] as StoredEvent[];
      expect(await store.history({ ...ref, limit: 100 })).toEqual(stored);
      // A resume from an ephemeral event's id is exact: the stored events after it.
      expect(await store.replayAfter(ref, (all[1] as StoredEvent).id, 100)).toEqual({
        events: [all[2]],
        complete: true,
        earliestId: (all[0] as StoredEvent).id,
        lastId: (all[5] as StoredEvent).id,
      });
      expect(await store.replayAfter(ref, (all[5] as StoredEvent).id, 100)).toMatchObject({
        events: [],
        complete: true,
      });
      expect(await store.listSandboxes!(1)).toEqual([{ ...ref, lastId: (all[5] as StoredEvent).id }]);
    });

    it('leave a sandbox that had only them unlisted, and its ids resumable', async () => {
      const store = await open(ephemeral);
      const only = await store.append(newEvent('sb-e', 'sandbox.metrics'));
      const next = await store.append(newEvent('sb-e', 'sandbox.metrics'));
      expect(compareIds(only, next)).toBeLessThan(0);
      expect(await store.history({ workspaceId: 1, sandboxId: 'sb-e', limit: 10 })).toEqual([]);
      expect(await store.listSandboxes!(1)).toEqual([]);
      expect(await store.replayAfter({ workspaceId: 1, sandboxId: 'sb-e' }, next.id, 10)).toMatchObject({
        events: [],
        complete: true,
      });
    });
  });

  describe('listSandboxes', () => {
    it('lists the sandboxes holding events by workspace then id, each with its last id', async () => {
      const store = await open();
      expect(await store.listSandboxes!('all')).toEqual([]);
      const b = await store.append(newEvent('b', 't', {}, 1));
      const a2 = await store.append(newEvent('a', 't', {}, 2));
      await store.append(newEvent('a', 't', {}, 1));
      const c = await store.append(newEvent('c', 't', {}, 1));
      const a1 = await store.append(newEvent('a', 't', {}, 1));
      const listing = (event: StoredEvent) => ({
        workspaceId: event.workspaceId,
        sandboxId: event.sandboxId,
        lastId: event.id,
      });
      expect(await store.listSandboxes!(1)).toEqual([listing(a1), listing(b), listing(c)]);
      expect(await store.listSandboxes!(2)).toEqual([listing(a2)]);
      expect(await store.listSandboxes!(3)).toEqual([]);
      expect(await store.listSandboxes!('all')).toEqual([listing(a1), listing(b), listing(c), listing(a2)]);
    });

    it('lists more sandboxes than one page holds', async () => {
      const store = await open();
      const expected: string[] = [];
      for (let i = 0; i < 1_100; i++) {
        const sandboxId = `sb-${String(i).padStart(4, '0')}`;
        expected.push(sandboxId);
        await store.append(newEvent(sandboxId));
      }
      const listed = await store.listSandboxes!(1);
      expect(listed.map((row) => row.sandboxId)).toEqual(expected);
    });
  });

  describe('replayAfter', () => {
    const ref = { workspaceId: 1, sandboxId: 'sb-1' };

    /** Events at T0..T0+9 (ids `<ms>-0`), the first four trimmed: trimmed through T0+3. */
    async function trimmedStream(): Promise<{ store: TestStore; all: StoredEvent[] }> {
      const store = await open({ maxCount: 6, maxAgeMs: BIG.maxAgeMs });
      const all = await fill(store, 'sb-1', Array(10).fill('t'));
      await store.prune();
      return { store, all };
    }

    it('is complete from the last issued id, with nothing to send', async () => {
      const { store, all } = await trimmedStream();
      const last = (all[9] as StoredEvent).id;
      expect(await store.replayAfter(ref, last, 100)).toEqual({
        events: [],
        complete: true,
        earliestId: (all[4] as StoredEvent).id,
        lastId: last,
      });
    });

    it('is complete from a retained id, returning what follows it up to the limit', async () => {
      const { store, all } = await trimmedStream();
      const result = await store.replayAfter(ref, (all[5] as StoredEvent).id, 100);
      expect(result.complete).toBe(true);
      expect(result.gap).toBeUndefined();
      expect(ids(result.events)).toEqual(ids(all.slice(6)));
      expect(result.events[0]).toEqual(all[6]);
      const limited = await store.replayAfter(ref, (all[5] as StoredEvent).id, 2);
      expect(ids(limited.events)).toEqual(ids(all.slice(6, 8)));
      expect(limited.complete).toBe(true);
    });

    it('is complete from the trimmed-through id (the boundary)', async () => {
      const { store, all } = await trimmedStream();
      const result = await store.replayAfter(ref, (all[3] as StoredEvent).id, 100);
      expect(result).toMatchObject({ complete: true, earliestId: (all[4] as StoredEvent).id });
      expect(ids(result.events)).toEqual(ids(all.slice(4)));
    });

    it('reports trimmed below the trimmed-through id, and for 0-0 once something was trimmed', async () => {
      const { store, all } = await trimmedStream();
      const between2and3 = { ms: (all[2] as StoredEvent).id.ms, seq: 5 };
      for (const after of [(all[2] as StoredEvent).id, id('0-0'), between2and3]) {
        const result = await store.replayAfter(ref, after, 100);
        expect(result).toEqual({
          events: all.slice(4),
          complete: false,
          gap: 'trimmed',
          earliestId: (all[4] as StoredEvent).id,
          lastId: (all[9] as StoredEvent).id,
        });
      }
    });

    it('reports unknown for an id inside the retained range that was never issued', async () => {
      const { store, all } = await trimmedStream();
      const result = await store.replayAfter(ref, { ms: (all[6] as StoredEvent).id.ms, seq: 3 }, 100);
      expect(result).toMatchObject({ complete: false, gap: 'unknown', lastId: (all[9] as StoredEvent).id });
      // Still hands over what is retained after it; the caller decides.
      expect(ids(result.events)).toEqual(ids(all.slice(7)));
    });

    it('reports future for an id past the last issued one', async () => {
      const { store, all } = await trimmedStream();
      const lastMs = (all[9] as StoredEvent).id.ms;
      for (const after of [{ ms: lastMs, seq: 1 }, { ms: lastMs + 100, seq: 0 }, id('99999999999999-0')]) {
        expect(await store.replayAfter(ref, after, 100)).toEqual({
          events: [],
          complete: false,
          gap: 'future',
          earliestId: (all[4] as StoredEvent).id,
          lastId: (all[9] as StoredEvent).id,
        });
      }
    });

    it('is complete from 0-0 when nothing was ever trimmed, and trimmed below the first event', async () => {
      const store = await open();
      const all = await fill(store, 'sb-1', ['a', 'b', 'c']);
      const result = await store.replayAfter(ref, id('0-0'), 100);
      expect(result).toEqual({
        events: all,
        complete: true,
        earliestId: (all[0] as StoredEvent).id,
        lastId: (all[2] as StoredEvent).id,
      });
      expect(await store.replayAfter(ref, id('5-0'), 100)).toMatchObject({ complete: false, gap: 'trimmed' });
    });

    withInjectedClock('handles a sandbox with no events: 0-0 is complete, any other id future or trimmed', async () => {
      const store = await open();
      const empty = { workspaceId: 1, sandboxId: 'never' };
      expect(await store.replayAfter(empty, id('0-0'), 100)).toEqual({ events: [], complete: true });
      expect(await store.replayAfter(empty, id(`${T0}-0`), 100)).toEqual({
        events: [],
        complete: false,
        gap: 'future',
      });
      // Once the store issued ids elsewhere, an id at or below them may have belonged to a
      // forgotten stream: reported as trimmed, not future.
      await store.append(newEvent('sb-1'));
      expect(await store.replayAfter(empty, id(`${T0 - 1}-0`), 100)).toMatchObject({ gap: 'trimmed' });
      expect(await store.replayAfter(empty, id(`${T0}-1`), 100)).toMatchObject({ gap: 'future' });
    });

    withServerClock(
      'server clock: a sandbox with no events: 0-0 complete, an id up to Redis now trimmed, later future',
      async () => {
        // Redis keeps no store-wide high-water mark; its clock is one (docs/scaling.md,
        // "Retention": every id Redis issued has a millisecond at most its now).
        const store = await open();
        const empty = { workspaceId: 1, sandboxId: 'never' };
        expect(await store.replayAfter(empty, id('0-0'), 100)).toEqual({ events: [], complete: true });
        expect(await store.replayAfter(empty, { ms: Date.now() - 1, seq: 0 }, 100)).toEqual({
          events: [],
          complete: false,
          gap: 'trimmed',
        });
        expect(await store.replayAfter(empty, { ms: Date.now() + 3_600_000, seq: 0 }, 100)).toEqual({
          events: [],
          complete: false,
          gap: 'future',
        });
      },
    );
  });
});
