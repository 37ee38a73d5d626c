import type { Principal } from '../auth/principal.js';
import type { NewEvent, StoredEvent } from '../event/event.js';
import type { EventStore, SandboxRef } from '../store/types.js';
import type { Broker } from './broker.js';
import { type RateLimit, RateLimiter } from './rate-limit.js';

/** Metrics hooks (docs/http.md, "GET /metrics"), called once per published event, in seconds from `publish()`. */
export interface PublishObserver {
  /** The store reported the event durable. */
  stored(seconds: number): void;
  /** Fan-out finished: every subscriber's frame was queued. */
  delivered(seconds: number): void;
  /** The event, once published, and the subscriptions it reached (GET /sandboxes' figures). */
  published?(event: StoredEvent, receivers: number): void;
}

/**
 * One publish on its way through the store. It is the store's `append` input itself, so the
 * listener, which gets that same object back, records the fan-out on it: no per-event lookup
 * (a WeakMap here cost ≈ 14 % of the publish path's CPU, most of it in the garbage collector).
 */
class PublishRequest implements NewEvent {
  receivers = 0;
  /** performance.now() readings, taken only while a metrics observer is attached. */
  startedAt = 0;
  storedAt = 0;
  deliveredAt = 0;

  constructor(
    readonly workspaceId: number,
    readonly sandboxId: string,
    readonly type: string,
    readonly dataJson: string,
  ) {}
}

export interface PublishResult {
  event: StoredEvent;
  /** Subscriptions the event was delivered to (PUBLISH's integer reply). */
  receivers: number;
}

/**
 * The one publish path, shared by every transport: store the event, and deliver it only once
 * it is durable (docs/operations.md, "Durability": nobody may hold an id a restarted broker could reissue).
 */
export class Publisher {
  private readonly limiter: RateLimiter;
  published = 0;
  rateLimited = 0;
  /** Events published through this node and the deliveries they made, per workspace (INFO, docs/protocol.md). */
  readonly byWorkspace = new Map<number, { published: number; delivered: number }>();
  observer: PublishObserver | undefined;
  /** Publishes waiting for the store, and who waits for there to be none (whenIdle). */
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly store: EventStore,
    private readonly broker: Broker,
    rateLimit: RateLimit,
  ) {
    this.limiter = new RateLimiter(rateLimit);
    store.setListener((event, appended, alreadyDelivered) => {
      // Another node's event (Redis engine): nobody here waits for it.
      if (!(appended instanceof PublishRequest)) return this.broker.fanOut(event);
      const timed = appended.startedAt !== 0;
      if (timed) appended.storedAt = performance.now();
      appended.receivers = alreadyDelivered ?? this.broker.fanOut(event);
      if (timed) appended.deliveredAt = performance.now();
      return appended.receivers;
    });
  }

  /** Applies a new publish rate limit to every sandbox token (a config reload). */
  setRateLimit(rateLimit: RateLimit): void {
    this.limiter.setLimit(rateLimit);
  }

  /** Resolves once no publish is waiting for the store (shutdown waits for them). */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private publishDone(): void {
    this.inFlight -= 1;
    if (this.inFlight > 0 || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /**
   * `publisher` is whoever publishes: a sandbox token is held to the publish rate limit
   * (docs/protocol.md: 1,000/s, burst 2,000 by default), checked before anything is stored. Throws
   * RateLimitedError synchronously so a refused event never reaches the store.
   */
  publish(publisher: Principal, ref: SandboxRef, type: string, dataJson: string): Promise<PublishResult> {
    if (publisher.role === 'sandbox') {
      try {
        this.limiter.take(`${publisher.workspaceId}:${publisher.sandboxId}`);
      } catch (error) {
        this.rateLimited += 1;
        throw error;
      }
    }
    const request = new PublishRequest(ref.workspaceId, ref.sandboxId, type, dataJson);
    if (this.observer !== undefined) request.startedAt = performance.now();
    this.inFlight += 1;
    return this.store.append(request).then((event) => this.settle(request, event), this.failed);
  }

  /** A refused append (one function for all, not a closure per publish). */
  private readonly failed = (error: unknown): never => {
    this.publishDone();
    throw error;
  };

  private settle(request: PublishRequest, event: StoredEvent): PublishResult {
    this.publishDone();
    this.published += 1;
    let totals = this.byWorkspace.get(event.workspaceId);
    if (totals === undefined) {
      totals = { published: 0, delivered: 0 };
      this.byWorkspace.set(event.workspaceId, totals);
    }
    totals.published += 1;
    totals.delivered += request.receivers;
    const observer = this.observer;
    if (observer !== undefined) {
      if (request.startedAt !== 0 && request.deliveredAt !== 0) {
        observer.stored((request.storedAt - request.startedAt) / 1000);
        observer.delivered((request.deliveredAt - request.startedAt) / 1000);
      }
      observer.published?.(event, request.receivers);
    }
    return { event, receivers: request.receivers };
  }
}
