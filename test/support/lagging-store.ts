import type { NewEvent, StoredEvent } from '../../src/event/event.js';
import type {
  DurableEventListener,
  EventStore,
  HistoryQuery,
  RetentionPolicy,
  SandboxRef,
} from '../../src/store/types.js';
import type { EventId } from '../../src/event/event.js';

/**
 * A real store whose live path lags its reads, as the Redis engine's can: an event comes live
 * on the subscriber connection, which a node may read after a replay's reply on the command
 * connection. Appended events are durable and readable at once, but reach the broker only when
 * the test calls `release()`, as another node's events do (no append waits for them). Appends
 * can be held too (`holdAppends`), as a slow disk holds a PUBLISH's reply.
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

  setRetention(retention: RetentionPolicy): void {
    this.inner.setRetention(retention);
  }

  /** While true, appends wait (stored, not yet acknowledged) until `releaseAppends()`. */
  holdAppends = false;
  private readonly heldAppends: (() => void)[] = [];

  async append(input: NewEvent): Promise<StoredEvent> {
    const event = await this.inner.append(input);
    if (this.holdAppends) await new Promise<void>((resolve) => this.heldAppends.push(resolve));
    return event;
  }

  /** Acknowledges the held appends; returns how many. */
  releaseAppends(): number {
    const held = this.heldAppends.splice(0);
    for (const resolve of held) resolve();
    return held.length;
  }

  /** Appends waiting in `append` now. */
  get appendsHeld(): number {
    return this.heldAppends.length;
  }

  history(query: HistoryQuery): Promise<StoredEvent[]> {
    return this.inner.history(query);
  }

  /** While true, resume reads wait until `releaseReads()`, as a slow disk holds them. */
  holdReads = false;
  private readonly heldReads: (() => void)[] = [];

  async replayAfter(ref: SandboxRef, afterId: EventId, limit: number) {
    if (this.holdReads) await new Promise<void>((resolve) => this.heldReads.push(resolve));
    return this.inner.replayAfter(ref, afterId, limit);
  }

  /** Lets the held reads go on; returns how many. */
  releaseReads(): number {
    const held = this.heldReads.splice(0);
    for (const resolve of held) resolve();
    return held.length;
  }

  get readsHeld(): number {
    return this.heldReads.length;
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
