import type { Principal } from '../auth/principal.js';
import type { StoredEvent } from '../event/event.js';
import type { EventStore, SandboxRef } from '../store/types.js';
import type { Broker } from './broker.js';
import { type RateLimit, RateLimiter } from './rate-limit.js';

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
  /** Receivers counted at fan-out, handed to the publish that created the event. */
  private readonly receivers = new WeakMap<StoredEvent, number>();
  private readonly limiter: RateLimiter;
  published = 0;
  rateLimited = 0;

  constructor(
    private readonly store: EventStore,
    private readonly broker: Broker,
    rateLimit: RateLimit,
  ) {
    this.limiter = new RateLimiter(rateLimit);
    store.setListener((event) => {
      this.receivers.set(event, this.broker.fanOut(event));
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
    const event = await this.store.append({
      workspaceId: ref.workspaceId,
      sandboxId: ref.sandboxId,
      type,
      dataJson,
    });
    this.published += 1;
    return { event, receivers: this.receivers.get(event) ?? 0 };
  }
}
