import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import {
  compareEventIds,
  createStoredEvent,
  eventLine,
  eventLineMiddle,
  nextEventId,
  type EventId,
  type NewEvent,
  type StoredEvent,
} from '../event/event.js';
import { SandboxEventsError } from '../errors.js';
import {
  ageCutoff,
  buildReplayResult,
  checkLimit,
  checkRetention,
  historyFloor,
  maxEventId,
  notifyListener,
  sandboxKey,
  storeClosedError,
} from './semantics.js';
import type {
  DurableEventListener,
  EventStore,
  HistoryQuery,
  ReplayResult,
  RetentionPolicy,
  SandboxRef,
} from './types.js';

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
   * 'normal' (default): in WAL mode a commit is written to the WAL file but not fsynced (the
   * WAL is synced at checkpoints). That survives the process dying at any moment (kill -9,
   * crash, OOM): the written pages are in the OS page cache and reach the disk without us.
   * It does not survive power loss or a kernel crash: the last commits before it may be lost,
   * though the database stays consistent.
   * 'full': fsync the WAL on every commit, which also survives power loss; group commit
   * spreads that cost over a batch.
   */
  synchronous?: 'normal' | 'full';
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

/**
 * 1: events.json held each event's whole JSON line. 2 (see MIGRATIONS): events.data holds only
 * its `data` text, and json is '' for the rows written so (rows from version 1 keep theirs).
 * A build that knows only version 1 refuses a version-2 file instead of misreading it.
 */
const SCHEMA_VERSION = 2;

/*
 * events: one row per event, clustered on (workspace, sandbox, id), so history and replay are
 * one range read of adjacent rows. A row keeps the event's `data` text, not its whole JSON line:
 * everything else in the line is in the row's other columns, and reads rebuild the very same
 * line with the event module's builder (json is '', or the whole line in rows a version-1 file had).
 * That halves the row (about 125 bytes instead of 260 for a small event), so commits split and
 * rewrite fewer pages. The type filter reads that same range and skips other types:
 * there is no index on type (see MIGRATIONS), because every index is one more page per sandbox
 * (per sandbox and type, for that one) rewritten by every commit.
 * sandboxes: per stream, the last id issued (ids stay increasing across restarts, also after
 * every event was pruned), what is retained (count and oldest id, for retention), what was
 * pruned (trimmed through), and when it was last appended to (to forget idle empty streams).
 * high_water: at least the last id of every stream that was forgotten. With the last ids in
 * sandboxes it gives the highest id ever issued (so a forgotten or new stream starts above
 * it), without a write to it in every commit.
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  workspace_id INTEGER NOT NULL,
  sandbox_id   TEXT    NOT NULL,
  ms           INTEGER NOT NULL,
  seq          INTEGER NOT NULL,
  type         TEXT    NOT NULL,
  timestamp    INTEGER NOT NULL,
  json         TEXT    NOT NULL,
  data         TEXT,
  PRIMARY KEY (workspace_id, sandbox_id, ms, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sandboxes (
  workspace_id INTEGER NOT NULL,
  sandbox_id   TEXT    NOT NULL,
  last_ms      INTEGER NOT NULL,
  last_seq     INTEGER NOT NULL,
  retained     INTEGER NOT NULL,
  first_ms     INTEGER,
  first_seq    INTEGER,
  trimmed_ms   INTEGER,
  trimmed_seq  INTEGER,
  active_at    INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, sandbox_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sandboxes_by_first ON sandboxes (first_ms) WHERE first_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS sandboxes_idle ON sandboxes (active_at) WHERE retained = 0;
CREATE TABLE IF NOT EXISTS high_water (
  only INTEGER PRIMARY KEY CHECK (only = 0),
  ms   INTEGER NOT NULL,
  seq  INTEGER NOT NULL
);
`;

/*
 * Changes to files written by earlier builds, run at every open (each is a no-op once done);
 * none rewrites the events already there. events.data is added by upgradeSchema (ALTER TABLE
 * has no IF NOT EXISTS).
 *
 * events_by_type, an index on (workspace, sandbox, type, id), served the type filter. Each
 * append also inserted into it, at one place per sandbox and type, so a commit over 100
 * sandboxes rewrote about 270 more pages (812 WAL frames per 1,000 events instead of 544), and
 * a one-event commit 4.7 pages instead of 3.4. A type filter now reads the sandbox's events in id
 * order and skips other types: as fast for a type among the recent events, and at worst one
 * pass over what the sandbox retains (about 2.5 ms for 10,000 events) for a type it never had.
 */
const MIGRATIONS = `
DROP INDEX IF EXISTS events_by_type;
`;

interface SandboxRow {
  last_ms: number;
  last_seq: number;
  retained: number;
  first_ms: number | null;
  first_seq: number | null;
  trimmed_ms: number | null;
  trimmed_seq: number | null;
  active_at: number;
}

/**
 * An event row as an array: history and replay statements run in better-sqlite3's raw mode,
 * which skips building an object per row (100-row reads: 160-180 -> 95-100 µs of CPU).
 * `json` is '' unless a version-1 file wrote the row (then the whole line); `data` is the
 * event's `data` text (null in version-1 rows).
 */
type EventRow = [ms: number, seq: number, type: string, timestamp: number, json: string, data: string | null];

interface RefRow {
  workspace_id: number;
  sandbox_id: string;
}

type Ref = readonly [workspaceId: number, sandboxId: string];

interface PendingAppend {
  input: NewEvent;
  resolve: (event: StoredEvent) => void;
  reject: (error: unknown) => void;
}

/** A stream's state while one batch is being written. */
interface BatchStream {
  workspaceId: number;
  sandboxId: string;
  existed: boolean;
  hadFirst: boolean;
  lastId: EventId | undefined;
  retained: number;
  firstId: EventId | undefined;
  activeAt: number;
}

interface BatchResult {
  events: StoredEvent[];
  /** The state of every stream the batch wrote, as committed. */
  streams: BatchStream[];
  highWater: EventId | undefined;
  overCount: SandboxRef[];
}

/**
 * Most streams whose committed state the writer keeps in memory (a few hundred bytes each);
 * past it the cache starts over and rereads rows as batches need them.
 */
const STREAM_CACHE_LIMIT = 16_384;

/** Rows per query when retention looks for sandboxes to prune. */
const PRUNE_PAGE = 64;
/** Retention yields to the event loop after working this long. */
const PRUNE_SLICE_MS = 4;

/** Ask the checkpoint worker for a run at most this often while commits happen. */
const CHECKPOINT_INTERVAL_MS = 100;
/** Past this much WAL (in frames: 8,192 of 8 KiB pages) the writer finishes a checkpoint itself. */
const WAL_BYTES_LIMIT = 64 * 1024 * 1024;
/**
 * Page size of new files (SQLite's default is 4 KiB; a file keeps the size it was created with).
 * A commit writes every page it changed to the WAL, two syscalls each, and the checkpoint copies
 * them again: with 8 KiB pages a commit over 100 sandboxes writes about a quarter fewer pages
 * (an append into the middle of the events tree splits a page half as often), which cost 5–9 %
 * less CPU per event from one-event to 1,000-event commits. 16 KiB pages gained nothing more.
 */
const NEW_FILE_PAGE_SIZE = 8192;
/**
 * Without the worker, SQLite checkpoints inside the commit that makes the WAL this long (its own
 * default, 1,000 pages, is 4 MiB of 4 KiB pages).
 */
const INLINE_CHECKPOINT_BYTES = 4 * 1024 * 1024;

/**
 * Runs on a worker thread (CommonJS, eval'd): a PASSIVE checkpoint copies committed WAL pages
 * into the database file and fsyncs it, without blocking the writer.
 */
const CHECKPOINT_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { timeout: 1000 });
db.pragma('synchronous = ' + workerData.synchronous);
parentPort.on('message', (message) => {
  if (message === 'close') {
    db.close();
    parentPort.close();
    return;
  }
  try {
    const [row] = db.pragma('wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ log: row.log, checkpointed: row.checkpointed });
  } catch (error) {
    parentPort.postMessage({ error: String((error && error.message) || error) });
  }
});
`;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function idOf(ms: number | null, seq: number | null): EventId | undefined {
  return ms === null || seq === null ? undefined : { ms, seq };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function sqlLimit(limit: number): number {
  return limit === Infinity ? -1 : limit;
}

/**
 * Events in a SQLite file (WAL). Appends are group-committed: they queue up and are written
 * in one transaction per batch; only after the commit does the listener see them and do
 * their promises resolve, so nothing leaves the broker before it is on disk.
 */
export class SqliteStore implements EventStore {
  readonly kind = 'sqlite';
  readonly path: string;
  private readonly db: Database.Database;
  private retention: RetentionPolicy;
  private readonly now: () => number;
  private readonly maxBatch: number;
  private readonly maxDelayMs: number;
  private readonly pruneBatch: number;
  private listener: DurableEventListener | undefined;
  /** Highest id committed for any sandbox (also forgotten ones). */
  private highWater: EventId | undefined;
  private queue: PendingAppend[] = [];
  private flushImmediate: NodeJS.Immediate | undefined;
  private flushTimeout: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private pruning: Promise<number> | undefined;
  /**
   * The committed sandboxes row of streams recent batches wrote, by workspace then sandbox, so a
   * batch reads a stream's row only the first time. This connection is the file's only writer
   * (highWater relies on that too). Entries are replaced only after a commit, so a rolled-back
   * batch leaves them as they were; retention, which changes rows, removes the entries it touches.
   */
  private readonly streamCache = new Map<number, Map<string, BatchStream>>();
  private streamCacheSize = 0;
  /** Sandboxes that had more than maxCount events at their last commit. */
  private readonly overCount = new Map<string, Ref>();
  private closed = false;
  private readonly counters = {
    batches: 0,
    appended: 0,
    failedBatches: 0,
    pruned: 0,
    pruneErrors: 0,
    checkpoints: 0,
  };
  private checkpointer: Worker | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private checkpointRunning = false;
  /** WAL_BYTES_LIMIT in frames of this file's page size. */
  private readonly walFramesLimit: number;
  /** INLINE_CHECKPOINT_BYTES in pages of this file's page size. */
  private readonly inlineCheckpointPages: number;
  /** The worker could not keep the WAL short: the writer checkpoints before its next commit. */
  private walTooLong = false;
  private closing: Promise<void> | undefined;

  private readonly sql: ReturnType<typeof prepareStatements>;
  private readonly writeBatchTx: Database.Transaction<(batch: PendingAppend[]) => BatchResult>;
  private readonly pruneStepTx: Database.Transaction<(ref: Ref) => { deleted: number; more: boolean }>;
  private readonly dropIdleTx: Database.Transaction<(cutoff: number) => number>;

  static open(options: SqliteStoreOptions): SqliteStore {
    return new SqliteStore(options);
  }

  private constructor(options: SqliteStoreOptions) {
    this.path = options.path;
    this.retention = checkRetention(options.retention);
    this.now = options.now ?? Date.now;
    this.maxBatch = Math.max(1, options.groupCommitMaxBatch ?? 1000);
    this.maxDelayMs = Math.max(0, options.groupCommitMaxDelayMs ?? 0);
    this.pruneBatch = Math.max(1, options.pruneBatchSize ?? 1000);
    try {
      this.db = new Database(options.path, { timeout: options.busyTimeoutMs ?? 20 });
    } catch (error) {
      throw new SandboxEventsError(
        'STORE_UNAVAILABLE',
        `cannot open the event store ${options.path}: ${messageOf(error)}`,
        { cause: error },
      );
    }
    try {
      // Only takes effect on a new, empty file, so before anything (journal mode too) writes it.
      this.db.pragma(`page_size = ${NEW_FILE_PAGE_SIZE}`);
      const pageSize = this.db.pragma('page_size', { simple: true }) as number;
      this.walFramesLimit = Math.ceil(WAL_BYTES_LIMIT / pageSize);
      this.inlineCheckpointPages = Math.ceil(INLINE_CHECKPOINT_BYTES / pageSize);
      const journal = this.db.pragma('journal_mode = WAL', { simple: true });
      const synchronous = options.synchronous === 'full' ? 'FULL' : 'NORMAL';
      this.db.pragma(`synchronous = ${synchronous}`);
      const checkpointWorker = journal === 'wal' && (options.checkpoint ?? 'worker') === 'worker';
      this.db.pragma(`wal_autocheckpoint = ${checkpointWorker ? 0 : this.inlineCheckpointPages}`);
      this.db.pragma('cache_size = -32768'); // 32 MiB of pages: history hits memory, not the OS
      this.db.pragma('journal_size_limit = 67108864'); // the WAL shrinks back to 64 MiB after checkpoints
      const version = this.db.pragma('user_version', { simple: true }) as number;
      if (version > SCHEMA_VERSION) {
        throw new Error(`schema version ${version} is newer than this broker's (${SCHEMA_VERSION})`);
      }
      this.db.exec(SCHEMA);
      upgradeSchema(this.db);
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
      this.sql = prepareStatements(this.db);
      this.writeBatchTx = this.db.transaction((batch: PendingAppend[]) => this.writeBatch(batch));
      this.pruneStepTx = this.db.transaction((ref: Ref) => this.pruneStep(ref));
      this.dropIdleTx = this.db.transaction((cutoff: number) => this.dropIdle(cutoff));
      this.highWater = maxEventId(this.sql.getHighWater.get(), this.sql.maxLastId.get());
      // Retention state lives in the file; only "over the count limit" is tracked in memory,
      // so find those left from before a restart once.
      this.findOverCount();
      if (checkpointWorker) this.startCheckpointer(synchronous);
    } catch (error) {
      void this.checkpointer?.terminate();
      this.db.close();
      throw new SandboxEventsError(
        'STORE_UNAVAILABLE',
        `cannot open the event store ${options.path}: ${messageOf(error)}`,
        { cause: error },
      );
    }
    const interval = options.pruneIntervalMs ?? 5_000;
    if (interval > 0) {
      this.pruneTimer = setInterval(this.onPruneTimer, interval);
      this.pruneTimer.unref();
    }
  }

  /** Sandboxes holding more events than the count limit, for the background prune to trim. */
  private findOverCount(): void {
    for (const row of this.sql.overCountSandboxes.all(this.retention.maxCount)) {
      this.overCount.set(sandboxKey({ workspaceId: row.workspace_id, sandboxId: row.sandbox_id }), [
        row.workspace_id,
        row.sandbox_id,
      ]);
    }
  }

  setRetention(retention: RetentionPolicy): void {
    this.retention = checkRetention(retention);
    // A lowered count: sandboxes not written since are over it too.
    if (!this.closed) this.findOverCount();
  }

  setListener(listener: DurableEventListener): void {
    this.listener = listener;
  }

  append(input: NewEvent): Promise<StoredEvent> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    return new Promise<StoredEvent>((resolve, reject) => {
      this.queue.push({ input, resolve, reject });
      this.scheduleFlush();
    });
  }

  history(query: HistoryQuery): Promise<StoredEvent[]> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      const limit = sqlLimit(checkLimit(query.limit));
      const floor = historyFloor(query);
      const since = query.since ?? -Infinity;
      const { workspaceId: ws, sandboxId: sb } = query;
      const newest = query.newest === true;
      const rows =
        query.type === undefined
          ? (newest ? this.sql.historyDesc : this.sql.historyAsc).all(ws, sb, floor.ms, floor.seq, since, limit)
          : (newest ? this.sql.historyTypeDesc : this.sql.historyTypeAsc).all(
              ws,
              sb,
              query.type,
              floor.ms,
              floor.seq,
              since,
              limit,
            );
      const events = toStoredEvents(query, rows);
      if (newest) events.reverse();
      return Promise.resolve(events);
    } catch (error) {
      return Promise.reject(this.readError(error));
    }
  }

  replayAfter(ref: SandboxRef, afterId: EventId, limit: number): Promise<ReplayResult> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      const max = sqlLimit(checkLimit(limit));
      const { workspaceId: ws, sandboxId: sb } = ref;
      // better-sqlite3 is synchronous and this connection is the only writer, so these reads
      // see one consistent state.
      const row = this.sql.getSandbox.get(ws, sb);
      if (row === undefined) {
        return Promise.resolve(buildReplayResult([], afterId, { highWater: this.highWater, afterIdRetained: false }));
      }
      const events = toStoredEvents(ref, this.sql.eventsAfter.all(ws, sb, afterId.ms, afterId.seq, max));
      return Promise.resolve(
        buildReplayResult(events, afterId, {
          lastId: { ms: row.last_ms, seq: row.last_seq },
          trimmedThrough: idOf(row.trimmed_ms, row.trimmed_seq),
          earliestId: this.sql.oldestId.get(ws, sb),
          highWater: this.highWater,
          afterIdRetained: this.sql.hasEvent.get(ws, sb, afterId.ms, afterId.seq) !== undefined,
        }),
      );
    } catch (error) {
      return Promise.reject(this.readError(error));
    }
  }

  /**
   * Runs retention to the end now (the timer does this in the background): the count and age
   * limits, then forgetting idle empty sandboxes. Works in small transactions and yields to
   * the event loop between them. Resolves with the number of events pruned.
   */
  prune(): Promise<number> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    const previous = this.pruning ?? Promise.resolve(0);
    const run = previous.catch(() => 0).then(() => this.pruneAll());
    this.pruning = run;
    const clear = (): void => {
      if (this.pruning === run) this.pruning = undefined;
    };
    run.then(clear, clear);
    return run;
  }

  stats(): SqliteStoreStats {
    return { ...this.counters, pending: this.queue.length };
  }

  // ---- checkpoints --------------------------------------------------------------------------

  private startCheckpointer(synchronous: string): void {
    const worker = new Worker(CHECKPOINT_WORKER, {
      eval: true,
      workerData: { path: this.path, driver: createRequire(import.meta.url).resolve('better-sqlite3'), synchronous },
    });
    worker.unref();
    worker.on('message', (result: { log?: number; checkpointed?: number; error?: string }) => {
      this.checkpointRunning = false;
      if (result.error === undefined) this.counters.checkpoints++;
      // Under constant writes the worker never catches up with the last frame, and SQLite
      // only rewinds the WAL once a checkpoint did: then the writer finishes one itself.
      if ((result.log ?? 0) > this.walFramesLimit) this.walTooLong = true;
    });
    // If the worker cannot run, SQLite checkpoints inline again: slower, never wrong.
    const fallBack = (): void => {
      if (this.checkpointer !== worker) return;
      this.checkpointer = undefined;
      this.checkpointRunning = false;
      if (!this.closed) this.db.pragma(`wal_autocheckpoint = ${this.inlineCheckpointPages}`);
    };
    worker.on('error', fallBack);
    worker.on('exit', fallBack);
    this.checkpointer = worker;
  }

  /** Before a write transaction: finish a checkpoint here if the worker cannot. */
  private beforeWrite(): void {
    if (!this.walTooLong) return;
    this.walTooLong = false;
    try {
      this.db.pragma('wal_checkpoint(PASSIVE)');
    } catch {
      // Busy with the worker's checkpoint: its next report asks again.
    }
  }

  /** After a write transaction: a checkpoint soon, at most one at a time and one per interval. */
  private scheduleCheckpoint(): void {
    if (this.checkpointer === undefined || this.checkpointTimer !== undefined) return;
    this.checkpointTimer = setTimeout(() => {
      this.checkpointTimer = undefined;
      if (this.checkpointer === undefined || this.closed) return;
      if (this.checkpointRunning) {
        this.scheduleCheckpoint();
        return;
      }
      this.checkpointRunning = true;
      this.checkpointer.postMessage('checkpoint');
    }, CHECKPOINT_INTERVAL_MS);
    this.checkpointTimer.unref();
  }

  private stopCheckpointer(): Promise<void> {
    const worker = this.checkpointer;
    if (worker === undefined) return Promise.resolve();
    this.checkpointer = undefined;
    worker.ref(); // keep the process alive until the worker has closed its connection
    return new Promise<void>((resolve) => {
      worker.once('exit', () => resolve());
      worker.postMessage('close');
    });
  }

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closed = true;
    clearInterval(this.pruneTimer);
    clearTimeout(this.checkpointTimer);
    this.cancelFlush();
    // Everything accepted before close is written (and announced) before the file closes.
    while (this.queue.length > 0) this.flushBatch();
    // A retention run in progress checks `closed` after every yield and stops.
    this.closing = this.stopCheckpointer().then(() => {
      // The last connection to close checkpoints the WAL and removes it.
      this.db.close();
    });
    return this.closing;
  }

  // ---- group commit -------------------------------------------------------------------------

  private scheduleFlush(): void {
    if (this.flushImmediate !== undefined) return;
    if (this.maxDelayMs === 0 || this.queue.length >= this.maxBatch) {
      if (this.flushTimeout !== undefined) {
        clearTimeout(this.flushTimeout);
        this.flushTimeout = undefined;
      }
      this.flushImmediate = setImmediate(this.onFlush);
    } else if (this.flushTimeout === undefined) {
      this.flushTimeout = setTimeout(this.onFlush, this.maxDelayMs);
    }
  }

  private cancelFlush(): void {
    if (this.flushImmediate !== undefined) clearImmediate(this.flushImmediate);
    if (this.flushTimeout !== undefined) clearTimeout(this.flushTimeout);
    this.flushImmediate = undefined;
    this.flushTimeout = undefined;
  }

  private readonly onFlush = (): void => {
    this.cancelFlush();
    this.flushBatch();
    // What is left already waited a turn: write it on the next one, letting I/O in between.
    if (this.queue.length > 0) this.flushImmediate = setImmediate(this.onFlush);
  };

  private flushBatch(): void {
    const batch = this.queue.splice(0, this.maxBatch);
    if (batch.length === 0) return;
    this.beforeWrite();
    let result: BatchResult;
    try {
      result = this.writeBatchTx.immediate(batch);
    } catch (error) {
      // Rolled back: no id of this batch was seen by anyone, and the ids are computed from
      // the committed state inside the transaction, so later appends reissue them.
      this.counters.failedBatches++;
      const failure = new SandboxEventsError(
        'STORE_UNAVAILABLE',
        `could not write ${batch.length} event(s) to ${this.path}: ${messageOf(error)}`,
        { cause: error },
      );
      for (const pending of batch) pending.reject(failure);
      this.scheduleCheckpoint(); // a full disk may be a WAL waiting to be checkpointed
      return;
    }
    this.highWater = result.highWater;
    this.cacheStreams(result.streams);
    for (const ref of result.overCount) this.overCount.set(sandboxKey(ref), [ref.workspaceId, ref.sandboxId]);
    this.counters.batches++;
    this.scheduleCheckpoint();
    this.counters.appended += result.events.length;
    for (let i = 0; i < batch.length; i++) {
      notifyListener(this.listener, result.events[i] as StoredEvent, (batch[i] as PendingAppend).input);
    }
    for (let i = 0; i < batch.length; i++) (batch[i] as PendingAppend).resolve(result.events[i] as StoredEvent);
  }

  /** A copy of a stream's committed state, when the cache has it. */
  private cachedStream(workspaceId: number, sandboxId: string): BatchStream | undefined {
    const cached = this.streamCache.get(workspaceId)?.get(sandboxId);
    if (cached === undefined) return undefined;
    return {
      workspaceId,
      sandboxId,
      existed: true,
      hadFirst: cached.firstId !== undefined,
      lastId: cached.lastId,
      retained: cached.retained,
      firstId: cached.firstId,
      activeAt: cached.activeAt,
    };
  }

  /** A stream's committed state, from its row. */
  private readStream(workspaceId: number, sandboxId: string): BatchStream {
    const row = this.sql.getSandbox.get(workspaceId, sandboxId);
    return {
      workspaceId,
      sandboxId,
      existed: row !== undefined,
      hadFirst: row?.first_ms != null,
      lastId: row === undefined ? undefined : { ms: row.last_ms, seq: row.last_seq },
      retained: row?.retained ?? 0,
      firstId: row === undefined ? undefined : idOf(row.first_ms, row.first_seq),
      activeAt: 0,
    };
  }

  /** After a commit: what the batch wrote is now each stream's committed state. */
  private cacheStreams(streams: BatchStream[]): void {
    for (const s of streams) {
      let inWorkspace = this.streamCache.get(s.workspaceId);
      if (inWorkspace === undefined) {
        inWorkspace = new Map();
        this.streamCache.set(s.workspaceId, inWorkspace);
      }
      const size = inWorkspace.size;
      inWorkspace.set(s.sandboxId, s);
      if (inWorkspace.size > size && ++this.streamCacheSize > STREAM_CACHE_LIMIT) this.clearStreamCache();
    }
  }

  private forgetStream(workspaceId: number, sandboxId: string): void {
    const inWorkspace = this.streamCache.get(workspaceId);
    if (inWorkspace?.delete(sandboxId) !== true) return;
    this.streamCacheSize--;
    if (inWorkspace.size === 0) this.streamCache.delete(workspaceId); // or one empty map per workspace ever seen stays
  }

  private clearStreamCache(): void {
    this.streamCache.clear();
    this.streamCacheSize = 0;
  }

  /** Runs inside one transaction: assigns ids from committed state, inserts, updates streams. */
  private writeBatch(batch: PendingAppend[]): BatchResult {
    // Streams by workspace, then sandbox: no key string built per event. `stream` is the last
    // one used, as consecutive events often share a sandbox.
    const byWorkspace = new Map<number, Map<string, BatchStream>>();
    const streams: BatchStream[] = [];
    let stream: BatchStream | undefined;
    let highWater = this.highWater;
    const events: StoredEvent[] = new Array<StoredEvent>(batch.length);
    const insertEvent = this.sql.insertEvent;
    for (let i = 0; i < batch.length; i++) {
      const input = (batch[i] as PendingAppend).input;
      if (stream === undefined || stream.sandboxId !== input.sandboxId || stream.workspaceId !== input.workspaceId) {
        let inWorkspace = byWorkspace.get(input.workspaceId);
        if (inWorkspace === undefined) {
          inWorkspace = new Map();
          byWorkspace.set(input.workspaceId, inWorkspace);
        }
        stream = inWorkspace.get(input.sandboxId);
        if (stream === undefined) {
          stream =
            this.cachedStream(input.workspaceId, input.sandboxId) ??
            this.readStream(input.workspaceId, input.sandboxId);
          inWorkspace.set(input.sandboxId, stream);
          streams.push(stream);
        }
      }
      const now = this.now();
      // A stream this file has no state for starts above every id ever issued.
      const id = nextEventId(stream.lastId ?? highWater, now);
      const event = createStoredEvent(input, id, now);
      insertEvent.run(input.workspaceId, input.sandboxId, id.ms, id.seq, input.type, now, input.dataJson);
      stream.lastId = id;
      stream.retained++;
      stream.firstId ??= id;
      stream.activeAt = now;
      highWater = maxEventId(highWater, id);
      events[i] = event;
    }
    const overCount: SandboxRef[] = [];
    for (const s of streams) {
      const last = s.lastId as EventId;
      const first = s.firstId as EventId;
      if (!s.existed) {
        this.sql.insertSandbox.run(
          s.workspaceId,
          s.sandboxId,
          last.ms,
          last.seq,
          s.retained,
          first.ms,
          first.seq,
          s.activeAt,
        );
      } else if (!s.hadFirst) {
        this.sql.updateSandboxFirst.run(
          last.ms,
          last.seq,
          s.retained,
          first.ms,
          first.seq,
          s.activeAt,
          s.workspaceId,
          s.sandboxId,
        );
      } else {
        this.sql.updateSandbox.run(last.ms, last.seq, s.retained, s.activeAt, s.workspaceId, s.sandboxId);
      }
      if (s.retained > this.retention.maxCount) overCount.push(s);
    }
    return { events, streams, highWater, overCount };
  }

  // ---- retention ----------------------------------------------------------------------------

  private readonly onPruneTimer = (): void => {
    if (this.pruning !== undefined || this.closed) return;
    this.prune().catch(() => {
      this.counters.pruneErrors++;
    });
  };

  private async pruneAll(): Promise<number> {
    let deleted = 0;
    let sliceStart = performance.now();
    const pause = async (): Promise<void> => {
      if (performance.now() - sliceStart >= PRUNE_SLICE_MS) {
        await yieldToLoop();
        sliceStart = performance.now();
      }
    };
    /** Prunes one sandbox in steps; false when the store closed meanwhile. */
    const pruneSandbox = async (ref: Ref): Promise<{ open: boolean; deleted: number }> => {
      let count = 0;
      for (;;) {
        if (this.closed) return { open: false, deleted: count };
        this.beforeWrite();
        const step = this.pruneStepTx.immediate(ref);
        this.scheduleCheckpoint();
        count += step.deleted;
        this.counters.pruned += step.deleted;
        await pause();
        if (!step.more) return { open: true, deleted: count };
      }
    };

    // Count limit: only sandboxes a commit left above it.
    for (const [key, ref] of this.overCount) {
      this.overCount.delete(key);
      let done: { open: boolean; deleted: number };
      try {
        done = await pruneSandbox(ref);
      } catch (error) {
        this.overCount.set(key, ref); // try again next run
        throw error;
      }
      deleted += done.deleted;
      if (!done.open) return deleted;
    }

    // Age limit: sandboxes whose oldest event is past it, oldest first.
    for (;;) {
      if (this.closed) return deleted;
      const page = this.sql.agedSandboxes.all(ageCutoff(this.retention, this.now()), PRUNE_PAGE);
      if (page.length === 0) break;
      let progress = 0;
      for (const row of page) {
        const done = await pruneSandbox([row.workspace_id, row.sandbox_id]);
        deleted += done.deleted;
        progress += done.deleted;
        if (!done.open) return deleted;
      }
      if (progress === 0) break; // nothing movable (pruneStep repairs stale rows): don't spin
    }

    // Forget sandboxes with nothing retained and no append for longer than the age limit.
    for (;;) {
      if (this.closed) return deleted;
      this.beforeWrite();
      const dropped = this.dropIdleTx.immediate(ageCutoff(this.retention, this.now()));
      this.scheduleCheckpoint();
      if (dropped < PRUNE_PAGE) break;
      await pause();
    }
    return deleted;
  }

  /**
   * One small retention transaction on one sandbox: deletes at most pruneBatch of its oldest
   * events past the count or age limit, and records the highest deleted id.
   */
  private pruneStep([ws, sb]: Ref): { deleted: number; more: boolean } {
    this.forgetStream(ws, sb); // this step may change the row: the next batch rereads it
    const row = this.sql.getSandbox.get(ws, sb);
    if (row === undefined) return { deleted: 0, more: false };
    const cutoff = ageCutoff(this.retention, this.now());
    let through: EventId | undefined;
    const excess = row.retained - this.retention.maxCount;
    if (excess > 0) through = this.sql.nthOldestId.get(ws, sb, Math.min(excess, this.pruneBatch) - 1);
    if (row.first_ms !== null && row.first_ms < cutoff) {
      let aged = this.sql.newestIdBefore.get(ws, sb, cutoff);
      const cap = this.sql.nthOldestId.get(ws, sb, this.pruneBatch - 1);
      if (aged !== undefined && cap !== undefined && compareEventIds(cap, aged) < 0) aged = cap;
      through = maxEventId(through, aged);
    }
    let deleted = 0;
    if (through !== undefined) deleted = this.sql.deleteThrough.run(ws, sb, through.ms, through.seq).changes;
    else if (row.first_ms === null || row.first_ms >= cutoff) return { deleted: 0, more: false };
    // Recount from the file when the stream emptied, so a drifted count heals itself.
    const first = this.sql.oldestId.get(ws, sb);
    const retained = first === undefined ? 0 : Math.max(1, row.retained - deleted);
    const trimmed = maxEventId(idOf(row.trimmed_ms, row.trimmed_seq), through);
    this.sql.updatePruned.run(
      retained,
      first?.ms ?? null,
      first?.seq ?? null,
      trimmed?.ms ?? null,
      trimmed?.seq ?? null,
      ws,
      sb,
    );
    const more = deleted > 0 && (retained > this.retention.maxCount || (first !== undefined && first.ms < cutoff));
    return { deleted, more };
  }

  private dropIdle(cutoff: number): number {
    const rows = this.sql.idleSandboxes.all(cutoff, PRUNE_PAGE);
    let forgotten = this.sql.getHighWater.get();
    for (const row of rows) {
      forgotten = maxEventId(forgotten, { ms: row.last_ms, seq: row.last_seq });
      this.forgetStream(row.workspace_id, row.sandbox_id);
      this.sql.deleteSandbox.run(row.workspace_id, row.sandbox_id);
    }
    if (forgotten !== undefined) this.sql.setHighWater.run(forgotten.ms, forgotten.seq);
    return rows.length;
  }

  private readError(error: unknown): unknown {
    if (error instanceof SandboxEventsError) return error;
    return new SandboxEventsError('STORE_UNAVAILABLE', `could not read ${this.path}: ${messageOf(error)}`, {
      cause: error,
    });
  }
}

/** Brings a file of an earlier schema version to this one, without rewriting its events. */
function upgradeSchema(db: Database.Database): void {
  const columns = db.prepare<[], { name: string }>("SELECT name FROM pragma_table_info('events')").all();
  db.transaction(() => {
    if (!columns.some((column) => column.name === 'data')) db.exec('ALTER TABLE events ADD COLUMN data TEXT');
    db.exec(MIGRATIONS);
  }).immediate();
}

/**
 * Rows keep only `data`; the line is rebuilt with the event module's own builder, from parts
 * that are the same for the whole read (the sandbox, quoted once) or often repeat (types, quoted
 * once each): a third of the cost of eventJson per row.
 */
function toStoredEvents(ref: SandboxRef, rows: EventRow[]): StoredEvent[] {
  const events = new Array<StoredEvent>(rows.length);
  const { workspaceId, sandboxId } = ref;
  let middle: string | undefined;
  for (let i = 0; i < rows.length; i++) {
    const [ms, seq, type, timestamp, line, data] = rows[i] as EventRow;
    const id = { ms, seq };
    let json = line;
    if (json === '') {
      middle ??= eventLineMiddle(workspaceId, sandboxId);
      json = eventLine(id, middle, quotedType(type), data as string, timestamp);
    }
    events[i] = { id, workspaceId, sandboxId, type, timestamp, json };
  }
  return events;
}

/** Types as JSON text; a few hundred distinct types at most are expected, the cache is bounded. */
const quotedTypes = new Map<string, string>();
function quotedType(type: string): string {
  let quoted = quotedTypes.get(type);
  if (quoted === undefined) {
    if (quotedTypes.size >= 1024) quotedTypes.clear();
    quoted = JSON.stringify(type);
    quotedTypes.set(type, quoted);
  }
  return quoted;
}

/** Every statement, prepared once. */
function prepareStatements(db: Database.Database) {
  const eventColumns = 'ms, seq, type, timestamp, json, data';
  const stream = 'workspace_id = ? AND sandbox_id = ?';
  return {
    insertEvent: db.prepare<[number, string, number, number, string, number, string]>(
      "INSERT INTO events (workspace_id, sandbox_id, ms, seq, type, timestamp, json, data) VALUES (?, ?, ?, ?, ?, ?, '', ?)",
    ),
    getSandbox: db.prepare<[number, string], SandboxRow>(
      `SELECT last_ms, last_seq, retained, first_ms, first_seq, trimmed_ms, trimmed_seq, active_at
       FROM sandboxes WHERE ${stream}`,
    ),
    insertSandbox: db.prepare<[number, string, number, number, number, number, number, number]>(
      `INSERT INTO sandboxes (workspace_id, sandbox_id, last_ms, last_seq, retained, first_ms, first_seq, active_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    // Two forms, so that the common one leaves sandboxes_by_first untouched.
    updateSandbox: db.prepare<[number, number, number, number, number, string]>(
      `UPDATE sandboxes SET last_ms = ?, last_seq = ?, retained = ?, active_at = ? WHERE ${stream}`,
    ),
    updateSandboxFirst: db.prepare<[number, number, number, number, number, number, number, string]>(
      `UPDATE sandboxes SET last_ms = ?, last_seq = ?, retained = ?, first_ms = ?, first_seq = ?, active_at = ?
       WHERE ${stream}`,
    ),
    getHighWater: db.prepare<[], { ms: number; seq: number }>('SELECT ms, seq FROM high_water WHERE only = 0'),
    setHighWater: db.prepare<[number, number]>('INSERT OR REPLACE INTO high_water (only, ms, seq) VALUES (0, ?, ?)'),
    historyAsc: db
      .prepare<[number, string, number, number, number, number], EventRow>(
        `SELECT ${eventColumns} FROM events WHERE ${stream} AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms, seq LIMIT ?`,
      )
      .raw(),
    historyDesc: db
      .prepare<[number, string, number, number, number, number], EventRow>(
        `SELECT ${eventColumns} FROM events WHERE ${stream} AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms DESC, seq DESC LIMIT ?`,
      )
      .raw(),
    historyTypeAsc: db
      .prepare<[number, string, string, number, number, number, number], EventRow>(
        `SELECT ${eventColumns} FROM events WHERE ${stream} AND type = ? AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms, seq LIMIT ?`,
      )
      .raw(),
    historyTypeDesc: db
      .prepare<[number, string, string, number, number, number, number], EventRow>(
        `SELECT ${eventColumns} FROM events WHERE ${stream} AND type = ? AND (ms, seq) >= (?, ?) AND timestamp >= ?
       ORDER BY ms DESC, seq DESC LIMIT ?`,
      )
      .raw(),
    eventsAfter: db
      .prepare<[number, string, number, number, number], EventRow>(
        `SELECT ${eventColumns} FROM events WHERE ${stream} AND (ms, seq) > (?, ?) ORDER BY ms, seq LIMIT ?`,
      )
      .raw(),
    hasEvent: db.prepare<[number, string, number, number], { one: number }>(
      `SELECT 1 AS one FROM events WHERE ${stream} AND ms = ? AND seq = ?`,
    ),
    oldestId: db.prepare<[number, string], EventId>(
      `SELECT ms, seq FROM events WHERE ${stream} ORDER BY ms, seq LIMIT 1`,
    ),
    nthOldestId: db.prepare<[number, string, number], EventId>(
      `SELECT ms, seq FROM events WHERE ${stream} ORDER BY ms, seq LIMIT 1 OFFSET ?`,
    ),
    newestIdBefore: db.prepare<[number, string, number], EventId>(
      `SELECT ms, seq FROM events WHERE ${stream} AND ms < ? ORDER BY ms DESC, seq DESC LIMIT 1`,
    ),
    deleteThrough: db.prepare<[number, string, number, number]>(
      `DELETE FROM events WHERE ${stream} AND (ms, seq) <= (?, ?)`,
    ),
    updatePruned: db.prepare<[number, number | null, number | null, number | null, number | null, number, string]>(
      `UPDATE sandboxes SET retained = ?, first_ms = ?, first_seq = ?, trimmed_ms = ?, trimmed_seq = ?
       WHERE ${stream}`,
    ),
    overCountSandboxes: db.prepare<[number], RefRow>(
      'SELECT workspace_id, sandbox_id FROM sandboxes WHERE retained > ?',
    ),
    agedSandboxes: db.prepare<[number, number], RefRow>(
      'SELECT workspace_id, sandbox_id FROM sandboxes WHERE first_ms < ? ORDER BY first_ms LIMIT ?',
    ),
    idleSandboxes: db.prepare<[number, number], RefRow & { last_ms: number; last_seq: number }>(
      'SELECT workspace_id, sandbox_id, last_ms, last_seq FROM sandboxes WHERE retained = 0 AND active_at < ? LIMIT ?',
    ),
    // Once, at open: a scan, so that commits need not keep an index on the last id.
    maxLastId: db.prepare<[], EventId>(
      'SELECT last_ms AS ms, last_seq AS seq FROM sandboxes ORDER BY last_ms DESC, last_seq DESC LIMIT 1',
    ),
    deleteSandbox: db.prepare<[number, string]>(`DELETE FROM sandboxes WHERE ${stream}`),
  };
}
