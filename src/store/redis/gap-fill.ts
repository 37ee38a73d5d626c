/**
 * Gap-fill (docs/scaling.md, "Gap-fill"): Redis pub/sub delivers at most once, so messages
 * pushed while the node's subscriber connection was down (or stalled, then cut) are lost to it,
 * though their events are in the streams. When the connection comes back, every sandbox this
 * node watches (by channel, or by a pattern of its workspace) is brought up to date from its
 * stream before live delivery resumes: from the last id delivered here, in order, once. Live
 * messages that arrive meanwhile are held and then delivered behind the fill (an id already
 * delivered is dropped). If events between that id and the stream's retained ones were trimmed,
 * the local subscribers are interrupted instead, so that they resume and are told.
 */
import { compareEventIds, type EventId, type StoredEvent } from '../../event/event.js';
import { sandboxKey } from '../semantics.js';
import type { LostEventsListener, RetentionPolicy, SandboxRef } from '../types.js';
import { Cluster, type Redis } from 'ioredis';
import type { RedisEngineStats, ScriptedRedis } from './connection.js';
import { refFromStreamKey, streamKeyPattern } from './keys.js';
import type { PublishFence } from './publish-fence.js';
import { readStreamAfter } from './reads.js';
import type { Subscriptions } from './subscriptions.js';

const RETRY_MS = 200;
/** Entries per read of a fill: one script call never copies a whole long stream at once. */
const FILL_PAGE = 1000;
const SCAN_COUNT = 1000;
/** See fillFrom. */
const CLOCK_MARGIN_MS = 100;

const LOST_MESSAGE =
  'ERR events lost: this node was cut off from its Redis engine and events of this channel were trimmed meanwhile; resume from your last event id';

export type GapFillStats = Pick<RedisEngineStats, 'gapFills' | 'gapFilled' | 'gapsReported'>;

export class GapFill {
  /** Live events held while a fill runs; undefined when delivering live. */
  private held: StoredEvent[] | undefined;
  /** Bumped by each reconnect: an older fill stops. */
  private generation = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** The Redis clock when the engine first connected: where a fill starts if nothing was received. */
  private connectedAt: EventId | undefined;
  lostListener: LostEventsListener | undefined;
  /** The next fill starts no earlier than this for sandboxes with nothing delivered here (see fillFrom). */
  private floor: EventId | undefined;

  /**
   * `scanNodes`: where the streams of pattern scopes are listed (default: every master); a
   * Cluster shard lists its own master's only, as it carries only the messages of its slots.
   */
  constructor(
    private readonly commands: ScriptedRedis,
    private readonly retention: RetentionPolicy,
    private readonly fence: PublishFence,
    private readonly subscriptions: Subscriptions,
    private readonly onStatus: (status: string, error?: unknown) => void,
    private readonly stats: GapFillStats,
    private readonly scanNodes?: () => Redis[],
  ) {}

  /**
   * The next fill (a pattern newly registered in Cluster, pattern-interest.ts) is about events
   * since `ms`: a sandbox with nothing delivered here starts there, not at the connection's start.
   */
  fillFrom(ms: number): void {
    // Ids come from the masters' clocks, `ms` from this node's: the margin allows for them to
    // differ by that much (events up to it before the pattern may reach it too; none after is missed).
    const floor = { ms: ms - CLOCK_MARGIN_MS, seq: 0 };
    if (this.floor === undefined || compareEventIds(floor, this.floor) < 0) this.floor = floor;
  }

  /** Whether live delivery waits for a fill. */
  get filling(): boolean {
    return this.held !== undefined;
  }

  /** Redis's clock (ms) at the first connect. */
  firstConnect(ms: number): void {
    this.connectedAt ??= { ms, seq: 0 };
  }

  /** Takes over another connection's start point (see startPoint), if this one has none yet. */
  inheritStart(from: EventId | undefined): void {
    this.connectedAt ??= from;
  }

  /**
   * Where a fill of a sandbox with nothing delivered here starts from, for a connection that
   * takes this one's routes over (a Cluster slot moved to another master).
   */
  startPoint(): EventId | undefined {
    return this.fence.receivedThrough() ?? this.connectedAt;
  }

  /** Every message of the subscriber connection comes here. */
  live(event: StoredEvent): void {
    if (this.held !== undefined) this.held.push(event);
    else this.fence.receive(event);
  }

  /** The subscriber connection came back: hold live delivery and fill once `confirmed`. */
  reconnected(confirmed: Promise<unknown>): void {
    if (this.closed) return;
    this.held ??= [];
    this.fence.hold();
    const generation = ++this.generation;
    confirmed.then(
      () => this.run(generation),
      () => {}, // the connection went again: its next connect starts another fill
    );
  }

  private run(generation: number): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.fill(generation).then(
      (done) => {
        if (done) this.finish(generation);
      },
      (error: unknown) => {
        if (generation !== this.generation || this.closed) return;
        // Redis answered the subscriptions but not the reads (say, the commands connection is
        // still reconnecting): try again; live delivery stays held until a fill completes.
        this.onStatus('gap-fill failed, retrying', error);
        this.retryTimer = setTimeout(() => this.run(generation), RETRY_MS);
        this.retryTimer.unref();
      },
    );
  }

  /** Fills every watched sandbox; false if a newer reconnect took over. */
  private async fill(generation: number): Promise<boolean> {
    this.stats.gapFills += 1;
    const refs = new Map<string, SandboxRef>();
    for (const ref of this.subscriptions.watchedSandboxes()) refs.set(sandboxKey(ref), ref);
    /** The sandboxes found through a pattern's scope (see fillStart). */
    const scoped = new Set<string>();
    for (const scope of this.subscriptions.patternScopes()) {
      for (const ref of await this.streamsOf(scope)) {
        const key = sandboxKey(ref);
        refs.set(key, ref);
        scoped.add(key);
      }
      if (generation !== this.generation) return false;
    }
    const floor = this.floor;
    this.floor = undefined;
    const newestLive = this.fence.receivedThrough() ?? this.connectedAt;
    for (const [key, ref] of refs) {
      const from = fillStart(this.fence.lastDelivered(key), newestLive, floor, scoped.has(key));
      if (from === undefined) continue;
      if (!(await this.fillOne(generation, key, ref, from))) return false;
    }
    return generation === this.generation;
  }

  /** Fills one sandbox from `from`, page by page; false if a newer reconnect took over. */
  private async fillOne(generation: number, key: string, ref: SandboxRef, from: EventId): Promise<boolean> {
    let after = from;
    for (;;) {
      const { events, state } = await readStreamAfter(this.commands, this.retention, ref, after, FILL_PAGE);
      if (generation !== this.generation || this.closed) return false;
      const trimmed = state.trimmedThrough;
      if (trimmed !== undefined && compareEventIds(trimmed, after) > 0) {
        // Events after `after` are gone: delivering the rest would leave a hole nobody sees.
        this.stats.gapsReported += 1;
        this.fence.skipThrough(key, state.lastId ?? trimmed);
        this.lostListener?.(ref, LOST_MESSAGE);
        return true;
      }
      for (const event of events) this.fence.receive(event, false);
      this.stats.gapFilled += events.length;
      if (events.length < FILL_PAGE) return true;
      after = events[events.length - 1]!.id;
    }
  }

  /**
   * The streams of a workspace (or all), for pattern subscribers. SCAN: O(keys), once per
   * reconnect; in Cluster on every master (SCAN lists one node's keys).
   */
  private async streamsOf(scope: number | 'all'): Promise<SandboxRef[]> {
    const out: SandboxRef[] = [];
    const nodes: Redis[] =
      this.scanNodes?.() ?? (this.commands instanceof Cluster ? this.commands.nodes('master') : [this.commands]);
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', streamKeyPattern(scope), 'COUNT', SCAN_COUNT);
        cursor = next;
        for (const key of keys) {
          const ref = refFromStreamKey(key);
          if (ref !== undefined) out.push(ref);
        }
      } while (cursor !== '0');
    }
    return out;
  }

  /** The fill is done: the held live events go out behind it, then the fences held meanwhile. */
  private finish(generation: number): void {
    if (generation !== this.generation) return;
    const held = this.held ?? [];
    this.held = undefined;
    for (const event of held) this.fence.receive(event);
    this.fence.release();
    this.onStatus('gap-fill done');
  }

  close(): void {
    this.closed = true;
    this.generation += 1;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.held = undefined;
  }
}

/**
 * Where a sandbox's fill starts: the last id `delivered` here, or, for a sandbox that had nothing
 * delivered, just below the `newestLive` message received (every event before that message's
 * millisecond came before it; one of another stream in the same millisecond may not have, so
 * that millisecond is read again: ids already delivered are dropped by id), and no earlier than
 * a new pattern's `floor` (see fillFrom).
 *
 * A sandbox found `throughPattern` while a new pattern's floor is set starts at the floor even
 * when newer live messages arrived: its events after the floor may have been published without
 * the workspace channel (their node had not read the registration yet, docs/scaling.md "Redis
 * Cluster"), while the events of other sandboxes already came on it. Those live messages say
 * nothing of what was published before them without the channel.
 */
export function fillStart(
  delivered: EventId | undefined,
  newestLive: EventId | undefined,
  floor: EventId | undefined,
  throughPattern: boolean,
): EventId | undefined {
  let below: EventId | undefined;
  if (floor !== undefined && throughPattern) below = floor;
  else {
    below = newestLive === undefined ? undefined : { ms: newestLive.ms - 1, seq: Number.MAX_SAFE_INTEGER };
    if (floor !== undefined && (below === undefined || compareEventIds(floor, below) > 0)) below = floor;
  }
  if (delivered === undefined) return below;
  if (below === undefined) return delivered;
  return compareEventIds(delivered, below) >= 0 ? delivered : below;
}
