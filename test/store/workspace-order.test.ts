import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { eventOrder, formatOrderCursor, parseOrderCursor, type StoredEvent } from '../../src/event/event.js';
import type { RetentionPolicy } from '../../src/store/types.js';
import { MIN_RETENTION_BYTES } from '../../src/store/semantics.js';
import { OrderColumn } from '../../src/store/workspace-order.js';
import { hasRedis } from '../scale/support.js';
import {
  BIG,
  Clock,
  memoryFactory,
  newEvent,
  redisFactory,
  SharedRedis,
  type StoreFactory,
  sqliteFactory,
  T0,
} from './helpers.js';

/**
 * The store order over every sandbox (docs/protocol.md, "Pattern resume"): replayWorkspaceAfter
 * of the memory and SQLite stores, which a pattern resume reads.
 */

const factories: [string, () => StoreFactory][] = [
  ['memory', memoryFactory],
  ['sqlite', () => sqliteFactory()],
];

describe.each(factories)('%s store: replayWorkspaceAfter', (_kind, makeFactory) => {
  let factory: StoreFactory;
  afterEach(async () => {
    await factory.cleanup();
  });

  async function open(retention: RetentionPolicy = BIG) {
    factory = makeFactory();
    const clock = new Clock(T0);
    return factory.create({ retention, now: () => clock.now() });
  }

  const names = (events: StoredEvent[]): string[] => events.map((event) => `${event.workspaceId}/${event.sandboxId}`);

  it('gives each stored event the next order, and replays a workspace in it, page by page', async () => {
    const store = await open();
    const appended: StoredEvent[] = [];
    for (const [sandbox, workspace] of [
      ['a', 1],
      ['b', 1],
      ['a', 2],
      ['c', 1],
      ['a', 1],
    ] as const) {
      appended.push(await store.append(newEvent(sandbox, 'x', {}, workspace)));
    }
    expect(appended.map((event) => eventOrder(event))).toEqual([1, 2, 3, 4, 5]);
    const all = await store.replayWorkspaceAfter!(1, 0, 100);
    expect(all).toMatchObject({ complete: true, lastOrder: 5 });
    expect(names(all.events)).toEqual(['1/a', '1/b', '1/c', '1/a']);
    expect(all.events.map((event) => eventOrder(event))).toEqual([1, 2, 4, 5]);
    expect(all.events).toEqual([appended[0], appended[1], appended[3], appended[4]]);
    const page = await store.replayWorkspaceAfter!(1, 1, 2);
    expect(page.events.map((event) => eventOrder(event))).toEqual([2, 4]);
    expect((await store.replayWorkspaceAfter!(1, 5, 10)).events).toEqual([]);
    expect(names((await store.replayWorkspaceAfter!('all', 2, 10)).events)).toEqual(['2/a', '1/c', '1/a']);
  });

  it('answers trimmed below what retention pruned, and future beyond what was issued', async () => {
    const store = await open({ ...BIG, maxCount: 2 });
    for (let i = 0; i < 4; i += 1) await store.append(newEvent('a'));
    await store.append(newEvent('b', 'x', {}, 2));
    await store.prune();
    const trimmed = await store.replayWorkspaceAfter!(1, 1, 10);
    expect(trimmed).toMatchObject({ complete: false, gap: 'trimmed', lastOrder: 5 });
    expect(trimmed.events.map((event) => eventOrder(event))).toEqual([3, 4]);
    expect(await store.replayWorkspaceAfter!(1, 2, 10)).toMatchObject({ complete: true });
    // Workspace 2 lost nothing: a cursor before its events is exact.
    expect(await store.replayWorkspaceAfter!(2, 0, 10)).toMatchObject({ complete: true });
    expect(await store.replayWorkspaceAfter!('all', 0, 10)).toMatchObject({ complete: false, gap: 'trimmed' });
    expect(await store.replayWorkspaceAfter!(1, 6, 10)).toMatchObject({ complete: false, gap: 'future' });
  });

  it('gives ephemeral events no order', async () => {
    factory = makeFactory();
    const store = await factory.create({
      retention: { ...BIG, ephemeralTypes: ['sandbox.metrics'] },
      now: () => T0,
    });
    const metrics = await store.append(newEvent('a', 'sandbox.metrics'));
    const stored = await store.append(newEvent('a', 'done'));
    expect(eventOrder(metrics)).toBeUndefined();
    expect(eventOrder(stored)).toBe(1);
    expect((await store.replayWorkspaceAfter!(1, 0, 10)).events).toEqual([stored]);
  });
});

describe('cursor text', () => {
  it('is w<order>, and nothing else parses', () => {
    expect(formatOrderCursor(1042)).toBe('w1042');
    expect(parseOrderCursor('w1042')).toBe(1042);
    expect(parseOrderCursor('w0')).toBe(0);
    for (const text of ['1042', 'w', 'w01', 'w-1', 'w1.5', '1700000000000-0', 'W12']) {
      expect(parseOrderCursor(text)).toBeUndefined();
    }
  });
});

/**
 * The Redis engine keeps its order per workspace (docs/scaling.md, "Pattern resume"): each
 * workspace numbers its own events from 1, and a pattern over every workspace is not resumable.
 */
describe.runIf(hasRedis)('redis engine: replayWorkspaceAfter', () => {
  const server = new SharedRedis();
  let factory: StoreFactory;
  afterEach(async () => {
    await factory.cleanup();
  });
  afterAll(() => server.stop());

  async function open(retention: RetentionPolicy = BIG) {
    factory = redisFactory(server);
    return factory.create({ retention, now: Date.now });
  }

  const names = (events: StoredEvent[]): string[] => events.map((event) => `${event.workspaceId}/${event.sandboxId}`);

  it('numbers each workspace in append order, and replays it page by page', async () => {
    const store = await open();
    const appended: StoredEvent[] = [];
    for (const [sandbox, workspace] of [
      ['a', 1],
      ['b', 1],
      ['a', 2],
      ['c', 1],
      ['a', 1],
    ] as const) {
      appended.push(await store.append(newEvent(sandbox, 'x', {}, workspace)));
    }
    expect(appended.map((event) => eventOrder(event))).toEqual([1, 2, 1, 3, 4]);
    const all = await store.replayWorkspaceAfter!(1, 0, 100);
    expect(all).toMatchObject({ complete: true, lastOrder: 4 });
    expect(names(all.events)).toEqual(['1/a', '1/b', '1/c', '1/a']);
    expect(all.events.map((event) => eventOrder(event))).toEqual([1, 2, 3, 4]);
    expect(all.events).toEqual([appended[0], appended[1], appended[3], appended[4]]);
    expect((await store.replayWorkspaceAfter!(1, 1, 2)).events.map((event) => eventOrder(event))).toEqual([2, 3]);
    expect((await store.replayWorkspaceAfter!(1, 4, 10)).events).toEqual([]);
    expect(names((await store.replayWorkspaceAfter!(2, 0, 10)).events)).toEqual(['2/a']);
    // History and replays read from the stream carry the order too.
    const history = await store.history({ workspaceId: 1, sandboxId: 'a', limit: 10 });
    expect(history.map((event) => eventOrder(event))).toEqual([1, 4]);
    expect(store.orderPerWorkspace).toBe(true);
    await expect(store.replayWorkspaceAfter!('all', 0, 10)).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
  });

  it('answers trimmed below what a trim dropped (count or bytes), and future beyond what was issued', async () => {
    const store = await open({ ...BIG, maxCount: 2 });
    for (let i = 0; i < 4; i += 1) await store.append(newEvent('a'));
    await store.append(newEvent('b'));
    await store.append(newEvent('c', 'x', {}, 2));
    // a's orders 1 and 2 went; b (order 5) and a's 3 and 4 are retained.
    const trimmed = await store.replayWorkspaceAfter!(1, 1, 10);
    expect(trimmed).toMatchObject({ complete: false, gap: 'trimmed', lastOrder: 5 });
    expect(trimmed.events.map((event) => eventOrder(event))).toEqual([3, 4, 5]);
    expect(await store.replayWorkspaceAfter!(1, 0, 10)).toMatchObject({ complete: false, gap: 'trimmed' });
    expect(await store.replayWorkspaceAfter!(1, 2, 10)).toMatchObject({ complete: true });
    expect(await store.replayWorkspaceAfter!(2, 0, 10)).toMatchObject({ complete: true });
    expect(await store.replayWorkspaceAfter!(1, 6, 10)).toMatchObject({ complete: false, gap: 'future', lastOrder: 5 });
    const bytes = await open({ ...BIG, maxBytes: MIN_RETENTION_BYTES });
    const text = 'x'.repeat(50_000);
    for (let i = 0; i < 4; i += 1) await bytes.append(newEvent('big', 'x', { text }));
    expect(await bytes.replayWorkspaceAfter!(1, 1, 10)).toMatchObject({ complete: false, gap: 'trimmed' });
    expect(await bytes.replayWorkspaceAfter!(1, 2, 10)).toMatchObject({ complete: true });
  });

  it('answers trimmed when an event after the cursor is gone without a trim recording it', async () => {
    const store = await open();
    await store.append(newEvent('a'));
    await store.append(newEvent('b'));
    await store.append(newEvent('a'));
    // The sandbox's stream expired (idle past the age limit) or was removed.
    (await server.get()).cli('DEL', 'se:{1:b}:events');
    const replay = await store.replayWorkspaceAfter!(1, 0, 10);
    expect(replay).toMatchObject({ complete: false, gap: 'trimmed', lastOrder: 3 });
    expect(replay.events.map((event) => eventOrder(event))).toEqual([1, 3]);
  });

  it('goes on after the order stream when the hash of last orders was lost', async () => {
    const store = await open();
    await store.append(newEvent('a'));
    await store.append(newEvent('b'));
    (await server.get()).cli('DEL', 'se:orders');
    const next = await store.append(newEvent('a'));
    expect(eventOrder(next)).toBe(3);
    expect(await store.replayWorkspaceAfter!(1, 1, 10)).toMatchObject({ complete: true, lastOrder: 3 });
  });

  it('gives ephemeral events no order', async () => {
    const store = await open({ ...BIG, ephemeralTypes: ['sandbox.metrics'] });
    const metrics = await store.append(newEvent('a', 'sandbox.metrics'));
    const stored = await store.append(newEvent('a', 'done'));
    expect(eventOrder(metrics)).toBeUndefined();
    expect(eventOrder(stored)).toBe(1);
    expect((await store.replayWorkspaceAfter!(1, 0, 10)).events).toEqual([stored]);
  });
});

describe('OrderColumn (the memory store keeps it in step with each event ring)', () => {
  it('is a FIFO with indexed access across the wrap, and a full column appends and drops without growing', () => {
    const column = new OrderColumn();
    for (let order = 1; order <= 8; order += 1) column.push(order);
    expect(column.capacity).toBe(8);
    // As a full ring of 8 does: drop the oldest, append the next, many times over.
    for (let order = 9; order <= 1_000; order += 1) {
      expect(column.shift()).toBe(order - 8);
      column.push(order);
      expect(column.capacity).toBe(8);
    }
    expect(column.length).toBe(8);
    expect(Array.from({ length: column.length }, (_, i) => column.at(i))).toEqual([
      993, 994, 995, 996, 997, 998, 999, 1000,
    ]);
    expect(column.upperBound(0)).toBe(0);
    expect(column.upperBound(995)).toBe(3);
    expect(column.upperBound(1000)).toBe(8);
  });

  it('keeps its order when it grows from a wrapped state, and compacts once mostly unused', () => {
    const column = new OrderColumn();
    for (let order = 1; order <= 4; order += 1) column.push(order);
    column.shift();
    column.shift();
    for (let order = 5; order <= 40; order += 1) column.push(order); // grows while wrapped
    expect(Array.from({ length: column.length }, (_, i) => column.at(i))).toEqual(
      Array.from({ length: 38 }, (_, i) => i + 3),
    );
    // Orders past 2^31 (a long-running daemon) are kept exactly too.
    column.push(2 ** 40 + 1);
    expect(column.at(column.length - 1)).toBe(2 ** 40 + 1);
    const grown = column.capacity;
    while (column.length > 3) column.shift();
    column.compact();
    expect(column.capacity).toBeLessThan(grown);
    expect(Array.from({ length: column.length }, (_, i) => column.at(i))).toEqual([39, 40, 2 ** 40 + 1]);
    while (column.length > 0) column.shift();
    column.compact();
    expect(column.capacity).toBe(4);
    column.push(7);
    expect(column.at(0)).toBe(7);
  });
});
