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
  ReaderTypes,
  ReplayResult,
  RetentionPolicy,
  RetentionRule,
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
  return { maxCount, maxAgeMs, maxBytes, ephemeralTypes, rules: checkRetentionRules(retention.rules ?? []) };
}

/** At most this many `--retention` rules: the first match is looked up once per new type. */
export const MAX_RETENTION_RULES = 32;
/** A rule's glob is at most as long as a type filter's (docs/protocol.md, "Type filters"). */
const MAX_RULE_GLOB_LENGTH = 128;

function invalidRule(message: string): SandboxEventsError {
  return new SandboxEventsError('INVALID_ARGUMENT', `--retention: ${message}`);
}

function checkRetentionRules(rules: readonly RetentionRule[]): RetentionRule[] {
  if (rules.length > MAX_RETENTION_RULES)
    throw invalidRule(`at most ${MAX_RETENTION_RULES} rules, got ${rules.length}`);
  const seen = new Set<string>();
  for (const { glob, maxCount } of rules) {
    if (glob === '') throw invalidRule('a rule has an empty type glob');
    if (glob.length > MAX_RULE_GLOB_LENGTH)
      throw invalidRule(`a type glob is at most ${MAX_RULE_GLOB_LENGTH} characters`);
    if (seen.has(glob)) throw invalidRule(`"${glob}" has two rules`);
    seen.add(glob);
    if (!(Number.isSafeInteger(maxCount) && maxCount >= 1)) {
      throw invalidRule(`the count of "${glob}" must be an integer >= 1, got ${maxCount}`);
    }
  }
  return rules.map(({ glob, maxCount }) => ({ glob, maxCount }));
}

/**
 * `--retention` rules from their text: comma-separated `<glob>=<count>` items (a glob may hold
 * `=`: the count follows the last one), in order. Throws INVALID_ARGUMENT naming the bad item.
 */
export function parseRetentionRules(text: string): RetentionRule[] {
  const rules: RetentionRule[] = [];
  for (const item of text.split(',')) {
    const trimmed = item.trim();
    if (trimmed === '') continue;
    const at = trimmed.lastIndexOf('=');
    const count = trimmed.slice(at + 1).trim();
    if (at < 0 || !/^[0-9]+$/.test(count)) {
      throw invalidRule(`"${trimmed}" is not <type glob>=<count> (e.g. sandbox.metrics=100)`);
    }
    rules.push({ glob: trimmed.slice(0, at).trim(), maxCount: Number(count) });
  }
  return checkRetentionRules(rules);
}

/** Rules as the flag writes them, for `config check` and CONFIG GET. */
export function formatRetentionRules(rules: readonly RetentionRule[]): string {
  return rules.map(({ glob, maxCount }) => `${glob}=${maxCount}`).join(',');
}

/** Types whose class is remembered (more are looked up again): bounds the cache, not correctness. */
const CLASS_CACHE_SIZE = 1024;

/**
 * The retention classes of a policy (docs/operations.md, "Per-type retention"): class `i` is the
 * types whose first matching rule is rule `i`; class `rules.length` (the last) is every other
 * type, under the policy's own count. Each class of a sandbox is kept on its own.
 */
export class RetentionClasses {
  /** Number of classes: one per rule and the default one. */
  readonly count: number;
  private readonly matchers: ((type: string) => boolean)[];
  private readonly cache = new Map<string, number>();

  constructor(private readonly rules: readonly RetentionRule[]) {
    this.count = rules.length + 1;
    this.matchers = rules.map((rule) => compileGlob(rule.glob));
  }

  /** Whether there are rules at all (otherwise one class holds every type: prefix pruning). */
  get perType(): boolean {
    return this.rules.length > 0;
  }

  classOf(type: string): number {
    if (this.rules.length === 0) return 0;
    let found = this.cache.get(type);
    if (found === undefined) {
      found = this.matchers.findIndex((matches) => matches(type));
      if (found < 0) found = this.rules.length;
      if (this.cache.size >= CLASS_CACHE_SIZE) this.cache.clear();
      this.cache.set(type, found);
    }
    return found;
  }

  /** The count limit of class `index` under `policy` (whose own count is the default class's). */
  maxCount(index: number, policy: RetentionPolicy): number {
    return this.rules[index]?.maxCount ?? policy.maxCount;
  }
}

/**
 * Per-type marks kept beyond this many per sandbox or workspace fold into one mark for every
 * type, so that a publisher inventing types cannot grow them: a filtered reader may then be told
 * `trimmed` for a type it does not take, never `complete` for one it does.
 */
export const MAX_PRUNED_TYPES = 64;

/** The type a mark of every type is kept under (an event type is never empty). */
export const EVERY_TYPE = '';

/**
 * With per-type retention, the highest key (event id, or store order) pruned of each type, so
 * that a replay is judged for the types its reader takes. `floor`: every type is pruned through
 * it (where marks folded).
 */
export class PrunedByType<K> {
  private readonly byType = new Map<string, K>();
  private floor: K | undefined;

  constructor(private readonly compare: (a: K, b: K) => number) {}

  /** `type` '' (EVERY_TYPE) raises the mark of every type. */
  note(type: string, key: K): void {
    if (type === EVERY_TYPE) {
      if (this.floor === undefined || this.compare(key, this.floor) > 0) this.floor = key;
      return;
    }
    const had = this.byType.get(type);
    if (had !== undefined) {
      if (this.compare(key, had) > 0) this.byType.set(type, key);
      return;
    }
    if (this.floor !== undefined && this.compare(key, this.floor) <= 0) return;
    this.byType.set(type, key);
    if (this.byType.size <= MAX_PRUNED_TYPES) return;
    let oldest: [string, K] | undefined;
    for (const entry of this.byType) if (oldest === undefined || this.compare(entry[1], oldest[1]) < 0) oldest = entry;
    const [foldType, foldKey] = oldest!;
    this.byType.delete(foldType);
    if (this.floor === undefined || this.compare(foldKey, this.floor) > 0) this.floor = foldKey;
  }

  /** Every mark, the one of every type as type '' (EVERY_TYPE): what a store writes back. */
  entries(): [string, K][] {
    const out = [...this.byType];
    if (this.floor !== undefined) out.push([EVERY_TYPE, this.floor]);
    return out;
  }

  /** The highest key pruned of a type `types` takes (of any type when absent); undefined: none. */
  through(types?: ReaderTypes): K | undefined {
    let out = this.floor;
    for (const [type, key] of this.byType) {
      if ((types === undefined || types.matches(type)) && (out === undefined || this.compare(key, out) > 0)) out = key;
    }
    return out;
  }
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
   * Per-type retention is on (each class pruned on its own, so pruning leaves holes): then
   * `readerTrimmedThrough`, not `trimmedThrough`, decides `trimmed`.
   */
  perType?: boolean;
  /** With `perType`: the highest id pruned of a type the reader takes; undefined when none was. */
  readerTrimmedThrough?: EventId;
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
  if (vsLast === 0) return { complete: true };
  // Without rules pruning is a prefix, so a retained id is above everything pruned. With them
  // each class is pruned on its own: what counts is the types the reader takes.
  const readerTrimmed = state.perType === true ? state.readerTrimmedThrough : trimmedThrough;
  if (readerTrimmed !== undefined && compareEventIds(afterId, readerTrimmed) < 0) {
    return { complete: false, gap: 'trimmed' };
  }
  if (state.afterIdRetained) return { complete: true };
  if (trimmedThrough === undefined) {
    if (isZeroId(afterId)) return { complete: true };
  } else if (compareEventIds(afterId, trimmedThrough) <= 0) {
    // At or below something pruned: the id may be that of a pruned event (of a type the reader
    // does not take), so it is not `unknown`.
    return { complete: true };
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
