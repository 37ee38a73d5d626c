import type Database from 'better-sqlite3';
import { maxEventId } from '../semantics.js';
import type { Statements } from './statements.js';
import type { BatchStream, StreamCache } from './stream-cache.js';

export interface RowSyncOptions {
  /**
   * How long the rows of streams that only gained events may lag them: the first commit at
   * least this long after the last sync began starts a sync of the rows lagging then.
   */
  intervalMs: number;
  /** The last store order committed. */
  lastOrder: () => number;
}

/**
 * Fewest lagging rows a commit in a row sync writes; a commit of more events writes as many
 * rows as it has events. A row costs 3.5–12 µs (docs/performance.md, "Seventh round: the row
 * sync spread over commits"), so this adds about a millisecond to a small commit, and a big
 * commit at most about half its own time.
 */
export const MIN_ROWS_PER_COMMIT = 128;

/**
 * Keeps the `sandboxes` rows (schema.ts) in step with the events, without writing the row of
 * every stream in every commit.
 *
 * The events table is clustered by stream, and so is `sandboxes`: a commit that rewrote the row
 * of every stream it appended to rewrote one more leaf page per few dozen streams (30 % of the
 * WAL frames of a commit over 100,000 streams, docs/performance.md "Sixth round"). Now a commit
 * writes a row only when it must: a new stream (its row is inserted, so every workspace and
 * stream with events has one), a stream's first retained event (the row's oldest id, which
 * retention's age query reads), and ephemeral events (their ids are in no event row, so only the
 * row keeps them above reuse). A stream that only gained retained events keeps its new state in
 * the writer's cache (StreamCache, `lagging`, oldest first), and its row is written later:
 * - by a row sync spread over commits (the writer: `syncThrough`, `writeLagging`): the first
 *   commit `intervalMs` after the last sync began starts one, over the rows lagging then; each
 *   commit writes the oldest of them, at most as many as it has events (MIN_ROWS_PER_COMMIT at
 *   least), so no commit holds the event loop for a whole sync (tens of ms past 10,000 lagging
 *   rows), and, as no commit can leave more streams lagging than it has events, a sync ends;
 * - all at once by a retention step or a limit change, which read the rows
 *   (`inSyncedTransaction`, `syncNow`), and by close (`syncNow`).
 * Each records in rows_synced the store order through which every row is in step: the order
 * before the oldest row still lagging (its unsyncedFrom - 1), the last order when none lags.
 * After a crash, the streams with events above that order are the only ones whose rows may lag:
 * at open (`recover`), each is counted again from its events (count, bytes, oldest and newest
 * id), which the rows hold nothing beyond. As the oldest lagging row is at most about two
 * intervals old (one to start the sync, about one for the sync to reach it), that is the streams
 * written to in the last two seconds or so. A reader that wants a last id meanwhile takes it from
 * the cache (StreamCache.lastId).
 */
export class RowSync {
  /** performance.now() when the last sync began. */
  private syncedAt = performance.now();
  /**
   * While a sync spread over commits runs, the store order it brings the rows in step through
   * (the last order committed when it began); 0 when none runs.
   */
  private syncingThrough = 0;
  private readonly syncNowTx: Database.Transaction<() => BatchStream[]>;

  constructor(
    db: Database.Database,
    private readonly sql: Statements,
    private readonly cache: StreamCache,
    private readonly options: RowSyncOptions,
  ) {
    this.syncNowTx = db.transaction(() => this.writeLagging(Infinity));
  }

  /**
   * For a commit of `events` events: the rows it should bring in step, as the highest
   * unsyncedFrom among them (the oldest lagging rows, as many as the commit has events, at
   * least MIN_ROWS_PER_COMMIT), or 0 for none. Starts a sync when one is due.
   */
  syncThrough(events: number): number {
    const oldest = this.cache.oldestLagging();
    if (oldest === undefined) return 0;
    if (oldest.unsyncedFrom > this.syncingThrough) {
      // No sync runs, or the one that ran is done: every row lagging when it began is in step.
      this.syncingThrough = 0;
      const now = performance.now();
      if (now - this.syncedAt < this.options.intervalMs) return 0;
      this.syncingThrough = this.options.lastOrder();
      this.syncedAt = now;
    }
    let rows = Math.max(MIN_ROWS_PER_COMMIT, events);
    let through = 0;
    for (const entry of this.cache.lagging()) {
      if (entry.unsyncedFrom > this.syncingThrough || rows-- === 0) break;
      through = entry.unsyncedFrom;
    }
    return through;
  }

  /**
   * Inside a write transaction: writes the rows of the cache's lagging entries up to unsyncedFrom
   * `through` (but those of the streams `skip` says the transaction writes itself), and records
   * in rows_synced the order through which every row is then in step. Returns the entries
   * written: pass them to `synced` once the transaction committed.
   *
   * Where the rows lag from no order below the last one committed (`options.lastOrder`; the
   * writer's batch, whose own lagging streams lag from its events, is not committed yet).
   */
  writeLagging(through: number, skip?: (entry: BatchStream) => boolean): BatchStream[] {
    const written: BatchStream[] = [];
    let inStepThrough = this.options.lastOrder();
    for (const entry of this.cache.lagging()) {
      if (entry.unsyncedFrom > through) {
        inStepThrough = entry.unsyncedFrom - 1;
        break;
      }
      if (skip?.(entry) === true) continue;
      this.writeRow(entry);
      written.push(entry);
    }
    this.sql.setRowsSynced.run(inStepThrough);
    return written;
  }

  /** After the transaction of `writeLagging` committed. */
  synced(written: readonly BatchStream[]): void {
    this.cache.synced(written);
  }

  /** The row of a stream the file has a row for, with its oldest id, from `entry`. */
  writeRow(entry: BatchStream): void {
    const last = entry.lastId;
    if (last === undefined) throw new Error(`stream ${entry.sandboxId} has no last id to write`);
    this.sql.updateSandbox.run(
      last.ms,
      last.seq,
      entry.retained,
      entry.activeAt,
      entry.bytes,
      entry.workspaceId,
      entry.sandboxId,
    );
  }

  /** Writes every lagging row in a transaction of its own (close, a retention limit change). */
  syncNow(): void {
    if (this.cache.laggingCount === 0) return;
    this.syncedAll(this.syncNowTx.immediate());
  }

  /** After a transaction wrote every lagging row: any sync that ran is done, and a new one waits. */
  private syncedAll(written: readonly BatchStream[]): void {
    this.synced(written);
    this.syncingThrough = 0;
    this.syncedAt = performance.now();
  }

  /**
   * `work` as one write transaction (IMMEDIATE) that first brings every row in step, for work
   * that reads the rows (retention).
   */
  inSyncedTransaction<A extends unknown[], R>(db: Database.Database, work: (...args: A) => R): (...args: A) => R {
    const tx = db.transaction((...args: A): [BatchStream[], R] => {
      const written = this.cache.laggingCount === 0 ? [] : this.writeLagging(Infinity);
      return [written, work(...args)];
    });
    return (...args: A): R => {
      const [written, result] = tx.immediate(...args);
      if (written.length > 0) this.syncedAll(written);
      return result;
    };
  }

  /**
   * At open, before anything reads the rows: counts again, from their events, the streams
   * whose rows may lag (those with events above rows_synced: the process that wrote them ended
   * before syncing), and records that every row is in step through `lastOrder`.
   */
  recover(db: Database.Database, lastOrder: number): void {
    const sql = this.sql;
    db.transaction(() => {
      const synced = sql.getRowsSynced.get()?.ord ?? lastOrder;
      if (synced < lastOrder) {
        for (const { workspace_id: ws, sandbox_id: sb } of sql.streamsWrittenAfter.all(synced)) {
          const row = sql.getSandbox.get(ws, sb);
          const newest = sql.newestEvent.get(ws, sb);
          const first = sql.oldestId.get(ws, sb);
          const totals = sql.streamTotals.get(ws, sb);
          if (row === undefined || newest === undefined || first === undefined || totals === undefined) continue;
          const last = maxEventId({ ms: row.last_ms, seq: row.last_seq }, newest) ?? newest;
          sql.updateSandboxFirst.run(
            last.ms,
            last.seq,
            totals.retained,
            first.ms,
            first.seq,
            Math.max(row.active_at, newest.timestamp),
            totals.bytes,
            ws,
            sb,
          );
        }
      }
      sql.setRowsSynced.run(lastOrder);
    }).immediate();
  }
}
