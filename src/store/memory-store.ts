import {
  compareEventIds,
  createStoredEvent,
  nextEventId,
  type EventId,
  type NewEvent,
  type StoredEvent,
} from '../event/event.js';
import {
  ageCutoff,
  buildReplayResult,
  checkLimit,
  checkRetention,
  historyFloor,
  matchesHistoryFilters,
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

export interface MemoryStoreOptions {
  retention: RetentionPolicy;
  now?: () => number;
  /** How often age retention runs and idle sandboxes are forgotten; 0 disables the timer. */
  pruneIntervalMs?: number;
}

export interface MemoryStoreStats {
  appended: number;
  pruned: number;
  sandboxes: number;
}

/** FIFO of events with O(1) push/shift and indexed access, grown by doubling on demand. */
class EventRing {
  private buffer: (StoredEvent | undefined)[] = new Array<StoredEvent | undefined>(8);
  private head = 0;
  length = 0;

  push(event: StoredEvent): void {
    if (this.length === this.buffer.length) this.grow();
    this.buffer[(this.head + this.length) & (this.buffer.length - 1)] = event;
    this.length++;
  }

  shift(): StoredEvent {
    const event = this.at(0);
    this.buffer[this.head] = undefined; // let the event be collected
    this.head = (this.head + 1) & (this.buffer.length - 1);
    this.length--;
    return event;
  }

  at(index: number): StoredEvent {
    return this.buffer[(this.head + index) & (this.buffer.length - 1)] as StoredEvent;
  }

  /** Index of the first event whose id is >= `id` (length when none). */
  lowerBound(id: EventId): number {
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareEventIds(this.at(mid).id, id) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private grow(): void {
    const next = new Array<StoredEvent | undefined>(this.buffer.length * 2);
    for (let i = 0; i < this.length; i++) next[i] = this.at(i);
    this.buffer = next;
    this.head = 0;
  }
}

interface MemoryStream {
  events: EventRing;
  lastId: EventId;
  trimmedThrough?: EventId;
  /** now() of the last append; a stream with no events that is idle past the age limit is dropped. */
  activeAt: number;
}

/**
 * Events in process memory: a bounded ring per sandbox. Nothing survives a restart; ids stay
 * strictly increasing within the process, also for a sandbox whose state was dropped, because
 * new streams start above the store-wide high-water id.
 */
export class MemoryStore implements EventStore {
  readonly kind = 'memory';
  private readonly retention: RetentionPolicy;
  private readonly now: () => number;
  private readonly streams = new Map<string, MemoryStream>();
  /** Highest id issued in this process, for any sandbox. */
  private highWater: EventId | undefined;
  private listener: DurableEventListener | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private appended = 0;
  private pruned = 0;

  constructor(options: MemoryStoreOptions) {
    this.retention = checkRetention(options.retention);
    this.now = options.now ?? Date.now;
    const interval = options.pruneIntervalMs ?? 5_000;
    if (interval > 0) {
      this.pruneTimer = setInterval(() => this.pruneAll(), interval);
      this.pruneTimer.unref();
    }
  }

  setListener(listener: DurableEventListener): void {
    this.listener = listener;
  }

  append(input: NewEvent): Promise<StoredEvent> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    let event: StoredEvent;
    try {
      const now = this.now();
      const key = sandboxKey(input);
      let stream = this.streams.get(key);
      const id = nextEventId(stream?.lastId ?? this.highWater, now);
      event = createStoredEvent(input, id, now);
      if (stream === undefined) {
        stream = { events: new EventRing(), lastId: id, activeAt: now };
        this.streams.set(key, stream);
      }
      stream.events.push(event);
      stream.lastId = id;
      stream.activeAt = now;
      this.highWater = maxEventId(this.highWater, id);
      this.appended++;
      // The count limit bounds memory at once; age is left to prune(), as in the SQLite store,
      // so that both stores answer alike.
      this.trim(stream, -Infinity);
    } catch (error) {
      return Promise.reject(error);
    }
    // Memory is as durable as this store gets: notify at once, then resolve.
    notifyListener(this.listener, event, input);
    return Promise.resolve(event);
  }

  history(query: HistoryQuery): Promise<StoredEvent[]> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      const limit = checkLimit(query.limit);
      const events = this.streams.get(sandboxKey(query))?.events;
      if (events === undefined) return Promise.resolve([]);
      const from = events.lowerBound(historyFloor(query));
      const out: StoredEvent[] = [];
      if (query.newest === true) {
        for (let i = events.length - 1; i >= from && out.length < limit; i--) {
          const event = events.at(i);
          if (matchesHistoryFilters(event, query)) out.push(event);
        }
        out.reverse();
      } else {
        for (let i = from; i < events.length && out.length < limit; i++) {
          const event = events.at(i);
          if (matchesHistoryFilters(event, query)) out.push(event);
        }
      }
      return Promise.resolve(out);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  replayAfter(ref: SandboxRef, afterId: EventId, limit: number): Promise<ReplayResult> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      checkLimit(limit);
      const stream = this.streams.get(sandboxKey(ref));
      if (stream === undefined) {
        return Promise.resolve(
          buildReplayResult([], afterId, { highWater: this.highWater, afterIdRetained: false }),
        );
      }
      const { events } = stream;
      const from = events.lowerBound({ ms: afterId.ms, seq: afterId.seq + 1 });
      const out: StoredEvent[] = [];
      for (let i = from; i < events.length && out.length < limit; i++) out.push(events.at(i));
      return Promise.resolve(
        buildReplayResult(out, afterId, {
          lastId: stream.lastId,
          trimmedThrough: stream.trimmedThrough,
          earliestId: events.length > 0 ? events.at(0).id : undefined,
          highWater: this.highWater,
          afterIdRetained: from > 0 && compareEventIds(events.at(from - 1).id, afterId) === 0,
        }),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Applies retention to every sandbox now and forgets idle empty ones (the timer does this
   * too). Resolves with the number of events pruned.
   */
  prune(): Promise<number> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    return Promise.resolve(this.pruneAll());
  }

  stats(): MemoryStoreStats {
    return { appended: this.appended, pruned: this.pruned, sandboxes: this.streams.size };
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      clearInterval(this.pruneTimer);
      this.streams.clear();
    }
    return Promise.resolve();
  }

  private pruneAll(): number {
    const cutoff = ageCutoff(this.retention, this.now());
    let count = 0;
    for (const [key, stream] of this.streams) {
      count += this.trim(stream, cutoff);
      if (stream.events.length === 0 && stream.activeAt < cutoff) this.streams.delete(key);
    }
    return count;
  }

  /** Drops the oldest events past the count or age limit; always a prefix of the stream. */
  private trim(stream: MemoryStream, cutoff: number): number {
    const { events } = stream;
    let count = 0;
    while (
      events.length > 0 &&
      (events.length > this.retention.maxCount || events.at(0).id.ms < cutoff)
    ) {
      stream.trimmedThrough = events.shift().id;
      count++;
    }
    this.pruned += count;
    return count;
  }
}
