import type { Principal } from '../auth/principal.js';
import { eventJsonBytes, type StoredEvent, StoredEventRecord } from '../event/event.js';
import { bulkLength, deliveryFrameHead, type Protocol, writeBulk, writeBulkHeader } from '../protocol/encode.js';
import { compileGlob } from '../protocol/glob.js';
import type { InterestHooks, SandboxRef } from '../store/types.js';
import { channelKey, type ChannelTarget, type PatternScope, parseChannelKey, visibleName } from './scope.js';
import { ChannelRun, type Slab, SlabPool, slabOf } from './slab.js';

/**
 * The `protocol` of a subscriber that encodes its own frames from the event (SSE streams): it
 * is handed an empty frame and reads `event.json`, so no RESP frame is built for it.
 */
export const EVENTS_ONLY = 'events';

/** What the broker needs of a connection to deliver to it. */
export interface Subscriber {
  readonly protocol: Protocol | typeof EVENTS_ONLY;
  /**
   * Queue one frame. `event` and `viaPattern` let a resuming subscriber drop what its replay
   * already sent: the replay sends `message` frames of its channel, never `pmessage` frames of
   * a pattern that also matches it (Redis sends both to a client subscribed both ways).
   * `pattern` is the pattern a `viaPattern` frame came through (a subscription's type filter
   * is looked up by it).
   *
   * `frame` may be a view of a pooled slab (slab.ts), whose bytes are written again once every
   * view of it is given back: the subscriber gives its view back with `releaseFrame` when it
   * does not take the frame, or hands it to a WritePath, which gives it back once written. A view
   * never given back only keeps its slab out of the pool.
   */
  deliver(frame: Buffer, event: StoredEvent, viaPattern: boolean, pattern?: string): void;
  /**
   * `deliver` of a channel frame that opens `run` (slab.ts, ChannelRun), and true when this
   * subscriber follows the run: it takes the frames the broker appends to the run as they are,
   * with nothing else to do for them, until it next writes anything or flushes, which closes
   * the run. Whatever would make it treat a frame otherwise (a type filter, a resume's seam, a
   * protocol change) must make it leave the run first. A subscriber without it gets every
   * frame through `deliver`.
   */
  deliverInRun?(frame: Buffer, event: StoredEvent, run: ChannelRun): boolean;
  /**
   * Events this subscriber should have had are lost (docs/scaling.md, "Gap-fill"): it is cut off
   * with `message` (`ERR ...`), so that its client resumes from its last id and is told.
   */
  interrupt?(message: string): void;
}

const NO_FRAME = Buffer.alloc(0);

/**
 * `Channel.manyNames` while not made: one array for every channel, not an array literal per
 * channel, whose allocation site V8 moves to the old generation once a connection storm's
 * channels outlive their turn, discarding the optimized SUBSCRIBE code that made them
 * (docs/performance.md, "Ninth round: the first storm").
 */
const NO_NAMES: readonly string[] = [];

/**
 * One sandbox's local subscribers. Most sandboxes have one watcher, so a lone subscriber is held
 * in two fields and a Map is made only for a second one (and dropped when one is left again):
 * a subscribed sandbox costs one small object here, as a Redis channel costs a dict entry and a
 * one-node client list (docs/performance.md, "Per-sandbox cost").
 */
class Channel implements SandboxRef {
  /** The subscriber while it is the only one. */
  only: Subscriber | undefined = undefined;
  /** The name `only` subscribed with (message frames carry that name). */
  onlyName = '';
  /** subscriber -> the name it subscribed with, while there are two or more. */
  many: Map<Subscriber, string> | undefined = undefined;
  /**
   * `many` as two arrays in its order, made again by the first fan-out after it changed: the
   * fan-out walks plain arrays, where iterating the Map made an entry per subscriber per event.
   */
  private manySubscribers: Subscriber[] | undefined = undefined;
  private manyNames: readonly string[] = NO_NAMES;
  /**
   * The run the subscribers follow while each of them takes this channel's RESP2 frames as they
   * are (slab.ts, ChannelRun); a frame that extends it is not handed to each of them.
   */
  run: ChannelRun | undefined = undefined;
  /** Frames for RESP2 subscribers that used the plain sandbox id: nearly all of them. */
  plainFrames: FrameWriter | undefined = undefined;
  /** Any other form, by `<protocol>:<name>` (at most RESP3, and admins' qualified names). */
  otherFrames: Map<string, FrameWriter> | undefined = undefined;

  constructor(
    readonly workspaceId: number,
    readonly sandboxId: string,
  ) {}

  get size(): number {
    return this.many !== undefined ? this.many.size : this.only === undefined ? 0 : 1;
  }

  /** Adds a subscriber; false if it was there already. */
  add(subscriber: Subscriber, name: string): boolean {
    this.endRun();
    if (this.many !== undefined) {
      if (this.many.has(subscriber)) return false;
      this.many.set(subscriber, name);
      this.manySubscribers = undefined;
    } else if (this.only === undefined) {
      this.only = subscriber;
      this.onlyName = name;
    } else {
      if (this.only === subscriber) return false;
      this.many = new Map([
        [this.only, this.onlyName],
        [subscriber, name],
      ]);
      this.only = undefined;
      this.onlyName = '';
      this.manySubscribers = undefined;
    }
    return true;
  }

  /** Removes a subscriber; false if it was not there. */
  delete(subscriber: Subscriber): boolean {
    this.endRun();
    if (this.many === undefined) {
      if (this.only !== subscriber) return false;
      this.only = undefined;
      this.onlyName = '';
      return true;
    }
    if (!this.many.delete(subscriber)) return false;
    this.manySubscribers = undefined;
    this.manyNames = NO_NAMES;
    if (this.many.size === 1) {
      for (const [last, name] of this.many) {
        this.only = last;
        this.onlyName = name;
      }
      this.many = undefined;
    }
    return true;
  }

  /** The next frame is handed to every subscriber again (their set changes). */
  endRun(): void {
    if (this.run === undefined) return;
    this.run.open = false;
    this.run = undefined;
  }

  /** The subscribers while there are two or more, in subscription order; `names` in step. */
  subscriberList(many: Map<Subscriber, string>): Subscriber[] {
    let list = this.manySubscribers;
    if (list === undefined) {
      list = [...many.keys()];
      this.manyNames = [...many.values()];
      this.manySubscribers = list;
    }
    return list;
  }

  /** The names `subscriberList`'s subscribers subscribed with. */
  get names(): readonly string[] {
    return this.manyNames;
  }

  subscribers(): Iterable<Subscriber> {
    if (this.many !== undefined) return this.many.keys();
    return this.only === undefined ? [] : [this.only];
  }
}

interface PatternGroup {
  pattern: string;
  scope: PatternScope;
  matches: (subject: string) => boolean;
  subscribers: Set<Subscriber>;
  resp2Frames?: FrameWriter;
  resp3Frames?: FrameWriter;
}

export interface BrokerStats {
  /** Deliveries made (one per subscription reached). */
  delivered: number;
  /** Events fanned out. */
  fannedOut: number;
  /**
   * Delivery frames encoded: one per event and form (protocol, channel name, pattern), however
   * many subscribers take that form (encode once, write many).
   */
  framesEncoded: number;
}

/**
 * Per-sandbox subscriber sets and fan-out. Knows nothing of sockets or RESP commands: it maps
 * channels to subscribers and turns one event into as few frames as possible, each frame
 * encoded once and handed to every subscriber that takes that exact form.
 */
export class Broker {
  /**
   * Channels by workspace id, then sandbox id: a delivery finds its channel without building a
   * key string (the event's sandbox id string caches its hash). With 100,000 channels, building
   * and hashing `{<workspace>}<sandbox>` per event cost about 1 µs more than this.
   */
  private readonly channels = new Map<number, Map<string, Channel>>();
  /**
   * The channel found last, while it is in `channels`: a publisher mostly repeats its sandbox,
   * and the two Map lookups are then skipped (as the memory store keeps its last stream).
   */
  private lastChannel: Channel | undefined = undefined;
  private channelTotal = 0;
  /** Pattern groups by scope (a workspace id, or 'all' for admins' qualified patterns). */
  private readonly patterns = new Map<PatternScope, Map<string, PatternGroup>>();
  readonly stats: BrokerStats = { delivered: 0, fannedOut: 0, framesEncoded: 0 };
  private readonly slabs = new SlabState();
  /** The pooled slab of the frame `encode` returned last (undefined: not a pooled slab). */
  private encodedIn: Slab | undefined;

  /**
   * `interest`: told when a channel gets its first local subscriber or loses its last, and when
   * a pattern scope does (docs/scaling.md: a shared engine subscribes upstream only to what is watched).
   */
  constructor(private readonly interest?: InterestHooks) {
    interest?.setLostEventsListener?.((ref, message) => this.interrupt(ref, message));
  }

  /** Cuts off every local subscriber that would have received events of `ref` (Subscriber.interrupt). */
  interrupt(ref: SandboxRef, message: string): number {
    const reached = new Set<Subscriber>(this.channel(ref.workspaceId, ref.sandboxId)?.subscribers());
    this.forEachMatchingPattern(ref, (group) => {
      for (const subscriber of group.subscribers) reached.add(subscriber);
    });
    for (const subscriber of reached) subscriber.interrupt?.(message);
    return reached.size;
  }

  /** Adds a subscription; false if the subscriber already had it (Redis counts it once). */
  subscribe(subscriber: Subscriber, target: ChannelTarget): boolean {
    let inWorkspace = this.channels.get(target.workspaceId);
    if (inWorkspace === undefined) {
      inWorkspace = new Map();
      this.channels.set(target.workspaceId, inWorkspace);
    }
    let channel = inWorkspace.get(target.sandboxId);
    if (channel === undefined) {
      channel = new Channel(target.workspaceId, target.sandboxId);
      inWorkspace.set(target.sandboxId, channel);
      this.channelTotal += 1;
    }
    if (!channel.add(subscriber, target.displayName)) return false;
    if (channel.size === 1) this.interest?.setInterest?.(channel, true);
    return true;
  }

  /** Removes a subscription by its channel's key (channelKey); false if there was none. */
  unsubscribe(subscriber: Subscriber, key: string): boolean {
    const ref = parseChannelKey(key);
    return ref !== undefined && this.leave(subscriber, ref);
  }

  /** unsubscribe by workspace and sandbox, with no key to build or parse. */
  leave(subscriber: Subscriber, ref: SandboxRef): boolean {
    const channel = this.channel(ref.workspaceId, ref.sandboxId);
    if (channel === undefined || !channel.delete(subscriber)) return false;
    if (channel.size === 0) {
      const inWorkspace = this.channels.get(channel.workspaceId)!;
      inWorkspace.delete(channel.sandboxId);
      if (inWorkspace.size === 0) this.channels.delete(channel.workspaceId);
      if (this.lastChannel === channel) this.lastChannel = undefined;
      this.channelTotal -= 1;
      this.interest?.setInterest?.(channel, false);
    }
    return true;
  }

  private channel(workspaceId: number, sandboxId: string): Channel | undefined {
    const last = this.lastChannel;
    if (last !== undefined && last.sandboxId === sandboxId && last.workspaceId === workspaceId) return last;
    const found = this.channels.get(workspaceId)?.get(sandboxId);
    if (found !== undefined) this.lastChannel = found;
    return found;
  }

  private channelByKey(key: string): Channel | undefined {
    const ref = parseChannelKey(key);
    return ref === undefined ? undefined : this.channel(ref.workspaceId, ref.sandboxId);
  }

  psubscribe(subscriber: Subscriber, pattern: string, scope: PatternScope): boolean {
    let groups = this.patterns.get(scope);
    if (groups === undefined) {
      groups = new Map();
      this.patterns.set(scope, groups);
      this.interest?.setPatternInterest?.(scope, true);
    }
    let group = groups.get(pattern);
    if (group === undefined) {
      group = { pattern, scope, matches: compileGlob(pattern), subscribers: new Set() };
      groups.set(pattern, group);
    }
    if (group.subscribers.has(subscriber)) return false;
    group.subscribers.add(subscriber);
    return true;
  }

  punsubscribe(subscriber: Subscriber, pattern: string, scope: PatternScope): boolean {
    const groups = this.patterns.get(scope);
    const group = groups?.get(pattern);
    if (groups === undefined || group === undefined || !group.subscribers.delete(subscriber)) return false;
    if (group.subscribers.size === 0) {
      groups.delete(pattern);
      if (groups.size === 0) {
        this.patterns.delete(scope);
        this.interest?.setPatternInterest?.(scope, false);
      }
    }
    return true;
  }

  /**
   * How many subscriptions an event on this channel would reach now (PUBLISH's reply when the
   * event is delivered later, after it is durable).
   */
  receiverCount(ref: SandboxRef): number {
    let count = this.channel(ref.workspaceId, ref.sandboxId)?.size ?? 0;
    this.forEachMatchingPattern(ref, (group) => {
      count += group.subscribers.size;
    });
    return count;
  }

  /**
   * Delivers one durable event to every subscriber of its channel and matching patterns. Each
   * form of frame is encoded once per event, into that form's slab (FrameWriter), and the same
   * bytes go to every subscriber taking that form. Nothing here allocates per subscriber.
   */
  fanOut(event: StoredEvent): number {
    let delivered = 0;
    let payloadBytes = -1;
    const channel = this.channel(event.workspaceId, event.sandboxId);
    if (channel !== undefined) {
      payloadBytes = eventJsonBytes(event);
      const only = channel.only;
      if (only !== undefined) {
        const protocol = only.protocol;
        let frame: Buffer = NO_FRAME;
        if (protocol !== EVENTS_ONLY) {
          frame = this.channelFrame(channel, protocol, channel.onlyName, event, payloadBytes);
          const slab = this.encodedIn;
          if (slab !== undefined) slab.views += 1;
        }
        only.deliver(frame, event, false);
        delivered += 1;
      } else if (channel.many !== undefined) {
        delivered += this.fanOutToMany(channel, channel.many, event, payloadBytes);
      }
    }
    if (this.patterns.size > 0) delivered += this.fanOutToPatterns(event, payloadBytes);
    this.stats.fannedOut += 1;
    this.stats.delivered += delivered;
    if ((this.stats.fannedOut & 63) === 0) this.slabs.maybeSweep();
    return delivered;
  }

  /**
   * Delivers to a channel's two or more subscribers. A frame that continues the channel's open
   * run (slab.ts, ChannelRun) is only appended to it: its followers take it when they next write
   * or flush. Any other is handed to each subscriber, and opens a new run when all of them
   * follow it.
   */
  private fanOutToMany(
    channel: Channel,
    many: Map<Subscriber, string>,
    event: StoredEvent,
    payloadBytes: number,
  ): number {
    const subscribers = channel.subscriberList(many);
    const names = channel.names;
    // The common case: every subscriber used the plain sandbox id and RESP2, one frame for all.
    // Other forms are built on first need, once per event.
    let plain: Buffer | undefined;
    let plainSlab: Slab | undefined;
    const run = channel.run;
    if (run !== undefined) {
      if (run.open) {
        // Only a channel whose subscribers all take the plain frame has a run, and its plain
        // writer made the run's frames. A frame that continues the run needs no view of its own.
        const writer = channel.plainFrames!;
        const written = this.encodeInPlace(writer, undefined, event, payloadBytes);
        plainSlab = this.encodedIn;
        const offset = written.byteOffset;
        const end = offset + writer.writtenEnd;
        if (written.buffer === run.memory && offset + writer.writtenStart === run.end && end <= run.limitEnd) {
          run.end = end;
          run.frames += 1;
          if (plainSlab !== undefined) plainSlab.views += run.followers;
          return run.followers;
        }
        plain = written.subarray(writer.writtenStart, writer.writtenEnd);
      }
      channel.endRun();
    }
    let opening: ChannelRun | undefined;
    let allFollow = true;
    let plainTaken = 0;
    let others: Map<string, Buffer> | undefined;
    for (let i = 0; i < subscribers.length; i++) {
      const subscriber = subscribers[i]!;
      const name = names[i]!;
      const protocol = subscriber.protocol;
      if (protocol === 2 && name === channel.sandboxId) {
        if (plain === undefined) {
          plain = this.channelFrame(channel, 2, name, event, payloadBytes);
          plainSlab = this.encodedIn;
        }
        plainTaken += 1;
        if (allFollow && subscriber.deliverInRun !== undefined) {
          opening ??= new ChannelRun(plain.buffer, plain.byteOffset + plain.length, plainSlab);
          allFollow = subscriber.deliverInRun(plain, event, opening);
        } else {
          allFollow = false;
          subscriber.deliver(plain, event, false);
        }
        continue;
      }
      allFollow = false;
      let frame: Buffer;
      if (protocol === EVENTS_ONLY) {
        frame = NO_FRAME;
      } else {
        const form = `${protocol}:${name}`;
        others ??= new Map();
        let built = others.get(form);
        if (built === undefined) {
          built = this.channelFrame(channel, protocol, name, event, payloadBytes);
          others.set(form, built);
        }
        frame = built;
        const slab = slabOf(frame); // other forms are rare: looked up rather than kept
        if (slab !== undefined) slab.views += 1;
      }
      subscriber.deliver(frame, event, false);
    }
    // The plain frame's views, counted once for all that took it. A subscriber that gave its
    // view back meanwhile took the count below what it will be only while the slab is still
    // being written, which keeps it from the pool (releaseViews).
    if (plainSlab !== undefined) plainSlab.views += plainTaken;
    if (opening !== undefined) {
      if (allFollow) channel.run = opening;
      else opening.open = false;
    }
    return subscribers.length;
  }

  private fanOutToPatterns(event: StoredEvent, payloadBytes: number): number {
    let delivered = 0;
    const local = this.patterns.get(event.workspaceId);
    if (local !== undefined) {
      for (const group of local.values()) {
        if (!group.matches(event.sandboxId)) continue;
        if (payloadBytes < 0) payloadBytes = eventJsonBytes(event);
        delivered += this.deliverToPattern(group, event.sandboxId, event, payloadBytes);
      }
    }
    const global = this.patterns.get('all');
    if (global !== undefined) {
      const qualified = channelKey(event.workspaceId, event.sandboxId);
      for (const group of global.values()) {
        if (!group.matches(qualified)) continue;
        if (payloadBytes < 0) payloadBytes = eventJsonBytes(event);
        delivered += this.deliverToPattern(group, qualified, event, payloadBytes);
      }
    }
    return delivered;
  }

  private deliverToPattern(group: PatternGroup, channelName: string, event: StoredEvent, payloadBytes: number): number {
    let resp2: Buffer | undefined;
    let resp2Slab: Slab | undefined;
    let resp3: Buffer | undefined;
    let resp3Slab: Slab | undefined;
    for (const subscriber of group.subscribers) {
      const protocol = subscriber.protocol;
      let frame: Buffer;
      if (protocol === 2) {
        if (resp2 === undefined) {
          group.resp2Frames ??= this.writer(2, group.pattern, undefined);
          resp2 = this.encode(group.resp2Frames, channelName, event, payloadBytes);
          resp2Slab = this.encodedIn;
        }
        frame = resp2;
        if (resp2Slab !== undefined) resp2Slab.views += 1;
      } else if (protocol === 3) {
        if (resp3 === undefined) {
          group.resp3Frames ??= this.writer(3, group.pattern, undefined);
          resp3 = this.encode(group.resp3Frames, channelName, event, payloadBytes);
          resp3Slab = this.encodedIn;
        }
        frame = resp3;
        if (resp3Slab !== undefined) resp3Slab.views += 1;
      } else {
        frame = NO_FRAME;
      }
      subscriber.deliver(frame, event, true, group.pattern);
    }
    return group.subscribers.size;
  }

  /** A new frame of `channel` in the form (protocol, name). */
  private channelFrame(
    channel: Channel,
    protocol: Protocol,
    name: string,
    event: StoredEvent,
    payloadBytes: number,
  ): Buffer {
    let writer: FrameWriter | undefined;
    if (protocol === 2 && name === channel.sandboxId) {
      writer = channel.plainFrames ??= this.writer(2, undefined, name);
    } else {
      const form = `${protocol}:${name}`;
      channel.otherFrames ??= new Map();
      writer = channel.otherFrames.get(form);
      if (writer === undefined) channel.otherFrames.set(form, (writer = this.writer(protocol, undefined, name)));
    }
    return this.encode(writer, undefined, event, payloadBytes);
  }

  private writer(protocol: Protocol, pattern: string | undefined, channel: string | undefined): FrameWriter {
    return new FrameWriter(deliveryFrameHead(protocol, pattern, channel), this.slabs);
  }

  private encode(writer: FrameWriter, channel: string | undefined, event: StoredEvent, payloadBytes: number): Buffer {
    return this.encodeInPlace(writer, channel, event, payloadBytes).subarray(writer.writtenStart, writer.writtenEnd);
  }

  /**
   * `encode` without the frame's view: the slab it was written into, where it lies at
   * `[writer.writtenStart, writer.writtenEnd)` (FrameWriter.write). A frame that only continues
   * its channel's run is handed to no one, so it needs none.
   */
  private encodeInPlace(
    writer: FrameWriter,
    channel: string | undefined,
    event: StoredEvent,
    payloadBytes: number,
  ): Buffer {
    this.stats.framesEncoded += 1;
    const slab = writer.write(channel, event, payloadBytes);
    this.encodedIn = writer.frameSlab;
    return slab;
  }

  private forEachMatchingPattern(ref: SandboxRef, visit: (group: PatternGroup, channelName: string) => void): void {
    const local = this.patterns.get(ref.workspaceId);
    if (local !== undefined) {
      for (const group of local.values()) {
        if (group.matches(ref.sandboxId)) visit(group, ref.sandboxId);
      }
    }
    const global = this.patterns.get('all');
    if (global !== undefined) {
      const qualified = channelKey(ref.workspaceId, ref.sandboxId);
      for (const group of global.values()) {
        if (group.matches(qualified)) visit(group, qualified);
      }
    }
  }

  /** PUBSUB CHANNELS: active channels this principal may see, by the names it would use. */
  visibleChannels(principal: Principal, matches?: (name: string) => boolean): string[] {
    const names: string[] = [];
    const scan = (channel: Channel): void => {
      const name = visibleName(principal, channel);
      if (name !== undefined && (matches === undefined || matches(name))) names.push(name);
    };
    if (principal.role === 'sandbox' && principal.sandboxId !== undefined) {
      const own = this.channel(principal.workspaceId, principal.sandboxId);
      if (own !== undefined) scan(own);
      return names;
    }
    for (const inWorkspace of this.channels.values()) for (const channel of inWorkspace.values()) scan(channel);
    return names;
  }

  /** PUBSUB NUMSUB for one resolved channel. */
  subscriberCount(key: string): number {
    return this.channelByKey(key)?.size ?? 0;
  }

  /** PUBSUB NUMPAT: distinct patterns in the scopes this principal may see. */
  patternCount(principal: Principal): number {
    if (principal.role === 'sandbox') return 0;
    if (principal.role === 'admin') {
      let total = 0;
      for (const groups of this.patterns.values()) total += groups.size;
      return total;
    }
    return this.patterns.get(principal.workspaceId)?.size ?? 0;
  }

  /**
   * Bytes held by the slabs of forms that have one of their own (hot channels and patterns). The
   * sweep keeps this in line with the current delivery rate; tests and metrics read it.
   */
  frameSlabBytes(): number {
    let total = 0;
    for (const writer of this.slabs.owned) total += writer.slabBytes;
    return total;
  }

  /** The pool of slabs that nothing holds a frame of any more (slab.ts): tests and benches read its counts. */
  get slabPool(): SlabPool {
    return this.slabs.pool;
  }

  get channelCount(): number {
    return this.channelTotal;
  }

  get totalPatternCount(): number {
    let total = 0;
    for (const groups of this.patterns.values()) total += groups.size;
    return total;
  }
}

/**
 * A form's own slab starts this small (from Node's shared pool) and grows only while hot. Forms
 * that wrote less than this in the current sweep epoch (about a second) have no slab of their
 * own: their frames go into a slab of this size that all such cold forms share.
 */
const SLAB_MIN_BYTES = 2 * 1024;
/**
 * Largest slab. A turn can produce a few hundred KB of one channel's frames (everything read
 * from the publishers in one go); when they span slabs the write path sends a few runs with one
 * writev. A slab only grows this large for a form that writes over 32 KiB in each event-loop
 * turn, so few forms ever hold one, and the sweep takes it back when they go quiet.
 */
const SLAB_MAX_BYTES = 256 * 1024;
/**
 * A slab that lasted fewer event-loop turns than this is doubled for the next one (up to the
 * max). A subscriber's frames of one turn are one run of bytes only while they sit in one slab;
 * the turn in which a slab fills up splits that run in two, which the write path then copies
 * into one buffer (or sends with writev). With a slab lasting this many turns, at most one
 * flush in this many pays for that.
 */
const SLAB_TURNS = 8;
/** A slab that lasted over four times as many turns and this long is halved (down to the min). */
const SLAB_COOL_MS = 100;
/** How often slabs of their own are checked against what their form still writes (see SlabState). */
const SLAB_IDLE_MS = 1_000;
const EMPTY_SLAB = Buffer.alloc(0);

/**
 * Writes the delivery frames of one form (a channel or pattern, a protocol) and hands out each
 * frame as a view of a slab.
 *
 * Why a slab: frames that follow each other in it are adjacent in memory, so a subscriber that
 * gets several frames of this form in one event-loop turn holds one contiguous run of bytes,
 * which its write path sends as it is (WritePath.write joins adjacent frames): no copy per
 * subscriber, no Buffer.concat, and the N subscribers of a channel write the very same memory.
 * A frame's bytes are not changed while any view of it is held: a slab of a pooled size goes back
 * to the pool only once its writer moved on and every view handed out was given back (slab.ts).
 *
 * Only a form that writes at least SLAB_MIN_BYTES within a sweep epoch gets a slab of its own
 * (where that adjacency pays); a cold one writes into the slab cold forms share, so a sandbox
 * that sees a few events holds no slab of its own (with 100,000 sandboxes, 2 KiB each was
 * 200 MB).
 */
class FrameWriter {
  private slab: Buffer = EMPTY_SLAB;
  /** `slab` when it is a pooled one. */
  private pooled: Slab | undefined;
  private used = 0;
  /** The pooled slab the last frame was written into (undefined: the shared slab, or one not pooled). */
  frameSlab: Slab | undefined;
  /** Where the last frame lies in the slab `write` returned: `[writtenStart, writtenEnd)`. */
  writtenStart = 0;
  writtenEnd = 0;
  private slabStartedAt = 0;
  /** SlabState turn in which the slab was taken. */
  private slabStartedTurn = 0;
  /** Slab size to start from after the slab was let go (see SlabState). */
  private resumeBytes = SLAB_MIN_BYTES;
  /** SlabState epoch of the last frame written, and bytes written in that epoch. */
  epoch = -1;
  epochBytes = 0;

  constructor(
    /** Everything before the variable part: `*3 message <channel>` or `*4 pmessage <pattern>`. */
    private readonly head: Buffer,
    private readonly state: SlabState,
  ) {}

  get slabBytes(): number {
    return this.slab.length;
  }

  /**
   * Writes a frame and returns the slab it was written into, where it lies at
   * `[writtenStart, writtenEnd)`: no view is made of it here, as a frame that only continues
   * its channel's run is never handed to anyone (docs/performance.md, "Tenth round: the
   * PUBLISH's allocations"). The writer keeps no reference to the slab for this: a writer the
   * sweep let go of must not hold one. `channel` is given for pattern frames only (a channel
   * frame's name is in the head). The payload is the event's line, `payloadBytes` long: its
   * bytes copied where its store holds them, its text encoded otherwise
   * (StoredEventRecord.writeLine).
   */
  write(channel: string | undefined, event: StoredEvent, payloadBytes: number): Buffer {
    const head = this.head;
    const channelBytes = channel === undefined ? 0 : Buffer.byteLength(channel);
    const size = head.length + (channel === undefined ? 0 : bulkLength(channelBytes)) + bulkLength(payloadBytes);
    const state = this.state;
    if (!state.turnOpen) state.openTurn();
    if (this.epoch !== state.epoch) {
      this.epoch = state.epoch;
      this.epochBytes = 0;
    }
    this.epochBytes += size;
    let slab: Buffer;
    let start: number;
    if (this.slab === EMPTY_SLAB && this.epochBytes < SLAB_MIN_BYTES) {
      slab = state.sharedRoom(size);
      start = state.sharedUsed;
      this.frameSlab = undefined;
    } else {
      if (this.used + size > this.slab.length) this.refill(size);
      slab = this.slab;
      start = this.used;
      this.frameSlab = this.pooled;
    }
    slab.set(head, start);
    let at = start + head.length;
    if (channel !== undefined) at = writeBulk(slab, at, channel, channelBytes);
    at = StoredEventRecord.writeLine(event, slab, writeBulkHeader(slab, at, payloadBytes));
    slab[at++] = 13;
    slab[at++] = 10;
    if (slab === this.slab) this.used = at;
    else state.sharedUsed = at;
    this.writtenStart = start;
    this.writtenEnd = at;
    return slab;
  }

  /** Lets go of the slab (its frames stay valid for whoever still holds them). */
  release(resumeBytes: number): void {
    this.retire();
    this.slab = EMPTY_SLAB;
    this.used = 0;
    this.resumeBytes = resumeBytes;
  }

  private retire(): void {
    if (this.pooled === undefined) return;
    this.state.pool.retire(this.pooled);
    this.pooled = undefined;
  }

  private refill(size: number): void {
    const now = performance.now();
    const turn = this.state.turn;
    // The slab size follows what the form writes per event-loop turn: doubled while a slab
    // lasts only a few turns, halved once it lasts far longer (gradually, so that a rate
    // hovering near a threshold doesn't fall back to the minimum).
    const last = this.slab.length;
    let next = this.resumeBytes;
    if (last > 0) {
      const turns = turn - this.slabStartedTurn;
      if (turns < SLAB_TURNS) next = Math.min(SLAB_MAX_BYTES, last * 2);
      else if (turns > 4 * SLAB_TURNS && now - this.slabStartedAt > SLAB_COOL_MS)
        next = Math.max(SLAB_MIN_BYTES, last / 2);
      else next = last;
    }
    // A power of two (up to the max) whatever the frame's size, so that the slab can be pooled
    // and the ones after it, doubled or halved, can be too.
    const bytes = size > SLAB_MAX_BYTES ? size : Math.max(next, 2 ** Math.ceil(Math.log2(size)));
    this.retire();
    const pooled = this.state.pool.take(bytes);
    this.pooled = pooled;
    // Not pooled: below 4 KiB (a slice of Node's shared pool), or one frame over the max.
    this.slab = pooled === undefined ? Buffer.allocUnsafe(bytes) : pooled.bytes;
    this.used = 0;
    this.slabStartedAt = now;
    this.slabStartedTurn = turn;
    this.state.owned.add(this);
  }
}

/**
 * Bounds what slabs keep alive: a form that was hot once must not hold a slab while it trickles
 * or sleeps. Writers with a slab of their own are tracked; about every SLAB_IDLE_MS (checked
 * from the fan-out, no timer) each one that wrote less than a quarter of its slab since the
 * previous sweep lets it go and goes back to the shared slab, starting smaller if it gets hot
 * again. So what slabs hold follows the current delivery rate (a few times what one second of
 * it writes), whatever the past peaks were, and the sweep's work is bounded by the forms that
 * are hot, not by the number of channels.
 */
class SlabState {
  epoch = 0;
  /**
   * Event-loop turns in which frames were written: the turn ends with an immediate taken when
   * its first frame is written, the check phase in which the write paths flush (write-path.ts).
   */
  turn = 0;
  turnOpen = false;
  readonly owned = new Set<FrameWriter>();
  readonly pool = new SlabPool(SLAB_MAX_BYTES);
  /** The slab cold forms share, and where its free room starts. */
  private shared: Buffer = EMPTY_SLAB;
  sharedUsed = 0;
  private sweptAt = performance.now();

  /** The shared slab, with room for `size` more bytes from `sharedUsed` on. */
  sharedRoom(size: number): Buffer {
    if (this.sharedUsed + size > this.shared.length) {
      this.shared = Buffer.allocUnsafe(Math.max(size, SLAB_MIN_BYTES)); // a slice of Node's shared pool
      this.sharedUsed = 0;
    }
    return this.shared;
  }

  openTurn(): void {
    this.turnOpen = true;
    setImmediate(this.closeTurn);
  }

  private readonly closeTurn = (): void => {
    this.turn += 1;
    this.turnOpen = false;
  };

  maybeSweep(): void {
    const now = performance.now();
    if (now - this.sweptAt < SLAB_IDLE_MS) return;
    for (const writer of this.owned) {
      const written = writer.epoch === this.epoch ? writer.epochBytes : 0;
      const slab = writer.slabBytes;
      if (written >= slab / 4) continue;
      const resume = Math.max(SLAB_MIN_BYTES, Math.min(slab / 4, 2 ** Math.ceil(Math.log2(Math.max(written, 1)))));
      writer.release(resume);
      this.owned.delete(writer);
    }
    this.pool.trim();
    this.epoch += 1;
    this.sweptAt = now;
  }
}
