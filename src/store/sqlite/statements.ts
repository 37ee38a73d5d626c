import type Database from 'better-sqlite3';
import { compareEventIds, type EventId } from '../../event/event.js';
import { PrunedByType } from '../semantics.js';
import { EVENT_LINE_BYTES_SQL } from './line-bytes.js';

/** A stream's row in `sandboxes` (schema.ts). */
export interface SandboxRow {
  last_ms: number;
  last_seq: number;
  retained: number;
  first_ms: number | null;
  first_seq: number | null;
  trimmed_ms: number | null;
  trimmed_seq: number | null;
  active_at: number;
  /** Bytes of the retained event lines (schema.ts). */
  bytes: number;
}

export interface ListedSandboxRow {
  workspace_id: number;
  sandbox_id: string;
  last_ms: number;
  last_seq: number;
}

/**
 * An event row as an array: history and replay statements run in better-sqlite3's raw mode,
 * which skips building an object per row (100-row reads: 160-180 -> 95-100 µs of CPU).
 * `json` is '' unless a version-1 file wrote the row (then the whole line); `data` is the
 * event's `data` text (null in version-1 rows).
 */
export type EventRow = [ms: number, seq: number, type: string, timestamp: number, json: string, data: string | null];

/** An event row of a workspace replay: its stream and order, then an EventRow. */
export type OrderedEventRow = [workspaceId: number, sandboxId: string, order: number, ...EventRow];

export interface RefRow {
  workspace_id: number;
  sandbox_id: string;
}

/** An `events` row's values as insertEvent binds them. */
export type EventInsert = [...StreamKey, ...Id, type: string, timestamp: number, data: string, order: number];

/** Values insertEvent binds per row. */
export const EVENT_INSERT_VALUES = 8;
/** Rows insertEvents writes. */
export const INSERT_GROUP = 16;

/** A stream as (workspace, sandbox), the key of its rows. */
export type Ref = readonly [workspaceId: number, sandboxId: string];

/** A sandbox's per-type pruned-through ids, as `pruned_types` holds them (retention.ts). */
export function prunedIdMarks(sql: Statements, ws: number, sb: string): PrunedByType<EventId> {
  const marks = new PrunedByType<EventId>(compareEventIds);
  for (const mark of sql.prunedTypes.all(ws, sb)) marks.note(mark.type, { ms: mark.ms, seq: mark.seq });
  return marks;
}

/** Per-type pruned-through orders, from rows of `pruned_order_types` (one workspace, or all). */
export function prunedOrderMarks(rows: Iterable<{ type: string; ord: number }>): PrunedByType<number> {
  const marks = new PrunedByType<number>((a, b) => a - b);
  for (const mark of rows) marks.note(mark.type, mark.ord);
  return marks;
}

/** An id from a row's nullable (ms, seq) pair. */
export function idOf(ms: number | null, seq: number | null): EventId | undefined {
  return ms === null || seq === null ? undefined : { ms, seq };
}

type Statement<Params extends unknown[], Row = unknown> = Database.Statement<Params, Row>;
type StreamKey = [workspaceId: number, sandboxId: string];
type Id = [ms: number, seq: number];
type NullableId = [ms: number | null, seq: number | null];

/**
 * Every statement the store runs, with its parameters and its rows. Those returning EventRow
 * run in raw mode (arrays).
 */
export interface Statements {
  insertEvent: Statement<EventInsert>;
  /**
   * INSERT_GROUP events in one statement: their EventInsert values one after the other. One
   * statement run costs about 0.7 µs of CPU besides its rows (better-sqlite3's call, SQLite's
   * statement start, cursors and reset): a commit's events go in groups of this many, the
   * rest one at a time (docs/performance.md, "Eighth round: SQLite per appended event").
   */
  insertEvents: Statement<unknown[]>;
  /** A workspace's events after an order, in order (docs/protocol.md, "Pattern resume"). */
  eventsByOrder: Statement<[workspaceId: number, after: number, limit: number], OrderedEventRow>;
  eventsByOrderAll: Statement<[after: number, limit: number], OrderedEventRow>;
  maxOrder: Statement<[], { ord: number | null }>;
  notePruned: Statement<[workspaceId: number, order: number]>;
  prunedOrder: Statement<[workspaceId: number], { ord: number }>;
  prunedOrderAll: Statement<[], { ord: number | null }>;
  getSandbox: Statement<StreamKey, SandboxRow>;
  /** Sandboxes holding retained events (first_ms set), of one workspace or of all. */
  listSandboxes: Statement<[workspaceId: number], ListedSandboxRow>;
  listAllSandboxes: Statement<[], ListedSandboxRow>;
  /** `first` is null for a sandbox that so far had only ephemeral events (nothing retained). */
  insertSandbox: Statement<
    [
      ...StreamKey,
      ...last: Id,
      retained: number,
      firstMs: number | null,
      firstSeq: number | null,
      activeAt: number,
      bytes: number,
    ]
  >;
  updateSandbox: Statement<[...last: Id, retained: number, activeAt: number, bytes: number, ...StreamKey]>;
  updateSandboxFirst: Statement<
    [...last: Id, retained: number, ...first: Id, activeAt: number, bytes: number, ...StreamKey]
  >;
  getHighWater: Statement<[], EventId>;
  /** The store order through which every `sandboxes` row is in step with the events (row-sync.ts). */
  getRowsSynced: Statement<[], { ord: number }>;
  setRowsSynced: Statement<[order: number]>;
  /** The streams with events above an order (row-sync.ts: the rows that may lag after a crash). */
  streamsWrittenAfter: Statement<[order: number], RefRow>;
  /** What a stream retains, counted from its events. */
  streamTotals: Statement<StreamKey, { retained: number; bytes: number }>;
  /** A stream's newest event: its id and when it was appended. */
  newestEvent: Statement<StreamKey, { ms: number; seq: number; timestamp: number }>;
  setHighWater: Statement<Id>;
  historyAsc: Statement<[...StreamKey, ...floor: Id, since: number, limit: number], EventRow>;
  historyDesc: Statement<[...StreamKey, ...floor: Id, since: number, limit: number], EventRow>;
  historyTypeAsc: Statement<[...StreamKey, type: string, ...floor: Id, since: number, limit: number], EventRow>;
  historyTypeDesc: Statement<[...StreamKey, type: string, ...floor: Id, since: number, limit: number], EventRow>;
  historyIdsAsc: Statement<[...StreamKey, ...floor: Id, since: number, limit: number], Id>;
  historyIdsDesc: Statement<[...StreamKey, ...floor: Id, since: number, limit: number], Id>;
  historyTypeIdsAsc: Statement<[...StreamKey, type: string, ...floor: Id, since: number, limit: number], Id>;
  historyTypeIdsDesc: Statement<[...StreamKey, type: string, ...floor: Id, since: number, limit: number], Id>;
  eventsAfter: Statement<[...StreamKey, ...after: Id, limit: number], EventRow>;
  hasEvent: Statement<[...StreamKey, ...Id], { one: number }>;
  oldestId: Statement<StreamKey, EventId>;
  nthOldestId: Statement<[...StreamKey, offset: number], EventId>;
  newestIdBefore: Statement<[...StreamKey, beforeMs: number], EventId>;
  oldestSizes: Statement<[...StreamKey, limit: number], { ms: number; seq: number; bytes: number }>;
  /**
   * What a deleteThrough of the same stream and id will delete: its event lines' bytes and its
   * highest order (null when none has one), in one pass over the rows.
   */
  bytesAndOrderThrough: Statement<[...StreamKey, ...through: Id], { bytes: number; ord: number | null }>;
  deleteThrough: Statement<[...StreamKey, ...through: Id]>;
  updatePruned: Statement<
    [retained: number, bytes: number, ...first: NullableId, ...trimmed: NullableId, ...StreamKey]
  >;
  overLimitSandboxes: Statement<[maxCount: number, maxBytes: number], RefRow>;
  agedSandboxes: Statement<[cutoff: number, limit: number], RefRow>;
  idleSandboxes: Statement<[cutoff: number, limit: number], RefRow & { last_ms: number; last_seq: number }>;
  maxLastId: Statement<[], EventId>;
  deleteSandbox: Statement<StreamKey>;
  /** Per-type retention (retention.ts): a sandbox's events newest first, with type and order. */
  eventTypesDesc: Statement<StreamKey, TypedRow>;
  /** The same with each event line's bytes (when a class may be over the byte limit). */
  eventTypeSizesDesc: Statement<StreamKey, TypedRow>;
  eventBytes: Statement<[...StreamKey, ...Id], { bytes: number }>;
  deleteEvent: Statement<[...StreamKey, ...Id]>;
  prunedTypes: Statement<StreamKey, { type: string; ms: number; seq: number }>;
  clearPrunedTypes: Statement<StreamKey>;
  putPrunedType: Statement<[...StreamKey, type: string, ...Id]>;
  /** Raises the mark of one type (pruning without rules: type '', every type). */
  notePrunedType: Statement<[...StreamKey, type: string, ...Id]>;
  prunedOrderTypes: Statement<[workspaceId: number], { type: string; ord: number }>;
  prunedOrderTypesAll: Statement<[], { type: string; ord: number }>;
  clearPrunedOrderTypes: Statement<[workspaceId: number]>;
  putPrunedOrderType: Statement<[workspaceId: number, type: string, order: number]>;
  notePrunedOrderType: Statement<[workspaceId: number, type: string, order: number]>;
}

/** An event as per-type retention reads it: id, type, order (null before schema 3) and bytes (0 when not asked). */
export type TypedRow = [ms: number, seq: number, type: string, order: number | null, bytes: number];

/** A statement in raw mode: rows as arrays. */
function prepareRaw<Params extends unknown[], Row>(db: Database.Database, sql: string): Statement<Params, Row> {
  return db.prepare<Params, Row>(sql).raw();
}

/** Every statement, prepared once. */
export function prepareStatements(db: Database.Database): Statements {
  const eventColumns = 'ms, seq, type, timestamp, json, data';
  const stream = 'workspace_id = ? AND sandbox_id = ?';
  // OR ROLLBACK: a failed insert ends the whole transaction, as the writer does anyway (the
  // batch is refused). With the default (ABORT), SQLite undoes a failed statement alone, so a
  // statement of several rows first copies every page it changes into a statement journal:
  // that copy cost more than the grouping saved (docs/performance.md, "Eighth round: SQLite
  // per appended event").
  const insertEventsSql =
    'INSERT OR ROLLBACK INTO events (workspace_id, sandbox_id, ms, seq, type, timestamp, json, data, ord) VALUES';
  // EVENT_INSERT_VALUES of them; json is '' (schema.ts).
  const eventValues = "(?, ?, ?, ?, ?, ?, '', ?, ?)";
  return {
    insertEvent: db.prepare(`${insertEventsSql} ${eventValues}`),
    insertEvents: db.prepare(`${insertEventsSql} ${new Array(INSERT_GROUP).fill(eventValues).join(', ')}`),
    listSandboxes: db.prepare(
      `SELECT workspace_id, sandbox_id, last_ms, last_seq FROM sandboxes
       WHERE workspace_id = ? AND first_ms IS NOT NULL ORDER BY sandbox_id`,
    ),
    listAllSandboxes: db.prepare(
      `SELECT workspace_id, sandbox_id, last_ms, last_seq FROM sandboxes
       WHERE first_ms IS NOT NULL ORDER BY workspace_id, sandbox_id`,
    ),
    getSandbox: db.prepare(
      `SELECT last_ms, last_seq, retained, first_ms, first_seq, trimmed_ms, trimmed_seq, active_at, bytes
       FROM sandboxes WHERE ${stream}`,
    ),
    insertSandbox: db.prepare(
      `INSERT INTO sandboxes (workspace_id, sandbox_id, last_ms, last_seq, retained, first_ms, first_seq, active_at, bytes)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    // Two forms, so that the common one leaves sandboxes_by_first untouched.
    updateSandbox: db.prepare(
      `UPDATE sandboxes SET last_ms = ?, last_seq = ?, retained = ?, active_at = ?, bytes = ? WHERE ${stream}`,
    ),
    updateSandboxFirst: db.prepare(
      `UPDATE sandboxes SET last_ms = ?, last_seq = ?, retained = ?, first_ms = ?, first_seq = ?, active_at = ?,
       bytes = ? WHERE ${stream}`,
    ),
    getHighWater: db.prepare('SELECT ms, seq FROM high_water WHERE only = 0'),
    getRowsSynced: db.prepare('SELECT ord FROM rows_synced WHERE only = 0'),
    setRowsSynced: db.prepare('INSERT OR REPLACE INTO rows_synced (only, ord) VALUES (0, ?)'),
    // Per workspace, the order index's range above the order (every workspace with events has
    // sandboxes rows: a stream's row is inserted by the commit of its first event).
    streamsWrittenAfter: db.prepare(
      `SELECT DISTINCT e.workspace_id, e.sandbox_id FROM (SELECT DISTINCT workspace_id FROM sandboxes) w
       JOIN events e ON e.workspace_id = w.workspace_id AND e.ord > ?`,
    ),
    streamTotals: db.prepare(
      `SELECT count(*) AS retained, coalesce(sum(${EVENT_LINE_BYTES_SQL}), 0) AS bytes FROM events WHERE ${stream}`,
    ),
    newestEvent: db.prepare(`SELECT ms, seq, timestamp FROM events WHERE ${stream} ORDER BY ms DESC, seq DESC LIMIT 1`),
    setHighWater: db.prepare('INSERT OR REPLACE INTO high_water (only, ms, seq) VALUES (0, ?, ?)'),
    historyAsc: prepareRaw(
      db,
      `SELECT ${eventColumns} FROM events WHERE ${stream} AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms, seq LIMIT ?`,
    ),
    historyDesc: prepareRaw(
      db,
      `SELECT ${eventColumns} FROM events WHERE ${stream} AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms DESC, seq DESC LIMIT ?`,
    ),
    historyTypeAsc: prepareRaw(
      db,
      `SELECT ${eventColumns} FROM events WHERE ${stream} AND type = ? AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms, seq LIMIT ?`,
    ),
    historyTypeDesc: prepareRaw(
      db,
      `SELECT ${eventColumns} FROM events WHERE ${stream} AND type = ? AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms DESC, seq DESC LIMIT ?`,
    ),
    // The ids of a history reply, to count it before its events are read (sqlite-store.ts).
    historyIdsAsc: prepareRaw(
      db,
      `SELECT ms, seq FROM events WHERE ${stream} AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms, seq LIMIT ?`,
    ),
    historyIdsDesc: prepareRaw(
      db,
      `SELECT ms, seq FROM events WHERE ${stream} AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms DESC, seq DESC LIMIT ?`,
    ),
    historyTypeIdsAsc: prepareRaw(
      db,
      `SELECT ms, seq FROM events WHERE ${stream} AND type = ? AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms, seq LIMIT ?`,
    ),
    historyTypeIdsDesc: prepareRaw(
      db,
      `SELECT ms, seq FROM events WHERE ${stream} AND type = ? AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms DESC, seq DESC LIMIT ?`,
    ),
    eventsAfter: prepareRaw(
      db,
      `SELECT ${eventColumns} FROM events WHERE ${stream} AND (ms, seq) > (?, ?) ORDER BY ms, seq LIMIT ?`,
    ),
    hasEvent: db.prepare(`SELECT 1 AS one FROM events WHERE ${stream} AND ms = ? AND seq = ?`),
    oldestId: db.prepare(`SELECT ms, seq FROM events WHERE ${stream} ORDER BY ms, seq LIMIT 1`),
    nthOldestId: db.prepare(`SELECT ms, seq FROM events WHERE ${stream} ORDER BY ms, seq LIMIT 1 OFFSET ?`),
    newestIdBefore: db.prepare(
      `SELECT ms, seq FROM events WHERE ${stream} AND ms < ? ORDER BY ms DESC, seq DESC LIMIT 1`,
    ),
    // Byte retention (retention.ts): the oldest events' line sizes, and what a delete frees.
    oldestSizes: db.prepare(
      `SELECT ms, seq, ${EVENT_LINE_BYTES_SQL} AS bytes FROM events WHERE ${stream} ORDER BY ms, seq LIMIT ?`,
    ),
    bytesAndOrderThrough: db.prepare(
      `SELECT coalesce(sum(${EVENT_LINE_BYTES_SQL}), 0) AS bytes, max(ord) AS ord FROM events
       WHERE ${stream} AND (ms, seq) <= (?, ?)`,
    ),
    deleteThrough: db.prepare(`DELETE FROM events WHERE ${stream} AND (ms, seq) <= (?, ?)`),
    updatePruned: db.prepare(
      `UPDATE sandboxes SET retained = ?, bytes = ?, first_ms = ?, first_seq = ?, trimmed_ms = ?, trimmed_seq = ?
       WHERE ${stream}`,
    ),
    overLimitSandboxes: db.prepare('SELECT workspace_id, sandbox_id FROM sandboxes WHERE retained > ? OR bytes > ?'),
    agedSandboxes: db.prepare(
      'SELECT workspace_id, sandbox_id FROM sandboxes WHERE first_ms < ? ORDER BY first_ms LIMIT ?',
    ),
    idleSandboxes: db.prepare(
      'SELECT workspace_id, sandbox_id, last_ms, last_seq FROM sandboxes WHERE retained = 0 AND active_at < ? LIMIT ?',
    ),
    // Once, at open: a scan, so that commits need not keep an index on the last id.
    maxLastId: db.prepare(
      'SELECT last_ms AS ms, last_seq AS seq FROM sandboxes ORDER BY last_ms DESC, last_seq DESC LIMIT 1',
    ),
    deleteSandbox: db.prepare(`DELETE FROM sandboxes WHERE ${stream}`),
    eventsByOrder: prepareRaw(
      db,
      `SELECT workspace_id, sandbox_id, ord, ${eventColumns} FROM events WHERE workspace_id = ? AND ord > ?
       ORDER BY ord LIMIT ?`,
    ),
    eventsByOrderAll: prepareRaw(
      db,
      `SELECT workspace_id, sandbox_id, ord, ${eventColumns} FROM events WHERE ord > ? ORDER BY ord LIMIT ?`,
    ),
    // Once, at open: per workspace one read of the order index's right edge.
    maxOrder: db.prepare(
      `SELECT max((SELECT max(ord) FROM events e WHERE e.workspace_id = w.workspace_id AND ord IS NOT NULL)) AS ord
       FROM (SELECT DISTINCT workspace_id FROM sandboxes) w`,
    ),
    notePruned: db.prepare(
      'INSERT INTO pruned_order (workspace_id, ord) VALUES (?, ?) ON CONFLICT (workspace_id) DO UPDATE SET ord = max(ord, excluded.ord)',
    ),
    prunedOrder: db.prepare('SELECT ord FROM pruned_order WHERE workspace_id = ?'),
    prunedOrderAll: db.prepare('SELECT max(ord) AS ord FROM pruned_order'),
    eventTypesDesc: prepareRaw(
      db,
      `SELECT ms, seq, type, ord, 0 FROM events WHERE ${stream} ORDER BY ms DESC, seq DESC`,
    ),
    eventTypeSizesDesc: prepareRaw(
      db,
      `SELECT ms, seq, type, ord, ${EVENT_LINE_BYTES_SQL} FROM events WHERE ${stream} ORDER BY ms DESC, seq DESC`,
    ),
    eventBytes: db.prepare(
      `SELECT ${EVENT_LINE_BYTES_SQL} AS bytes FROM events WHERE ${stream} AND ms = ? AND seq = ?`,
    ),
    deleteEvent: db.prepare(`DELETE FROM events WHERE ${stream} AND ms = ? AND seq = ?`),
    prunedTypes: db.prepare(`SELECT type, ms, seq FROM pruned_types WHERE ${stream}`),
    clearPrunedTypes: db.prepare(`DELETE FROM pruned_types WHERE ${stream}`),
    putPrunedType: db.prepare(
      'INSERT INTO pruned_types (workspace_id, sandbox_id, type, ms, seq) VALUES (?, ?, ?, ?, ?)',
    ),
    notePrunedType: db.prepare(
      `INSERT INTO pruned_types (workspace_id, sandbox_id, type, ms, seq) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (workspace_id, sandbox_id, type) DO UPDATE SET ms = excluded.ms, seq = excluded.seq
       WHERE (excluded.ms, excluded.seq) > (ms, seq)`,
    ),
    prunedOrderTypes: db.prepare('SELECT type, ord FROM pruned_order_types WHERE workspace_id = ?'),
    prunedOrderTypesAll: db.prepare('SELECT type, max(ord) AS ord FROM pruned_order_types GROUP BY type'),
    clearPrunedOrderTypes: db.prepare('DELETE FROM pruned_order_types WHERE workspace_id = ?'),
    putPrunedOrderType: db.prepare('INSERT INTO pruned_order_types (workspace_id, type, ord) VALUES (?, ?, ?)'),
    notePrunedOrderType: db.prepare(
      `INSERT INTO pruned_order_types (workspace_id, type, ord) VALUES (?, ?, ?)
       ON CONFLICT (workspace_id, type) DO UPDATE SET ord = max(ord, excluded.ord)`,
    ),
  };
}
