import type Database from 'better-sqlite3';
import {
  createStoredEvent,
  eventJsonBytes,
  eventLineMiddle,
  newEventDataText,
  nextEventId,
  setEventOrder,
  type EventId,
  type NewEvent,
  type StoredEvent,
} from '../../event/event.js';
import { maxEventId, notifyListener } from '../semantics.js';
import type { AppendReceipt, DurableEventListener, SandboxRef } from '../types.js';
import type { WalWrites } from './checkpointer.js';
import type { RowSync } from './row-sync.js';
import { EVENT_INSERT_VALUES, type EventInsert, idOf, INSERT_GROUP, type Statements } from './statements.js';
import type { BatchStream, StreamCache } from './stream-cache.js';
import { storeUnavailable } from './unavailable.js';

export interface WriterOptions {
  /** The database file, for error messages. */
  path: string;
  now: () => number;
  /** 0: write on the next event-loop turn; more: wait up to this many ms to gather more. */
  maxDelayMs: number;
  /** Most appends in one transaction; a full batch is written at once. */
  maxBatch: number;
  /**
   * The light-load commit window, in ms (0: none). A batch smaller than TINY_BATCH that comes
   * less than this long after the previous commit waits until this long after it, gathering the
   * events that arrive meanwhile into the same commit. See docs/performance.md, "SQLite under
   * light load".
   */
  commitWindowMs: number;
  /** The retention count limit: streams a commit leaves above it are reported to onOverLimit. */
  maxCount: number;
  /** The retention byte limit (event lines per stream), reported the same way. */
  maxBytes: number;
  /** Highest id the file has committed for any sandbox (also forgotten ones). */
  highWater: EventId | undefined;
  /** The last store order the file issued (docs/protocol.md, "Pattern resume"); 0 for none. */
  lastOrder: number;
  /** After each commit, the streams it left above maxCount or maxBytes. */
  onOverLimit: (streams: readonly SandboxRef[]) => void;
  /**
   * Types issued an id in the batch's order but never inserted (`--ephemeral-types`,
   * docs/operations.md): the sandbox's last id moves, nothing is retained.
   */
  ephemeral?: (type: string) => boolean;
  /** Told of every commit that worked or failed: the store's readiness (write-health.ts). */
  health: { committed(): void; failed(): void };
  /**
   * Called after each batch's listener calls and receipts (committed or refused): the daemon
   * writes the deliveries and replies they queued at once (session/write-path.ts, flushWrites).
   */
  afterBatch?: () => void;
}

interface PendingAppend {
  input: NewEvent;
  receipt: AppendReceipt;
}

/** `append`'s promise, as a receipt (for callers that want one promise per event). */
class PromisedAppend implements AppendReceipt {
  constructor(
    readonly appended: (event: StoredEvent) => void,
    readonly refused: (error: unknown) => void,
  ) {}
}

interface BatchResult {
  events: StoredEvent[];
  /** The state of every stream the batch wrote, as committed. */
  streams: BatchStream[];
  /** The cache's lagging entries whose rows the batch wrote (a row sync), else undefined. */
  synced: BatchStream[] | undefined;
  highWater: EventId | undefined;
  lastOrder: number;
  overLimit: SandboxRef[];
}

/**
 * Batches this small are what the commit window holds back: a commit costs ≈ 40 µs of CPU
 * whatever it holds (docs/performance.md), so under light, steady load it is shared by a few
 * events instead of paid by each; bigger batches already share it and go at once.
 */
const TINY_BATCH = 16;
/** After a commit window that gathered no event, none opens for this long (ms). */
const WINDOW_RETRY_MS = 1_000;

/**
 * Group commit: appends queue up and are written in one transaction per batch, which holds
 * everything one event-loop turn produced (or up to maxDelayMs of it). Ids are assigned inside
 * the transaction from the committed state, so a rolled-back batch leaves no gap and no id
 * anyone saw. Only after the commit does the listener see the events and do their promises
 * resolve, so nothing leaves the broker before it is on disk.
 */
export class GroupCommitWriter {
  /** Transactions committed. */
  batches = 0;
  /** Events committed. */
  appended = 0;
  /** Transactions that failed (their appends were rejected). */
  failedBatches = 0;
  /** Highest id committed for any sandbox (also forgotten ones). */
  highWater: EventId | undefined;
  /** The last store order committed. */
  lastOrder: number;
  private listener: DurableEventListener | undefined;
  private queue: PendingAppend[] = [];
  private flushImmediate: NodeJS.Immediate | undefined;
  private flushTimeout: NodeJS.Timeout | undefined;
  /** performance.now() when the last commit ended; -Infinity before the first. */
  private lastCommitAt = -Infinity;
  /** The commit window's timer is running: when it fires, the batch is written whatever its size. */
  private windowOpen = false;
  /** Appends queued when the window opened, and when to open one again after one that gathered none. */
  private heldBatch = 0;
  private windowRetryAt = -Infinity;
  private readonly writeBatchTx: Database.Transaction<(batch: PendingAppend[]) => BatchResult>;
  /** The values of the events a batch has yet to insert, INSERT_GROUP rows at most. */
  private readonly rowValues: EventInsert[number][] = new Array(INSERT_GROUP * EVENT_INSERT_VALUES).fill(0);

  constructor(
    db: Database.Database,
    private readonly sql: Statements,
    private readonly streamCache: StreamCache,
    private readonly rowSync: RowSync,
    private readonly wal: WalWrites,
    private readonly options: WriterOptions,
  ) {
    this.highWater = options.highWater;
    this.lastOrder = options.lastOrder;
    this.writeBatchTx = db.transaction((batch: PendingAppend[]) => this.writeBatch(batch));
  }

  /** Appends waiting for the next batch. */
  get pending(): number {
    return this.queue.length;
  }

  /** New retention limits (a config reload): commits from now on report against them. */
  setLimits(maxCount: number, maxBytes: number): void {
    this.options.maxCount = maxCount;
    this.options.maxBytes = maxBytes;
  }

  setListener(listener: DurableEventListener): void {
    this.listener = listener;
  }

  append(input: NewEvent): Promise<StoredEvent> {
    return new Promise<StoredEvent>((resolve, reject) => this.appendWith(input, new PromisedAppend(resolve, reject)));
  }

  /** Queues the append; `receipt` is answered when its batch commits (or fails). */
  appendWith(input: NewEvent, receipt: AppendReceipt): void {
    this.queue.push({ input, receipt });
    this.scheduleFlush();
  }

  /** Writes (and announces) everything queued now, in batches; for close. */
  drain(): void {
    this.cancelFlush();
    while (this.queue.length > 0) this.flushBatch();
  }

  private scheduleFlush(): void {
    if (this.flushImmediate !== undefined) return;
    if (this.windowOpen) {
      // The window's timer writes the batch, unless it stops being tiny first.
      if (this.queue.length < TINY_BATCH) return;
      this.cancelFlush();
      this.flushImmediate = setImmediate(this.onFlush);
      return;
    }
    if (this.options.maxDelayMs === 0 || this.queue.length >= this.options.maxBatch) {
      if (this.flushTimeout !== undefined) {
        clearTimeout(this.flushTimeout);
        this.flushTimeout = undefined;
      }
      this.flushImmediate = setImmediate(this.onFlush);
    } else if (this.flushTimeout === undefined) {
      this.flushTimeout = setTimeout(this.onFlush, this.options.maxDelayMs);
    }
  }

  private cancelFlush(): void {
    if (this.flushImmediate !== undefined) clearImmediate(this.flushImmediate);
    if (this.flushTimeout !== undefined) clearTimeout(this.flushTimeout);
    this.flushImmediate = undefined;
    this.flushTimeout = undefined;
    this.windowOpen = false;
  }

  /**
   * Holds a tiny batch for the commit window when commits come close together (light but
   * steady load), so that the next events share its commit; an event after a quiet spell is
   * written at once. True when it did.
   */
  private holdForWindow(): boolean {
    const window = this.options.commitWindowMs;
    if (window <= 0 || this.queue.length >= TINY_BATCH) return false;
    const now = performance.now();
    // A window that gathered nothing (one client awaiting each append) only added a timer:
    // try again only after a while.
    if (now < this.windowRetryAt) return false;
    const wait = this.lastCommitAt + window - now;
    if (wait <= 0) return false;
    this.windowOpen = true;
    this.heldBatch = this.queue.length;
    this.flushTimeout = setTimeout(this.onWindowEnd, wait);
    return true;
  }

  private readonly onWindowEnd = (): void => {
    if (this.queue.length <= this.heldBatch) this.windowRetryAt = performance.now() + WINDOW_RETRY_MS;
    this.onFlushNow();
  };

  /** The next turn after an append: write the batch, or hold it for the commit window. */
  private readonly onFlush = (): void => {
    this.flushImmediate = undefined;
    if (this.flushTimeout === undefined && this.holdForWindow()) return;
    this.onFlushNow();
  };

  private readonly onFlushNow = (): void => {
    this.cancelFlush();
    this.flushBatch();
    // What is left already waited a turn: write it on the next one, letting I/O in between.
    if (this.queue.length > 0) this.flushImmediate = setImmediate(this.onFlushNow);
  };

  private flushBatch(): void {
    const batch = this.queue.splice(0, this.options.maxBatch);
    if (batch.length === 0) return;
    this.wal.beforeWrite();
    let result: BatchResult;
    try {
      result = this.writeBatchTx.immediate(batch);
    } catch (error) {
      // Rolled back: no id of this batch was seen by anyone, and the ids are computed from
      // the committed state inside the transaction, so later appends reissue them.
      this.failedBatches++;
      const failure = storeUnavailable(`could not write ${batch.length} event(s) to ${this.options.path}`, error);
      for (const pending of batch) pending.receipt.refused(failure);
      this.wal.afterWrite(); // a full disk may be a WAL waiting to be checkpointed
      this.options.health.failed();
      this.options.afterBatch?.();
      return;
    }
    this.lastCommitAt = performance.now();
    this.options.health.committed();
    this.highWater = result.highWater;
    this.lastOrder = result.lastOrder;
    this.streamCache.commit(result.streams);
    if (result.synced !== undefined) this.rowSync.synced(result.synced);
    if (result.overLimit.length > 0) this.options.onOverLimit(result.overLimit);
    this.batches++;
    this.wal.afterWrite(result.events.length);
    this.appended += result.events.length;
    for (let i = 0; i < batch.length; i++) {
      notifyListener(this.listener, result.events[i] as StoredEvent, (batch[i] as PendingAppend).input);
    }
    for (let i = 0; i < batch.length; i++)
      (batch[i] as PendingAppend).receipt.appended(result.events[i] as StoredEvent);
    this.options.afterBatch?.();
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
      bytes: row?.bytes ?? 0,
      firstId: row === undefined ? undefined : idOf(row.first_ms, row.first_seq),
      activeAt: 0,
      unsyncedFrom: 0,
    };
  }

  /**
   * Runs inside one transaction: assigns ids from committed state, inserts, and writes the
   * streams' rows that must be written now (row-sync.ts); the others lag until a row sync.
   */
  private writeBatch(batch: PendingAppend[]): BatchResult {
    // Streams by workspace, then sandbox: no key string built per event. `stream` is the last
    // one used, as consecutive events often share a sandbox.
    const byWorkspace = new Map<number, Map<string, BatchStream>>();
    const streams: BatchStream[] = [];
    let stream: BatchStream | undefined;
    // The parts of the event line that repeat (eventLineMiddle, the quoted type), built again
    // only when the sandbox or the type changes from the previous event's.
    let lineMiddle = '';
    let type: string | undefined;
    let typeJson = '';
    let highWater = this.highWater;
    let order = this.lastOrder;
    const events: StoredEvent[] = new Array<StoredEvent>(batch.length);
    const values = this.rowValues;
    let rows = 0;
    const ephemeral = this.options.ephemeral;
    /** Streams given an ephemeral event: only their row keeps its id (row-sync.ts). */
    let unstored: Set<BatchStream> | undefined;
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
            this.streamCache.get(input.workspaceId, input.sandboxId) ??
            this.readStream(input.workspaceId, input.sandboxId);
          inWorkspace.set(input.sandboxId, stream);
          streams.push(stream);
        }
        lineMiddle = eventLineMiddle(input.workspaceId, input.sandboxId);
      }
      if (input.type !== type) {
        type = input.type;
        typeJson = JSON.stringify(type);
      }
      const now = this.options.now();
      // A stream this file has no state for starts above every id ever issued.
      const id = nextEventId(stream.lastId ?? highWater, now);
      const dataJson = newEventDataText(input); // SQLite keeps `data` as text
      const event = createStoredEvent(input, dataJson, id, now, lineMiddle, typeJson);
      stream.lastId = id;
      stream.activeAt = now;
      if (ephemeral?.(input.type) !== true) {
        order += 1;
        const at = rows * EVENT_INSERT_VALUES;
        values[at] = input.workspaceId;
        values[at + 1] = input.sandboxId;
        values[at + 2] = id.ms;
        values[at + 3] = id.seq;
        values[at + 4] = input.type;
        values[at + 5] = now;
        values[at + 6] = dataJson;
        values[at + 7] = order;
        if (++rows === INSERT_GROUP) {
          this.sql.insertEvents.run(values);
          rows = 0;
        }
        setEventOrder(event, order);
        stream.retained++;
        stream.bytes += eventJsonBytes(event); // counted once: the fan-out frames the line by it
        stream.firstId ??= id;
        if (stream.unsyncedFrom === 0) stream.unsyncedFrom = order;
      } else {
        unstored ??= new Set();
        unstored.add(stream);
      }
      highWater = maxEventId(highWater, id);
      events[i] = event;
    }
    for (let row = 0; row < rows; row++) {
      const at = row * EVENT_INSERT_VALUES;
      this.sql.insertEvent.run(...(values.slice(at, at + EVENT_INSERT_VALUES) as EventInsert));
    }
    values.fill(0); // holds no payload past its batch
    const { maxCount, maxBytes } = this.options;
    const syncing = this.rowSync.rowsToSync(batch.length);
    const overLimit: SandboxRef[] = [];
    for (const s of streams) {
      const last = s.lastId as EventId;
      const first = s.firstId;
      if (!s.existed) {
        this.sql.insertSandbox.run(
          s.workspaceId,
          s.sandboxId,
          last.ms,
          last.seq,
          s.retained,
          first?.ms ?? null,
          first?.seq ?? null,
          s.activeAt,
          s.bytes,
        );
        s.unsyncedFrom = 0;
      } else if (!s.hadFirst && first !== undefined) {
        this.sql.updateSandboxFirst.run(
          last.ms,
          last.seq,
          s.retained,
          first.ms,
          first.seq,
          s.activeAt,
          s.bytes,
          s.workspaceId,
          s.sandboxId,
        );
        s.unsyncedFrom = 0;
      } else if (unstored?.has(s) === true || (syncing !== undefined && this.rowSync.syncs(s))) {
        // A row that must be written, or one the row sync writes now.
        this.rowSync.writeRow(s);
        s.unsyncedFrom = 0;
      } // else its row lags from s.unsyncedFrom
      if (s.retained > maxCount || s.bytes > maxBytes) overLimit.push(s);
    }
    // The row sync's other rows for this commit; this batch's streams it wrote above.
    const synced =
      syncing === undefined
        ? undefined
        : this.rowSync.writeRows(syncing, (entry) => byWorkspace.get(entry.workspaceId)?.has(entry.sandboxId) === true);
    return { events, streams, synced, highWater, lastOrder: order, overLimit };
  }
}
