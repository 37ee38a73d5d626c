import Database from 'better-sqlite3';
import { compareEventIds, type EventId, type NewEvent, type StoredEvent } from '../event/event.js';
import { SandboxEventsError } from '../errors.js';
import {
  buildReplayResult,
  checkLimit,
  checkRetention,
  ephemeralMatcher,
  historyFloor,
  maxEventId,
  pagesOfIds,
  storeClosedError,
} from './semantics.js';
import { Checkpointer } from './sqlite/checkpointer.js';
import { toOrderedEvents, toStoredEvents } from './sqlite/event-rows.js';
import { classifyWorkspaceReplay } from './workspace-order.js';
import { Retention, smallestCount } from './sqlite/retention.js';
import { RowSync } from './sqlite/row-sync.js';
import { configureConnection, migrate } from './sqlite/schema.js';
import {
  type EventRow,
  idOf,
  prepareStatements,
  prunedIdMarks,
  prunedOrderMarks,
  type Statements,
} from './sqlite/statements.js';
import { StreamCache } from './sqlite/stream-cache.js';
import { storeUnavailable } from './sqlite/unavailable.js';
import { WriteHealth } from './sqlite/write-health.js';
import { GroupCommitWriter } from './sqlite/writer.js';
import type {
  AppendReceipt,
  DurableEventListener,
  EventStore,
  HistoryPages,
  HistoryQuery,
  ReplayResult,
  ReaderTypes,
  RetentionPolicy,
  RetentionRule,
  SandboxListing,
  SandboxRef,
  StoreReadiness,
  WorkspaceReplay,
} from './types.js';

/** See SqliteStoreOptions.groupCommitWindowMs. */
const DEFAULT_COMMIT_WINDOW_MS = 0;

export interface SqliteStoreOptions {
  /** The database file (created when missing; its directory must exist). */
  path: string;
  retention: RetentionPolicy;
  now?: () => number;
  /**
   * 0 (default): a batch is written on the next event-loop turn (setImmediate), so it holds
   * everything that one turn produced. More than 0: wait up to this many ms to gather more.
   */
  groupCommitMaxDelayMs?: number;
  /** Most appends in one transaction (default 1000); a full batch is written at once. */
  groupCommitMaxBatch?: number;
  /**
   * The light-load commit window in ms (default 0: off): a batch of fewer than 16
   * events that comes less than this long after the previous commit waits until this long after
   * it, so that light, steady traffic shares commits instead of paying one per event. Appends
   * still resolve only once committed (docs/performance.md, "SQLite under light load").
   */
  groupCommitWindowMs?: number;
  /**
   * Called after each commit's events were handed to the listener and its appends answered.
   * A commit runs in the check phase of the event loop; the daemon passes a function that
   * writes what the commit queued for the sockets now rather than a turn later.
   */
  afterCommit?: () => void;
  /**
   * 'normal' (default): in WAL mode a commit is written to the WAL file but not fsynced (the
   * WAL is synced at checkpoints). That survives the process dying at any moment (kill -9,
   * crash, OOM): the written pages are in the OS page cache and reach the disk without us.
   * It does not survive power loss or a kernel crash: the last commits before it may be lost,
   * though the database stays consistent.
   * 'full': fsync the WAL on every commit, which also survives power loss; group commit
   * spreads that cost over a batch.
   */
  synchronous?: 'normal' | 'full';
  /**
   * How often a row sync begins (default 1000 ms): it writes the `sandboxes` rows that lag
   * their streams' events then, a share in each commit from there (sqlite/row-sync.ts).
   */
  rowSyncIntervalMs?: number;
  /** How often background retention runs (default 5000 ms); 0 disables the timer. */
  pruneIntervalMs?: number;
  /** Most rows one retention step deletes in one transaction (default 1000, a few ms). */
  pruneBatchSize?: number;
  /**
   * How long a write waits for a lock held by another connection (default 20 ms). The wait
   * blocks the event loop, so it stays short: past it, the batch fails with STORE_UNAVAILABLE.
   */
  busyTimeoutMs?: number;
  /**
   * 'worker' (default): WAL checkpoints run on a worker thread with its own connection, so the
   * event loop never waits for them (with synchronous = normal they are the only fsyncs).
   * 'inline': SQLite's automatic checkpoint, inside the commit that makes the WAL pass 4 MiB.
   */
  checkpoint?: 'worker' | 'inline';
}

export interface SqliteStoreStats {
  /** Transactions committed by group commit. */
  batches: number;
  /** Events committed. */
  appended: number;
  /** Transactions that failed (their appends were rejected). */
  failedBatches: number;
  /** Events deleted by retention. */
  pruned: number;
  /** Background retention runs that failed. */
  pruneErrors: number;
  /** Appends waiting for the next batch. */
  pending: number;
  /** WAL checkpoints done by the worker thread. */
  checkpoints: number;
}

function sqlLimit(limit: number): number {
  return limit === Infinity ? -1 : limit;
}

/**
 * Events in a SQLite file (WAL). This class opens the file and answers reads; the parts it
 * composes do the rest, over one connection, which is the file's only writer:
 * - sqlite/schema.ts: connection settings, tables, migrations of older files;
 * - sqlite/writer.ts: group commit (appends queue up and are written in one transaction per
 *   batch; only after the commit does the listener see them and do their promises resolve, so
 *   nothing leaves the broker before it is on disk), with ids assigned inside the commit;
 * - sqlite/stream-cache.ts: the committed state of the streams batches wrote, for the writer;
 * - sqlite/row-sync.ts: when the `sandboxes` rows catch up with that state, and at open after
 *   a crash;
 * - sqlite/retention.ts: the count, byte and age limits, in small transactions;
 * - sqlite/checkpointer.ts: WAL checkpoints on a worker thread (sqlite/checkpoint-worker.ts);
 * - sqlite/write-health.ts: readiness, `unavailable` from a failed commit until a write succeeds.
 */
export class SqliteStore implements EventStore {
  readonly kind = 'sqlite';
  readonly path: string;
  private readonly db: Database.Database;
  private readonly sql: Statements;
  private readonly writer: GroupCommitWriter;
  private readonly retention: Retention;
  private readonly streamCache: StreamCache;
  private readonly rowSync: RowSync;
  /** Ephemeral types are configured: ids are issued that are never stored (ReplayState). */
  private readonly unstoredIds: boolean;
  /** The `--retention` rules the store opened with: each class pruned on its own. */
  private readonly rules: readonly RetentionRule[];
  private readonly checkpointer: Checkpointer;
  private readonly health: WriteHealth;
  private closed = false;
  private closing: Promise<void> | undefined;

  static open(options: SqliteStoreOptions): SqliteStore {
    return new SqliteStore(options);
  }

  private constructor(options: SqliteStoreOptions) {
    this.path = options.path;
    const policy = checkRetention(options.retention);
    this.rules = policy.rules ?? [];
    const now = options.now ?? Date.now;
    try {
      this.db = new Database(options.path, { timeout: options.busyTimeoutMs ?? 20 });
    } catch (error) {
      throw storeUnavailable(`cannot open the event store ${options.path}`, error);
    }
    try {
      const synchronous = options.synchronous === 'full' ? 'FULL' : 'NORMAL';
      const { pageSize, wal } = configureConnection(this.db, synchronous);
      this.checkpointer = new Checkpointer(this.db, {
        path: options.path,
        pageSize,
        synchronous,
        worker: wal && (options.checkpoint ?? 'worker') === 'worker',
      });
      migrate(this.db);
      this.sql = prepareStatements(this.db);
      this.health = new WriteHealth(this.db, this.checkpointer);
      const streamCache = new StreamCache();
      this.streamCache = streamCache;
      const lastOrder = Math.max(this.sql.maxOrder.get()?.ord ?? 0, this.sql.prunedOrderAll.get()?.ord ?? 0);
      this.rowSync = new RowSync(this.db, this.sql, streamCache, {
        intervalMs: Math.max(0, options.rowSyncIntervalMs ?? 1_000),
        lastOrder: () => this.writer.lastOrder,
      });
      // Before anything reads the rows: those a crash left lagging are counted again.
      this.rowSync.recover(this.db, lastOrder);
      this.retention = new Retention(this.db, this.sql, streamCache, this.rowSync, this.checkpointer, {
        policy,
        now,
        batchSize: Math.max(1, options.pruneBatchSize ?? 1000),
      });
      this.writer = new GroupCommitWriter(this.db, this.sql, streamCache, this.rowSync, this.checkpointer, {
        path: options.path,
        now,
        maxDelayMs: Math.max(0, options.groupCommitMaxDelayMs ?? 0),
        maxBatch: Math.max(1, options.groupCommitMaxBatch ?? 1000),
        commitWindowMs: Math.max(0, options.groupCommitWindowMs ?? DEFAULT_COMMIT_WINDOW_MS),
        maxCount: smallestCount(policy),
        maxBytes: policy.maxBytes ?? Infinity,
        highWater: maxEventId(this.sql.getHighWater.get(), this.sql.maxLastId.get()),
        lastOrder,
        onOverLimit: this.retention.noteOverLimit,
        ephemeral: ephemeralMatcher(policy),
        health: this.health,
        ...(options.afterCommit === undefined ? {} : { afterBatch: options.afterCommit }),
      });
      this.unstoredIds = (policy.ephemeralTypes ?? []).length > 0;
      this.checkpointer.start();
    } catch (error) {
      this.db.close();
      throw storeUnavailable(`cannot open the event store ${options.path}`, error);
    }
    this.retention.start(options.pruneIntervalMs ?? 5_000);
  }

  /** New limits at runtime (a config reload): the writer's count and byte checks and the pruning follow. */
  setRetention(retention: RetentionPolicy): void {
    const policy = checkRetention(retention);
    if (this.closed) return;
    // The rules stay those the store opened with (a restart setting): only the limits change.
    const live = { ...policy, rules: this.rules };
    this.writer.setLimits(smallestCount(live), live.maxBytes ?? Infinity);
    this.retention.setPolicy(live);
  }

  setListener(listener: DurableEventListener): void {
    this.writer.setListener(listener);
  }

  /**
   * `unavailable` from a failed commit (a full disk, say) until a commit or the probe write that
   * follows it every second succeeds; `ready` otherwise. `/readyz` answers 503 meanwhile
   * (docs/operations.md, "Readiness").
   */
  readiness(): StoreReadiness {
    return this.health.readiness();
  }

  append(input: NewEvent): Promise<StoredEvent> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    return this.writer.append(input);
  }

  /** Answered once the commit holding this event is done (docs/performance.md). */
  appendWith(input: NewEvent, receipt: AppendReceipt): void {
    if (this.closed) receipt.refused(storeClosedError(this.kind));
    else this.writer.appendWith(input, receipt);
  }

  history(query: HistoryQuery): Promise<StoredEvent[]> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      const events = toStoredEvents(query, this.historyRows(query, false));
      if (query.newest === true) events.reverse();
      return Promise.resolve(events);
    } catch (error) {
      return Promise.reject(this.readError(error));
    }
  }

  /**
   * The reply's ids first (a few bytes each: that is its count), then its events a page at a
   * time, each page read by id from the file when the writer asks for it. Events appended
   * meanwhile have higher ids and are not in it; one that retention pruned meanwhile is a
   * hole (undefined), so the count stays true.
   */
  historyPages(query: HistoryQuery): Promise<HistoryPages> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    let ids: EventId[];
    try {
      ids = (this.historyRows(query, true) as unknown as [number, number][]).map(([ms, seq]) => ({ ms, seq }));
    } catch (error) {
      return Promise.reject(this.readError(error));
    }
    if (query.newest === true) ids.reverse();
    return Promise.resolve(pagesOfIds(ids, (page) => this.historyPage(query, page)));
  }

  /** The events of `ids` (ascending, all matching `query`), undefined for those pruned since. */
  private historyPage(query: HistoryQuery, ids: readonly EventId[]): (StoredEvent | undefined)[] {
    if (this.closed) throw storeClosedError(this.kind);
    const first = ids[0]!;
    let events: StoredEvent[];
    try {
      // Same type and since filters, from the page's first id: its ids in order, bar holes.
      const pageQuery = { ...query, newest: false, limit: ids.length };
      events = toStoredEvents(query, this.historyRows(pageQuery, false, first));
    } catch (error) {
      throw this.readError(error);
    }
    const page = new Array<StoredEvent | undefined>(ids.length);
    let row = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      while (row < events.length && compareEventIds(events[row]!.id, id) < 0) row++;
      const event = events[row];
      page[i] = event !== undefined && compareEventIds(event.id, id) === 0 ? event : undefined;
    }
    return page;
  }

  /**
   * The rows of a history query: whole events, or only their (ms, seq) with `idsOnly`; from
   * `from` (inclusive) instead of the query's own floor when given.
   */
  private historyRows(query: HistoryQuery, idsOnly: boolean, from?: EventId): EventRow[] {
    const limit = sqlLimit(checkLimit(query.limit));
    const floor = from ?? historyFloor(query);
    const since = query.since ?? -Infinity;
    const { workspaceId: ws, sandboxId: sb } = query;
    const newest = query.newest === true;
    const sql = this.sql;
    if (query.type === undefined) {
      const statement = idsOnly
        ? newest
          ? sql.historyIdsDesc
          : sql.historyIdsAsc
        : newest
          ? sql.historyDesc
          : sql.historyAsc;
      return statement.all(ws, sb, floor.ms, floor.seq, since, limit) as EventRow[];
    }
    const statement = idsOnly
      ? newest
        ? sql.historyTypeIdsDesc
        : sql.historyTypeIdsAsc
      : newest
        ? sql.historyTypeDesc
        : sql.historyTypeAsc;
    return statement.all(ws, sb, query.type, floor.ms, floor.seq, since, limit) as EventRow[];
  }

  listSandboxes(scope: number | 'all'): Promise<SandboxListing[]> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      const rows = scope === 'all' ? this.sql.listAllSandboxes.all() : this.sql.listSandboxes.all(scope);
      return Promise.resolve(
        rows.map((row) => ({
          workspaceId: row.workspace_id,
          sandboxId: row.sandbox_id,
          lastId: this.lastIdOf(row.workspace_id, row.sandbox_id, row),
        })),
      );
    } catch (error) {
      return Promise.reject(this.readError(error));
    }
  }

  replayAfter(ref: SandboxRef, afterId: EventId, limit: number, types?: ReaderTypes): Promise<ReplayResult> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      const max = sqlLimit(checkLimit(limit));
      const { workspaceId: ws, sandboxId: sb } = ref;
      const highWater = this.writer.highWater;
      // better-sqlite3 is synchronous and this connection is the only writer, so these reads
      // see one consistent state.
      const row = this.sql.getSandbox.get(ws, sb);
      if (row === undefined) {
        return Promise.resolve(buildReplayResult([], afterId, { highWater, afterIdRetained: false }));
      }
      const events = toStoredEvents(ref, this.sql.eventsAfter.all(ws, sb, afterId.ms, afterId.seq, max));
      return Promise.resolve(
        buildReplayResult(events, afterId, {
          lastId: this.lastIdOf(ws, sb, row),
          trimmedThrough: idOf(row.trimmed_ms, row.trimmed_seq),
          earliestId: this.sql.oldestId.get(ws, sb),
          highWater,
          afterIdRetained: this.sql.hasEvent.get(ws, sb, afterId.ms, afterId.seq) !== undefined,
          unstoredIds: this.unstoredIds,
          ...(this.rules.length === 0
            ? {}
            : { perType: true, readerTrimmedThrough: this.prunedThrough(ws, sb, types) }),
        }),
      );
    } catch (error) {
      return Promise.reject(this.readError(error));
    }
  }

  replayWorkspaceAfter(
    scope: number | 'all',
    after: number,
    limit: number,
    types?: ReaderTypes,
  ): Promise<WorkspaceReplay> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      const max = sqlLimit(checkLimit(limit));
      const sql = this.sql;
      const rows = scope === 'all' ? sql.eventsByOrderAll.all(after, max) : sql.eventsByOrder.all(scope, after, max);
      let pruned: number;
      if (this.rules.length > 0) {
        // With rules, only what was pruned of the types the reader takes makes it inexact.
        const markRows = scope === 'all' ? sql.prunedOrderTypesAll.all() : sql.prunedOrderTypes.all(scope);
        pruned = prunedOrderMarks(markRows).through(types) ?? 0;
      } else {
        pruned = (scope === 'all' ? sql.prunedOrderAll.get()?.ord : sql.prunedOrder.get(scope)?.ord) ?? 0;
      }
      const lastOrder = this.writer.lastOrder;
      return Promise.resolve({
        events: toOrderedEvents(rows),
        ...classifyWorkspaceReplay(after, pruned, lastOrder),
        lastOrder,
      });
    } catch (error) {
      return Promise.reject(this.readError(error));
    }
  }

  /** A stream's last id: the writer's, when its row lags it (row-sync.ts). */
  private lastIdOf(ws: number, sb: string, row: { last_ms: number; last_seq: number }): EventId {
    return this.streamCache.lastId(ws, sb) ?? { ms: row.last_ms, seq: row.last_seq };
  }

  /** With rules: the highest id pruned from a sandbox of a type `types` takes (retention.ts). */
  private prunedThrough(ws: number, sb: string, types: ReaderTypes | undefined): EventId | undefined {
    return prunedIdMarks(this.sql, ws, sb).through(types);
  }

  /**
   * Runs retention to the end now (the timer does this in the background): the count and age
   * limits, then forgetting idle empty sandboxes. Works in small transactions and yields to
   * the event loop between them. Resolves with the number of events pruned.
   */
  prune(): Promise<number> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    return this.retention.prune();
  }

  stats(): SqliteStoreStats {
    const { writer, retention } = this;
    return {
      batches: writer.batches,
      appended: writer.appended,
      failedBatches: writer.failedBatches,
      pruned: retention.pruned,
      pruneErrors: retention.pruneErrors,
      checkpoints: this.checkpointer.checkpoints,
      pending: writer.pending,
    };
  }

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closed = true;
    // A retention run in progress checks after every step and stops.
    this.retention.stop();
    this.health.stop();
    // Everything accepted before close is written (and announced) before the file closes.
    this.writer.drain();
    try {
      this.rowSync.syncNow();
    } catch {
      // The rows stay behind in the file; the next open counts them again (row-sync.ts).
    }
    this.closing = this.checkpointer.stop().then(() => {
      // The last connection to close checkpoints the WAL and removes it.
      this.db.close();
    });
    return this.closing;
  }

  private readError(error: unknown): unknown {
    if (error instanceof SandboxEventsError) return error;
    return storeUnavailable(`could not read ${this.path}`, error);
  }
}
