import type { StoredEvent } from '../event/event.js';
import type { EventStore, SandboxRef } from '../store/types.js';
import type { Broker } from './broker.js';

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
  published = 0;

  constructor(
    private readonly store: EventStore,
    private readonly broker: Broker,
  ) {
    store.setListener((event) => {
      this.receivers.set(event, this.broker.fanOut(event));
    });
  }

  async publish(ref: SandboxRef, type: string, dataJson: string): Promise<PublishResult> {
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
