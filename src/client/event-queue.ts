import type { SandboxEvent } from '../event/event.js';

/** Called when a queue crosses its high-water mark (true) or drains back below half of it (false). */
export type PressureListener = (queue: EventQueue, over: boolean) => void;

/**
 * The buffer behind `client.events()`: an async iterator fed by the client. When the consumer
 * falls behind by `highWaterMark` events, the client stops reading the socket (the broker then
 * holds the rest, and past its output limit drops the connection, which the client resumes
 * from exactly where it was), so a slow `for await` loop never grows memory without bound.
 */
export class EventQueue implements AsyncIterableIterator<SandboxEvent> {
  private items: (SandboxEvent | undefined)[] = [];
  private head = 0;
  /**
   * Pending next() calls, oldest first: `for await` keeps one at a time, but the iterator
   * protocol lets a caller ask for several before any event arrives.
   */
  private waiters: { resolve: (result: IteratorResult<SandboxEvent>) => void; reject: (error: unknown) => void }[] = [];
  private finished = false;
  private failure: unknown;
  private over = false;

  constructor(
    private readonly highWaterMark: number,
    private readonly onPressure: PressureListener,
    private readonly onFinish: (queue: EventQueue) => void,
  ) {}

  get length(): number {
    return this.items.length - this.head;
  }

  push(event: SandboxEvent): void {
    if (this.finished) return;
    const waiter = this.waiters.shift();
    if (waiter !== undefined) {
      waiter.resolve({ value: event, done: false });
      return;
    }
    this.items.push(event);
    if (!this.over && this.length >= this.highWaterMark) {
      this.over = true;
      this.onPressure(this, true);
    }
  }

  /** Ends the iteration after the buffered events (the client was disconnected). */
  end(): void {
    this.finish(undefined);
  }

  /** Ends the iteration with an error after the buffered events (the client failed). */
  fail(error: unknown): void {
    this.finish(error);
  }

  next(): Promise<IteratorResult<SandboxEvent>> {
    if (this.length > 0) {
      const value = this.items[this.head] as SandboxEvent;
      this.items[this.head] = undefined; // let it be collected
      this.head += 1;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      if (this.over && this.length <= this.highWaterMark / 2) {
        this.over = false;
        this.onPressure(this, false);
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.finished) {
      if (this.failure !== undefined) {
        const failure = this.failure;
        this.failure = undefined; // thrown once; later calls see the end
        return Promise.reject(failure);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
    });
  }

  /** `break` in a `for await` loop, or the AbortSignal: stop and drop what is buffered. */
  return(): Promise<IteratorResult<SandboxEvent>> {
    this.finish(undefined);
    this.items = [];
    this.head = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private finish(error: unknown): void {
    if (this.finished) return;
    this.finished = true;
    this.failure = error;
    if (this.over) {
      this.over = false;
      this.onPressure(this, false);
    }
    this.onFinish(this);
    const waiters = this.waiters.splice(0);
    for (const [i, waiter] of waiters.entries()) {
      // The failure is thrown once, to the oldest; the others see the end.
      if (error !== undefined && i === 0) {
        this.failure = undefined;
        waiter.reject(error);
      } else waiter.resolve({ value: undefined, done: true });
    }
  }
}
