import type Database from 'better-sqlite3';
import { maxEventId } from '../semantics.js';
import type { Statements } from './statements.js';
import type { BatchStream, StreamCache } from './stream-cache.js';

export interface RowSyncOptions {
  /**
   * How long the rows of streams that only gained events may lag them: the first commit at
   * least this long after the last row sync writes them all.
   */
  intervalMs: number;
  /** The last store order committed. */
  lastOrder: () => number;
}

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
 * the writer's cache (StreamCache, `lagging`), and its row is written later, by whichever comes
 * first:
 * - the first commit `intervalMs` after the last sync (the writer: `due`, `writeLagging`);
 * - a retention step or a limit change, which read the rows (`inSyncedTransaction`, `syncNow`);
 * - close (`syncNow`).
 * A sync writes every lagging row and records in rows_synced the store order through which
 * every row is in step. After a crash, the streams with events above that order are the only
 * ones whose rows may lag: at open (`recover`), each is counted again from its events (count,
 * bytes, oldest and newest id), which the rows hold nothing beyond. A reader that wants a last
 * id meanwhile takes it from the cache (StreamCache.lastId).
 */
export class RowSync {
  /** performance.now() of the last sync. */
  private syncedAt = performance.now();
  private readonly syncNowTx: Database.Transaction<() => BatchStream[]>;

  constructor(
    db: Database.Database,
    private readonly sql: Statements,
    private readonly cache: StreamCache,
    private readonly options: RowSyncOptions,
  ) {
    this.syncNowTx = db.transaction(() => this.writeLagging(options.lastOrder()));
  }

  /** Whether a commit now should write every lagging row. */
  due(): boolean {
    return this.cache.laggingCount > 0 && performance.now() - this.syncedAt >= this.options.intervalMs;
  }

  /**
   * Inside a write transaction: writes the rows of the cache's lagging entries (but those of
   * the streams `skip` says the transaction writes itself), and records that every row is in
   * step through `order`. Returns the entries written: pass them to `synced` once the
   * transaction committed.
   */
  writeLagging(order: number, skip?: (entry: BatchStream) => boolean): BatchStream[] {
    const written: BatchStream[] = [];
    for (const entry of this.cache.lagging()) {
      if (skip?.(entry) === true) continue;
      this.writeRow(entry);
      written.push(entry);
    }
    this.sql.setRowsSynced.run(order);
    return written;
  }

  /** After the transaction of `writeLagging` committed. */
  synced(written: readonly BatchStream[]): void {
    this.cache.synced(written);
    this.syncedAt = performance.now();
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
    this.synced(this.syncNowTx.immediate());
  }

  /**
   * `work` as one write transaction (IMMEDIATE) that first brings every row in step, for work
   * that reads the rows (retention).
   */
  inSyncedTransaction<A extends unknown[], R>(db: Database.Database, work: (...args: A) => R): (...args: A) => R {
    const tx = db.transaction((...args: A): [BatchStream[], R] => {
      const written = this.cache.laggingCount === 0 ? [] : this.writeLagging(this.options.lastOrder());
      return [written, work(...args)];
    });
    return (...args: A): R => {
      const [written, result] = tx.immediate(...args);
      if (written.length > 0) this.synced(written);
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
