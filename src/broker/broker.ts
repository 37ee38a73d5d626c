import type { Principal } from '../auth/principal.js';
import type { StoredEvent } from '../event/event.js';
import { deliveryFrame, type Protocol } from '../protocol/encode.js';
import { compileGlob } from '../protocol/glob.js';
import type { SandboxRef } from '../store/types.js';
import { channelKey, type ChannelTarget, type PatternScope, visibleName } from './scope.js';

/** What the broker needs of a connection to deliver to it. */
export interface Subscriber {
  readonly protocol: Protocol;
  /** Queue one frame; `event` lets a resuming subscriber drop what its replay already sent. */
  deliver(frame: Buffer, event: StoredEvent): void;
}

interface Channel extends SandboxRef {
  key: string;
  /** subscriber -> the name it subscribed with (message frames carry that name). */
  subscribers: Map<Subscriber, string>;
}

interface PatternGroup {
  pattern: string;
  scope: PatternScope;
  matches: (subject: string) => boolean;
  subscribers: Set<Subscriber>;
}

export interface BrokerStats {
  /** Deliveries made (one per subscription reached). */
  delivered: number;
  /** Events fanned out. */
  fannedOut: number;
}

/**
 * Per-sandbox subscriber sets and fan-out. Knows nothing of sockets or RESP commands: it maps
 * channels to subscribers and turns one event into as few frames as possible, each frame
 * encoded once and handed to every subscriber that takes that exact form.
 */
export class Broker {
  private readonly channels = new Map<string, Channel>();
  /** Pattern groups by scope (a workspace id, or 'all' for admins' qualified patterns). */
  private readonly patterns = new Map<PatternScope, Map<string, PatternGroup>>();
  readonly stats: BrokerStats = { delivered: 0, fannedOut: 0 };

  /** Adds a subscription; false if the subscriber already had it (Redis counts it once). */
  subscribe(subscriber: Subscriber, target: ChannelTarget): boolean {
    let channel = this.channels.get(target.key);
    if (channel === undefined) {
      channel = {
        key: target.key,
        workspaceId: target.workspaceId,
        sandboxId: target.sandboxId,
        subscribers: new Map(),
      };
      this.channels.set(target.key, channel);
    }
    if (channel.subscribers.has(subscriber)) return false;
    channel.subscribers.set(subscriber, target.displayName);
    return true;
  }

  unsubscribe(subscriber: Subscriber, key: string): boolean {
    const channel = this.channels.get(key);
    if (channel === undefined || !channel.subscribers.delete(subscriber)) return false;
    if (channel.subscribers.size === 0) this.channels.delete(key);
    return true;
  }

  psubscribe(subscriber: Subscriber, pattern: string, scope: PatternScope): boolean {
    let groups = this.patterns.get(scope);
    if (groups === undefined) {
      groups = new Map();
      this.patterns.set(scope, groups);
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
      if (groups.size === 0) this.patterns.delete(scope);
    }
    return true;
  }

  /**
   * How many subscriptions an event on this channel would reach now (PUBLISH's reply when the
   * event is delivered later, after it is durable).
   */
  receiverCount(ref: SandboxRef): number {
    let count = this.channels.get(channelKey(ref.workspaceId, ref.sandboxId))?.subscribers.size ?? 0;
    this.forEachMatchingPattern(ref, (group) => {
      count += group.subscribers.size;
    });
    return count;
  }

  /** Delivers one durable event to every subscriber of its channel and matching patterns. */
  fanOut(event: StoredEvent): number {
    let delivered = 0;
    const channel = this.channels.get(channelKey(event.workspaceId, event.sandboxId));
    if (channel !== undefined) {
      // The common case is that every subscriber used the plain sandbox id and RESP2:
      // one frame for all. Other forms are built on first need, once per publish.
      const frames = new FrameCache(undefined, event.json);
      for (const [subscriber, displayName] of channel.subscribers) {
        subscriber.deliver(frames.get(subscriber.protocol, displayName), event);
      }
      delivered += channel.subscribers.size;
    }
    this.forEachMatchingPattern(event, (group, channelName) => {
      const frames = new FrameCache(group.pattern, event.json);
      for (const subscriber of group.subscribers) {
        subscriber.deliver(frames.get(subscriber.protocol, channelName), event);
      }
      delivered += group.subscribers.size;
    });
    this.stats.fannedOut += 1;
    this.stats.delivered += delivered;
    return delivered;
  }

  private forEachMatchingPattern(
    ref: SandboxRef,
    visit: (group: PatternGroup, channelName: string) => void,
  ): void {
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
      const own = this.channels.get(channelKey(principal.workspaceId, principal.sandboxId));
      if (own !== undefined) scan(own);
      return names;
    }
    for (const channel of this.channels.values()) scan(channel);
    return names;
  }

  /** PUBSUB NUMSUB for one resolved channel. */
  subscriberCount(key: string): number {
    return this.channels.get(key)?.subscribers.size ?? 0;
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

  get channelCount(): number {
    return this.channels.size;
  }

  get totalPatternCount(): number {
    let total = 0;
    for (const groups of this.patterns.values()) total += groups.size;
    return total;
  }
}

/** The frames of one publish, built lazily per (protocol, channel name) and then reused. */
class FrameCache {
  private resp2?: Buffer;
  private resp2Name?: string;
  private others?: Map<string, Buffer>;

  constructor(
    private readonly pattern: string | undefined,
    private readonly payload: string,
  ) {}

  get(protocol: Protocol, channelName: string): Buffer {
    if (protocol === 2) {
      if (this.resp2 === undefined) {
        this.resp2 = deliveryFrame(2, this.pattern, channelName, this.payload);
        this.resp2Name = channelName;
        return this.resp2;
      }
      if (this.resp2Name === channelName) return this.resp2;
    }
    const cacheKey = `${protocol}:${channelName}`;
    this.others ??= new Map();
    let frame = this.others.get(cacheKey);
    if (frame === undefined) {
      frame = deliveryFrame(protocol, this.pattern, channelName, this.payload);
      this.others.set(cacheKey, frame);
    }
    return frame;
  }
}
