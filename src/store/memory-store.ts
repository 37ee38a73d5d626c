import {
  compareEventIds,
  createStoredEvent,
  eventLineHead,
  eventLineMiddle,
  newEventDataText,
  nextEventId,
  setEventOrder,
  type EventId,
  type NewEvent,
  type StoredEvent,
  StoredEventRecord,
} from '../event/event.js';
import {
  ageCutoff,
  buildReplayResult,
  checkLimit,
  checkRetention,
  ephemeralMatcher,
  historyFloor,
  maxEventId,
  notifyListener,
  pagesOfIds,
  PrunedByType,
  RetentionClasses,
  storeClosedError,
} from './semantics.js';
import { SandboxEventsError } from '../errors.js';
import { AppendClock } from './append-clock.js';
import { EventRing, RingContext } from './event-ring.js';
import { classifyWorkspaceReplay, mergeByOrder, OrderColumn, type OrderedStream } from './workspace-order.js';
import type {
  AppendReceipt,
  DurableEventListener,
  EventStore,
  HistoryPages,
  HistoryQuery,
  ReaderTypes,
  ReplayResult,
  RetentionPolicy,
  SandboxListing,
  SandboxRef,
  WorkspaceReplay,
} from './types.js';

export interface MemoryStoreOptions {
  retention: RetentionPolicy;
  /**
   * Bytes of event lines the whole store keeps, over all sandboxes (`--memory-store-max`).
   * Past it, the oldest events of the least recently active sandboxes go first, down to
   * EVICT_TO of the budget. Default: Infinity (the CLI sizes it to the machine).
   */
  maxTotalBytes?: number;
  now?: () => number;
  /** How often age retention runs and idle sandboxes are forgotten; 0 disables the timer. */
  pruneIntervalMs?: number;
}

export interface MemoryStoreStats {
  appended: number;
  /** Events dropped by retention (count, age, bytes) and by the store's total budget. */
  pruned: number;
  /** Of `pruned`, those dropped to keep the store under its total budget. */
  evicted: number;
  sandboxes: number;
  /** Bytes of the retained events' lines, all sandboxes. */
  retainedBytes: number;
}

/**
 * An eviction pass for the total budget goes this far below it, so that the sort of sandboxes
 * by activity it needs happens once per few percent of the budget appended, not on every append.
 */
export const EVICT_TO = 0.95;

/**
 * The retained events of one retention class of a sandbox (all of them without `--retention`
 * rules), oldest first, with their store orders in step (docs/protocol.md, "Pattern resume").
 */
class StreamPart implements OrderedStream {
  readonly orders = new OrderColumn();

  constructor(readonly events: EventRing) {}

  eventAt(index: number): StoredEventRecord {
    return this.events.eventAt(index);
  }
}

/** The highest store order pruned from one workspace (0: none yet). */
interface PrunedOrderMark {
  order: number;
}

/** An event of a sandbox by where it is: a part and an index in it. */
interface EventPlace {
  part: StreamPart;
  index: number;
}

/** Orders places by event id: each part is in id order, so a sort merges them. */
function compareByEventId(a: EventPlace, b: EventPlace): number {
  return (
    a.part.events.msAt(a.index) - b.part.events.msAt(b.index) ||
    a.part.events.seqAt(a.index) - b.part.events.seqAt(b.index)
  );
}

/** One sandbox's stream: its retained events and what replay needs to know about it. */
class MemoryStream {
  /**
   * One part per retention class (RetentionClasses; a single one without rules), made when its
   * class gets its first event. Each is pruned on its own, so one class never evicts another.
   */
  readonly parts: (StreamPart | undefined)[] = [];
  /** Highest id pruned from this sandbox, of any class, as two numbers (NaN ms: nothing was). */
  trimmedMs = NaN;
  trimmedSeq = 0;
  /** With `--retention` rules: the highest id pruned of each type (a filtered resume reads it). */
  prunedTypes: PrunedByType<EventId> | undefined;
  /** The store's mark of the highest order pruned from this sandbox's workspace, once one was. */
  prunedOrder: PrunedOrderMark | undefined;

  /** The part of every event line of this sandbox that names it (eventLineMiddle). */
  readonly lineMiddle: string;
  /**
   * The type of the sandbox's last event, it quoted, and its line's bytes between id and data
   * (eventLineHead): a sandbox mostly repeats a type.
   */
  private lastType: string | undefined = undefined;
  private lastTypeJson = '""';
  private lastLineHead: Buffer = Buffer.alloc(0);

  constructor(
    readonly workspaceId: number,
    readonly sandboxId: string,
    /** Last id issued for this sandbox. */
    public lastId: EventId,
    /** now() of the last append; a stream with no events that is idle past the age limit is dropped. */
    public activeAt: number,
  ) {
    this.lineMiddle = eventLineMiddle(workspaceId, sandboxId);
  }

  /** `type` as JSON text, for the event line. */
  typeJson(type: string): string {
    if (type !== this.lastType) this.remember(type);
    return this.lastTypeJson;
  }

  /** eventLineHead of this sandbox and `type`: the ring writes the event line from it. */
  lineHead(type: string): Buffer {
    if (type !== this.lastType) this.remember(type);
    return this.lastLineHead;
  }

  private remember(type: string): void {
    this.lastType = type;
    this.lastTypeJson = JSON.stringify(type);
    this.lastLineHead = eventLineHead(this.lineMiddle, this.lastTypeJson);
  }

  get trimmedThrough(): EventId | undefined {
    return Number.isNaN(this.trimmedMs) ? undefined : { ms: this.trimmedMs, seq: this.trimmedSeq };
  }

  /** The parts that exist. */
  *liveParts(): Generator<StreamPart> {
    for (const part of this.parts) if (part !== undefined) yield part;
  }

  /** Events retained, all classes. */
  get retained(): number {
    let count = 0;
    for (const part of this.parts) if (part !== undefined) count += part.events.length;
    return count;
  }

  /** The part whose oldest event is the sandbox's oldest; undefined when nothing is retained. */
  oldestPart(): StreamPart | undefined {
    let oldest: StreamPart | undefined;
    for (const part of this.liveParts()) {
      if (part.events.length === 0) continue;
      if (oldest === undefined || compareByEventId({ part, index: 0 }, { part: oldest, index: 0 }) < 0) oldest = part;
    }
    return oldest;
  }

  /**
   * The retained events with exactly these ids, in their order (undefined for one no longer
   * retained). The ids of a history page follow each other in one part, so each is first looked
   * for just after the one before, and searched for only when it is not there: a page of 100
   * costs one binary search, not 100 (with a generator each; docs/performance.md, "Seventh
   * round: latency").
   */
  findAll(ids: readonly EventId[]): (StoredEvent | undefined)[] {
    const out: (StoredEvent | undefined)[] = [];
    let part: StreamPart | undefined;
    let at = 0;
    for (const id of ids) {
      if (part === undefined || at >= part.events.length || !part.events.idEquals(at, id)) {
        part = undefined;
        for (let p = 0; p < this.parts.length && part === undefined; p++) {
          const candidate = this.parts[p];
          if (candidate === undefined) continue;
          const index = candidate.events.lowerBound(id.ms, id.seq);
          if (index < candidate.events.length && candidate.events.idEquals(index, id)) {
            part = candidate;
            at = index;
          }
        }
      }
      if (part === undefined) {
        out.push(undefined);
        continue;
      }
      out.push(part.events.eventAt(at));
      at += 1;
    }
    return out;
  }
}

/**
 * Events in process memory: a bounded ring per sandbox. Nothing survives a restart; ids stay
 * strictly increasing within the process, also for a sandbox whose state was dropped, because
 * new streams start above the store-wide high-water id.
 *
 * Retained events are kept compact (see event-ring.ts): numbers in typed arrays and the JSON
 * lines' bytes outside the V8 heap, so what is retained costs the garbage collector nothing per
 * event. Streams are found by workspace id, then by sandbox id, so an append builds no key
 * string (a sandbox id string caches its own hash).
 */
export class MemoryStore implements EventStore {
  readonly kind = 'memory';
  private retention: RetentionPolicy;
  private readonly now: () => number;
  /** The clock appends read, one reading for a few of them (AppendClock); none with a clock given. */
  private readonly appendClock: AppendClock | undefined;
  private readonly workspaces = new Map<number, Map<string, MemoryStream>>();
  private rings = new RingContext();
  private streamCount = 0;
  /** Highest id issued in this process, for any sandbox. */
  private highWater: EventId | undefined;
  private listener: DurableEventListener | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private appended = 0;
  private pruned = 0;
  private evicted = 0;
  private maxBytes: number;
  private readonly maxTotalBytes: number;
  /** Types delivered but never stored (`--ephemeral-types`); undefined when none. */
  private readonly ephemeral: ((type: string) => boolean) | undefined;
  /** Bytes of event lines retained over all sandboxes (kept up to date by push and trim). */
  private totalBytes = 0;
  /**
   * The stream appended to last, while the store holds it: a publisher mostly repeats its sandbox,
   * and the two Map lookups that find a stream are then skipped.
   */
  private lastStream: MemoryStream | undefined;
  /** The event appended last while its listener runs, its line still read from its ring (see appendNow). */
  private ringLineOut: StoredEventRecord | undefined;
  /** The last order issued to a stored event, over every sandbox (0: none yet). */
  private lastOrder = 0;
  /**
   * Per workspace, the highest order pruned from it; kept after the workspace is forgotten. Its
   * streams hold their workspace's mark (MemoryStream.prunedOrder): a full ring drops an event
   * per append, which then looks up nothing.
   */
  private readonly prunedOrder = new Map<number, PrunedOrderMark>();
  private prunedOrderAll = 0;
  /** The `--retention` rules' classes, fixed for the store's life. */
  private readonly classes: RetentionClasses;
  /** With rules: per workspace (and over all), the highest order pruned of each type. */
  private readonly prunedOrderTypes = new Map<number, PrunedByType<number>>();
  private readonly prunedOrderTypesAll = new PrunedByType<number>((a, b) => a - b);

  constructor(options: MemoryStoreOptions) {
    this.retention = checkRetention(options.retention);
    this.maxBytes = this.retention.maxBytes ?? Infinity;
    this.maxTotalBytes = options.maxTotalBytes ?? Infinity;
    this.ephemeral = ephemeralMatcher(this.retention);
    this.classes = new RetentionClasses(this.retention.rules ?? []);
    if (!(this.maxTotalBytes === Infinity || (Number.isSafeInteger(this.maxTotalBytes) && this.maxTotalBytes > 0))) {
      throw new SandboxEventsError(
        'INVALID_ARGUMENT',
        `memory store budget must be > 0 bytes, got ${this.maxTotalBytes}`,
      );
    }
    this.now = options.now ?? Date.now;
    // A clock given (a test's) is read as it is, at every append.
    this.appendClock = options.now === undefined ? new AppendClock() : undefined;
    const interval = options.pruneIntervalMs ?? 5_000;
    if (interval > 0) {
      this.pruneTimer = setInterval(() => this.pruneAll(), interval);
      this.pruneTimer.unref();
    }
  }

  setListener(listener: DurableEventListener): void {
    this.listener = listener;
  }

  setRetention(retention: RetentionPolicy): void {
    this.retention = checkRetention(retention);
    this.maxBytes = this.retention.maxBytes ?? Infinity;
    for (const sandboxes of this.workspaces.values()) {
      for (const stream of sandboxes.values()) {
        for (const [index, part] of stream.parts.entries()) {
          part?.events.setMaxSlots(this.classes.maxCount(index, this.retention));
        }
      }
    }
  }

  append(input: NewEvent): Promise<StoredEvent> {
    let event: StoredEvent;
    try {
      event = this.appendNow(input);
    } catch (error) {
      return Promise.reject(error);
    }
    return Promise.resolve(event);
  }

  /** Memory is as durable as this store gets: the receipt is answered before this returns. */
  appendWith(input: NewEvent, receipt: AppendReceipt): void {
    let event: StoredEvent;
    try {
      event = this.appendNow(input);
    } catch (error) {
      receipt.refused(error);
      return;
    }
    receipt.appended(event);
  }

  /** Stores the event and notifies the listener, synchronously; throws when it can't. */
  private appendNow(input: NewEvent): StoredEvent {
    if (this.closed) throw storeClosedError(this.kind);
    this.releaseRingLine();
    const now = this.appendClock === undefined ? this.now() : this.appendClock.now();
    let stream = this.lastStream;
    if (stream === undefined || stream.sandboxId !== input.sandboxId || stream.workspaceId !== input.workspaceId) {
      stream = this.stream(input);
    }
    const id = nextEventId(stream?.lastId ?? this.highWater, now);
    if (stream === undefined) {
      stream = new MemoryStream(input.workspaceId, input.sandboxId, id, now);
      let sandboxes = this.workspaces.get(input.workspaceId);
      if (sandboxes === undefined) {
        sandboxes = new Map();
        this.workspaces.set(input.workspaceId, sandboxes);
      }
      sandboxes.set(input.sandboxId, stream);
      this.streamCount++;
    }
    this.lastStream = stream;
    if (this.ephemeral?.(input.type) === true) {
      // Issued in the sandbox's order and delivered, never kept (docs/operations.md).
      const event = createStoredEvent(
        input,
        newEventDataText(input),
        id,
        now,
        stream.lineMiddle,
        stream.typeJson(input.type),
      );
      stream.lastId = id;
      stream.activeAt = now;
      this.highWater = maxEventId(this.highWater, id);
      notifyListener(this.listener, event, input);
      return event;
    }
    // The count limit (of the event's class) bounds memory at once (room is made before the
    // push, so the bytes of the event leaving are reused); age is left to prune(), as in the
    // SQLite store, so that both stores answer alike.
    const klass = this.classes.classOf(input.type);
    const maxCount = this.classes.maxCount(klass, this.retention);
    let part = stream.parts[klass];
    if (part === undefined) {
      part = new StreamPart(new EventRing(input.workspaceId, input.sandboxId, this.rings, maxCount));
      stream.parts[klass] = part;
    }
    const { events } = part;
    if (events.length >= maxCount) this.trim(stream, part, -Infinity, maxCount - 1);
    const head = stream.lineHead(input.type);
    const { dataBytes, dataStart, dataEnd } = input;
    const lineBytes = events.push(id, now, input.type, head, dataBytes, dataStart, dataEnd);
    // No text of the line is made unless something reads `json` (docs/performance.md, "Eighth
    // round: the event's line as bytes"): the fan-out copies the bytes just written.
    const event = StoredEventRecord.ofLine(
      id,
      input.workspaceId,
      input.sandboxId,
      input.type,
      now,
      head,
      dataBytes,
      dataStart,
      dataEnd,
      events.newestChunk,
      events.newestLineEnd,
      lineBytes,
    );
    this.lastOrder += 1;
    part.orders.push(this.lastOrder);
    setEventOrder(event, this.lastOrder);
    this.totalBytes += lineBytes;
    stream.lastId = id;
    stream.activeAt = now;
    this.highWater = maxEventId(this.highWater, id);
    this.appended++;
    // Bytes are known only once the line is written, so these limits trim after the push: the
    // newest event always stays (the minimum byte retention holds one of the largest).
    if (events.retainedBytes > this.maxBytes) this.trimBytes(stream, part, this.maxBytes);
    if (this.totalBytes > this.maxTotalBytes) this.evict(stream);
    // Memory is as durable as this store gets: notify at once, then answer. The event's line is
    // read from the ring only while the listener runs (the fan-out copies it into its frames):
    // the newest event outlives the trims above, and only an append changes a ring meanwhile
    // (the prune timer can't run), which releases it first should a listener ever append.
    // After that the chunk may be written over (a count limit of one rewrites it on the next
    // append), and whoever kept the event reads its line from its parts.
    this.ringLineOut = event;
    notifyListener(this.listener, event, input);
    this.releaseRingLine();
    return event;
  }

  /** The event whose line the listener may read from the ring; none once this append returns. */
  private releaseRingLine(): void {
    if (this.ringLineOut === undefined) return;
    StoredEventRecord.releaseRingLine(this.ringLineOut);
    this.ringLineOut = undefined;
  }

  history(query: HistoryQuery): Promise<StoredEvent[]> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      checkLimit(query.limit);
      const stream = this.stream(query);
      return Promise.resolve(
        stream === undefined ? [] : this.historyPlaces(stream, query).map(({ part, index }) => part.eventAt(index)),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The ids of the reply first (its count), then each page's events made from the ring only
   * when the writer asks for it: an event's JSON is rebuilt from the ring on every read, so a
   * large reply made whole would be a copy of it all. One evicted meanwhile is a hole.
   */
  historyPages(query: HistoryQuery): Promise<HistoryPages> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      checkLimit(query.limit);
      const stream = this.stream(query);
      const ids =
        stream === undefined ? [] : this.historyPlaces(stream, query).map(({ part, index }) => part.events.idAt(index));
      return Promise.resolve(
        pagesOfIds(ids, (page) => {
          const now = this.stream(query);
          return now === undefined ? page.map(() => undefined) : now.findAll(page);
        }),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Where the events `query` asks for are, oldest first: in one part (a type is in one class),
   * else the matches of every part merged by id.
   */
  private historyPlaces(stream: MemoryStream, query: HistoryQuery): EventPlace[] {
    const limit = checkLimit(query.limit);
    const parts = query.type === undefined ? [...stream.liveParts()] : [stream.parts[this.classes.classOf(query.type)]];
    const places: EventPlace[] = [];
    for (const part of parts) {
      if (part !== undefined) for (const index of this.historyIndexes(part.events, query)) places.push({ part, index });
    }
    if (parts.length <= 1) return places;
    places.sort(compareByEventId);
    return query.newest === true ? places.slice(Math.max(0, places.length - limit)) : places.slice(0, limit);
  }

  /** Positions in `events` of what `query` asks for, oldest first. */
  private historyIndexes(events: EventRing, query: HistoryQuery): number[] {
    const limit = checkLimit(query.limit);
    // The filters of matchesHistoryFilters, on the ring's numbers: an exact type is an exact
    // interned type number (a type no retained event has matches nothing), then
    // `timestamp >= since`.
    let type = -1;
    if (query.type !== undefined) {
      const known = this.rings.types.lookup(query.type);
      if (known === undefined) return [];
      type = known;
    }
    const { since } = query;
    const matches = (i: number): boolean =>
      (type < 0 || events.typeAt(i) === type) && (since === undefined || events.timestampAt(i) >= since);
    const floor = historyFloor(query);
    const from = events.lowerBound(floor.ms, floor.seq);
    const out: number[] = [];
    if (query.newest === true) {
      for (let i = events.length - 1; i >= from && out.length < limit; i--) if (matches(i)) out.push(i);
      out.reverse();
    } else {
      for (let i = from; i < events.length && out.length < limit; i++) if (matches(i)) out.push(i);
    }
    return out;
  }

  replayAfter(ref: SandboxRef, afterId: EventId, limit: number, types?: ReaderTypes): Promise<ReplayResult> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    try {
      checkLimit(limit);
      const stream = this.stream(ref);
      if (stream === undefined) {
        return Promise.resolve(buildReplayResult([], afterId, { highWater: this.highWater, afterIdRetained: false }));
      }
      const places: EventPlace[] = [];
      let afterIdRetained = false;
      let earliest: EventPlace | undefined;
      let parts = 0;
      for (const part of stream.liveParts()) {
        const { events } = part;
        if (events.length === 0) continue;
        parts += 1;
        if (earliest === undefined || compareByEventId({ part, index: 0 }, earliest) < 0) earliest = { part, index: 0 };
        const from = events.lowerBound(afterId.ms, afterId.seq + 1);
        if (from > 0 && events.idEquals(from - 1, afterId)) afterIdRetained = true;
        for (let index = from; index < events.length && index - from < limit; index++) places.push({ part, index });
      }
      if (parts > 1) places.sort(compareByEventId);
      const out = places.slice(0, limit).map(({ part, index }) => part.eventAt(index));
      return Promise.resolve(
        buildReplayResult(out, afterId, {
          lastId: stream.lastId,
          trimmedThrough: stream.trimmedThrough,
          earliestId: earliest === undefined ? undefined : earliest.part.events.idAt(0),
          highWater: this.highWater,
          afterIdRetained,
          unstoredIds: this.ephemeral !== undefined,
          perType: this.classes.perType,
          readerTrimmedThrough: stream.prunedTypes?.through(types),
        }),
      );
    } catch (error) {
      return Promise.reject(error);
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
      checkLimit(limit);
      const workspaces =
        scope === 'all'
          ? [...this.workspaces.values()]
          : [this.workspaces.get(scope) ?? new Map<string, MemoryStream>()];
      // With rules, only what was pruned of the types the reader takes makes the replay inexact.
      const pruned = this.classes.perType
        ? ((scope === 'all' ? this.prunedOrderTypesAll : this.prunedOrderTypes.get(scope))?.through(types) ?? 0)
        : scope === 'all'
          ? this.prunedOrderAll
          : (this.prunedOrder.get(scope)?.order ?? 0);
      return Promise.resolve({
        events: mergeByOrder(
          workspaces.flatMap((sandboxes) => [...sandboxes.values()].flatMap((stream) => [...stream.liveParts()])),
          after,
          limit,
        ),
        ...classifyWorkspaceReplay(after, pruned, this.lastOrder),
        lastOrder: this.lastOrder,
      });
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

  listSandboxes(scope: number | 'all'): Promise<SandboxListing[]> {
    if (this.closed) return Promise.reject(storeClosedError(this.kind));
    const out: SandboxListing[] = [];
    const workspaceIds = scope === 'all' ? [...this.workspaces.keys()].sort((a, b) => a - b) : [scope];
    for (const workspaceId of workspaceIds) {
      const sandboxes = this.workspaces.get(workspaceId);
      if (sandboxes === undefined) continue;
      for (const [sandboxId, stream] of sandboxes) {
        if (stream.retained > 0) out.push({ workspaceId, sandboxId, lastId: stream.lastId });
      }
    }
    return Promise.resolve(out.sort((a, b) => a.workspaceId - b.workspaceId || compareText(a.sandboxId, b.sandboxId)));
  }

  stats(): MemoryStoreStats {
    return {
      appended: this.appended,
      pruned: this.pruned,
      evicted: this.evicted,
      sandboxes: this.streamCount,
      retainedBytes: this.totalBytes,
    };
  }

  /** Bytes allocated for retained events (slots and JSON lines), all sandboxes (spare chunks aside); for tests. */
  retainedBytes(): number {
    let total = 0;
    for (const sandboxes of this.workspaces.values()) {
      for (const stream of sandboxes.values()) {
        for (const { events } of stream.liveParts()) total += events.allocatedBytes;
      }
    }
    return total;
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      clearInterval(this.pruneTimer);
      this.workspaces.clear();
      this.lastStream = undefined;
      this.streamCount = 0;
      this.totalBytes = 0;
      this.rings = new RingContext();
    }
    return Promise.resolve();
  }

  private stream(ref: SandboxRef): MemoryStream | undefined {
    return this.workspaces.get(ref.workspaceId)?.get(ref.sandboxId);
  }

  private pruneAll(): number {
    const cutoff = ageCutoff(this.retention, this.now());
    let count = 0;
    for (const [workspaceId, sandboxes] of this.workspaces) {
      for (const [sandboxId, stream] of sandboxes) {
        stream.parts.forEach((part, index) => {
          if (part === undefined) return;
          const maxCount = this.classes.maxCount(index, this.retention);
          count += this.trim(stream, part, cutoff, maxCount) + this.trimBytes(stream, part, this.maxBytes);
        });
        if (stream.retained === 0 && stream.activeAt < cutoff) {
          // Its rings' last chunks go back to the store's spares (RingContext counts them as in use).
          for (const { events } of stream.liveParts()) events.compact();
          sandboxes.delete(sandboxId);
          if (stream === this.lastStream) this.lastStream = undefined;
          this.streamCount--;
        } else {
          // Gives back what a ring that shrank (age, or smaller events) no longer needs.
          for (const part of stream.liveParts()) {
            part.events.compact();
            part.orders.compact();
          }
        }
      }
      if (sandboxes.size === 0) this.workspaces.delete(workspaceId);
    }
    this.rings.trimSpare();
    return count;
  }

  /**
   * Drops the oldest events of a part past the age cutoff or beyond `keep` events; always a
   * prefix of the part (of the whole stream, without rules).
   */
  private trim(stream: MemoryStream, part: StreamPart, cutoff: number, keep: number): number {
    const { events } = part;
    let count = 0;
    while (events.length > 0 && (events.length > keep || events.msAt(0) < cutoff)) {
      this.dropOldest(stream, part);
      count++;
    }
    return count;
  }

  /** Drops the oldest events of a part until it holds at most `bytes`, keeping its newest event. */
  private trimBytes(stream: MemoryStream, part: StreamPart, bytes: number): number {
    const { events } = part;
    let count = 0;
    while (events.length > 1 && events.retainedBytes > bytes) {
      this.dropOldest(stream, part);
      count++;
    }
    return count;
  }

  /**
   * Brings the store under its total budget: the least recently active sandboxes lose their
   * oldest events first, as Redis's `allkeys-lru` picks the idlest keys; `current` (the sandbox
   * being appended to) goes last. A replay into what was evicted answers `trimmed`, as for any
   * retention (docs/protocol.md, RESUME).
   */
  private evict(current: MemoryStream): void {
    const target = Math.floor(this.maxTotalBytes * EVICT_TO);
    const streams: MemoryStream[] = [];
    for (const sandboxes of this.workspaces.values()) {
      for (const stream of sandboxes.values()) if (stream !== current && stream.retained > 0) streams.push(stream);
    }
    streams.sort((a, b) => a.activeAt - b.activeAt);
    streams.push(current);
    for (const stream of streams) {
      const keep = stream === current ? 1 : 0;
      let retained = stream.retained;
      while (retained > keep && this.totalBytes > target) {
        this.dropOldest(stream, stream.oldestPart()!);
        retained--;
        this.evicted++;
      }
      if (this.totalBytes <= target) break;
    }
  }

  /** Drops the oldest event of a part, noting what a replay must then call `trimmed`. */
  private dropOldest(stream: MemoryStream, part: StreamPart): void {
    const { events } = part;
    // Compared as numbers: a full ring drops one event per append, and two id objects per drop
    // were garbage on the publish path.
    const ms = events.msAt(0);
    const seq = events.seqAt(0);
    // Parts are pruned on their own, so an id dropped now may be below one dropped before.
    if (
      Number.isNaN(stream.trimmedMs) ||
      ms > stream.trimmedMs ||
      (ms === stream.trimmedMs && seq > stream.trimmedSeq)
    ) {
      stream.trimmedMs = ms;
      stream.trimmedSeq = seq;
    }
    const type = this.classes.perType ? this.rings.types.name(events.typeAt(0)) : undefined;
    const before = events.retainedBytes;
    events.shift();
    const order = part.orders.shift();
    const mark = (stream.prunedOrder ??= this.prunedOrderMark(stream.workspaceId));
    if (order > mark.order) mark.order = order;
    if (order > this.prunedOrderAll) this.prunedOrderAll = order;
    if (type !== undefined) this.notePrunedType(stream, type, { ms, seq }, order);
    this.totalBytes -= before - events.retainedBytes;
    this.pruned++;
  }

  /** The workspace's mark of the highest order pruned from it, made at its first prune. */
  private prunedOrderMark(workspaceId: number): PrunedOrderMark {
    let mark = this.prunedOrder.get(workspaceId);
    if (mark === undefined) {
      mark = { order: 0 };
      this.prunedOrder.set(workspaceId, mark);
    }
    return mark;
  }

  /** With rules: a pruned event of `type`, for the filtered replays of its sandbox and workspace. */
  private notePrunedType(stream: MemoryStream, type: string, id: EventId, order: number): void {
    stream.prunedTypes ??= new PrunedByType<EventId>(compareEventIds);
    stream.prunedTypes.note(type, id);
    let byType = this.prunedOrderTypes.get(stream.workspaceId);
    if (byType === undefined) {
      byType = new PrunedByType<number>((a, b) => a - b);
      this.prunedOrderTypes.set(stream.workspaceId, byType);
    }
    byType.note(type, order);
    this.prunedOrderTypesAll.note(type, order);
  }
}

/** Code-unit order, as SQLite's BINARY collation orders the same ASCII ids. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
