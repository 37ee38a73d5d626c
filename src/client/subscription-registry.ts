import { compareEventIds, type EventId, formatEventId, parseEventId, parseOrderCursor } from '../event/event.js';
import { type EventsError, EventsPubSubError } from './errors.js';

/**
 * What the client keeps subscribed, and where each sandbox resumes from (the idea of
 * node-redis `client/pub-sub.ts`: pub/sub bookkeeping apart from the connection). It knows no
 * sockets: the client asks it what to restore on a fresh connection, whether a message belongs
 * to a subscription, and records each delivered id as that channel's position, and each
 * pattern's store-order cursor (docs/client.md, "Exact resume").
 */

/** `$`: from now on; otherwise a start id (`0` is the zero id: every retained event). */
export type Start = 'now' | EventId;

export interface ChannelSubscription {
  readonly name: string;
  readonly start: Start;
  /** Type globs the broker filters by; empty: every type. */
  readonly types: readonly string[];
}

/**
 * Where a pattern starts: `now`, or after a store-order cursor `w<n>` (docs/protocol.md,
 * "Pattern resume"), which an application kept from an earlier run.
 */
export type PatternStart = 'now' | string;

export interface PatternSubscription {
  readonly pattern: string;
  readonly start: PatternStart;
  /** Type globs the broker filters by; empty: every type. */
  readonly types: readonly string[];
}

/** What a fresh connection must subscribe again, in the order it was asked for. */
export interface RestorePlan {
  readonly channels: readonly ChannelSubscription[];
  readonly patterns: readonly PatternSubscription[];
}

export const ZERO_ID: EventId = { ms: 0, seq: 0 };

export class SubscriptionRegistry {
  private readonly channels = new Map<string, ChannelSubscription>();
  private readonly patterns = new Map<string, PatternSubscription>();
  /** The last id delivered, per channel (however it arrived: channel or pattern). */
  private readonly cursors = new Map<string, EventId>();
  /** The cursor of the last event delivered through each pattern (or of its start). */
  private readonly patternCursors = new Map<string, string>();
  /** Why a channel or pattern was dropped while restoring it (for the `subscribe()` waiting on it). */
  private readonly dropped = new Map<string, EventsError>();

  /**
   * Keeps a channel. A start id replaces the position it had (the caller asked for that
   * replay); `now` keeps it (resubscribing resumes after the last event already seen).
   * Undefined when the channel is already kept.
   */
  addChannel(name: string, start: Start, types: readonly string[] = []): ChannelSubscription | undefined {
    if (this.channels.has(name)) return undefined;
    if (start !== 'now') this.cursors.delete(name);
    const subscription: ChannelSubscription = { name, start, types };
    this.channels.set(name, subscription);
    this.dropped.delete(name);
    return subscription;
  }

  /** Whether `subscription` is still the one kept for its channel (not removed or replaced). */
  isCurrent(subscription: ChannelSubscription): boolean {
    return this.channels.get(subscription.name) === subscription;
  }

  hasChannel(name: string): boolean {
    return this.channels.has(name);
  }

  /**
   * The application unsubscribed: the position is forgotten too, unless a pattern may still
   * deliver that sandbox. False when the channel was not kept.
   */
  removeChannel(name: string): boolean {
    if (!this.channels.delete(name)) return false;
    if (this.patterns.size === 0) this.cursors.delete(name);
    return true;
  }

  /** The broker refused the channel: it is no longer kept; `reason` answers a waiting `subscribe()`. */
  dropChannel(name: string, reason?: EventsError): void {
    this.channels.delete(name);
    if (reason !== undefined) this.dropped.set(name, reason);
  }

  /** Keeps a pattern; a start cursor is its position. Undefined when it is already kept. */
  addPattern(
    pattern: string,
    start: PatternStart = 'now',
    types: readonly string[] = [],
  ): PatternSubscription | undefined {
    if (this.patterns.has(pattern)) return undefined;
    const subscription: PatternSubscription = { pattern, start, types };
    this.patterns.set(pattern, subscription);
    if (start !== 'now') this.patternCursors.set(pattern, start);
    this.dropped.delete(pattern);
    return subscription;
  }

  /** Whether `subscription` is still the one kept for its pattern. */
  isCurrentPattern(subscription: PatternSubscription): boolean {
    return this.patterns.get(subscription.pattern) === subscription;
  }

  hasPattern(pattern: string): boolean {
    return this.patterns.has(pattern);
  }

  /**
   * False when the pattern was not kept. Its cursor goes (subscribing again starts from now);
   * channels' positions stay.
   */
  removePattern(pattern: string): boolean {
    this.patternCursors.delete(pattern);
    return this.patterns.delete(pattern);
  }

  /** Why the restore dropped a channel or pattern, if it did. */
  droppedReason(name: string): EventsError | undefined {
    return this.dropped.get(name);
  }

  restorePlan(): RestorePlan {
    return { channels: [...this.channels.values()], patterns: [...this.patterns.values()] };
  }

  list(): { channels: string[]; patterns: string[] } {
    return { channels: [...this.channels.keys()], patterns: [...this.patterns.keys()] };
  }

  // ── Positions ──────────────────────────────────────────────────────────────────────────

  /** The cursor a pattern's next (re)subscription resumes after; undefined: none known yet. */
  lastCursor(pattern: string): string | undefined {
    return this.patternCursors.get(pattern);
  }

  /**
   * A pattern subscribed "from now" learnt its position, the broker's newest cursor (null when
   * the store keeps none: the Redis engine), unless an event moved it meanwhile.
   */
  settlePatternNow(subscription: PatternSubscription, newest: string | null): void {
    if (!this.isCurrentPattern(subscription) || newest === null) return;
    if (!this.patternCursors.has(subscription.pattern)) this.patternCursors.set(subscription.pattern, newest);
  }

  /**
   * An event came through a kept pattern with its cursor: that is the pattern's position now
   * (even when the event itself is not handed out again: its channel is subscribed by id, or it
   * was delivered already through another pattern). Null (an ephemeral event) moves nothing.
   */
  advancePattern(pattern: string, cursor: string | null): void {
    if (cursor !== null && this.patterns.has(pattern)) this.patternCursors.set(pattern, cursor);
  }

  /** The broker's order restarted below the cursor: start over after its newest (`null`: none). */
  restartPatternAt(pattern: string, newest: string | null): void {
    if (newest === null) this.patternCursors.delete(pattern);
    else this.patternCursors.set(pattern, newest);
  }

  lastEventId(channel: string): string | undefined {
    const cursor = this.cursors.get(channel);
    return cursor === undefined ? undefined : formatEventId(cursor);
  }

  /**
   * Where a (re)subscription resumes after: the channel's cursor, else its start id (which
   * becomes the cursor: nothing at or before it is delivered). Undefined for "from now on"
   * with no position yet: the broker must be asked for its newest id first (`settleNow`).
   */
  resumePoint(subscription: ChannelSubscription): EventId | undefined {
    const cursor = this.cursors.get(subscription.name);
    if (cursor !== undefined || subscription.start === 'now') return cursor;
    this.cursors.set(subscription.name, subscription.start);
    return subscription.start;
  }

  /**
   * Turns "from now on" into a position: after the broker's newest id (`undefined`: nothing
   * retained, so the zero id), unless an event arrived meanwhile. Undefined when the
   * subscription is no longer kept.
   */
  settleNow(subscription: ChannelSubscription, newest: EventId | undefined): EventId | undefined {
    if (!this.isCurrent(subscription)) return undefined;
    const from = this.cursors.get(subscription.name) ?? newest ?? ZERO_ID;
    this.cursors.set(subscription.name, from);
    return from;
  }

  /** The broker's stream restarted below the cursor: start over after its newest id (`null`: none). */
  restartAt(channel: string, lastId: string | null): void {
    this.cursors.set(channel, (lastId === null ? undefined : parseEventId(lastId)) ?? ZERO_ID);
  }

  /**
   * Whether a message belongs to a kept subscription: a channel's own, or a pattern's for a
   * sandbox not subscribed by id (that one's events come from its resumable subscription; the
   * pattern's copy would arrive outside the replay order).
   */
  routes(channel: string, pattern: string | undefined): boolean {
    if (pattern === undefined) return this.channels.has(channel); // else unsubscribed, frames in flight
    return this.patterns.has(pattern) && !this.channels.has(channel);
  }

  /**
   * Records `id` as the channel's position; false when it is not newer than the last one
   * delivered (a replay overlapping live events, two patterns matching one sandbox): each
   * event is delivered at most once, in order.
   */
  admit(channel: string, id: EventId): boolean {
    const cursor = this.cursors.get(channel);
    if (cursor !== undefined && compareEventIds(id, cursor) <= 0) return false;
    this.cursors.set(channel, id);
    return true;
  }
}

/** A sandbox id or pattern as the broker takes it: non-empty, without CR or LF. */
export function checkName(name: string, what: string): string {
  if (typeof name !== 'string' || name.length === 0 || /[\r\n]/.test(name)) {
    throw new EventsPubSubError('INVALID_ARGUMENT', `${what} must be a non-empty string without CR or LF`);
  }
  return name;
}

/** The `types` option: type globs, each non-empty and without CR or LF; none means every type. */
export function checkTypes(types: readonly string[] | undefined): readonly string[] {
  if (types === undefined) return [];
  if (!Array.isArray(types)) throw new EventsPubSubError('INVALID_ARGUMENT', 'types must be an array of type globs');
  return types.map((glob) => checkName(glob, 'a type glob'));
}

/** `from` of `psubscribe()`: `$` (or nothing), or a cursor `w<n>` (docs/protocol.md, "Pattern resume"). */
export function parsePatternStart(from: string | undefined): PatternStart {
  if (from === undefined || from === '$') return 'now';
  if (typeof from !== 'string' || parseOrderCursor(from) === undefined) {
    throw new EventsPubSubError(
      'INVALID_ARGUMENT',
      `a pattern's from must be '$' or a cursor w<n>, got '${String(from).slice(0, 64)}'`,
    );
  }
  return from;
}

/** `from` of the config or `subscribe()`: `$` (or nothing), `0`, or an event id. */
export function parseStart(from: string | undefined): Start {
  if (from === undefined || from === '$') return 'now';
  if (from === '0') return ZERO_ID;
  const id = parseEventId(from);
  if (id === undefined) {
    throw new EventsPubSubError(
      'INVALID_ARGUMENT',
      `from must be '$', '0' or an event id <ms>-<seq>, got '${from.slice(0, 64)}'`,
    );
  }
  return id;
}
