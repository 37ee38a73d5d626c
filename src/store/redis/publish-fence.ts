/**
 * Exactly once at the publishing node (docs/scaling.md, "Exactly once at the publishing node").
 *
 * A node delivers an event its own clients watch from its subscription, never from the append
 * path. This class keeps what that needs: the appends waiting for their own message (settled by
 * its arrival, or by a fence proving it will not come), the last id delivered per sandbox (one
 * event may arrive on two routes), and the subscriber counts of own events that arrived before
 * their append's reply (for PUBLISH's integer reply).
 */
import {
  compareEventIds,
  formatEventId,
  parseEventId,
  type EventId,
  type NewEvent,
  type StoredEvent,
} from '../../event/event.js';
import { sandboxKey } from '../semantics.js';
import type { RedisEngineStats } from './connection.js';

/** Fans one event out locally (the store listener); returns the subscribers reached. */
export type Deliver = (
  event: StoredEvent,
  appended: NewEvent | undefined,
  alreadyDelivered?: number,
) => number | undefined;

interface AppendWaiter {
  /** Fence sequence number at registration. */
  seq: number;
  event: StoredEvent;
  input: NewEvent;
  resolve: (event: StoredEvent) => void;
}

/** Last id delivered per sandbox. */
interface Delivered {
  id: EventId;
  at: number;
}

/** If a watched event's own message has not arrived after this long, a fence settles it. */
const WAITER_FENCE_MS = 500;
const DELIVERED_SWEEP_MS = 30_000;

export type FenceStats = Pick<RedisEngineStats, 'received' | 'duplicatesDropped' | 'fences'>;

export class PublishFence {
  private seq = 0;
  private readonly waiters = new Map<string, AppendWaiter>();
  private fenceTimer: NodeJS.Timeout | undefined;
  private readonly delivered = new Map<string, Delivered>();
  /** Appends of this node waiting for the script's reply, per sandbox. */
  private readonly appending = new Map<string, number>();
  /**
   * Events of a sandbox with appends in flight that arrived by subscription first, in arrival
   * (= id) order, by id text: the id and the subscribers reached. One may be this node's own,
   * whose reply is still on its way; its PUBLISH then reports that count.
   */
  private readonly arrivedFirst = new Map<string, Map<string, { id: EventId; receivers: number }>>();
  private readonly sweepTimer: NodeJS.Timeout;
  /**
   * The highest id of a live message received on the subscriber connection. Redis pushes one
   * connection's messages in the order its scripts ran, so every watched event published before
   * that one came before it (ids of other streams may share its millisecond: see gap-fill.ts).
   */
  private liveThrough: EventId | undefined;
  /** While a gap-fill runs, fences settle nothing (an append's message may be held); the newest asked. */
  private heldSettle: number | undefined;

  /**
   * `probe` sends a command on the subscriber connection (undefined when it is down): its reply
   * comes after every message Redis pushed before it. `keepDelivered` tells which sandboxes'
   * last-delivered ids must outlive the sweep (those still watched).
   */
  constructor(
    private readonly deliver: Deliver,
    private readonly probe: () => Promise<unknown> | undefined,
    private readonly keepDelivered: (key: string) => boolean,
    readonly stats: FenceStats,
  ) {
    this.sweepTimer = setInterval(() => this.sweepDelivered(), DELIVERED_SWEEP_MS);
    this.sweepTimer.unref();
  }

  /** A new fence number: a reply on the subscriber connection sent now settles the waiters before it. */
  nextSeq(): number {
    return ++this.seq;
  }

  /** An append of `key` was sent. */
  beginAppend(key: string): void {
    this.appending.set(key, (this.appending.get(key) ?? 0) + 1);
  }

  /**
   * An append's reply came (`idText`, or undefined if it failed): returns the subscriber count
   * if its event arrived by subscription first. Replies of one sandbox come in id order, so the
   * entries up to this id that were not this append's are other nodes' events: dropped.
   */
  appendAnswered(key: string, idText: string | undefined): number | undefined {
    const inFlight = (this.appending.get(key) ?? 1) - 1;
    const arrived = this.arrivedFirst.get(key);
    let mine: number | undefined;
    if (arrived !== undefined && idText !== undefined) {
      mine = arrived.get(idText)?.receivers;
      const id = parseEventId(idText);
      for (const [text, other] of arrived) {
        if (id === undefined || compareEventIds(other.id, id) > 0) break;
        arrived.delete(text);
      }
    }
    if (inFlight > 0) {
      this.appending.set(key, inFlight);
    } else {
      this.appending.delete(key);
      this.arrivedFirst.delete(key);
    }
    return mine;
  }

  /**
   * Resolves once this node's own event (watched here) was delivered from its subscription, or
   * a fence proved its message will not come. `arrived` is what `appendAnswered` returned;
   * `fenceNow` says no route that could carry it is in place.
   */
  awaitDelivery(
    event: StoredEvent,
    input: NewEvent,
    arrived: number | undefined,
    fenceNow: boolean,
  ): Promise<StoredEvent> {
    const key = sandboxKey(event);
    return new Promise<StoredEvent>((resolve) => {
      const done = this.delivered.get(key);
      if (done !== undefined && compareEventIds(done.id, event.id) >= 0) {
        // Already arrived by subscription before the script's reply did, and was delivered
        // then: the listener only learns how widely, for PUBLISH's reply.
        if (arrived !== undefined) this.deliver(event, input, arrived);
        resolve(event);
        return;
      }
      this.waiters.set(`${key}\n${formatEventId(event.id)}`, { seq: this.seq, event, input, resolve });
      if (fenceNow) this.fence();
      else this.armFenceTimer();
    });
  }

  /**
   * Settles append waiters whose message will not come. A command sent on the subscriber
   * connection after an append's reply arrived is answered after every message Redis pushed for
   * that append, and ioredis emits messages synchronously while it resolves replies through
   * promises, so when the reply's continuation runs, an undelivered waiter's message was never
   * pushed (the subscription began after the event, or ended before it).
   */
  fence(): void {
    if (this.fenceTimer !== undefined) {
      clearTimeout(this.fenceTimer);
      this.fenceTimer = undefined;
    }
    const seq = this.nextSeq();
    this.stats.fences += 1;
    const reply = this.probe();
    if (reply === undefined) {
      this.settle(seq);
      return;
    }
    reply.then(
      () => this.settle(seq),
      () => this.settle(seq),
    );
  }

  private armFenceTimer(): void {
    if (this.fenceTimer !== undefined) return;
    this.fenceTimer = setTimeout(() => {
      this.fenceTimer = undefined;
      if (this.waiters.size > 0) this.fence();
    }, WAITER_FENCE_MS);
    this.fenceTimer.unref();
  }

  /** Resolves waiters registered before fence `seq` was sent: durable, not delivered here. */
  settle(seq: number): void {
    if (this.heldSettle !== undefined) {
      this.heldSettle = Math.max(this.heldSettle, seq);
      return;
    }
    this.settleBefore(seq);
  }

  /** From now until `release`, no waiter is settled by a fence (messages are held back meanwhile). */
  hold(): void {
    this.heldSettle ??= 0;
  }

  /** Settles what the fences asked for meanwhile; the held messages were delivered before this. */
  release(): void {
    const seq = this.heldSettle;
    this.heldSettle = undefined;
    if (seq !== undefined && seq > 0) this.settleBefore(seq);
  }

  private settleBefore(seq: number): void {
    for (const [key, waiter] of this.waiters) {
      if (waiter.seq >= seq) continue;
      this.waiters.delete(key);
      waiter.resolve(waiter.event);
    }
    if (this.waiters.size > 0) this.armFenceTimer();
  }

  /** Settles every waiter (the subscriber connection went, or the engine closes). */
  settleAll(): void {
    this.settleBefore(this.nextSeq());
  }

  /** The last id delivered for a sandbox, if the node still remembers it. */
  lastDelivered(key: string): EventId | undefined {
    return this.delivered.get(key)?.id;
  }

  /**
   * Records `id` as delivered for a sandbox without delivering anything (its local subscribers
   * were told that events are lost instead): older copies that still arrive are dropped.
   */
  skipThrough(key: string, id: EventId): void {
    const last = this.delivered.get(key);
    if (last === undefined || compareEventIds(id, last.id) > 0) this.delivered.set(key, { id, at: Date.now() });
  }

  /** The highest id of a live message received so far (undefined before the first). */
  receivedThrough(): EventId | undefined {
    return this.liveThrough;
  }

  /**
   * Delivers an event that came by subscription (`live`) or was read from its stream by a
   * gap-fill, once per id, in id order.
   */
  receive(event: StoredEvent, live = true): void {
    this.stats.received += 1;
    if (live && (this.liveThrough === undefined || compareEventIds(event.id, this.liveThrough) > 0)) {
      this.liveThrough = event.id;
    }
    const key = sandboxKey(event);
    const last = this.delivered.get(key);
    // The same event arrives twice when this node watches both its sandbox and a pattern of
    // its workspace; both copies come on this one connection in stream order, so the id alone
    // tells the second copy apart.
    if (last !== undefined && compareEventIds(event.id, last.id) <= 0) {
      this.stats.duplicatesDropped += 1;
      return;
    }
    this.delivered.set(key, { id: event.id, at: Date.now() });
    const idText = formatEventId(event.id);
    const waiterKey = `${key}\n${idText}`;
    const waiter = this.waiters.get(waiterKey);
    if (waiter !== undefined) {
      this.waiters.delete(waiterKey);
      // The publishing node hands the same object to the listener and to its append's caller.
      this.deliver(waiter.event, waiter.input);
      waiter.resolve(waiter.event);
      return;
    }
    const receivers = this.deliver(event, undefined);
    if (this.appending.has(key)) {
      let arrived = this.arrivedFirst.get(key);
      if (arrived === undefined) this.arrivedFirst.set(key, (arrived = new Map()));
      arrived.set(idText, { id: event.id, receivers: receivers ?? 0 });
    }
  }

  private sweepDelivered(): void {
    const old = Date.now() - DELIVERED_SWEEP_MS;
    for (const [key, entry] of this.delivered) {
      // An entry at the newest live millisecond stays: a gap-fill would start just below it.
      const recent = this.liveThrough !== undefined && entry.id.ms >= this.liveThrough.ms - 1;
      if (entry.at < old && !recent && !this.keepDelivered(key)) this.delivered.delete(key);
    }
  }

  close(): void {
    clearInterval(this.sweepTimer);
    if (this.fenceTimer !== undefined) clearTimeout(this.fenceTimer);
    this.settleAll();
  }
}
