/**
 * What every EventStore means by history, replay and retention. Both embedded stores (and a
 * future Redis engine) use these functions, so the rules exist once.
 */
import { compareEventIds, type EventId, type NewEvent, type StoredEvent } from '../event/event.js';
import { SandboxEventsError } from '../errors.js';
import { compileGlob } from '../protocol/glob.js';
import type {
  DurableEventListener,
  EventStore,
  HistoryPages,
  HistoryQuery,
  ReplayGap,
  ReplayResult,
  RetentionPolicy,
  SandboxRef,
} from './types.js';

export const ZERO_ID: EventId = { ms: 0, seq: 0 };

/** Map key of one stream. A workspace id is a number, so the first ':' ends it: no collisions. */
export function sandboxKey(ref: SandboxRef): string {
  return `${ref.workspaceId}:${ref.sandboxId}`;
}

export function isZeroId(id: EventId): boolean {
  return id.ms === 0 && id.seq === 0;
}

export function maxEventId(a: EventId | undefined, b: EventId | undefined): EventId | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return compareEventIds(a, b) >= 0 ? a : b;
}

export function storeClosedError(kind: string): SandboxEventsError {
  return new SandboxEventsError('STORE_CLOSED', `the ${kind} event store is closed`);
}

/**
 * What a shared engine not connected yet since start throws, and what commands that need the
 * store answer meanwhile (`-LOADING`, docs/scaling.md, "Readiness").
 */
export function storeLoadingError(): SandboxEventsError {
  return new SandboxEventsError('STORE_LOADING', 'the node is connecting to its event engine (Redis); try again');
}

/** Accepts a positive integer, or Infinity for "no limit". */
export function checkLimit(limit: number): number {
  if (limit === Infinity || (Number.isSafeInteger(limit) && limit >= 1)) return limit;
  throw new SandboxEventsError('INVALID_ARGUMENT', `limit must be a positive integer, got ${limit}`);
}

/**
 * The smallest byte retention accepted: one event at the largest size a PUBLISH may carry by
 * default (64 KiB of event JSON plus its envelope), so a sandbox can always keep its newest event.
 */
export const MIN_RETENTION_BYTES = 128 * 1024;

export function checkRetention(retention: RetentionPolicy): RetentionPolicy {
  const { maxCount, maxAgeMs } = retention;
  const maxBytes = retention.maxBytes ?? Infinity;
  if (!(maxCount === Infinity || (Number.isSafeInteger(maxCount) && maxCount >= 1))) {
    throw new SandboxEventsError('INVALID_ARGUMENT', `retention count must be >= 1, got ${maxCount}`);
  }
  if (!(maxAgeMs > 0)) {
    throw new SandboxEventsError('INVALID_ARGUMENT', `retention age must be > 0 ms, got ${maxAgeMs}`);
  }
  if (!(maxBytes === Infinity || (Number.isSafeInteger(maxBytes) && maxBytes >= MIN_RETENTION_BYTES))) {
    throw new SandboxEventsError(
      'INVALID_ARGUMENT',
      `retention bytes must be at least ${MIN_RETENTION_BYTES} (one event of the largest size), got ${maxBytes}`,
    );
  }
  const ephemeralTypes = retention.ephemeralTypes ?? [];
  for (const glob of ephemeralTypes) {
    if (glob === '') throw new SandboxEventsError('INVALID_ARGUMENT', 'an ephemeral type glob is empty');
  }
  return { maxCount, maxAgeMs, maxBytes, ephemeralTypes };
}

/**
 * Whether an event type is ephemeral under `retention` (delivered, never stored); undefined
 * when no type is. Globs as PSUBSCRIBE's.
 */
export function ephemeralMatcher(retention: RetentionPolicy): ((type: string) => boolean) | undefined {
  const globs = retention.ephemeralTypes ?? [];
  if (globs.length === 0) return undefined;
  const matchers = globs.map((glob) => compileGlob(glob));
  return (type) => matchers.some((matches) => matches(type));
}

/**
 * Events whose id millisecond is below this are past the age limit. Age is judged by the id,
 * not the timestamp: ids only grow, so what is pruned is always a prefix of the stream (which
 * the trimmed-through bookkeeping relies on), and `id.ms >= timestamp` always holds, so an
 * event is never pruned before its timestamp says it is old.
 */
export function ageCutoff(retention: RetentionPolicy, now: number): number {
  return Number.isFinite(retention.maxAgeMs) ? now - retention.maxAgeMs : -Infinity;
}

/**
 * Smallest id a history query can return (inclusive). `since` narrows it too: an id's
 * millisecond is never below its event's timestamp (the id takes max(now, last ms), the
 * timestamp takes now), so `timestamp >= since` implies `id >= <since>-0` and stores can seek
 * there instead of scanning; `matchesHistoryFilters` then drops the few events written while
 * the clock was behind.
 */
export function historyFloor(query: HistoryQuery): EventId {
  let floor = ZERO_ID;
  if (query.afterId !== undefined) floor = { ms: query.afterId.ms, seq: query.afterId.seq + 1 };
  if (query.since !== undefined && query.since > floor.ms) floor = { ms: Math.ceil(query.since), seq: 0 };
  return floor;
}

/**
 * What one page of a paged history reply aims at: about this many bytes of events, and no
 * more than HISTORY_PAGE_MAX events. A reply of 64 KiB events holds 8 of them at a time; one of
 * small events reads few pages.
 */
export const HISTORY_PAGE_BYTES = 512 * 1024;
export const HISTORY_PAGE_MAX = 256;
/** The first page, before the size of the events is known. */
export const HISTORY_FIRST_PAGE = 8;

/** How many events the next page takes, after a page of these. */
export function nextHistoryPageSize(page: readonly (StoredEvent | undefined)[]): number {
  let bytes = 0;
  let events = 0;
  for (const event of page) {
    if (event === undefined) continue;
    bytes += event.json.length;
    events += 1;
  }
  if (events === 0) return HISTORY_FIRST_PAGE;
  return Math.max(1, Math.min(HISTORY_PAGE_MAX, Math.floor((HISTORY_PAGE_BYTES * events) / Math.max(1, bytes))));
}

/**
 * A paged reply over the ids a store counted: each page is read by `readPage` (the events of
 * those ids, in order, undefined for one no longer retained) only when the writer asks for it;
 * a store that reads from a server answers it with a promise.
 */
export function pagesOfIds(
  ids: readonly EventId[],
  readPage: (ids: readonly EventId[]) => (StoredEvent | undefined)[] | Promise<(StoredEvent | undefined)[]>,
): HistoryPages {
  return {
    count: ids.length,
    async *pages() {
      let size = HISTORY_FIRST_PAGE;
      for (let at = 0; at < ids.length; ) {
        const page = await readPage(ids.slice(at, at + size));
        at += page.length;
        yield page;
        size = nextHistoryPageSize(page);
      }
    },
  };
}

/**
 * `query` as a paged reply: the store's own paging where it has one, otherwise its `history`
 * split into pages (the memory store's events are its own objects, so nothing is copied).
 */
export async function historyPages(store: EventStore, query: HistoryQuery): Promise<HistoryPages> {
  if (store.historyPages !== undefined) return store.historyPages(query);
  const events = await store.history(query);
  return {
    count: events.length,
    async *pages() {
      let size = HISTORY_FIRST_PAGE;
      for (let at = 0; at < events.length; ) {
        const page = events.slice(at, at + size);
        at += page.length;
        yield page;
        size = nextHistoryPageSize(page);
      }
    },
  };
}

/** The filters `historyFloor` does not cover: exact type and `timestamp >= since`. */
export function matchesHistoryFilters(event: StoredEvent, query: HistoryQuery): boolean {
  return (
    (query.type === undefined || event.type === query.type) &&
    (query.since === undefined || event.timestamp >= query.since)
  );
}

/** What a store knows about one stream when asked to replay it. */
export interface ReplayState {
  /** Last id issued for this sandbox; undefined when the store has no state for it. */
  lastId?: EventId;
  /** Highest id pruned from this sandbox; undefined when nothing was. */
  trimmedThrough?: EventId;
  /** Oldest retained id. */
  earliestId?: EventId;
  /** Highest id issued for any sandbox (the store's high-water mark). */
  highWater?: EventId;
  /** Whether an event with exactly `afterId` is retained. */
  afterIdRetained: boolean;
  /**
   * The store issues ids it never stores (ephemeral events): an id within the retained range
   * that is not retained may be one of those, so the replay after it is exact, not `unknown`.
   */
  unstoredIds?: boolean;
}

/**
 * Whether replaying after `afterId` gives the client exactly what it missed, and if not, why.
 *
 * A store forgets a sandbox that had nothing retained and no activity for longer than the age
 * limit. For such a sandbox an id at or below the high-water mark may well have been issued
 * and pruned, so it is reported `trimmed`; only an id above every id ever issued is `future`.
 */
export function classifyReplay(afterId: EventId, state: ReplayState): { complete: boolean; gap?: ReplayGap } {
  const { lastId, trimmedThrough, earliestId, highWater } = state;
  if (lastId === undefined) {
    if (isZeroId(afterId)) return { complete: true };
    if (highWater !== undefined && compareEventIds(afterId, highWater) <= 0) {
      return { complete: false, gap: 'trimmed' };
    }
    return { complete: false, gap: 'future' };
  }
  const vsLast = compareEventIds(afterId, lastId);
  if (vsLast > 0) return { complete: false, gap: 'future' };
  if (vsLast === 0 || state.afterIdRetained) return { complete: true };
  if (trimmedThrough === undefined) {
    if (isZeroId(afterId)) return { complete: true };
  } else {
    const vsTrimmed = compareEventIds(afterId, trimmedThrough);
    if (vsTrimmed === 0) return { complete: true };
    if (vsTrimmed < 0) return { complete: false, gap: 'trimmed' };
  }
  // Above every pruned id and not retained: with ephemeral events that is an id issued to
  // one of them, and what follows it is all retained (docs/operations.md, "Ephemeral events").
  if (state.unstoredIds === true) return { complete: true };
  if (earliestId === undefined || compareEventIds(afterId, earliestId) < 0) {
    return { complete: false, gap: 'trimmed' };
  }
  return { complete: false, gap: 'unknown' };
}

export function buildReplayResult(events: StoredEvent[], afterId: EventId, state: ReplayState): ReplayResult {
  const result: ReplayResult = { events, ...classifyReplay(afterId, state) };
  if (state.earliestId !== undefined) result.earliestId = state.earliestId;
  if (state.lastId !== undefined) result.lastId = state.lastId;
  return result;
}

/**
 * Calls the fan-out listener. The event is durable whatever the listener does, so its
 * append still resolves; a throwing listener is a bug elsewhere, rethrown on its own stack so
 * it surfaces as an uncaught exception instead of failing the write.
 */
export function notifyListener(
  listener: DurableEventListener | undefined,
  event: StoredEvent,
  appended: NewEvent | undefined,
  alreadyDelivered?: number,
): number | undefined {
  if (listener === undefined) return undefined;
  try {
    return listener(event, appended, alreadyDelivered) ?? undefined;
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
    return undefined;
  }
}
