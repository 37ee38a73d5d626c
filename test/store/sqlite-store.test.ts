/**
 * What only the SQLite store has: a file that outlives the process, group commit, write
 * failures, background retention in steps, crash safety.
 */
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import type { Worker } from 'node:worker_threads';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createStoredEvent, formatEventId, type StoredEvent } from '../../src/event/event.js';
import { SqliteStore, type SqliteStoreOptions } from '../../src/store/sqlite-store.js';
import { MIN_ROWS_PER_COMMIT } from '../../src/store/sqlite/row-sync.js';
import type { RetentionPolicy } from '../../src/store/types.js';
import { BIG, Clock, T0, ids, newEvent, tempDir } from './helpers.js';
import { distModule } from '../support/daemon.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
const ref = { workspaceId: 1, sandboxId: 'sb-1' };
/** A row-sync interval no test outlasts: rows lag until something else syncs them. */
const NO_ROW_SYNC = 3_600_000;

let dir: string;
let path: string;
let clock: Clock;
const opened: SqliteStore[] = [];
const connections: Database.Database[] = [];

beforeEach(async () => {
  dir = await tempDir();
  path = join(dir, 'events.db');
  clock = new Clock();
});

afterEach(async () => {
  for (const db of connections.splice(0)) db.close();
  await Promise.all(opened.splice(0).map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
});

function open(options: Partial<SqliteStoreOptions> & { retention?: RetentionPolicy } = {}): SqliteStore {
  const store = SqliteStore.open({ path, retention: BIG, now: clock.now, pruneIntervalMs: 0, ...options });
  opened.push(store);
  return store;
}

/** A second connection to the same file, as another process would have. */
function otherConnection(): Database.Database {
  const db = new Database(path, { timeout: 0 });
  connections.push(db);
  return db;
}

describe('restart', () => {
  it('keeps events and ids, and continues ids after the clock stepped back an hour', async () => {
    const first = open();
    const before: StoredEvent[] = [];
    for (let i = 0; i < 5; i++) {
      before.push(await first.append(newEvent('sb-1', i % 2 === 0 ? 'even' : 'odd', { i })));
      if (i % 2 === 1) clock.advance(7);
    }
    const other = await first.append(newEvent('sb-2'));
    await first.close();

    clock.t = T0 - 3_600_000;
    const second = open();
    expect(await second.history({ ...ref, limit: 100 })).toEqual(before);
    expect(await second.history({ ...ref, type: 'odd', limit: 100 })).toEqual([before[1], before[3]]);
    const last = (before[4] as StoredEvent).id;
    expect(await second.replayAfter(ref, (before[2] as StoredEvent).id, 100)).toEqual({
      events: before.slice(3),
      complete: true,
      earliestId: (before[0] as StoredEvent).id,
      lastId: last,
    });

    const next = await second.append(newEvent('sb-1'));
    expect(next.id).toEqual({ ms: last.ms, seq: last.seq + 1 });
    expect(next.timestamp).toBe(T0 - 3_600_000);
    const otherNext = await second.append(newEvent('sb-2'));
    expect(otherNext.id).toEqual({ ms: other.id.ms, seq: other.id.seq + 1 });
    // A sandbox the file never saw starts above every id ever issued (the persisted high-water).
    expect((await second.append(newEvent('sb-new'))).id).toEqual({ ms: otherNext.id.ms, seq: otherNext.id.seq + 1 });
    await second.close();

    const third = open();
    expect(ids(await third.history({ ...ref, limit: 100 }))).toEqual(ids([...before, next]));
  });

  it('keeps trimmed-through and retention state across a restart', async () => {
    const first = open({ retention: { maxCount: 3, maxAgeMs: BIG.maxAgeMs } });
    const all: StoredEvent[] = [];
    for (let i = 0; i < 6; i++) {
      all.push(await first.append(newEvent('sb-1')));
      clock.advance(1);
    }
    await first.prune();
    await first.close();

    // Reopened with a smaller count limit: the sandbox already over it is found at open.
    const second = open({ retention: { maxCount: 2, maxAgeMs: BIG.maxAgeMs } });
    expect(await second.replayAfter(ref, (all[2] as StoredEvent).id, 100)).toMatchObject({ complete: true });
    expect(await second.replayAfter(ref, { ms: 0, seq: 0 }, 100)).toMatchObject({ complete: false, gap: 'trimmed' });
    expect(await second.prune()).toBe(1);
    expect(ids(await second.history({ ...ref, limit: 100 }))).toEqual(ids(all.slice(4)));
    expect(await second.replayAfter(ref, (all[3] as StoredEvent).id, 100)).toMatchObject({ complete: true });
    expect(await second.replayAfter(ref, (all[2] as StoredEvent).id, 100)).toMatchObject({ gap: 'trimmed' });
  });

  it('writes a WAL-mode file with the expected tables', async () => {
    const store = open();
    await store.append(newEvent('sb-1'));
    const db = otherConnection();
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").pluck().all()).toEqual([
      'events',
      'high_water',
      'pruned_order',
      'pruned_order_types',
      'pruned_types',
      'rows_synced',
      'sandboxes',
    ]);
  });

  it('opens a version-1 file (whole JSON lines, a type index): reads it, appends, and upgrades it', async () => {
    // The schema a version-1 build wrote, with two of its events.
    const v1 = new Database(path);
    v1.pragma('journal_mode = WAL');
    v1.exec(`
      CREATE TABLE events (workspace_id INTEGER NOT NULL, sandbox_id TEXT NOT NULL, ms INTEGER NOT NULL,
        seq INTEGER NOT NULL, type TEXT NOT NULL, timestamp INTEGER NOT NULL, json TEXT NOT NULL,
        PRIMARY KEY (workspace_id, sandbox_id, ms, seq)) WITHOUT ROWID;
      CREATE INDEX events_by_type ON events (workspace_id, sandbox_id, type, ms, seq);
      CREATE TABLE sandboxes (workspace_id INTEGER NOT NULL, sandbox_id TEXT NOT NULL, last_ms INTEGER NOT NULL,
        last_seq INTEGER NOT NULL, retained INTEGER NOT NULL, first_ms INTEGER, first_seq INTEGER,
        trimmed_ms INTEGER, trimmed_seq INTEGER, active_at INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, sandbox_id)) WITHOUT ROWID;
      CREATE INDEX sandboxes_by_first ON sandboxes (first_ms) WHERE first_ms IS NOT NULL;
      CREATE INDEX sandboxes_idle ON sandboxes (active_at) WHERE retained = 0;
      CREATE TABLE high_water (only INTEGER PRIMARY KEY CHECK (only = 0), ms INTEGER NOT NULL, seq INTEGER NOT NULL);
    `);
    const old = [
      createStoredEvent(newEvent('sb-1', 'a', {}), JSON.stringify({ i: 0 }), { ms: T0 - 10, seq: 0 }, T0 - 10),
      createStoredEvent(
        newEvent('sb-1', 'b', {}),
        JSON.stringify({ i: 1, s: 'x"\\u2028' }),
        { ms: T0 - 10, seq: 1 },
        T0 - 10,
      ),
    ];
    const insert = v1.prepare('INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)');
    for (const e of old) insert.run(1, 'sb-1', e.id.ms, e.id.seq, e.type, e.timestamp, e.json);
    v1.prepare('INSERT INTO sandboxes VALUES (1, ?, ?, 1, 2, ?, 0, NULL, NULL, ?)').run(
      'sb-1',
      T0 - 10,
      T0 - 10,
      T0 - 10,
    );
    v1.pragma('user_version = 1');
    v1.close();

    const store = open();
    expect(await store.history({ ...ref, limit: 100 })).toEqual(old);
    const added = [
      await store.append(newEvent('sb-1', 'a', { i: 2 })),
      await store.append(newEvent('sb-1', 'b', { i: 3 })),
    ];
    expect(added.map((e) => e.id)).toEqual([
      { ms: T0, seq: 0 },
      { ms: T0, seq: 1 },
    ]);
    expect(await store.history({ ...ref, limit: 100 })).toEqual([...old, ...added]);
    expect(await store.history({ ...ref, type: 'b', limit: 100 })).toEqual([old[1], added[1]]);
    expect(await store.history({ ...ref, type: 'never', limit: 100 })).toEqual([]);
    expect((await store.replayAfter(ref, (old[0] as StoredEvent).id, 100)).events).toEqual([old[1], ...added]);
    await store.close();
    const db = otherConnection();
    expect(db.pragma('user_version', { simple: true })).toBe(5);
    expect(db.prepare("SELECT name FROM sqlite_schema WHERE name = 'events_by_type'").all()).toEqual([]);
    // The upgrade counted the version-1 lines' bytes; the appends added theirs.
    expect(storedBytes(db)).toBe(lineBytes([...old, ...added]));
    // And again, now that it is version 3.
    const reopened = open();
    expect(await reopened.history({ ...ref, limit: 100 })).toEqual([...old, ...added]);
  });

  it('stores the data text and returns the very line it announced', async () => {
    const store = open();
    const announced: StoredEvent[] = [];
    store.setListener((event) => announced.push(event));
    const odd = { text: 'quote " backslash \\ line\u2028sep é 😀', n: [1, 2.5, -0], nested: { deep: null } };
    const events = await Promise.all([
      store.append(newEvent('sb-1', 't', odd)),
      store.append(newEvent('sb-"quoted"', 'type "with" quotes', {}, 7)),
    ]);
    expect(announced).toEqual(events);
    expect(await store.history({ ...ref, limit: 10 })).toEqual([events[0]]);
    expect(await store.history({ workspaceId: 7, sandboxId: 'sb-"quoted"', limit: 10 })).toEqual([events[1]]);
    const row = otherConnection().prepare("SELECT json, data FROM events WHERE sandbox_id = 'sb-1'").get();
    expect(row).toEqual({ json: '', data: JSON.stringify(odd) });
  });

  it('keeps the sandboxes rows in step with what batches and retention did', async () => {
    const retention = { maxCount: 5, maxAgeMs: 1_000 };
    let store = open({ retention, rowSyncIntervalMs: NO_ROW_SYNC });
    for (let round = 0; round < 4; round++) {
      await Promise.all(Array.from({ length: 30 }, (_, i) => store.append(newEvent(`sb-${i % 3}`))));
    }
    const row = (sb: string): unknown =>
      otherConnection()
        .prepare('SELECT last_ms, last_seq, retained, first_ms, first_seq FROM sandboxes WHERE sandbox_id = ?')
        .get(sb);
    // A new stream's row is written by its first commit; later commits leave it behind until a
    // row sync (here the one retention starts with).
    expect(row('sb-1')).toEqual({ last_ms: T0, last_seq: 10, retained: 10, first_ms: T0, first_seq: 1 });
    // Readers of the row take the last id from the writer meanwhile.
    expect(await store.listSandboxes(1)).toContainEqual({
      workspaceId: 1,
      sandboxId: 'sb-1',
      lastId: { ms: T0, seq: 40 },
    });
    await store.prune();
    expect(row('sb-1')).toMatchObject({ last_seq: 40, retained: 5, first_seq: 36 });
    // Appends after pruning start from the pruned row, not from what the writer saw before;
    // close writes the rows that lag.
    await store.append(newEvent('sb-1'));
    await store.close();
    expect(row('sb-1')).toEqual({ last_ms: T0, last_seq: 41, retained: 6, first_ms: T0, first_seq: 36 });
    // Pruned empty by age and forgotten, then written again: a new row.
    store = open({ retention });
    clock.advance(2_000);
    await store.prune();
    expect(row('sb-1')).toBeUndefined();
    const next = await store.append(newEvent('sb-1'));
    expect(row('sb-1')).toEqual({ last_ms: T0 + 2_000, last_seq: 0, retained: 1, first_ms: T0 + 2_000, first_seq: 0 });
    expect(await store.replayAfter({ workspaceId: 1, sandboxId: 'sb-1' }, { ms: T0, seq: 41 }, 10)).toMatchObject({
      events: [next],
    });
  });

  it('counts the rows a crash left behind again from their events at open', async () => {
    const store = open({ retention: { ...BIG, ephemeralTypes: ['tick'] }, rowSyncIntervalMs: NO_ROW_SYNC });
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.append(newEvent(`sb-${i % 2}`))));
    const last = await store.append(newEvent('sb-0'));
    const tick = await store.append(newEvent('sb-1', 'tick'));
    // A crash: the file as the process left it, copied before close could sync the rows.
    const copy = join(dir, 'crashed.db');
    const live = otherConnection();
    await live.backup(copy);
    const crashed = new Database(copy);
    connections.push(crashed);
    const rows = (db: Database.Database): unknown =>
      db.prepare('SELECT sandbox_id, last_seq, retained, bytes FROM sandboxes ORDER BY sandbox_id').all();
    expect(rows(crashed)).toEqual([
      { sandbox_id: 'sb-0', last_seq: 9, retained: 10, bytes: expect.any(Number) },
      { sandbox_id: 'sb-1', last_seq: tick.id.seq, retained: 10, bytes: expect.any(Number) }, // ephemeral: written
    ]);
    crashed.close();
    connections.pop();

    const reopened = open({ path: copy, retention: { ...BIG, ephemeralTypes: ['tick'] } });
    const expected = async (sb: string, lastSeq: number): Promise<unknown> => {
      const events = await reopened.history({ workspaceId: 1, sandboxId: sb, limit: 100 });
      return { sandbox_id: sb, last_seq: lastSeq, retained: events.length, bytes: lineBytes(events) };
    };
    const recovered = new Database(copy, { readonly: true });
    connections.push(recovered);
    expect(rows(recovered)).toEqual([await expected('sb-0', last.id.seq), await expected('sb-1', tick.id.seq)]);
    // Ids go on above the last one issued, the ephemeral one too.
    expect((await reopened.append(newEvent('sb-1'))).id.seq).toBe(tick.id.seq + 1);
    expect((await reopened.append(newEvent('sb-0'))).id.seq).toBe(last.id.seq + 1);
  });

  it('spreads a row sync over commits, and a crash in the middle loses no count', async () => {
    // Interval 0: a row sync begins as soon as the last one is done; each commit of a single
    // event writes MIN_ROWS_PER_COMMIT of its rows (the first sync after open: in the order the
    // rows started lagging).
    const store = open({ rowSyncIntervalMs: 0 });
    const streams = Array.from({ length: 2 * MIN_ROWS_PER_COMMIT + 50 }, (_, i) => `sb-${String(i).padStart(4, '0')}`);
    const appendToAll = (): Promise<StoredEvent[]> => Promise.all(streams.map((sb) => store.append(newEvent(sb))));
    await appendToAll(); // one commit: the new rows are written
    await appendToAll(); // one commit: every row lags from its event in it, in this order
    const db = otherConnection();
    const inStep = (): string[] =>
      (
        db.prepare('SELECT sandbox_id FROM sandboxes WHERE retained = 2 ORDER BY sandbox_id').all() as {
          sandbox_id: string;
        }[]
      ).map((row) => row.sandbox_id);
    const rowsSynced = (): number => (db.prepare('SELECT ord FROM rows_synced').get() as { ord: number }).ord;
    const lastOrder = (sb: string): number =>
      (db.prepare('SELECT max(ord) AS ord FROM events WHERE sandbox_id = ?').get(sb) as { ord: number }).ord;
    expect(inStep()).toEqual([]);

    await store.append(newEvent('other'));
    expect(inStep()).toEqual(streams.slice(0, MIN_ROWS_PER_COMMIT));
    // Every row is in step through the event before the first one a lagging row lacks.
    expect(rowsSynced()).toBe(lastOrder(streams[MIN_ROWS_PER_COMMIT] as string) - 1);
    // A crash here: the file as the process left it.
    const copy = join(dir, 'crashed.db');
    await db.backup(copy);

    await store.append(newEvent('other'));
    expect(inStep()).toEqual(streams.slice(0, 2 * MIN_ROWS_PER_COMMIT));
    expect(rowsSynced()).toBe(lastOrder(streams[2 * MIN_ROWS_PER_COMMIT] as string) - 1);
    await store.append(newEvent('other'));
    expect(inStep()).toEqual(streams);
    expect(rowsSynced()).toBeGreaterThanOrEqual(lastOrder(streams.at(-1) as string));

    // The copy's open counts the rows the crash left behind again.
    const reopened = open({ path: copy });
    const recovered = new Database(copy, { readonly: true });
    connections.push(recovered);
    const rows = recovered
      .prepare("SELECT sandbox_id, last_seq, retained FROM sandboxes WHERE sandbox_id LIKE 'sb-%' ORDER BY sandbox_id")
      .all();
    const expected = await Promise.all(
      streams.map(async (sb) => {
        const events = await reopened.history({ workspaceId: 1, sandboxId: sb, limit: 10 });
        return { sandbox_id: sb, last_seq: events.at(-1)?.id.seq, retained: events.length };
      }),
    );
    expect(expected.every((row) => row.retained === 2)).toBe(true);
    expect(rows).toEqual(expected);
  });

  it('records rows_synced at the last order when no row lags, so a crash recounts nothing old', async () => {
    // Only new streams: each commit writes its rows itself, none ever lags.
    const store = open({ rowSyncIntervalMs: 0 });
    const db = otherConnection();
    const rowsSynced = (): number => (db.prepare('SELECT ord FROM rows_synced').get() as { ord: number }).ord;
    const maxOrder = (): number => (db.prepare('SELECT max(ord) AS ord FROM events').get() as { ord: number }).ord;
    for (let i = 0; i < 3; i++) await store.append(newEvent(`new-${i}`));
    const through = maxOrder();
    await store.append(newEvent('new-3'));
    // Every row was in step through the orders of the commits before this one.
    expect(rowsSynced()).toBe(through);
  });

  it('writes the rows of a sync by key range, so that one commit rewrites few leaf pages', async () => {
    const store = open({ rowSyncIntervalMs: 0 });
    const streams = Array.from({ length: 3 * MIN_ROWS_PER_COMMIT }, (_, i) => `sb-${String(i).padStart(4, '0')}`);
    const backwards = [...streams].reverse();
    const appendToAll = (): Promise<StoredEvent[]> => Promise.all(backwards.map((sb) => store.append(newEvent(sb))));
    const db = otherConnection();
    const inStep = (retained: number): string[] =>
      (
        db
          .prepare("SELECT sandbox_id FROM sandboxes WHERE sandbox_id LIKE 'sb-%' AND retained = ? ORDER BY sandbox_id")
          .all(retained) as {
          sandbox_id: string;
        }[]
      ).map((row) => row.sandbox_id);
    const rowsSynced = (): number => (db.prepare('SELECT ord FROM rows_synced').get() as { ord: number }).ord;
    await appendToAll();
    await appendToAll(); // every row lags, the highest key first
    for (let i = 0; i < 3; i++) await store.append(newEvent('other')); // the first sync, in that order
    expect(inStep(2)).toEqual(streams);
    // The next sync's ranges are cut at keys of the rows the first one wrote.
    await appendToAll();
    const before = rowsSynced();
    await store.append(newEvent('other'));
    expect(inStep(3)).toEqual(streams.slice(0, MIN_ROWS_PER_COMMIT));
    // The row that lags longest (the highest key) is not written yet: rows_synced stays below it.
    expect(rowsSynced()).toBe(before);
    await store.append(newEvent('other'));
    await store.append(newEvent('other'));
    expect(inStep(3)).toEqual(streams);
    expect(rowsSynced()).toBeGreaterThan(before);
  });

  it('syncs the row of a stream written in every commit, and counts it again after a crash meanwhile', async () => {
    const store = open({ rowSyncIntervalMs: 0 });
    const streams = Array.from({ length: 3 * MIN_ROWS_PER_COMMIT }, (_, i) => `sb-${i}`);
    await Promise.all(['hot', ...streams].map((sb) => store.append(newEvent(sb))));
    await Promise.all(streams.map((sb) => store.append(newEvent(sb)))); // these rows lag
    const db = otherConnection();
    const retained = (file: Database.Database): unknown =>
      file.prepare("SELECT retained FROM sandboxes WHERE sandbox_id = 'hot'").get();
    const rowsSynced = (): number => (db.prepare('SELECT ord FROM rows_synced').get() as { ord: number }).ord;
    // 'hot' gains an event in each commit from here on: its row lags from the first of them
    // (order hotFrom) and keeps its place behind the rows that lagged before it, which the row
    // sync writes MIN_ROWS_PER_COMMIT a commit.
    await store.append(newEvent('hot'));
    const hotFrom = (db.prepare('SELECT max(ord) AS ord FROM events').get() as { ord: number }).ord;
    await store.append(newEvent('hot'));
    await store.append(newEvent('hot'));
    expect(retained(db)).toEqual({ retained: 1 });
    expect(rowsSynced()).toBe(hotFrom - 1);
    const copy = join(dir, 'crashed.db');
    await db.backup(copy);
    // The next commit reaches it.
    const last = await store.append(newEvent('hot'));
    expect(retained(db)).toEqual({ retained: 5 });
    expect(rowsSynced()).toBeGreaterThanOrEqual(hotFrom);

    // A crash before that: the open counts its three events above rows_synced again.
    const reopened = open({ path: copy });
    const recovered = new Database(copy, { readonly: true });
    connections.push(recovered);
    expect(retained(recovered)).toEqual({ retained: 4 });
    expect((await reopened.append(newEvent('hot'))).id.seq).toBe(last.id.seq);
  });

  it('creates files with 8 KiB pages and keeps the page size of an existing file', async () => {
    const store = open();
    await store.append(newEvent('sb-1'));
    expect(otherConnection().pragma('page_size', { simple: true })).toBe(8192);
    await store.close();

    // A file an earlier build created, with SQLite's default 4 KiB pages.
    path = join(dir, 'old.db');
    const old = new Database(path);
    old.pragma('page_size = 4096');
    old.pragma('journal_mode = WAL');
    old.close();
    const reopened = open();
    const event = await reopened.append(newEvent('sb-1'));
    expect(await reopened.history({ ...ref, limit: 10 })).toEqual([event]);
    expect(otherConnection().pragma('page_size', { simple: true })).toBe(4096);
  });

  it('refuses a file written by a newer schema', async () => {
    const db = new Database(path);
    db.pragma('user_version = 99');
    db.close();
    expect(() => open()).toThrow(expect.objectContaining({ code: 'STORE_UNAVAILABLE' }));
  });

  it('reports a file it cannot open as STORE_UNAVAILABLE', () => {
    expect(() => SqliteStore.open({ path: join(dir, 'missing', 'events.db'), retention: BIG })).toThrow(
      expect.objectContaining({ code: 'STORE_UNAVAILABLE' }),
    );
  });

  it('works with synchronous = full', async () => {
    const store = open({ synchronous: 'full' });
    const event = await store.append(newEvent('sb-1'));
    expect(await store.history({ ...ref, limit: 10 })).toEqual([event]);
  });
});

describe('group commit', () => {
  it('writes concurrent appends in one transaction and announces them in id order', async () => {
    const store = open();
    const announced: StoredEvent[] = [];
    store.setListener((event) => announced.push(event));
    const resolved: StoredEvent[] = [];
    const all = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        store.append(newEvent(`sb-${i % 3}`, 't', { i })).then((event) => {
          expect(announced).toContain(event);
          resolved.push(event);
          return event;
        }),
      ),
    );
    expect(store.stats()).toMatchObject({ batches: 1, appended: 500, failedBatches: 0, pending: 0 });
    expect(announced).toEqual(all);
    expect(resolved).toEqual(all);
    for (let s = 0; s < 3; s++) {
      const stream = all.filter((e) => e.sandboxId === `sb-${s}`);
      const sorted = [...stream].sort((a, b) => a.id.ms - b.id.ms || a.id.seq - b.id.seq);
      expect(ids(stream)).toEqual(ids(sorted));
      expect(new Set(ids(stream)).size).toBe(stream.length);
    }
  });

  it('splits a burst into batches of groupCommitMaxBatch, keeping the order', async () => {
    const store = open({ groupCommitMaxBatch: 100 });
    const announced: string[] = [];
    store.setListener((event) => announced.push(formatEventId(event.id)));
    const all = await Promise.all(Array.from({ length: 1_000 }, (_, i) => store.append(newEvent('sb-1', 't', { i }))));
    expect(store.stats()).toMatchObject({ batches: 10, appended: 1_000 });
    expect(announced).toEqual(ids(all));
    expect(all.map((e) => e.id.seq)).toEqual(Array.from({ length: 1_000 }, (_, i) => i));
  });

  // A commit inserts its events INSERT_GROUP rows per statement and the rest one by one
  // (statements.ts): 45 events, a few ephemeral, fill groups and leave a rest.
  it('writes every row of a commit as announced, in groups and one by one, ephemeral ones left out', async () => {
    const retention = { ...BIG, ephemeralTypes: ['tick'] };
    const store = open({ retention });
    const announced: StoredEvent[] = [];
    store.setListener((event) => announced.push(event));
    const all = await Promise.all(
      Array.from({ length: 45 }, (_, i) =>
        store.append(newEvent(`sb-${i % 3}`, i % 7 === 3 ? 'tick' : `t.${i % 2}`, { i, text: `é${i}` }, 1 + (i % 2))),
      ),
    );
    expect(store.stats()).toMatchObject({ batches: 1, appended: 45 });
    expect(announced).toEqual(all);
    await store.close();

    const reopened = open({ retention });
    const stored = all.filter((e) => e.type !== 'tick');
    const replay = await reopened.replayWorkspaceAfter('all', 0, 100);
    expect(replay.events).toEqual(stored);
    for (const workspaceId of [1, 2])
      for (let s = 0; s < 3; s++) {
        const stream = { workspaceId, sandboxId: `sb-${s}` };
        const expected = stored.filter((e) => e.workspaceId === workspaceId && e.sandboxId === stream.sandboxId);
        expect(await reopened.history({ ...stream, limit: 100 })).toEqual(expected);
      }
  });

  it('refuses the whole commit when a row of a group fails, and writes the next one', async () => {
    const store = open();
    const db = otherConnection();
    db.exec(
      "CREATE TRIGGER fail_bad BEFORE INSERT ON events WHEN NEW.sandbox_id = 'bad' BEGIN SELECT RAISE(ABORT, 'rejected by test'); END",
    );
    const failed = await Promise.allSettled(
      Array.from({ length: 40 }, (_, i) => store.append(newEvent(i === 20 ? 'bad' : 'sb-1', 't', { i }))),
    );
    expect(failed.every((r) => r.status === 'rejected')).toBe(true);
    const written = await Promise.all(Array.from({ length: 40 }, (_, i) => store.append(newEvent('sb-1', 't', { i }))));
    expect(store.stats()).toMatchObject({ batches: 1, failedBatches: 1, appended: 40 });
    expect(written[0]?.id).toEqual({ ms: T0, seq: 0 }); // the refused commit's ids are issued again
    expect(await store.history({ ...ref, limit: 100 })).toEqual(written);
    expect(db.prepare('SELECT count(*) AS n FROM events').get()).toEqual({ n: 40 });
  });

  it('gathers appends from several event-loop turns within groupCommitMaxDelayMs', async () => {
    const store = open({ groupCommitMaxDelayMs: 50 });
    const pending: Promise<StoredEvent>[] = [];
    for (let i = 0; i < 5; i++) {
      pending.push(store.append(newEvent('sb-1')));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all(pending);
    expect(store.stats().batches).toBe(1);
  });

  it('writes what is pending before close, and rejects appends after it', async () => {
    const store = open();
    const pending = [store.append(newEvent('sb-1')), store.append(newEvent('sb-1')), store.append(newEvent('sb-2'))];
    await store.close();
    const written = await Promise.all(pending);
    await expect(store.append(newEvent('sb-1'))).rejects.toMatchObject({ code: 'STORE_CLOSED' });
    const reopened = open();
    expect(await reopened.history({ ...ref, limit: 10 })).toEqual(written.slice(0, 2));
  });
});

describe('write failures', () => {
  it('rejects a failed batch with STORE_UNAVAILABLE, announces nothing, and reissues its ids', async () => {
    const store = open();
    const announced: string[] = [];
    store.setListener((event) => announced.push(formatEventId(event.id)));
    const first = await store.append(newEvent('sb-1'));

    const db = otherConnection();
    db.exec(
      "CREATE TRIGGER fail_insert BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk is full (simulated)'); END",
    );
    const failed = await Promise.allSettled([
      store.append(newEvent('sb-1')),
      store.append(newEvent('sb-1')),
      store.append(newEvent('sb-2')),
    ]);
    for (const result of failed) {
      expect(result.status).toBe('rejected');
      const reason = (result as PromiseRejectedResult).reason as Error & { code: string };
      expect(reason.code).toBe('STORE_UNAVAILABLE');
      expect(reason.message).toContain('disk is full (simulated)');
    }
    expect(announced).toEqual([formatEventId(first.id)]);
    expect(store.stats()).toMatchObject({ batches: 1, failedBatches: 1, appended: 1 });

    db.exec('DROP TRIGGER fail_insert');
    const next = await store.append(newEvent('sb-1'));
    expect(next.id).toEqual({ ms: T0, seq: 1 }); // the ids nobody saw are issued again
    expect(await store.history({ ...ref, limit: 10 })).toEqual([first, next]);
    expect(await store.history({ workspaceId: 1, sandboxId: 'sb-2', limit: 10 })).toEqual([]);
    expect(announced).toEqual(ids([first, next]));
  });

  it('fails fast while another connection holds the write lock, then recovers', async () => {
    const store = open({ busyTimeoutMs: 5 });
    const first = await store.append(newEvent('sb-1'));
    const db = otherConnection();
    db.exec('BEGIN EXCLUSIVE');
    await expect(store.append(newEvent('sb-1'))).rejects.toMatchObject({
      code: 'STORE_UNAVAILABLE',
      message: expect.stringContaining('locked'),
    });
    // Readers are not blocked in WAL mode.
    expect(await store.history({ ...ref, limit: 10 })).toEqual([first]);
    db.exec('ROLLBACK');
    clock.advance(1);
    const next = await store.append(newEvent('sb-1'));
    expect(next.id).toEqual({ ms: T0 + 1, seq: 0 });
  });

  it('keeps later batches working when one in the middle fails', async () => {
    const store = open({ groupCommitMaxBatch: 2 });
    const db = otherConnection();
    // Fails only the events of one sandbox: only the batch holding them is rejected.
    db.exec(
      "CREATE TRIGGER fail_bad BEFORE INSERT ON events WHEN NEW.sandbox_id = 'bad' BEGIN SELECT RAISE(ABORT, 'rejected by test'); END",
    );
    const results = await Promise.allSettled([
      store.append(newEvent('sb-1')),
      store.append(newEvent('sb-1')),
      store.append(newEvent('bad')),
      store.append(newEvent('sb-1')),
      store.append(newEvent('sb-1')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected', 'fulfilled']);
    const kept = await store.history({ ...ref, limit: 10 });
    expect(ids(kept)).toEqual([`${T0}-0`, `${T0}-1`, `${T0}-2`]);
  });
});

/** Bytes of event lines, as byte retention counts them (docs/operations.md, "Retention"). */
function lineBytes(events: readonly (StoredEvent | undefined)[]): number {
  return events.reduce((sum, e) => sum + Buffer.byteLength(e?.json ?? ''), 0);
}

/** What the file says sb-1 retains in bytes. */
function storedBytes(db: Database.Database): number {
  return (db.prepare("SELECT bytes FROM sandboxes WHERE sandbox_id = 'sb-1'").get() as { bytes: number }).bytes;
}

describe('byte retention', () => {
  const maxBytes = 128 * 1024;
  const retention = { ...BIG, maxBytes };
  /** About 10 KiB a line, with multi-byte text in type and data, so bytes are not characters. */
  const publishSome = async (store: SqliteStore, from: number, count: number): Promise<void> => {
    for (let i = from; i < from + count; i++) {
      await store.append(newEvent('sb-1', `t.é${i % 3}`, { i, text: `${'ü'.repeat(3_000)}😀${'x'.repeat(i * 7)}` }));
    }
  };
  const expectWithinLimit = async (store: SqliteStore, lastI: number): Promise<StoredEvent[]> => {
    const kept = await store.history({ ...ref, limit: 1000 });
    const bytes = lineBytes(kept);
    expect(bytes).toBeLessThanOrEqual(maxBytes);
    // Pruned no more than needed: one more event would not fit, and the newest are kept.
    expect(bytes).toBeGreaterThan(maxBytes - Buffer.byteLength((kept[0] as StoredEvent).json) - 8 * 1024);
    expect((JSON.parse((kept.at(-1) as StoredEvent).json) as { data: { i: number } }).data.i).toBe(lastI);
    expect(storedBytes(otherConnection())).toBe(bytes);
    return kept;
  };

  it('prunes the oldest events of a sandbox over --retention-bytes, and counts across a restart', async () => {
    const store = open({ retention, pruneBatchSize: 4 });
    await publishSome(store, 0, 40);
    expect(await store.prune()).toBeGreaterThan(0);
    const kept = await expectWithinLimit(store, 39);
    // The gap is reported as trimmed, as for the count limit.
    const replay = await store.replayAfter(ref, { ms: T0 - 1, seq: 0 }, 10);
    expect(replay.gap).toBe('trimmed');
    expect(replay.earliestId).toEqual((kept[0] as StoredEvent).id);
    await store.close();

    // A restart reads the figure back from the file: new appends take the stream over the
    // limit again, and retention prunes to it, not more, not less.
    const reopened = open({ retention });
    await publishSome(reopened, 40, 5);
    await reopened.prune();
    await expectWithinLimit(reopened, 44);
  });

  it('applies a lowered limit from a reload to sandboxes no commit touched since', async () => {
    const store = open();
    await publishSome(store, 0, 40);
    expect(await store.prune()).toBe(0);
    store.setRetention(retention);
    expect(await store.prune()).toBeGreaterThan(0);
    await expectWithinLimit(store, 39);
  });
});

describe('background retention', () => {
  it('prunes in small steps without losing what it must keep', async () => {
    const store = open({ retention: { maxCount: 10, maxAgeMs: 1_000 }, pruneBatchSize: 7 });
    const a: StoredEvent[] = [];
    for (let i = 0; i < 100; i++) a.push(await store.append(newEvent('sb-a', 't', { i })));
    const b: StoredEvent[] = [];
    for (let i = 0; i < 50; i++) b.push(await store.append(newEvent('sb-b', 't', { i })));
    expect(await store.prune()).toBe(130);
    expect(await store.history({ workspaceId: 1, sandboxId: 'sb-a', limit: 100 })).toEqual(a.slice(90));
    expect(await store.history({ workspaceId: 1, sandboxId: 'sb-b', limit: 100 })).toEqual(b.slice(40));
    expect(
      await store.replayAfter({ workspaceId: 1, sandboxId: 'sb-a' }, (a[89] as StoredEvent).id, 100),
    ).toMatchObject({ complete: true });
    // Age, also in steps of 7.
    clock.advance(1_001);
    const c = await store.append(newEvent('sb-a'));
    expect(await store.prune()).toBe(20);
    expect(await store.history({ workspaceId: 1, sandboxId: 'sb-a', limit: 100 })).toEqual([c]);
    expect(await store.history({ workspaceId: 1, sandboxId: 'sb-b', limit: 100 })).toEqual([]);
    expect(store.stats().pruned).toBe(150);
  });

  it('prunes sandboxes written in turn a share of each per step: exactly the excess, few WAL frames', async () => {
    const store = open({ retention: { maxCount: 200, maxAgeMs: BIG.maxAgeMs }, pruneBatchSize: 1_000 });
    const sandboxes = Array.from({ length: 50 }, (_, i) => `sb-${i}`);
    const written = new Map<string, StoredEvent[]>(sandboxes.map((sb) => [sb, []]));
    for (let round = 0; round < 400; round++) {
      const events = await Promise.all(sandboxes.map((sb) => store.append(newEvent(sb, 't', { round }))));
      for (const event of events) written.get(event.sandboxId)?.push(event);
    }
    // A reader holding its snapshot keeps the WAL from starting over: its frames are what the
    // prune wrote (the checkpoint worker copies them, it cannot rewind).
    const reader = otherConnection();
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM high_water').get();
    /** The WAL's frames since it last started over: those with its header's salts. */
    const walFrames = (): number => {
      const wal = readFileSync(`${path}-wal`);
      const salts = wal.readBigUInt64BE(16);
      let frames = 0;
      for (let at = 32; at + 24 + 8_192 <= wal.length; at += 24 + 8_192) {
        if (wal.readBigUInt64BE(at + 8) !== salts) break;
        frames++;
      }
      return frames;
    };
    const before = walFrames();
    expect(await store.prune()).toBe(50 * 200);
    const frames = walFrames() - before;
    reader.exec('COMMIT');
    for (const sb of sandboxes) {
      expect(ids(await store.history({ workspaceId: 1, sandboxId: sb, limit: 1_000 }))).toEqual(
        ids((written.get(sb) as StoredEvent[]).slice(200)),
      );
    }
    // Their oldest events share the pages of events_by_order: a step per sandbox rewrote each
    // such page once per sandbox (0.18 frames per deleted event here), a step over ten once per
    // ten (0.04).
    expect(frames / (50 * 200)).toBeLessThan(0.1);
  });

  it('runs on its timer', async () => {
    const store = open({ retention: { maxCount: 5, maxAgeMs: BIG.maxAgeMs }, pruneIntervalMs: 10 });
    const all = await Promise.all(Array.from({ length: 20 }, () => store.append(newEvent('sb-1'))));
    await vi.waitFor(async () => {
      expect(ids(await store.history({ ...ref, limit: 100 }))).toEqual(ids(all.slice(15)));
    });
  });

  it('loses nothing newer than the window while appends run alongside pruning', async () => {
    const store = open({ retention: { maxCount: 50, maxAgeMs: BIG.maxAgeMs }, pruneBatchSize: 3 });
    const all: StoredEvent[] = [];
    for (let round = 0; round < 20; round++) {
      const appends = Array.from({ length: 40 }, () => store.append(newEvent('sb-1')));
      const [pruned, ...events] = await Promise.all([store.prune(), ...appends]);
      expect(pruned).toBeGreaterThanOrEqual(0);
      all.push(...(events as StoredEvent[]));
    }
    await store.prune();
    expect(ids(await store.history({ ...ref, limit: 1000 }))).toEqual(ids(all.slice(-50)));
  });

  it('forgets idle empty sandboxes in the file too', async () => {
    const store = open({ retention: { maxCount: 10, maxAgeMs: 1_000 } });
    for (let i = 0; i < 100; i++) await store.append(newEvent(`sb-${i}`));
    clock.advance(2_000);
    await store.prune();
    const db = otherConnection();
    expect(db.prepare('SELECT count(*) FROM sandboxes').pluck().get()).toBe(0);
    expect(db.prepare('SELECT count(*) FROM events').pluck().get()).toBe(0);
    expect(db.prepare('SELECT ms, seq FROM high_water').get()).toEqual({ ms: T0, seq: 99 });
    await store.close();
    // After a restart, with the clock far behind, the forgotten ids are still never reissued.
    clock.t = T0 - 3_600_000;
    const reopened = open({ retention: { maxCount: 10, maxAgeMs: 1_000 } });
    expect((await reopened.append(newEvent('sb-5'))).id).toEqual({ ms: T0, seq: 100 });
  });
});

describe('forgotten sandboxes', () => {
  it('get a new row when the same store writes to them again', async () => {
    const store = open({ retention: { maxCount: 10, maxAgeMs: 1_000 } });
    for (let i = 0; i < 10; i++) await store.append(newEvent(`sb-${i}`));
    clock.advance(2_000);
    await store.prune();
    const db = otherConnection();
    expect(db.prepare('SELECT count(*) FROM sandboxes').pluck().get()).toBe(0);
    clock.t = T0; // behind the clock: the id still comes after every id issued
    expect((await store.append(newEvent('sb-7'))).id).toEqual({ ms: T0, seq: 10 });
    expect(db.prepare("SELECT retained, last_ms, last_seq FROM sandboxes WHERE sandbox_id = 'sb-7'").get()).toEqual({
      retained: 1,
      last_ms: T0,
      last_seq: 10,
    });
  });
});

describe('checkpoints', () => {
  const fill = async (store: SqliteStore, rounds: number): Promise<void> => {
    for (let round = 0; round < rounds; round++) {
      // About 250 bytes a row, so that 5 rounds fill a few hundred pages.
      const pad = 'x'.repeat(200);
      await Promise.all(
        Array.from({ length: 1_000 }, (_, i) => store.append(newEvent(`sb-${i % 10}`, 't', { i, pad }))),
      );
    }
  };

  it('copies the WAL into the database file on a worker thread', async () => {
    const store = open();
    await fill(store, 5);
    await vi.waitFor(() => expect(store.stats().checkpoints).toBeGreaterThan(0), { timeout: 10_000 });
    expect(statSync(path).size).toBeGreaterThan(500_000); // the schema alone is a few pages
    await store.close();
    expect(await open().history({ ...ref, limit: 1_000 })).toHaveLength(500);
  });

  it('checkpoints after a single light write too, with no write after it', async () => {
    const store = open();
    await store.append(newEvent('sb-1'));
    // Few events ask for no early run: the one a second after the write must still come.
    await vi.waitFor(() => expect(store.stats().checkpoints).toBeGreaterThan(0), { timeout: 10_000 });
    await store.close();
  });

  it('falls back to inline checkpoints when the worker is gone', async () => {
    const store = open();
    // White-box: the worker is private; kill it as a crash would.
    await (store as unknown as { checkpointer: Worker }).checkpointer.terminate();
    await fill(store, 20); // past the 4 MiB automatic checkpoint
    expect(statSync(path).size).toBeGreaterThan(1_000_000);
    expect(store.stats().checkpoints).toBe(0);
    await store.close();
    expect(await open().history({ ...ref, limit: 10_000 })).toHaveLength(2_000);
  });
});

describe('crash', () => {
  it('has every acknowledged or announced event after SIGKILL, in order, with the same id', async () => {
    const child = spawn(
      process.execPath,
      [join(fixtures, 'crash-child.mjs'), distModule('store/sqlite-store.js'), path],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        // Kill in the middle of the load, well after it started.
        if ((out.match(/^A /gm)?.length ?? 0) >= 5_000) resolve();
      });
      child.on('exit', (code) => reject(new Error(`child exited early (${code}): ${err}`)));
    });
    child.kill('SIGKILL');
    await closed;

    const lines = out.split('\n').slice(0, -1); // a last line without \n was cut by the kill
    const acked = lines.filter((l) => l.startsWith('A ')).map((l) => l.split(' '));
    const announced = lines.filter((l) => l.startsWith('L ')).map((l) => l.split(' '));
    expect(acked.length).toBeGreaterThanOrEqual(5_000);
    // The listener saw each event before its append resolved.
    const announcedAt = new Map(lines.map((l, i) => [l.startsWith('L ') ? l.slice(2) : '', i]));
    for (const [index, line] of lines.entries()) {
      if (!line.startsWith('A ')) continue;
      const key = line.split(' ').slice(1, 3).join(' ');
      expect(announcedAt.get(key)).toBeLessThan(index);
    }

    writeFileSync(join(dir, 'child-out.txt'), out); // left for inspection if an assertion fails
    const store = open();
    for (let s = 0; s < 8; s++) {
      const sandboxId = `sb-${s}`;
      const events = await store.history({ workspaceId: 1, sandboxId, limit: Infinity });
      const byId = new Map(events.map((e) => [formatEventId(e.id), e]));
      for (const [, sb, id, n] of acked) {
        if (sb !== sandboxId) continue;
        const event = byId.get(id as string);
        expect(event, `acknowledged ${sb} ${id}`).toBeDefined();
        expect(JSON.parse((event as StoredEvent).json).data.n).toBe(Number(n));
      }
      for (const [, sb, id] of announced) if (sb === sandboxId) expect(byId.has(id as string)).toBe(true);
      // In order, and the stream continues above it.
      const sorted = [...events].sort((a, b) => a.id.ms - b.id.ms || a.id.seq - b.id.seq);
      expect(ids(events)).toEqual(ids(sorted));
      const next = await store.append(newEvent(sandboxId));
      const last = events.at(-1) as StoredEvent;
      expect(next.id.ms > last.id.ms || (next.id.ms === last.id.ms && next.id.seq > last.id.seq)).toBe(true);
    }
  }, 60_000);
});
