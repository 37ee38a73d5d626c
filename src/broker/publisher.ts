import type { Principal } from '../auth/principal.js';
import type { StoredEvent } from '../event/event.js';
import type { EventStore, SandboxRef } from '../store/types.js';
import type { Broker } from './broker.js';
import { type RateLimit, RateLimiter } from './rate-limit.js';

/** Metrics hooks (issue 5), called once per published event, in seconds from `publish()`. */
export interface PublishObserver {
  /** The store reported the event durable. */
  stored(seconds: number): void;
  /** Fan-out finished: every subscriber's frame was queued. */
  delivered(seconds: number): void;
}

interface FanOutRecord {
  receivers: number;
  storedAt: number;
  deliveredAt: number;
}

export interface PublishResult {
  event: StoredEvent;
  /** Subscriptions the event was delivered to (PUBLISH's integer reply). */
  receivers: number;
}

/**
 * The one publish path, shared by every transport: store the event, and deliver it only once
 * it is durable (issue 3: nobody may hold an id a restarted broker could reissue).
 */
export class Publisher {
  /** Receivers counted at fan-out (and when), handed to the publish that created the event. */
  private readonly fanOuts = new WeakMap<StoredEvent, FanOutRecord>();
  private readonly limiter: RateLimiter;
  published = 0;
  rateLimited = 0;
  observer: PublishObserver | undefined;

  constructor(
    private readonly store: EventStore,
    private readonly broker: Broker,
    rateLimit: RateLimit,
  ) {
    this.limiter = new RateLimiter(rateLimit);
    store.setListener((event) => {
      const storedAt = performance.now();
      const receivers = this.broker.fanOut(event);
      this.fanOuts.set(event, { receivers, storedAt, deliveredAt: performance.now() });
    });
  }

  /**
   * `publisher` is whoever publishes: a sandbox token is held to the publish rate limit
   * (contract: 1,000/s, burst 2,000), checked before anything is stored. Throws
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
    return this.append(ref, type, dataJson);
  }

  private async append(ref: SandboxRef, type: string, dataJson: string): Promise<PublishResult> {
    const startedAt = performance.now();
    const event = await this.store.append({
      workspaceId: ref.workspaceId,
      sandboxId: ref.sandboxId,
      type,
      dataJson,
    });
    this.published += 1;
    const fanOut = this.fanOuts.get(event);
    if (fanOut !== undefined && this.observer !== undefined) {
      this.observer.stored((fanOut.storedAt - startedAt) / 1000);
      this.observer.delivered((fanOut.deliveredAt - startedAt) / 1000);
    }
    return { event, receivers: fanOut?.receivers ?? 0 };
  }
}
