import type { EventId } from '../../event/event.js';

/** A stream's state while one batch is being written; as committed, once the batch is. */
export interface BatchStream {
  workspaceId: number;
  sandboxId: string;
  /** The stream has a row in `sandboxes`. */
  existed: boolean;
  /** That row has an oldest id (first_ms), so an append need not set it. */
  hadFirst: boolean;
  lastId: EventId | undefined;
  retained: number;
  /** Bytes of the retained event lines (byte retention). */
  bytes: number;
  firstId: EventId | undefined;
  activeAt: number;
  /**
   * The store order of the first event its row in `sandboxes` does not count, 0 while the row
   * is in step: a commit that did not write the row (row-sync.ts says when that is allowed and
   * how the row catches up) leaves it lagging from there. A crash leaves the row to be counted
   * again from its events above rows_synced, so a row sync records at most this order - 1 there
   * while the row lags.
   */
  unsyncedFrom: number;
}

/**
 * The committed state of the streams batches wrote, by workspace then sandbox, so a batch
 * reads a stream's row only the first time. It is right only while its connection is the file's
 * only writer. Entries are replaced only after a commit (commit), so a rolled-back batch leaves
 * them as they were; retention, which changes rows, removes the entries it touches (forget),
 * once their rows are in step.
 *
 * Where an entry is `lagging`, it is the only up-to-date copy of the stream's state while the
 * process runs (its row catches up at the next row sync, row-sync.ts): readers of the row take
 * the last id from here (lastId).
 *
 * It holds only streams that retain events: at most one entry (about 200 bytes) per stream whose
 * events are on disk, so it grows with what the file holds and shrinks as retention prunes
 * (pruning forgets the entry). A stream with nothing retained (ephemeral events only) is read
 * again by the next batch that writes it. A fixed cap made the writer reread every row once traffic spread over more
 * streams than the cap (starting over before a stream came round again): one more point read
 * per stream and commit (docs/performance.md, "Per-sandbox cost").
 */
export class StreamCache {
  private readonly byWorkspace = new Map<number, Map<string, BatchStream>>();
  private count = 0;
  /**
   * The entries whose rows lag them, oldest first (ascending unsyncedFrom: the first is what a
   * row sync records in rows_synced). An entry joins when its stream starts lagging and stays in
   * place while it lags (commit updates it in place). Entries join in their batch's order of
   * first appearance, which is also the order of their unsyncedFrom: a stream that lags after a
   * batch had no ephemeral event in it (the row is written otherwise), so its first event in the
   * batch is its first uncounted one.
   */
  private readonly laggingEntries = new Set<BatchStream>();
  private lagListener: ((entry: BatchStream) => void) | undefined;

  /** Streams held. */
  get size(): number {
    return this.count;
  }

  /** Entries whose rows lag them. */
  get laggingCount(): number {
    return this.laggingEntries.size;
  }

  /** `listener` is told of each entry that starts lagging (the row sync's, row-sync.ts). */
  onLagging(listener: (entry: BatchStream) => void): void {
    this.lagListener = listener;
  }

  /** The entry itself (to tell it among others: not to change). */
  entry(workspaceId: number, sandboxId: string): BatchStream | undefined {
    return this.byWorkspace.get(workspaceId)?.get(sandboxId);
  }

  /** A copy of a stream's committed state, for a batch to change, when the cache has it. */
  get(workspaceId: number, sandboxId: string): BatchStream | undefined {
    const cached = this.byWorkspace.get(workspaceId)?.get(sandboxId);
    if (cached === undefined) return undefined;
    return {
      workspaceId,
      sandboxId,
      existed: true,
      hadFirst: cached.firstId !== undefined,
      lastId: cached.lastId,
      retained: cached.retained,
      bytes: cached.bytes,
      firstId: cached.firstId,
      activeAt: cached.activeAt,
      unsyncedFrom: cached.unsyncedFrom,
    };
  }

  /** A stream's last committed id when the cache has it (its row may lag it). */
  lastId(workspaceId: number, sandboxId: string): EventId | undefined {
    return this.byWorkspace.get(workspaceId)?.get(sandboxId)?.lastId;
  }

  /**
   * The entries whose rows lag them, oldest first (ascending unsyncedFrom; live: mark them with
   * synced, not while iterating).
   */
  lagging(): Iterable<BatchStream> {
    return this.laggingEntries;
  }

  /** After a commit: what the batch wrote is now each stream's committed state. */
  commit(streams: readonly BatchStream[]): void {
    for (const s of streams) {
      if (s.retained === 0) {
        this.forget(s.workspaceId, s.sandboxId);
        continue;
      }
      let inWorkspace = this.byWorkspace.get(s.workspaceId);
      if (inWorkspace === undefined) {
        inWorkspace = new Map();
        this.byWorkspace.set(s.workspaceId, inWorkspace);
      }
      const previous = inWorkspace.get(s.sandboxId);
      if (previous === undefined) {
        this.count++;
        inWorkspace.set(s.sandboxId, s);
        if (s.unsyncedFrom !== 0) this.startsLagging(s);
        continue;
      }
      // In place, so that an entry lagging still keeps its place among the lagging ones.
      if (previous.unsyncedFrom === 0) {
        if (s.unsyncedFrom !== 0) this.startsLagging(previous);
      } else if (s.unsyncedFrom === 0) this.laggingEntries.delete(previous);
      previous.lastId = s.lastId;
      previous.retained = s.retained;
      previous.bytes = s.bytes;
      previous.firstId = s.firstId;
      previous.activeAt = s.activeAt;
      previous.unsyncedFrom = s.unsyncedFrom;
    }
  }

  private startsLagging(entry: BatchStream): void {
    this.laggingEntries.add(entry);
    this.lagListener?.(entry);
  }

  /** After the commit that wrote these entries' rows: they no longer lag. */
  synced(entries: readonly BatchStream[]): void {
    for (const entry of entries) {
      entry.unsyncedFrom = 0;
      this.laggingEntries.delete(entry);
    }
  }

  /**
   * Before a change to a stream's row outside a batch: the next batch rereads it. Only for a
   * stream whose row is in step (a committed row sync wrote it): its state is then in the file.
   */
  forget(workspaceId: number, sandboxId: string): void {
    const inWorkspace = this.byWorkspace.get(workspaceId);
    const entry = inWorkspace?.get(sandboxId);
    if (inWorkspace === undefined || entry === undefined) return;
    inWorkspace.delete(sandboxId);
    this.laggingEntries.delete(entry);
    entry.unsyncedFrom = 0; // no row sync that still holds it writes it
    this.count--;
    if (inWorkspace.size === 0) this.byWorkspace.delete(workspaceId); // or one empty map per workspace ever seen stays
  }
}
