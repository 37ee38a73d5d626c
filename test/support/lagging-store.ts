import type { NewEvent, StoredEvent } from '../../src/event/event.js';
import type { DurableEventListener, EventStore, HistoryQuery, SandboxRef } from '../../src/store/types.js';
import type { EventId } from '../../src/event/event.js';

/**
 * A real store whose live path lags its reads, as the Redis engine's can: an event comes live
 * on the subscriber connection, which a node may read after a replay's reply on the command
 * connection. Appended events are durable and readable at once, but reach the broker only when
 * the test calls `release()`, as another node's events do (no append waits for them).
 */
export class LaggingStore implements EventStore {
  readonly kind = 'lagging';
  private listener: DurableEventListener | undefined;
  private readonly lagging: StoredEvent[] = [];

  constructor(private readonly inner: EventStore) {
    inner.setListener((event) => {
      this.lagging.push(event);
    });
  }

  setListener(listener: DurableEventListener): void {
    this.listener = listener;
  }

  append(input: NewEvent): Promise<StoredEvent> {
    return this.inner.append(input);
  }

  history(query: HistoryQuery): Promise<StoredEvent[]> {
    return this.inner.history(query);
  }

  replayAfter(ref: SandboxRef, afterId: EventId, limit: number) {
    return this.inner.replayAfter(ref, afterId, limit);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** Delivers the lagging events live, in order; returns how many. */
  release(): number {
    const events = this.lagging.splice(0);
    for (const event of events) this.listener?.(event, undefined);
    return events.length;
  }
}
