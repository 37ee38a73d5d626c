import type { EventId, NewEvent, StoredEvent } from '../event/event.js';

/** Identifies one sandbox's stream: channels are keyed by workspace *and* sandbox (docs/protocol.md). */
export interface SandboxRef {
  workspaceId: number;
  sandboxId: string;
}

/** History reads return at most this many events (docs/protocol.md: LIMIT 1 to 1000, default 100). */
export const MAX_HISTORY_LIMIT = 1000;
export const DEFAULT_HISTORY_LIMIT = 100;

export interface HistoryQuery extends SandboxRef {
  /** Only events of this exact type. */
  type?: string;
  /** Only events with an id strictly greater than this one. */
  afterId?: EventId;
  /** Only events with `timestamp >= since` (Unix ms). */
  since?: number;
  /** 1..1000. */
  limit: number;
  /**
   * false (default): the oldest matching events, oldest first.
   * true: the newest `limit` matching events, still returned oldest first.
   */
  newest?: boolean;
}

/**
 * Why a replay is not complete. `trimmed`: the id is older than what is retained (events after
 * it were pruned). `unknown`: the id is in the retained range but was never issued. `future`:
 * the id is newer than the last id issued for this sandbox.
 */
export type ReplayGap = 'trimmed' | 'unknown' | 'future';

export interface ReplayResult {
  /** Every retained event with an id greater than the requested one, oldest first. */
  events: StoredEvent[];
  /** True when `events` is exactly what the client missed; false when it cannot be. */
  complete: boolean;
  gap?: ReplayGap;
  /** Oldest retained id of this sandbox, if any (Mercure's `earliest`). */
  earliestId?: EventId;
  /** Newest id ever issued for this sandbox, if any. */
  lastId?: EventId;
}

/**
 * A replay of a workspace (or of every workspace) in store order: the events after a cursor,
 * oldest first, and whether they are exactly what a reader at that cursor missed.
 */
export interface WorkspaceReplay {
  events: StoredEvent[];
  /** True when nothing after the cursor was pruned and the cursor was issued by this store. */
  complete: boolean;
  /** `trimmed`: events after the cursor were pruned; `future`: the cursor was never issued. */
  gap?: ReplayGap;
  /** The newest order issued by the store: a cursor that replays nothing already seen. */
  lastOrder: number;
}

/**
 * A history reply read page by page (docs/protocol.md, "HISTORY"): how many events it holds is
 * known before any of them is read, so a RESP array header can go first and the events follow
 * as the reader takes them; no more than a page is ever held.
 */
export interface HistoryPages {
  /** Events in the reply. */
  readonly count: number;
  /**
   * `count` entries, oldest first, a page read each time the writer asks. An entry is
   * undefined when retention pruned that event after the count was taken.
   */
  pages(): AsyncIterable<readonly (StoredEvent | undefined)[]>;
}

/**
 * One `--retention` rule (docs/operations.md, "Per-type retention"): the event types its glob
 * matches (PSUBSCRIBE's glob rules) are a class of their own in each sandbox, kept to `maxCount`
 * events independently of every other class.
 */
export interface RetentionRule {
  glob: string;
  maxCount: number;
}

/**
 * The event types a reader takes (a subscription's type filter). With per-type retention a
 * replay is exact for a reader when no event of a type it takes was pruned after its resume
 * point, whatever was pruned of other types.
 */
export interface ReaderTypes {
  matches(type: string): boolean;
}

export interface RetentionPolicy {
  /** Events kept per sandbox; older ones are pruned. */
  maxCount: number;
  /** Events older than this many milliseconds are pruned. */
  maxAgeMs: number;
  /**
   * Bytes of event lines (the JSON as delivered) kept per sandbox; the oldest go first. Infinity
   * (the default when absent) for no limit. See docs/operations.md, "Retention".
   */
  maxBytes?: number;
  /**
   * Globs of event types that are delivered live but never stored (`--ephemeral-types`): they
   * take an id in their sandbox's order, and never count against retention. See
   * docs/operations.md, "Ephemeral events".
   */
  ephemeralTypes?: readonly string[];
  /**
   * Per-type count rules, first match wins; events matching none form one more class, kept to
   * `maxCount`. Each class is pruned on its own, within `maxAgeMs` and `maxBytes` each. Fixed
   * when a store opens (a store ignores changed rules in setRetention).
   */
  rules?: readonly RetentionRule[];
}

/**
 * Called once per durable event, in id order per sandbox. `appended` is the very object that
 * was handed to this store's `append` for the event, so the caller of `append` can learn what
 * the fan-out did without a lookup per event; it is undefined for events that did not come from
 * an `append` of this process (the Redis engine's events published by other nodes). It returns
 * how many subscribers the event was delivered to, or nothing.
 */
export type DurableEventListener = (
  event: StoredEvent,
  appended: NewEvent | undefined,
  /**
   * Set only by the Redis engine, when its own event came back by subscription before the
   * append's reply did: it was fanned out then, as another node's event, to this many
   * subscribers; the listener only records that for the append's caller, delivering nothing.
   */
  alreadyDelivered?: number,
  // biome-ignore lint/suspicious/noConfusingVoidType: a listener that delivers nothing itself just returns.
) => number | void;

/**
 * Who waits for one `appendWith`: told exactly once, after the listener saw the durable event
 * (`appended`), or with the reason it was not stored (`refused`). A method pair on an object the
 * caller already has, so an append needs no promise and no closure (docs/performance.md).
 */
export interface AppendReceipt {
  appended(event: StoredEvent): void;
  refused(error: unknown): void;
}

/**
 * Where events live. The protocol code only ever talks to this interface, so an embedded store
 * (memory, SQLite) and a shared Redis engine are interchangeable.
 *
 * Durability (docs/operations.md, "Durability"): `append` resolves only once the event is durable, and the
 * listener sees an event only once it is durable, so no client can ever hold an id that a
 * restarted broker could hand to a different event. The listener is called synchronously,
 * in id order per sandbox, *before* the `append` promise of that event resolves.
 */
export interface EventStore {
  readonly kind: string;
  /** Registers the one listener that fans durable events out to subscribers. */
  setListener(listener: DurableEventListener): void;
  /** Assigns id and timestamp, persists, notifies the listener, then resolves. */
  append(input: NewEvent): Promise<StoredEvent>;
  /**
   * Optional: `append` without a promise, durable on the same terms. A store that is durable at
   * once (memory) answers `receipt` before returning; the SQLite store answers every append of
   * one commit together, once the commit is done. Stores without it (the Redis engine) are
   * called through `append`.
   */
  appendWith?(input: NewEvent, receipt: AppendReceipt): void;
  /** Retained events of one sandbox, oldest first. */
  history(query: HistoryQuery): Promise<StoredEvent[]>;
  /**
   * Optional: the same events as `history`, read in pages (a store that reads events from a
   * file or a server implements it, so that a large reply is never held whole). Stores without
   * it are read with `history` (see historyPages in semantics.ts).
   */
  historyPages?(query: HistoryQuery): Promise<HistoryPages>;
  /**
   * Retained events after `afterId`, at most `limit`, and whether that replay is complete for a
   * reader of `types` (every type when absent): with per-type retention, events of other types
   * pruned after `afterId` do not make it incomplete (docs/protocol.md, "History and resume").
   */
  replayAfter(ref: SandboxRef, afterId: EventId, limit: number, types?: ReaderTypes): Promise<ReplayResult>;
  /**
   * Optional (docs/protocol.md, "Pattern resume"): the retained events of one workspace (or of
   * every workspace: 'all') whose order is greater than `after`, in order, at most `limit`, and
   * whether that replay is exact. Stores that keep no order over a workspace (the Redis engine
   * without its workspace keys) leave it out, and a pattern resume answers `not_resumable`.
   * `types` as for replayAfter.
   */
  replayWorkspaceAfter?(
    scope: number | 'all',
    after: number,
    limit: number,
    types?: ReaderTypes,
  ): Promise<WorkspaceReplay>;
  /**
   * Optional: true when the store keeps its order per workspace only (the Redis engine), so
   * that `replayWorkspaceAfter` serves one workspace, and a pattern over every workspace ('all')
   * answers `not_resumable`.
   */
  readonly orderPerWorkspace?: boolean;
  /** Flushes pending writes and releases files. Idempotent. */
  close(): Promise<void>;
  /**
   * New retention limits at runtime (a config reload); they apply from the next append or
   * background prune (docs/operations.md, "Retention"). Throws, changing nothing, when invalid.
   */
  setRetention(retention: RetentionPolicy): void;
  /**
   * The sandboxes of one workspace (or of every workspace: 'all') that hold retained events,
   * by workspace then sandbox id. Optional: callers of a store without it answer NOT_SUPPORTED
   * (every store here lists; the Redis engine from its sandbox indexes, docs/scaling.md).
   */
  listSandboxes?(scope: number | 'all'): Promise<SandboxListing[]>;
  /**
   * Optional (docs/scaling.md): the broker tells a shared engine which sandboxes this node's own
   * clients watch, so the node subscribes upstream (Redis) only to those. Called when a channel
   * gets its first local subscriber (`true`) and loses its last (`false`). Embedded stores have
   * no upstream and leave it out.
   */
  setInterest?(ref: SandboxRef, interested: boolean): void;
  /** Optional: the same for pattern subscriptions of one workspace, or of every workspace ('all'). */
  setPatternInterest?(scope: number | 'all', interested: boolean): void;
  /**
   * Optional: a shared engine that finds events of a sandbox lost to this node's subscribers
   * (missed while it was cut off from the engine, and trimmed before it could fetch them) calls
   * this, so that every local subscriber that would have received them is interrupted with
   * `message` (an error line) and resumes from its last id (docs/scaling.md, "Gap-fill").
   */
  setLostEventsListener?(listener: LostEventsListener): void;
  /**
   * Optional: whether the store can serve. `loading`: not connected yet since the node
   * started (commands that need the store answer `-LOADING`, as Redis does while it loads its
   * dataset); `unavailable`: connected before, cut off now (or catching up after a reconnect);
   * for SQLite, its last commit failed and no write has succeeded since (docs/operations.md,
   * "Readiness"); `ready`. The memory store is always ready and leaves it out.
   */
  readiness?(): StoreReadiness;
}

export type StoreReadiness = 'loading' | 'ready' | 'unavailable';

export type LostEventsListener = (ref: SandboxRef, message: string) => void;

/** One sandbox that holds events, as `listSandboxes` reports it. */
export interface SandboxListing extends SandboxRef {
  /** Newest id issued for it: a resume point that replays nothing already seen. */
  lastId: EventId;
}

/** What the broker calls on a store that wants to know this node's interests. */
export type InterestHooks = Pick<EventStore, 'setInterest' | 'setPatternInterest' | 'setLostEventsListener'>;
