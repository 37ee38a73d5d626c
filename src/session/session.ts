import type { Principal } from '../auth/principal.js';
import type { Broker, EVENTS_ONLY, Subscriber } from '../broker/broker.js';
import { type ChannelRun, releaseFrame } from '../broker/slab.js';
import { type ChannelTarget, channelKey, type PatternScope } from '../broker/scope.js';
import type { SandboxRef } from '../store/types.js';
import { type EventId, eventOrder, formatOrderCursor, type StoredEvent } from '../event/event.js';
import type { Protocol } from '../protocol/encode.js';
import type { EventStore, ReplayGap } from '../store/types.js';
import type { OutputBudget, OutputCut } from '../runtime/output-budget.js';
import { DeadlineQueue } from './expiry.js';
import type { ResumeFrom } from './query.js';
import { pagesAsItems, REPLAY_PAGE, ReplaySeam, replayPages, workspaceReplayPages, writePaced } from './replay.js';
import { compileGlob } from '../protocol/glob.js';
import type { TypeFilter } from './type-filter.js';
import { type OutputStream, WritePath } from './write-path.js';

/** What few channel subscriptions have: a seam, a type filter, a name other than the sandbox id. */
interface RareChannelState {
  seam: ReplaySeam<Buffer> | undefined;
  types: TypeFilter | undefined;
  displayName: string | undefined;
}

/**
 * One subscription to one channel. While a resume replays the channel, its live frames wait in
 * `seam` (see ReplaySeam). `types`, when set, is the event types it takes (live and replayed).
 */
export class ChannelSubscription implements ChannelTarget {
  // The target's fields are copied in rather than the target kept: one object per subscription,
  // not two (a connection may hold thousands; docs/performance.md, "Per-sandbox cost"). The
  // qualified key is built when asked for, not kept; the seam, the type filter and a name other
  // than the sandbox id (an admin's qualified name) share one object made only when one is set.
  readonly workspaceId: number;
  readonly sandboxId: string;
  private rare: RareChannelState | undefined = undefined;

  constructor(target: ChannelTarget) {
    this.workspaceId = target.workspaceId;
    this.sandboxId = target.sandboxId;
    if (target.displayName !== target.sandboxId) this.setRare('displayName', target.displayName);
  }

  get seam(): ReplaySeam<Buffer> | undefined {
    return this.rare?.seam;
  }

  set seam(seam: ReplaySeam<Buffer> | undefined) {
    this.setRare('seam', seam);
  }

  get types(): TypeFilter | undefined {
    return this.rare?.types;
  }

  set types(types: TypeFilter | undefined) {
    this.setRare('types', types);
  }

  /** The name as the client wrote it: the sandbox id unless it was qualified. */
  get displayName(): string {
    return this.rare?.displayName ?? this.sandboxId;
  }

  private setRare<F extends keyof RareChannelState>(field: F, value: RareChannelState[F]): void {
    if (this.rare === undefined) {
      if (value === undefined) return;
      this.rare = { seam: undefined, types: undefined, displayName: undefined };
    }
    this.rare[field] = value;
    const { seam, types, displayName } = this.rare;
    if (seam === undefined && types === undefined && displayName === undefined) this.rare = undefined;
  }

  get key(): string {
    return channelKey(this.workspaceId, this.sandboxId);
  }

  /** What was subscribed to: this subscription is that target. */
  get target(): ChannelTarget {
    return this;
  }
}

/**
 * A pattern subscription as a session holds it; `types` as for a channel. While a pattern
 * resume replays it, its live frames wait in `seam`, keyed by store order. `withCursor`: its
 * frames carry each event's resume cursor (`PRESUME ... WITHCURSOR`, docs/protocol.md).
 */
export interface PatternSubscription {
  readonly pattern: string;
  readonly scope: PatternScope;
  types: TypeFilter | undefined;
  withCursor: boolean;
  seam?: ReplaySeam<Buffer, number> | undefined;
}

const NO_PATTERNS: ReadonlyMap<string, PatternSubscription> = new Map();

/** The channel name a pattern's frame carries: the sandbox id, qualified for an admin's `{` pattern. */
function patternChannel(scope: PatternScope, event: StoredEvent): string {
  return scope === 'all' ? channelKey(event.workspaceId, event.sandboxId) : event.sandboxId;
}

/** A subscription that can hold live frames behind a replay. */
interface SeamHolder<K> {
  seam?: ReplaySeam<Buffer, K> | undefined;
}

/** What a resume can promise, told to the reader before any replayed event. */
export interface ResumeStatus {
  /**
   * `complete`: exactly what the reader missed follows; otherwise why it can't be exact
   * (`not_resumable`: the store keeps no order over a workspace, docs/protocol.md).
   */
  status: 'complete' | ReplayGap | 'not_resumable';
  /** Oldest retained id of the channel, if any. */
  earliestId?: EventId;
  /** Newest id ever issued for the channel, if any. */
  lastId?: EventId;
  /** A pattern resume: the newest store order issued, if known. */
  lastOrder?: number;
}

/**
 * What a session needs of its transport (the RESP connection or the SSE stream): its framing,
 * and what to do when the session ends it. The session never writes a byte of its own.
 */
export interface SessionTransport {
  /**
   * The frame of a live event. Absent for RESP, whose frames the broker encodes once per
   * channel, protocol and name and hands over as they are. Called as a plain function, without
   * its object.
   */
  readonly liveFrame?: (event: StoredEvent) => Buffer;
  /** The frame of one replayed event of `channel` (its name as the client writes it), through `pattern` if given. */
  replayFrame(event: StoredEvent, channel: string, pattern?: string): Buffer;
  /**
   * The frame of an event through a pattern subscribed with its cursors (RESP only: an SSE
   * pattern stream carries the cursor in every event's `id:` already). `cursor` is undefined
   * for an event without one (ephemeral).
   */
  readonly cursorFrame?: (event: StoredEvent, channel: string, pattern: string, cursor: string | undefined) => Buffer;
  /** False once the reader is gone: a replay stops. */
  isOpen(): boolean;
  /**
   * Unsent output passed the limit, or the daemon's output budget (`cause`): cut the reader off
   * (nobody else waits for it).
   */
  overflow(pendingBytes: number, cause: OutputCut): void;
  /** The token's deadline passed. */
  expired(): void;
  /**
   * Events this reader should have had cannot be delivered (the Redis engine found them trimmed
   * while it was cut off from Redis, docs/scaling.md): tell the reader and close, so that it
   * reconnects and its resume reports the gap.
   */
  eventsLost(message: string): void;
}

/**
 * What a session takes from its daemon (the ServerContext is one): the same object for every
 * session, not one built per client (docs/performance.md, "Ninth round: the first storm").
 */
export interface SessionContext {
  /**
   * `maxOutputBytes`: a replay lets a quarter of it wait before it waits for the reader to
   * drain; `closeGraceMs`: how long an ending transport's reader gets to take its last bytes.
   */
  readonly limits: { readonly maxOutputBytes: number; readonly closeGraceMs: number };
  readonly clockToleranceMs: number;
  /** The daemon-wide output budget this session's output counts in. */
  readonly outputBudget: OutputBudget;
  readonly broker: Broker;
  readonly store: EventStore;
}

/**
 * A client's state that does not depend on its transport, after Centrifuge's `Client`, of
 * which SSE is one more transport: its subscriptions and their registration with the broker,
 * resume (the replay seam, written once for TCP RESUME and SSE resume), paced bulk output,
 * the write path every byte to the client takes, and the token's expiry. docs/protocol.md
 * ("History and resume") and docs/http.md ("Resume") describe what a client sees.
 */
export class Session implements Subscriber {
  private frameForm: Protocol | typeof EVENTS_ONLY;
  /**
   * Channel subscriptions in the order they were made, by channelMapKey: the sandbox id in
   * the home workspace, the qualified key in any other.
   */
  readonly channels = new Map<string, ChannelSubscription>();
  /** Pattern subscriptions; made with the first (most sessions never hold one). */
  private patternMap: Map<string, PatternSubscription> | undefined = undefined;
  /** Set once the transport is closing: live events are no longer taken. */
  closed = false;
  /** The workspace of the first channel held (while any is): its channels are keyed by sandbox id. */
  private homeWorkspace = 0;

  /** Every session's token expiry, on one timer (DeadlineQueue). */
  private static readonly expiries = new DeadlineQueue<Session>((session) => session.expired());

  private readonly output: WritePath;
  /** The instant this session is filed at in `expiries`, while its token's expiry is armed. */
  private expiryAt: number | undefined = undefined;
  private readonly liveFrame: ((event: StoredEvent) => Buffer) | undefined;
  /** Channel subscriptions with a seam: while none, live frames skip the lookup. */
  private resuming = 0;
  /** Subscriptions with a type filter: while none, live frames skip the lookup. */
  private filtered = 0;
  /** Pattern subscriptions whose frames carry cursors: while none, pattern frames skip the lookup. */
  private cursorPatterns = 0;
  /**
   * True while every live frame is written as the broker made it: open, RESP (no frame of its
   * own), no type filter, no resume, no pattern with cursors. `deliver` then looks nothing up,
   * and a channel's run may be followed (`deliverInRun`). Kept by `takesChanged`.
   */
  private direct: boolean;

  constructor(
    private readonly context: SessionContext,
    /** What the transport writes to: a socket, or the response carrying an event stream. */
    output: OutputStream,
    /** The broker's frame format for this session: a RESP version, or EVENTS_ONLY (SSE). */
    protocol: Protocol | typeof EVENTS_ONLY,
    /** The output limit in bytes; a function because it grows once a RESP client authenticates. */
    outputLimit: () => number,
    private readonly transport: SessionTransport,
  ) {
    this.frameForm = protocol;
    this.output = new WritePath(
      output,
      outputLimit,
      (pending, cause) => transport.overflow(pending, cause),
      context.limits.closeGraceMs,
      context.outputBudget,
      // The transport closes the session, and so its output, when its stream closes (close()).
      false,
    );
    this.liveFrame = transport.liveFrame;
    this.direct = this.takesAsMade();
  }

  /**
   * What the session takes, or how, changed (a filter, a resume, a cursor form, the protocol,
   * close): `direct` again, and the write path stops following a channel's run, whose frames
   * the broker would no longer hand it one by one.
   */
  private takesChanged(): void {
    this.direct = this.takesAsMade();
    this.output.leaveRun();
  }

  /** Whether every live frame goes to the output as the broker made it (`direct`, deliver). */
  private takesAsMade(): boolean {
    return (
      !this.closed &&
      this.liveFrame === undefined &&
      this.filtered === 0 &&
      this.resuming === 0 &&
      this.cursorPatterns === 0
    );
  }

  /** The broker's frame format for this session (HELLO switches a RESP version). */
  get protocol(): Protocol | typeof EVENTS_ONLY {
    return this.frameForm;
  }

  set protocol(protocol: Protocol | typeof EVENTS_ONLY) {
    this.frameForm = protocol;
    this.takesChanged(); // the broker frames the next event for the new form
  }

  /** The output a replay lets wait before it waits for the reader to drain. */
  private get replayPaceBytes(): number {
    return this.context.limits.maxOutputBytes / 4;
  }

  get subscriptionCount(): number {
    return this.channels.size + (this.patternMap?.size ?? 0);
  }

  /** Pattern subscriptions in the order they were made. */
  get patterns(): ReadonlyMap<string, PatternSubscription> {
    return this.patternMap ?? NO_PATTERNS;
  }

  private addPattern(subscription: PatternSubscription): void {
    this.patternMap ??= new Map();
    this.patternMap.set(subscription.pattern, subscription);
  }

  /**
   * A channel's key in `channels`. A session's channels are nearly always in one workspace
   * (only an admin's span several), so they are keyed by the sandbox id, a string the
   * subscription holds anyway, instead of a qualified key built per subscription and event
   * (docs/performance.md, "Per-sandbox cost"). Sandbox ids never start with `{`, so the two
   * forms never meet.
   */
  private channelMapKey(workspaceId: number, sandboxId: string): string {
    return workspaceId === this.homeWorkspace ? sandboxId : channelKey(workspaceId, sandboxId);
  }

  /** The subscription to a channel, if this session holds one. */
  channel(ref: SandboxRef): ChannelSubscription | undefined {
    return this.channels.get(this.channelMapKey(ref.workspaceId, ref.sandboxId));
  }

  private addChannel(subscription: ChannelSubscription): void {
    if (this.channels.size === 0) this.homeWorkspace = subscription.workspaceId;
    this.channels.set(this.channelMapKey(subscription.workspaceId, subscription.sandboxId), subscription);
  }

  // --- Output -------------------------------------------------------------------------------

  /** Unsent output in bytes (queued here plus the socket's buffer). */
  get pendingBytes(): number {
    return this.output.pendingBytes;
  }

  /** True once the write path takes no more frames (closed, overflowed, or ending). */
  get outputClosed(): boolean {
    return this.output.isClosed;
  }

  write(frame: Buffer): void {
    this.output.write(frame);
  }

  /** Resolves once unsent output is at most `bytes` (or the output closed). */
  whenBelow(bytes: number): Promise<void> {
    return this.output.whenBelow(bytes);
  }

  isOpen(): boolean {
    return this.transport.isOpen();
  }

  /**
   * Writes a long reply as the reader takes it: each page of `pages` is read from the store
   * only when the output has drained below the pace, then encoded and written, so no more than
   * about a page and the pace are ever held (docs/protocol.md, "HISTORY"). Resolves to false
   * when the reader went away meanwhile.
   */
  async writeReply<T>(pages: AsyncIterable<readonly T[]>, encode: (page: readonly T[]) => Buffer): Promise<boolean> {
    await writePaced(this, pagesAsItems(pages), (page) => this.output.write(encode(page)), this.replayPaceBytes);
    return this.isOpen() && !this.output.isClosed;
  }

  /** Writes what is queued, then half-closes; the reader gets a grace period to take it. */
  endAfterWrites(): void {
    this.output.endAfterWrites();
  }

  /** Drops queued output: the transport is being destroyed. */
  discard(): void {
    this.output.discard();
  }

  // --- Token expiry --------------------------------------------------------------------------

  /**
   * A token that expires does not keep its client (docs/protocol.md, docs/http.md): at its
   * `exp` plus the clock tolerance the transport's `expired` runs, unless a fresh token came.
   */
  expireWith(principal: Principal): void {
    this.cancelExpiry();
    this.expiryAt = Session.expiries.add(this, principal.expiresAt + this.context.clockToleranceMs);
  }

  cancelExpiry(): void {
    if (this.expiryAt === undefined) return;
    Session.expiries.delete(this, this.expiryAt);
    this.expiryAt = undefined;
  }

  private expired(): void {
    this.expiryAt = undefined;
    this.transport.expired();
  }

  // --- Subscriptions -------------------------------------------------------------------------

  /**
   * Subscribes to a channel; the existing subscription if there is one (counted once, as
   * Redis). `types` replaces the subscription's type filter (undefined: every type), so a
   * plain SUBSCRIBE of a filtered channel takes every type again.
   */
  subscribe(target: ChannelTarget, types?: TypeFilter): ChannelSubscription {
    let subscription = this.channel(target);
    if (subscription === undefined) {
      subscription = new ChannelSubscription(target);
      this.addChannel(subscription);
      this.context.broker.subscribe(this, subscription);
    }
    this.setTypes(subscription, types);
    return subscription;
  }

  unsubscribe(ref: SandboxRef): boolean {
    const subscription = this.channel(ref);
    if (subscription === undefined) return false;
    this.channels.delete(this.channelMapKey(ref.workspaceId, ref.sandboxId));
    this.context.broker.leave(this, subscription);
    this.dropSeam(subscription);
    this.setTypes(subscription, undefined);
    return true;
  }

  /**
   * Subscribes to a pattern; false if it was held already (its type filter and frame form are
   * replaced all the same, so a plain PSUBSCRIBE takes every type in Redis's frames again).
   */
  psubscribe(pattern: string, scope: PatternScope, types?: TypeFilter, withCursor = false): boolean {
    const held = this.patterns.get(pattern);
    if (held !== undefined) {
      this.setTypes(held, types);
      this.setCursorForm(held, withCursor);
      return false;
    }
    const subscription: PatternSubscription = { pattern, scope, types: undefined, withCursor: false };
    this.addPattern(subscription);
    this.setTypes(subscription, types);
    this.setCursorForm(subscription, withCursor);
    this.context.broker.psubscribe(this, pattern, scope);
    return true;
  }

  punsubscribe(pattern: string): boolean {
    const held = this.patterns.get(pattern);
    if (held === undefined) return false;
    this.patternMap!.delete(pattern);
    this.context.broker.punsubscribe(this, held.pattern, held.scope);
    this.dropSeam(held);
    this.setTypes(held, undefined);
    this.setCursorForm(held, false);
    return true;
  }

  private setTypes(subscription: { types: TypeFilter | undefined }, types: TypeFilter | undefined): void {
    if (subscription.types !== undefined) this.filtered -= 1;
    subscription.types = types;
    if (types !== undefined) this.filtered += 1;
    this.takesChanged();
  }

  /** Only a transport that can frame cursors (RESP) sends them; an SSE stream has them in `id:`. */
  private setCursorForm(subscription: PatternSubscription, withCursor: boolean): void {
    if (subscription.withCursor) this.cursorPatterns -= 1;
    subscription.withCursor = withCursor && this.transport.cursorFrame !== undefined;
    if (subscription.withCursor) this.cursorPatterns += 1;
    this.takesChanged();
  }

  /** An event's frame through a pattern that carries cursors. */
  private cursorFrame(subscription: PatternSubscription, event: StoredEvent, channel: string): Buffer {
    const order = eventOrder(event);
    const cursor = order === undefined ? undefined : formatOrderCursor(order);
    return this.transport.cursorFrame!(event, channel, subscription.pattern, cursor);
  }

  /** Drops every subscription (RESP RESET). */
  unsubscribeAll(): void {
    for (const subscription of [...this.channels.values()]) this.unsubscribe(subscription);
    for (const pattern of [...this.patterns.keys()]) this.punsubscribe(pattern);
  }

  /**
   * The transport closed: nothing more is written, subscriptions and timers go. The counters
   * fall with the subscriptions they count rather than being set to zero: most sessions hold no
   * seam, filter or pattern, and a field written with the value it already holds still costs V8
   * its note that the field never changes, and with it the optimized code of the connection path
   * that relied on it (docs/performance.md, "Ninth round: the first storm").
   */
  close(): void {
    this.closed = true;
    this.takesChanged();
    this.output.discard();
    this.cancelExpiry();
    const broker = this.context.broker;
    for (const subscription of this.channels.values()) {
      broker.leave(this, subscription);
      this.dropSeam(subscription); // a resume under way finds nothing left to release
      this.setTypes(subscription, undefined);
    }
    this.channels.clear();
    const patterns = this.patternMap;
    if (patterns === undefined) return;
    for (const subscription of patterns.values()) {
      broker.punsubscribe(this, subscription.pattern, subscription.scope);
      this.dropSeam(subscription);
      this.setTypes(subscription, undefined);
      this.setCursorForm(subscription, false);
    }
    this.patternMap = undefined;
  }

  // --- Live delivery (Subscriber) ---------------------------------------------------------

  /** Subscriber.interrupt: the broker cannot deliver events of a channel this session holds. */
  interrupt(message: string): void {
    this.transport.eventsLost(message);
  }

  /**
   * The broker's fan-out. A frame of a resuming channel goes through its seam; one that came
   * through a pattern never does: a replay sends `message` frames of its channel, never the
   * `pmessage` frames of a pattern that also matches it (Redis sends both).
   */
  deliver(frame: Buffer, event: StoredEvent, viaPattern: boolean, pattern?: string): void {
    if (this.direct) {
      this.output.write(frame); // a closed output gives the frame back
      return;
    }
    // A frame not taken gives its view of the broker's slab back (Subscriber.deliver).
    if (this.closed || this.output.isClosed || (this.filtered > 0 && !this.takes(event, viaPattern, pattern))) {
      releaseFrame(frame);
      return;
    }
    const liveFrame = this.liveFrame;
    let bytes = liveFrame === undefined ? frame : liveFrame(event);
    if (viaPattern && this.cursorPatterns > 0) {
      const subscription = this.patterns.get(pattern ?? '');
      if (subscription?.withCursor === true) {
        bytes = this.cursorFrame(subscription, event, patternChannel(subscription.scope, event));
      }
    }
    if (bytes !== frame && frame.length > 0) releaseFrame(frame);
    if (this.resuming === 0) {
      this.output.write(bytes);
      return;
    }
    if (viaPattern) {
      const subscription = this.patterns.get(pattern ?? '');
      this.throughSeam(subscription, bytes, eventOrder(event));
    } else {
      const subscription = this.channel(event);
      this.throughSeam(subscription, bytes, event.id);
    }
  }

  /**
   * The broker's fan-out, for a channel frame that opens a run (broker/slab.ts, ChannelRun):
   * delivered as `deliver` would, and true when the write path follows the run, i.e. the frames
   * after it would only be appended as they are (`direct`: none filtered, held by a seam or
   * re-encoded; whatever changes that leaves the run first, `takesChanged`).
   */
  deliverInRun(frame: Buffer, event: StoredEvent, run: ChannelRun): boolean {
    if (!this.direct) {
      this.deliver(frame, event, false);
      return false;
    }
    return this.output.writeInRun(frame, run);
  }

  /** Writes, holds or drops a live frame as its subscription's seam says (none: writes it). */
  private throughSeam<K>(subscription: SeamHolder<K> | undefined, bytes: Buffer, key: K | undefined): void {
    const seam = subscription?.seam;
    if (seam === undefined) {
      this.output.write(bytes);
      return;
    }
    const action = seam.admit(bytes, key, bytes.length);
    if (action === 'hold') {
      // Held frames count against the output limit and the budget like queued ones.
      this.output.hold(bytes.length);
    } else if (action === 'write') {
      this.output.write(bytes);
      if (seam.finished) this.dropSeam(subscription!);
    } else {
      releaseFrame(bytes);
    }
  }

  /** Whether the subscription an event came through takes its type. */
  private takes(event: StoredEvent, viaPattern: boolean, pattern: string | undefined): boolean {
    const types = viaPattern ? this.patterns.get(pattern ?? '')?.types : this.channel(event)?.types;
    return types === undefined || types.matches(event.type);
  }

  // --- Resume --------------------------------------------------------------------------------

  /**
   * Subscribes to `target` from a last-seen id: nothing missing, nothing twice, even while
   * publishing goes on. The channel is subscribed with its live frames held back before the
   * store is read; `tell` gets the status before any replayed event (the transport frames it:
   * a RESP `resume` confirmation, an SSE `gap` event); the replay is written paced by the
   * reader; then the held frames the replay did not cover. If reading fails, the subscription
   * is dropped (it must not silently lack events) and the error thrown.
   *
   * Resolves to false when the reader went away meanwhile.
   */
  async resume(
    target: ChannelTarget,
    from: ResumeFrom,
    tell: (status: ResumeStatus) => void,
    types?: TypeFilter,
  ): Promise<boolean> {
    const subscription = this.beginReplay(target);
    this.setTypes(subscription, types);
    return this.replayBehindSeam<EventId>(
      subscription,
      () => this.unsubscribe(target),
      async (cover) => {
        if (from === 'now') {
          tell({ status: 'complete' });
          return true;
        }
        const store = this.context.store;
        // The status is judged for the types this subscription takes (per-type retention).
        const first = await store.replayAfter(target, from, REPLAY_PAGE, types);
        if (!this.isOpen()) return false;
        if (first.complete) cover(from);
        tell({
          status: first.complete ? 'complete' : (first.gap ?? 'unknown'),
          earliestId: first.earliestId,
          lastId: first.lastId,
        });
        const transport = this.transport;
        await writePaced(
          this,
          replayPages(store, target, first),
          (event) => {
            // A filtered-out event is covered all the same: its live copy is dropped too.
            if (types === undefined || types.matches(event.type)) {
              this.output.write(transport.replayFrame(event, target.displayName));
            }
            cover(event.id);
          },
          this.replayPaceBytes,
        );
        return this.isOpen();
      },
    );
  }

  /**
   * Subscribes to a pattern from a cursor (a store order, docs/protocol.md, "Pattern resume"):
   * the events of every matching sandbox after it, in store order (so each sandbox's in id
   * order), then live ones; nothing missing, nothing twice, with the seam of `resume` keyed by
   * store order. `now` replays nothing and tells the newest cursor, the position a reader
   * resumes from if it goes before any event. A store that keeps no order over the scope (the
   * Redis engine keeps one per workspace, none over every workspace) answers `not_resumable` and
   * the subscription goes on live. `withCursor`: the frames carry each event's cursor. Resolves
   * to false when the reader went away.
   */
  async presume(
    pattern: string,
    scope: PatternScope,
    after: number | 'now',
    tell: (status: ResumeStatus) => void,
    types?: TypeFilter,
    withCursor = false,
  ): Promise<boolean> {
    const store = this.context.store;
    if (store.replayWorkspaceAfter === undefined || (scope === 'all' && store.orderPerWorkspace === true)) {
      this.psubscribe(pattern, scope, types, withCursor);
      tell({ status: after === 'now' ? 'complete' : 'not_resumable' });
      return true;
    }
    const subscription = this.beginPatternReplay(pattern, scope);
    this.setTypes(subscription, types);
    this.setCursorForm(subscription, withCursor);
    const matches = compileGlob(pattern);
    return this.replayBehindSeam<number>(
      subscription,
      () => this.punsubscribe(pattern),
      async (cover) => {
        if (after === 'now') {
          // From now on, told as a position: the newest order issued (a read past every order
          // replays nothing). Held live frames at or before it are older than the position and
          // dropped, so a reader that resumes from this cursor later misses nothing, gets nothing twice.
          const { lastOrder } = await store.replayWorkspaceAfter!(scope, Number.MAX_SAFE_INTEGER, 1);
          if (!this.isOpen()) return false;
          cover(lastOrder);
          tell({ status: 'complete', lastOrder });
          return true;
        }
        const first = await store.replayWorkspaceAfter!(scope, after, REPLAY_PAGE, types);
        if (!this.isOpen()) return false;
        if (first.complete) cover(after);
        tell({ status: first.complete ? 'complete' : (first.gap ?? 'unknown'), lastOrder: first.lastOrder });
        const transport = this.transport;
        await writePaced(
          this,
          workspaceReplayPages(store, scope, first),
          (event) => {
            const channel = patternChannel(scope, event);
            if (matches(channel) && (types === undefined || types.matches(event.type))) {
              this.output.write(
                subscription.withCursor
                  ? this.cursorFrame(subscription, event, channel)
                  : transport.replayFrame(event, channel, pattern),
              );
            }
            const order = eventOrder(event);
            if (order !== undefined) cover(order);
          },
          this.replayPaceBytes,
        );
        return this.isOpen();
      },
    );
  }

  /**
   * Runs a replay while `holder`'s seam holds its live frames: `replay` reports each key it
   * covered (the replay's last event, or with nothing to replay the point it resumed from, so
   * a late live copy is dropped too; never a `future` point, which the reader can't have).
   * Then the held frames it did not cover are written. If reading fails, the subscription is
   * dropped (it must not silently lack events) and the error thrown.
   */
  private async replayBehindSeam<K>(
    holder: SeamHolder<K>,
    drop: () => void,
    replay: (cover: (key: K) => void) => Promise<boolean>,
  ): Promise<boolean> {
    let coveredThrough: K | undefined;
    try {
      return await replay((key) => {
        coveredThrough = key;
      });
    } catch (error) {
      drop();
      throw error;
    } finally {
      this.endReplay(holder, coveredThrough);
    }
  }

  /** From now, live frames of this pattern go through a new seam (a repeated presume restarts it). */
  private beginPatternReplay(pattern: string, scope: PatternScope): PatternSubscription {
    const existing = this.patterns.get(pattern);
    if (existing !== undefined) this.dropSeam(existing);
    const seam = new ReplaySeam<Buffer, number>((a, b) => a - b);
    this.resuming += 1;
    this.takesChanged(); // live frames go through the seam from the next one
    if (existing !== undefined) {
      existing.seam = seam;
      return existing;
    }
    // The seam is in place before the broker can deliver anything of the pattern.
    const subscription: PatternSubscription = { pattern, scope, types: undefined, withCursor: false, seam };
    this.addPattern(subscription);
    this.context.broker.psubscribe(this, pattern, scope);
    return subscription;
  }

  /** From now, live frames of this channel go through a new seam (a repeated resume restarts it). */
  private beginReplay(target: ChannelTarget): ChannelSubscription {
    const existing = this.channel(target);
    if (existing !== undefined) this.dropSeam(existing);
    const seam = new ReplaySeam<Buffer>();
    this.resuming += 1;
    this.takesChanged(); // live frames go through the seam from the next one
    if (existing !== undefined) {
      existing.seam = seam;
      return existing;
    }
    // The seam is in place before the broker can deliver anything of the channel.
    const subscription = new ChannelSubscription(target);
    subscription.seam = seam;
    this.addChannel(subscription);
    this.context.broker.subscribe(this, subscription);
    return subscription;
  }

  /** The replay was written up to `lastReplayedId`: the held frames it did not cover follow. */
  private endReplay<K>(subscription: SeamHolder<K>, lastReplayedId: K | undefined): void {
    const seam = subscription.seam;
    if (seam === undefined) return;
    this.output.unhold(seam.heldBytes);
    for (const frame of seam.end(lastReplayedId, releaseFrame)) this.output.write(frame);
    if (seam.finished) this.dropSeam(subscription);
  }

  private dropSeam<K>(subscription: SeamHolder<K>): void {
    const seam = subscription.seam;
    if (seam === undefined) return;
    this.output.unhold(seam.heldBytes);
    subscription.seam = undefined;
    this.resuming -= 1;
    this.takesChanged();
  }
}
