import type { SandboxEvent } from '../event/event.js';
import type { EventsError } from './errors.js';
import { EventQueue } from './event-queue.js';
import type { EventMeta, EventsIteratorOptions } from './types.js';

/**
 * Hands events to the application: the `event` listeners and every `events()` iterator. It
 * holds deliveries back while a connection restores its subscriptions, and tells the client to
 * stop reading the socket while an iterator is over its high-water mark (docs/client.md,
 * "Async iteration").
 */

export interface DeliveryHooks {
  /** Emits `event` to the listeners. */
  emit(event: SandboxEvent, meta: EventMeta): void;
  /** Some iterator crossed its high-water mark (true), or none is over it any more (false). */
  pauseChanged(paused: boolean): void;
}

export class Deliveries {
  private readonly queues = new Set<EventQueue>();
  private readonly pressured = new Set<EventQueue>();
  private paused = false;
  /** Deliveries held back until the turn after a connection became ready (see `hold`). */
  private held: { event: SandboxEvent; meta: EventMeta }[] | undefined;

  constructor(private readonly hooks: DeliveryHooks) {}

  /** Whether reading should stay paused: an iterator is over its high-water mark. */
  get readingPaused(): boolean {
    return this.paused;
  }

  /**
   * A new `events()` iterator. `failure`, when the client has failed, ends it at once with that
   * error; an aborted `signal` ends it normally.
   */
  iterator(options: EventsIteratorOptions, failure: EventsError | undefined): AsyncIterableIterator<SandboxEvent> {
    const { signal } = options;
    const onAbort = (): void => void queue.return();
    const queue = new EventQueue(
      Math.max(1, options.highWaterMark ?? 10_000),
      (target, over) => this.onPressure(target, over),
      (target) => {
        this.queues.delete(target);
        signal?.removeEventListener('abort', onAbort);
      },
    );
    if (signal?.aborted === true) {
      void queue.return();
      return queue;
    }
    if (failure !== undefined) {
      queue.fail(failure);
      return queue;
    }
    this.queues.add(queue);
    signal?.addEventListener('abort', onAbort, { once: true });
    return queue;
  }

  deliver(event: SandboxEvent, meta: EventMeta): void {
    if (this.held !== undefined) this.held.push({ event, meta });
    else this.handOut(event, meta);
  }

  /**
   * Events that arrive while a connection restores its subscriptions (the replays of the first
   * sandboxes come before the last confirmation) are handed out on the turn of the event loop
   * after it became ready, in order, so that code which starts a `for await` loop right after
   * `await connect()` sees them too. Held from the start of the restore (`hold`); released once
   * ready (`release`). If the client is not ready on that turn (disconnect() came first), they
   * stay held for the next connection: their ids are already the resume position, so dropping
   * them would lose them.
   */
  hold(): void {
    this.held ??= [];
  }

  /** Hands the held events out on the next turn, if `stillReady()` then. */
  release(stillReady: () => boolean): void {
    const held = this.held;
    if (held === undefined) return;
    setImmediate(() => {
      if (this.held !== held || !stillReady()) return;
      this.held = undefined;
      for (const { event, meta } of held) this.handOut(event, meta);
    });
  }

  /** Ends every iterator normally (`disconnect()`). */
  endAll(): void {
    for (const queue of [...this.queues]) queue.end();
  }

  /** Ends every iterator with `error` (the client failed). */
  failAll(error: EventsError): void {
    for (const queue of [...this.queues]) queue.fail(error);
  }

  private handOut(event: SandboxEvent, meta: EventMeta): void {
    for (const queue of this.queues) queue.push(event);
    this.hooks.emit(event, meta);
  }

  private onPressure(queue: EventQueue, over: boolean): void {
    if (over) this.pressured.add(queue);
    else this.pressured.delete(queue);
    const paused = this.pressured.size > 0;
    if (paused === this.paused) return;
    this.paused = paused;
    this.hooks.pauseChanged(paused);
  }
}
