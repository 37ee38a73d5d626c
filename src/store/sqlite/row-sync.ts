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
 * rows as it has events. A row costs a few µs (docs/performance.md, "Seventh round: the row sync
 * spread over commits"), so this adds about a millisecond to a small commit.
 */
export const MIN_ROWS_PER_COMMIT = 128;
/**
 * Most key ranges a row sync is cut into. A commit writes the next rows in key order, from one
 * range into the next, so more ranges only make that order finer.
 */
const MAX_RANGES = 256;
/** Keys sampled from the streams that start lagging, to cut the next sync's key ranges at. */
const SAMPLE = 1_024;

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
 * the writer's cache (StreamCache, `lagging`), and its row is written later:
 * - by a row sync spread over commits (the writer: `rowsToSync`, `writeRows`): the first commit
 *   `intervalMs` after the last sync began starts one, over the rows lagging then; each commit
 *   writes the next of them, at most as many as it has events (MIN_ROWS_PER_COMMIT at least), so
 *   no commit holds the event loop for the whole sync (tens of ms past 10,000 lagging rows). It
 *   goes through them by key range, so that the rows one commit writes share leaf pages: taken in
 *   any other order (oldest first, say), each row of a commit is on a leaf of its own and the
 *   sync writes about one WAL frame per row instead of one per leaf ("Seventh round"). The ranges
 *   are cut at keys sampled from the streams that started lagging before, and each stream is put
 *   in its range when it starts lagging (`joined`), so no commit sorts a sync's rows;
 * - all at once by a retention step or a limit change, which read the rows
 *   (`inSyncedTransaction`, `syncNow`), and by close (`syncNow`).
 * Each records in rows_synced the store order through which every row is in step: the order
 * before the oldest row still lagging (its unsyncedFrom - 1), the last order when none lags.
 * After a crash, the streams with events above that order are the only ones whose rows may lag:
 * at open (`recover`), each is counted again from its events (count, bytes, oldest and newest
 * id), which the rows hold nothing beyond. A row lags at most until the end of the first sync
 * that begins after it started lagging: about two intervals when a sync takes no longer than one,
 * so the open reads the streams written to in about the last two seconds. A reader that wants a
 * last id meanwhile takes it from the cache (StreamCache.lastId).
 */
export class RowSync {
  /** performance.now() when the last sync began. */
  private syncedAt = performance.now();
  /** The keys the ranges of `joining` start at (the first range starts below every key). */
  private cuts: BatchStream[] = [];
  /** By key range: the entries that started lagging since the running sync began (the next sync's). */
  private joining: BatchStream[][] = [[]];
  /** By key range: the running sync's entries (some may be in step since, or in twice). */
  private syncing: BatchStream[][] = [];
  /** How far the running sync got: its next range, and the next entry in it. */
  private range = 0;
  private at = 0;
  /** The entries the commit being written syncs, and where the sync is once it committed. */
  private chunk = new Set<BatchStream>();
  private chunkEnd = { range: 0, at: 0 };
  /** Every `sampleEvery`th entry to start lagging since the running sync began. */
  private sample: BatchStream[] = [];
  private sampleEvery = 1;
  private joins = 0;
  private readonly syncNowTx: Database.Transaction<() => BatchStream[]>;

  constructor(
    db: Database.Database,
    private readonly sql: Statements,
    private readonly cache: StreamCache,
    private readonly options: RowSyncOptions,
  ) {
    this.syncNowTx = db.transaction(() => this.writeAll());
    cache.onLagging(this.joined);
  }

  /** A cache entry started lagging: it goes in its key range of the next sync. */
  private readonly joined = (entry: BatchStream): void => {
    (this.joining[this.rangeOf(entry)] as BatchStream[]).push(entry);
    if (this.joins++ % this.sampleEvery === 0) {
      this.sample.push(entry);
      if (this.sample.length === 2 * SAMPLE) {
        this.sample = this.sample.filter((_, i) => i % 2 === 0);
        this.sampleEvery *= 2;
      }
    }
    if (this.cuts.length === 0 && this.sample.length === SAMPLE) {
      // The first cuts, once there are keys enough to cut at; those that joined before go in
      // their ranges too.
      this.cutRanges();
      const joined = this.joining.flat();
      this.joining = Array.from({ length: this.cuts.length + 1 }, (): BatchStream[] => []);
      for (const before of joined) (this.joining[this.rangeOf(before)] as BatchStream[]).push(before);
    }
  };

  /** The key range of `entry` (a binary search over the cuts). */
  private rangeOf(entry: BatchStream): number {
    const cuts = this.cuts;
    let low = 0;
    let high = cuts.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (compareKeys(cuts[mid] as BatchStream, entry) <= 0) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  /** Cuts the key ranges at the keys sampled (at least 4 keys a range). */
  private cutRanges(): void {
    const sample = this.sample.sort(compareKeys);
    const ranges = Math.min(MAX_RANGES, Math.floor(sample.length / 4));
    this.cuts = [];
    for (let i = 1; i < ranges; i++) {
      const cut = sample[Math.floor((i * sample.length) / ranges)] as BatchStream;
      if (cut !== this.cuts.at(-1)) this.cuts.push(cut);
    }
  }

  /**
   * For a commit of `events` events: the lagging entries whose rows it should write (the next
   * of the running sync, as many as the commit has events, MIN_ROWS_PER_COMMIT at least), or
   * undefined for none. Starts a sync when one is due. Pass the commit's streams that are among
   * them to `syncs`, then call `writeRows` with the rest.
   */
  rowsToSync(events: number): ReadonlySet<BatchStream> | undefined {
    if (this.cache.laggingCount === 0) return this.inStepShare();
    if (this.nextChunk(events)) return this.chunk;
    // No sync runs, or the one that ran is done: every row lagging when it began is in step.
    const now = performance.now();
    if (now - this.syncedAt < this.options.intervalMs) return undefined;
    this.startSync(now);
    return this.nextChunk(events) ? this.chunk : undefined;
  }

  /**
   * No row lags: once an interval, an empty share, so that the commit records rows_synced at the
   * last order. Without it, traffic that never leaves a row lagging (new streams, ephemeral
   * events: their rows are written by their commits) would leave rows_synced where the last sync
   * put it, and the open after a crash would count again every stream written since.
   */
  private inStepShare(): ReadonlySet<BatchStream> | undefined {
    const now = performance.now();
    if (now - this.syncedAt < this.options.intervalMs) return undefined;
    this.syncedAt = now;
    this.chunk.clear();
    this.chunkEnd = { range: this.range, at: this.at };
    return this.chunk;
  }

  /** Whether `stream`, of the commit being written, is one of the rows `rowsToSync` gave. */
  syncs(stream: BatchStream): boolean {
    const entry = this.cache.entry(stream.workspaceId, stream.sandboxId);
    return entry !== undefined && this.chunk.has(entry);
  }

  /** Fills `chunk` from where the running sync is; false when it has no entry left. */
  private nextChunk(events: number): boolean {
    const chunk = this.chunk;
    chunk.clear();
    if (this.range >= this.syncing.length) return false;
    let rows = Math.max(MIN_ROWS_PER_COMMIT, events);
    let range = this.range;
    let at = this.at;
    while (rows > 0 && range < this.syncing.length) {
      const entries = this.syncing[range] as BatchStream[];
      while (rows > 0 && at < entries.length) {
        const entry = entries[at++] as BatchStream;
        if (entry.unsyncedFrom === 0 || chunk.has(entry)) continue; // in step since, or in twice
        chunk.add(entry);
        rows--;
      }
      if (at === entries.length) {
        range++;
        at = 0;
      }
    }
    if (chunk.size === 0) {
      this.syncing = []; // only entries in step were left: the sync is done
      this.range = 0;
      this.at = 0;
      return false;
    }
    // Where the sync goes on once this commit is in: a rolled-back one is written again.
    this.chunkEnd = { range, at };
    return true;
  }

  /** Begins a sync of every row lagging now, and cuts the ranges of the next at the keys sampled. */
  private startSync(now: number): void {
    this.syncing = this.joining;
    this.range = 0;
    this.at = 0;
    this.syncedAt = now;
    // Fewer than a commit's rows say little about the keys that lag: the cuts stay.
    if (this.joins > MIN_ROWS_PER_COMMIT) this.cutRanges();
    this.joining = Array.from({ length: this.cuts.length + 1 }, (): BatchStream[] => []);
    this.sample = [];
    this.sampleEvery = 1;
    this.joins = 0;
  }

  /**
   * Inside the writer's transaction: writes the rows of the entries rowsToSync gave (but those
   * of the streams `skip` says the transaction writes itself), and records in rows_synced the
   * order before the oldest row that still lags, or, none lagging, the last order committed (the
   * batch's own lagging rows lag from its events). Returns the entries written: pass them to
   * `synced` once the transaction committed.
   */
  writeRows(entries: ReadonlySet<BatchStream>, skip: (entry: BatchStream) => boolean): BatchStream[] {
    const written: BatchStream[] = [];
    for (const entry of entries) {
      if (skip(entry)) continue;
      this.writeRow(entry);
      written.push(entry);
    }
    let inStepThrough = this.options.lastOrder();
    for (const entry of this.cache.lagging()) {
      if (entries.has(entry)) continue;
      inStepThrough = entry.unsyncedFrom - 1;
      break;
    }
    this.sql.setRowsSynced.run(inStepThrough);
    return written;
  }

  /** Inside a write transaction: writes every lagging row; pass what it returns to `syncedAll`. */
  private writeAll(): BatchStream[] {
    const written = [...this.cache.lagging()];
    for (const entry of written) this.writeRow(entry);
    this.sql.setRowsSynced.run(this.options.lastOrder());
    return written;
  }

  /** After the commit of a share of the running sync (`writeRows` with rowsToSync's entries). */
  synced(written: readonly BatchStream[]): void {
    this.cache.synced(written);
    this.range = this.chunkEnd.range;
    this.at = this.chunkEnd.at;
    this.chunk.clear();
  }

  /** After a transaction wrote every lagging row: any sync that ran is done, and a new one waits. */
  private syncedAll(written: readonly BatchStream[]): void {
    this.cache.synced(written);
    this.syncing = [];
    this.range = 0;
    this.at = 0;
    this.joining = this.joining.map((): BatchStream[] => []);
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
    this.syncedAll(this.syncNowTx.immediate());
  }

  /**
   * `work` as one write transaction (IMMEDIATE) that first brings every row in step, for work
   * that reads the rows (retention).
   */
  inSyncedTransaction<A extends unknown[], R>(db: Database.Database, work: (...args: A) => R): (...args: A) => R {
    const tx = db.transaction((...args: A): [BatchStream[], R] => {
      const written = this.cache.laggingCount === 0 ? [] : this.writeAll();
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

/**
 * The order of the `sandboxes` primary key (workspace, sandbox), as near as it matters here: the
 * table compares sandbox ids as UTF-8 bytes, this as UTF-16 units (they differ only between
 * characters past U+FFFF and U+E000–U+FFFF), which only moves a row to a neighbouring range.
 */
function compareKeys(a: BatchStream, b: BatchStream): number {
  if (a.workspaceId !== b.workspaceId) return a.workspaceId - b.workspaceId;
  return a.sandboxId < b.sandboxId ? -1 : a.sandboxId > b.sandboxId ? 1 : 0;
}
