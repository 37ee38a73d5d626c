import type { EventsError } from './errors.js';

/**
 * Callers waiting for the client to become ready (`connect()`, commands and subscriptions while
 * it reconnects), each with an optional deadline of its own.
 */

interface Waiter {
  resolve(): void;
  reject(error: EventsError): void;
  timer: NodeJS.Timeout | undefined;
}

export class ReadyWaiters {
  private readonly waiters = new Set<Waiter>();

  /** Resolves on `resolveAll`; rejects on `rejectAll`, or with `onTimeout()` after `timeoutMs` (if given). */
  wait(timeoutMs: number | undefined, onTimeout: () => EventsError): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, timer: undefined };
      if (timeoutMs !== undefined) {
        waiter.timer = setTimeout(() => {
          this.waiters.delete(waiter);
          reject(onTimeout());
        }, timeoutMs);
      }
      this.waiters.add(waiter);
    });
  }

  resolveAll(): void {
    for (const waiter of this.take()) waiter.resolve();
  }

  rejectAll(error: EventsError): void {
    for (const waiter of this.take()) waiter.reject(error);
  }

  private take(): Waiter[] {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const waiter of waiters) if (waiter.timer !== undefined) clearTimeout(waiter.timer);
    return waiters;
  }
}
