import type Database from 'better-sqlite3';
import { compareEventIds, type EventId } from '../../event/event.js';
import { ageCutoff, EVERY_TYPE, maxEventId, RetentionClasses, sandboxKey } from '../semantics.js';
import type { RetentionPolicy, SandboxRef } from '../types.js';
import type { WalWrites } from './checkpointer.js';
import {
  idOf,
  prunedIdMarks,
  prunedOrderMarks,
  type Ref,
  type SandboxRow,
  type Statements,
  type TypedRow,
} from './statements.js';
import type { RowSync } from './row-sync.js';
import type { StreamCache } from './stream-cache.js';

/** What one sandbox's part of a step deleted, and whether it has more to go. */
interface PruneStep {
  deleted: number;
  more: boolean;
}

export interface RetentionOptions {
  policy: RetentionPolicy;
  now: () => number;
  /** Most rows one step deletes in one transaction. */
  batchSize: number;
}

/** Rows per query when retention looks for sandboxes to prune. */
const PRUNE_PAGE = 64;
/** Retention yields to the event loop after working this long. */
const PRUNE_SLICE_MS = 4;
/**
 * Most sandboxes one step prunes together, each by its share of batchSize. Sandboxes written in
 * turn have their oldest events side by side in the store order, so their entries share the
 * pages of `events_by_order`: a step per sandbox rewrote each such page once per sandbox, a step
 * over ten of them once per ten (100 sandboxes written in turn, 1,000 events pruned from each:
 * 0.22 WAL frames and 2.4 µs of CPU per deleted event one by one, 0.07 and 1.3 ten at a time;
 * docs/performance.md, "Eleventh round: SQLite's tail in case 4").
 */
const PRUNE_GROUP = 10;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Deletes what the retention policy no longer keeps: events past the count or byte limit (only
 * in sandboxes a commit left above one), events past the age limit (oldest sandboxes first), then
 * the rows of sandboxes with nothing retained and no append for longer than the age limit
 * (their last ids go to high_water, so ids keep increasing). It works in small transactions
 * and yields to the event loop between them, on a timer and on demand.
 */
export class Retention {
  /** Events deleted. */
  pruned = 0;
  /** Background runs that failed. */
  pruneErrors = 0;
  /** Sandboxes that had more than maxCount events, or maxBytes of them, at their last commit. */
  private readonly overLimit = new Map<string, Ref>();
  private running: Promise<number> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /**
   * One step over a few sandboxes (at most `limit` events of each), in a transaction that first
   * brings the rows in step (row-sync.ts).
   */
  private readonly pruneStepTx: (refs: readonly Ref[], limit: number) => PruneStep[];
  private readonly dropIdleTx: (cutoff: number) => number;
  /** The `--retention` rules' classes, fixed when the store opened. */
  private readonly classes: RetentionClasses;

  constructor(
    db: Database.Database,
    private readonly sql: Statements,
    private readonly streamCache: StreamCache,
    private readonly rowSync: RowSync,
    private readonly wal: WalWrites,
    private readonly options: RetentionOptions,
  ) {
    this.classes = new RetentionClasses(options.policy.rules ?? []);
    this.pruneStepTx = rowSync.inSyncedTransaction(db, (refs: readonly Ref[], limit: number) =>
      refs.map((ref) => (this.classes.perType ? this.pruneStepByClass(ref, limit) : this.pruneStep(ref, limit))),
    );
    this.dropIdleTx = rowSync.inSyncedTransaction(db, (cutoff: number) => this.dropIdle(cutoff));
    // Retention state lives in the file; only "over the count or byte limit" is tracked in
    // memory, so find those left from before a restart once.
    this.findOverLimit();
  }

  /**
   * New limits (a config reload): from the next step on. A lowered count or byte limit makes
   * sandboxes that no commit touched since over it too, so they are looked up again.
   */
  setPolicy(policy: RetentionPolicy): void {
    this.options.policy = policy;
    try {
      this.rowSync.syncNow(); // the query below reads the rows' counts
    } catch {
      // A write failed (a full disk, say): rows that lag count less here, and their streams
      // are reported by their next commit instead (the writer checks the new limits too).
    }
    this.findOverLimit();
  }

  private findOverLimit(): void {
    const { maxBytes = Infinity } = this.options.policy;
    for (const row of this.sql.overLimitSandboxes.all(smallestCount(this.options.policy), maxBytes)) {
      this.overLimit.set(sandboxKey({ workspaceId: row.workspace_id, sandboxId: row.sandbox_id }), [
        row.workspace_id,
        row.sandbox_id,
      ]);
    }
  }

  /** Runs retention in the background every intervalMs (0: only when prune() is called). */
  start(intervalMs: number): void {
    if (intervalMs <= 0 || this.stopped) return;
    this.timer = setInterval(this.onTimer, intervalMs);
    this.timer.unref();
  }

  /** After a commit: these streams hold more than the count or byte limit. */
  readonly noteOverLimit = (streams: readonly SandboxRef[]): void => {
    for (const ref of streams) this.overLimit.set(sandboxKey(ref), [ref.workspaceId, ref.sandboxId]);
  };

  /**
   * Runs retention to the end now, after any run in progress. Resolves with the number of
   * events pruned.
   */
  prune(): Promise<number> {
    const previous = this.running ?? Promise.resolve(0);
    const run = previous.catch(() => 0).then(() => this.pruneAll());
    this.running = run;
    const clear = (): void => {
      if (this.running === run) this.running = undefined;
    };
    run.then(clear, clear);
    return run;
  }

  /** No more runs; a run in progress checks this after every step and stops. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  private readonly onTimer = (): void => {
    if (this.running !== undefined || this.stopped) return;
    this.prune().catch(() => {
      this.pruneErrors++;
    });
  };

  private async pruneAll(): Promise<number> {
    const { policy, now } = this.options;
    let deleted = 0;
    let sliceStart = performance.now();
    const pause = async (): Promise<void> => {
      if (performance.now() - sliceStart >= PRUNE_SLICE_MS) {
        await yieldToLoop();
        sliceStart = performance.now();
      }
    };
    /**
     * Prunes `refs` to the end, in steps over PRUNE_GROUP of them at a time, going round them
     * until none has more to go; `open` is false when retention stopped meanwhile. After an
     * error, `unfinished` is given the sandboxes it had not finished.
     */
    const pruneSandboxes = async (
      refs: readonly Ref[],
      unfinished?: (refs: readonly Ref[]) => void,
    ): Promise<{ open: boolean; deleted: number }> => {
      // Under `--retention` rules a step reads every event of its sandbox: a share of batchSize
      // would only read them more often.
      const groupSize = this.classes.perType ? 1 : PRUNE_GROUP;
      let count = 0;
      let round = refs;
      while (round.length > 0) {
        const next: Ref[] = [];
        for (let at = 0; at < round.length; at += groupSize) {
          if (this.stopped) return { open: false, deleted: count };
          const group = round.slice(at, at + groupSize);
          let steps: PruneStep[];
          this.wal.beforeWrite();
          try {
            steps = this.pruneStepTx(group, Math.ceil(this.options.batchSize / group.length));
          } catch (error) {
            unfinished?.([...round.slice(at), ...next]);
            throw error;
          } finally {
            this.wal.afterWrite();
          }
          for (let i = 0; i < group.length; i++) {
            const [ws, sb] = group[i] as Ref;
            const step = steps[i] as PruneStep;
            // The step may have changed the row: the next batch rereads it. Only once
            // committed, as the entry may hold what a rolled-back row sync did not write.
            this.streamCache.forget(ws, sb);
            count += step.deleted;
            this.pruned += step.deleted;
            if (step.more) next.push([ws, sb]);
          }
          await pause();
        }
        round = next;
      }
      return { open: true, deleted: count };
    };

    // Count and byte limits: only sandboxes a commit left above one. Those a commit leaves
    // above one meanwhile are pruned in the next round of this loop.
    while (this.overLimit.size > 0) {
      const refs = [...this.overLimit.values()];
      this.overLimit.clear();
      const done = await pruneSandboxes(refs, (left) => {
        for (const ref of left) this.overLimit.set(sandboxKey({ workspaceId: ref[0], sandboxId: ref[1] }), ref); // try again next run
      });
      deleted += done.deleted;
      if (!done.open) return deleted;
    }

    // Age limit: sandboxes whose oldest event is past it, oldest first.
    for (;;) {
      if (this.stopped) return deleted;
      const page = this.sql.agedSandboxes.all(ageCutoff(policy, now()), PRUNE_PAGE);
      if (page.length === 0) break;
      const done = await pruneSandboxes(page.map((row): Ref => [row.workspace_id, row.sandbox_id]));
      deleted += done.deleted;
      if (!done.open) return deleted;
      if (done.deleted === 0) break; // nothing movable (pruneStep repairs stale rows): don't spin
    }

    // Forget sandboxes with nothing retained and no append for longer than the age limit.
    for (;;) {
      if (this.stopped) return deleted;
      this.wal.beforeWrite();
      const dropped = this.dropIdleTx(ageCutoff(policy, now()));
      this.wal.afterWrite();
      if (dropped < PRUNE_PAGE) break;
      await pause();
    }
    return deleted;
  }

  /**
   * One sandbox's part of a retention step: deletes at most `limit` of its oldest events past
   * the count, byte or age limit, and records the highest deleted id.
   */
  private pruneStep([ws, sb]: Ref, limit: number): PruneStep {
    const { policy } = this.options;
    const maxBytes = policy.maxBytes ?? Infinity;
    const row = this.sql.getSandbox.get(ws, sb);
    if (row === undefined) return { deleted: 0, more: false };
    const cutoff = ageCutoff(policy, this.options.now());
    let through: EventId | undefined;
    const excess = row.retained - policy.maxCount;
    if (excess > 0) through = this.sql.nthOldestId.get(ws, sb, Math.min(excess, limit) - 1);
    if (row.bytes > maxBytes)
      through = maxEventId(through, this.bytesCut([ws, sb], row.bytes - maxBytes, row.retained, limit));
    if (row.first_ms !== null && row.first_ms < cutoff) {
      let aged = this.sql.newestIdBefore.get(ws, sb, cutoff);
      const cap = this.sql.nthOldestId.get(ws, sb, limit - 1);
      if (aged !== undefined && cap !== undefined && compareEventIds(cap, aged) < 0) aged = cap;
      through = maxEventId(through, aged);
    }
    let deleted = 0;
    let freed = 0;
    if (through !== undefined) {
      const doomed = this.sql.bytesAndOrderThrough.get(ws, sb, through.ms, through.seq);
      freed = doomed?.bytes ?? 0;
      // What a pattern resume below it must be told is gone (docs/protocol.md, "Pattern resume").
      const pruned = doomed?.ord;
      if (pruned !== null && pruned !== undefined) {
        this.sql.notePruned.run(ws, pruned);
        this.sql.notePrunedOrderType.run(ws, EVERY_TYPE, pruned);
      }
      // Marks of every type, so that rules added at a later start judge resumes right.
      this.sql.notePrunedType.run(ws, sb, EVERY_TYPE, through.ms, through.seq);
      deleted = this.sql.deleteThrough.run(ws, sb, through.ms, through.seq).changes;
    } else if (row.first_ms === null || row.first_ms >= cutoff) return { deleted: 0, more: false };
    const trimmed = maxEventId(idOf(row.trimmed_ms, row.trimmed_seq), through);
    const { first, retained, bytes } = this.recordPruned(ws, sb, row, deleted, freed, trimmed);
    const more =
      deleted > 0 && (retained > policy.maxCount || bytes > maxBytes || (first !== undefined && first.ms < cutoff));
    return { deleted, more };
  }

  /**
   * After a step deleted `deleted` events (`freed` bytes) of a sandbox: its row's count, bytes,
   * first and trimmed-through ids. Recounted from the file when the stream emptied, so a drifted
   * count heals itself.
   */
  private recordPruned(
    ws: number,
    sb: string,
    row: SandboxRow,
    deleted: number,
    freed: number,
    trimmed: EventId | undefined,
  ): { first: EventId | undefined; retained: number; bytes: number } {
    const first = this.sql.oldestId.get(ws, sb);
    const retained = first === undefined ? 0 : Math.max(1, row.retained - deleted);
    const bytes = first === undefined ? 0 : Math.max(0, row.bytes - freed);
    this.sql.updatePruned.run(
      retained,
      bytes,
      first?.ms ?? null,
      first?.seq ?? null,
      trimmed?.ms ?? null,
      trimmed?.seq ?? null,
      ws,
      sb,
    );
    return { first, retained, bytes };
  }

  /**
   * One sandbox's retention step under `--retention` rules: each class of types is kept to its
   * own count, and within the byte and age limits on its own, so its oldest events go and no
   * other class's. Reads the sandbox's ids and types newest first (its bytes too only when the
   * sandbox holds more than the byte limit, so a class may), deletes at most `limit` of what no
   * class keeps, oldest first, and raises the per-type marks resumes are judged by.
   */
  private pruneStepByClass([ws, sb]: Ref, limit: number): PruneStep {
    const { policy } = this.options;
    const maxBytes = policy.maxBytes ?? Infinity;
    const row = this.sql.getSandbox.get(ws, sb);
    if (row === undefined) return { deleted: 0, more: false };
    const cutoff = ageCutoff(policy, this.options.now());
    const sized = row.bytes > maxBytes;
    const rows = (sized ? this.sql.eventTypeSizesDesc : this.sql.eventTypesDesc).all(ws, sb) as unknown as TypedRow[];
    const { classes } = this;
    const kept = new Array<number>(classes.count).fill(0);
    const keptBytes = new Array<number>(classes.count).fill(0);
    const closed = new Array<boolean>(classes.count).fill(false);
    const doomed: TypedRow[] = [];
    for (const event of rows) {
      const [ms, , type, , bytes] = event;
      const k = classes.classOf(type);
      // Once a class drops an event, it drops every older one: pruning within a class is a prefix.
      const drop =
        closed[k] ||
        ms < cutoff ||
        kept[k]! >= classes.maxCount(k, policy) ||
        (kept[k]! >= 1 && keptBytes[k]! + bytes > maxBytes);
      if (drop) {
        closed[k] = true;
        doomed.push(event);
      } else {
        kept[k]! += 1;
        keptBytes[k]! += bytes;
      }
    }
    if (doomed.length === 0) return { deleted: 0, more: false };
    const batch = doomed.slice(Math.max(0, doomed.length - limit));
    const marks = prunedIdMarks(this.sql, ws, sb);
    const orderMarks = prunedOrderMarks(this.sql.prunedOrderTypes.all(ws));
    let trimmed = idOf(row.trimmed_ms, row.trimmed_seq);
    let freed = 0;
    let maxOrder = 0;
    for (const [ms, seq, type, order, bytes] of batch) {
      freed += sized ? bytes : (this.sql.eventBytes.get(ws, sb, ms, seq)?.bytes ?? 0);
      this.sql.deleteEvent.run(ws, sb, ms, seq);
      const id = { ms, seq };
      trimmed = maxEventId(trimmed, id);
      marks.note(type, id);
      if (order !== null) {
        orderMarks.note(type, order);
        maxOrder = Math.max(maxOrder, order);
      }
    }
    if (maxOrder > 0) this.sql.notePruned.run(ws, maxOrder);
    this.sql.clearPrunedTypes.run(ws, sb);
    for (const [type, id] of marks.entries()) this.sql.putPrunedType.run(ws, sb, type, id.ms, id.seq);
    this.sql.clearPrunedOrderTypes.run(ws);
    for (const [type, order] of orderMarks.entries()) this.sql.putPrunedOrderType.run(ws, type, order);
    this.recordPruned(ws, sb, row, batch.length, freed, trimmed);
    return { deleted: batch.length, more: doomed.length > batch.length };
  }

  /**
   * The id through which the oldest events of a stream go so that at least `excess` bytes of
   * event lines leave: within the `limit` oldest, and never the stream's newest event.
   */
  private bytesCut([ws, sb]: Ref, excess: number, retained: number, limit: number): EventId | undefined {
    const rows = this.sql.oldestSizes.all(ws, sb, Math.min(limit, retained - 1));
    let freed = 0;
    let through: EventId | undefined;
    for (const row of rows) {
      through = { ms: row.ms, seq: row.seq };
      freed += row.bytes;
      if (freed >= excess) break;
    }
    return through;
  }

  private dropIdle(cutoff: number): number {
    const rows = this.sql.idleSandboxes.all(cutoff, PRUNE_PAGE);
    let forgotten = this.sql.getHighWater.get();
    for (const row of rows) {
      forgotten = maxEventId(forgotten, { ms: row.last_ms, seq: row.last_seq });
      this.streamCache.forget(row.workspace_id, row.sandbox_id);
      this.sql.deleteSandbox.run(row.workspace_id, row.sandbox_id);
      this.sql.clearPrunedTypes.run(row.workspace_id, row.sandbox_id);
    }
    if (forgotten !== undefined) this.sql.setHighWater.run(forgotten.ms, forgotten.seq);
    return rows.length;
  }
}

/**
 * The count over which a sandbox may have a class to prune: the smallest of the rules' counts
 * and the policy's own (the policy's own without rules). The writer reports sandboxes above it.
 */
export function smallestCount(policy: RetentionPolicy): number {
  let count = policy.maxCount;
  for (const rule of policy.rules ?? []) count = Math.min(count, rule.maxCount);
  return count;
}
