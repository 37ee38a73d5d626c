/**
 * The error line a connection gets when its token expires, or when the key that verified its
 * token is removed at a config reload (docs/protocol.md, "Authentication").
 */
export const TOKEN_EXPIRED_ERROR = 'ERR token expired: send AUTH with a fresh token before exp';

/** setTimeout's longest delay (2^31 - 1 ms, about 24.8 days); a longer one fires at once. */
const MAX_TIMEOUT_MS = 2_147_483_647;

/**
 * Deadlines of many holders on one node timer: every connection's and stream's token expiry
 * (its `exp` plus the clock tolerance), every unauthenticated connection's auth deadline. A
 * timer per holder cost a Timeout and a closure each, and the expiry's delay, unique to the
 * millisecond, made node build a timer list per connection (docs/performance.md, "Seventh
 * round: per-connection cost"). Holders due at the same instant share a bucket (the tokens of a
 * reconnect storm carry a few distinct `exp` seconds), so filing and withdrawing one is a Set
 * operation; the buckets' instants are a binary heap, and the timer is armed for its head.
 *
 * A deadline never passes early: the timer runs on the monotonic clock from the event loop's
 * cached time and can fire a few milliseconds before `Date.now()` reaches it, and a delay past
 * 24.8 days has to be waited out in steps; either way what is not due yet is waited for again.
 * `stepMs` rounds deadlines up to a multiple of it, so that holders filed within one step share
 * a bucket: for a deadline that a few milliseconds later changes nothing (the auth deadline).
 */
export class DeadlineQueue<H> {
  private readonly buckets = new Map<number, Set<H>>();
  /**
   * The buckets' instants as a binary min-heap. A bucket that empties leaves its instant here
   * until it comes up (or the heap is rebuilt, once it holds more than twice the live buckets).
   */
  private heap: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private armedFor = Number.POSITIVE_INFINITY;

  constructor(
    /** Called once for a holder whose deadline passed; it is no longer filed. */
    private readonly passed: (holder: H) => void,
    private readonly stepMs = 1,
  ) {}

  /**
   * Files `holder` under `deadline` (Unix milliseconds). Returns the instant it is filed at,
   * what `delete` takes; undefined for an infinite deadline, which never passes.
   */
  add(holder: H, deadline: number): number | undefined {
    if (!Number.isFinite(deadline)) return undefined;
    const step = this.stepMs;
    const at = step === 1 ? Math.ceil(deadline) : Math.ceil(deadline / step) * step;
    let bucket = this.buckets.get(at);
    if (bucket === undefined) {
      bucket = new Set();
      this.buckets.set(at, bucket);
      heapPush(this.heap, at);
      if (at < this.armedFor) this.arm(at);
    }
    bucket.add(holder);
    return at;
  }

  /** Withdraws `holder` from the instant `add` returned (before it passed). */
  delete(holder: H, at: number): void {
    const bucket = this.buckets.get(at);
    if (bucket === undefined || !bucket.delete(holder) || bucket.size > 0) return;
    this.buckets.delete(at);
    if (this.heap.length > 2 * this.buckets.size + 64) this.heap = rebuildHeap(this.buckets.keys());
  }

  private arm(at: number): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.armedFor = at;
    this.timer = setTimeout(this.fire, Math.min(Math.max(at - Date.now(), 0), MAX_TIMEOUT_MS));
    this.timer.unref();
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
    const now = Date.now();
    try {
      // `passed` may file and withdraw holders (and so rebuild the heap) as it goes.
      while (this.heap.length > 0 && this.heap[0]! <= now) {
        const at = heapPop(this.heap);
        const bucket = this.buckets.get(at);
        if (bucket === undefined) continue;
        this.buckets.delete(at);
        for (const holder of bucket) this.passed(holder);
      }
    } finally {
      const next = this.heap[0];
      if (next !== undefined && next < this.armedFor) this.arm(next);
    }
  };
}

function heapPush(heap: number[], value: number): void {
  let index = heap.length;
  heap.push(value);
  while (index > 0) {
    const parent = (index - 1) >> 1;
    if (heap[parent]! <= value) break;
    heap[index] = heap[parent]!;
    index = parent;
  }
  heap[index] = value;
}

function heapPop(heap: number[]): number {
  const top = heap[0]!;
  const last = heap.pop()!;
  const size = heap.length;
  if (size === 0) return top;
  let index = 0;
  for (;;) {
    let child = 2 * index + 1;
    if (child >= size) break;
    if (child + 1 < size && heap[child + 1]! < heap[child]!) child += 1;
    if (heap[child]! >= last) break;
    heap[index] = heap[child]!;
    index = child;
  }
  heap[index] = last;
  return top;
}

function rebuildHeap(values: Iterable<number>): number[] {
  const heap: number[] = [];
  for (const value of values) heapPush(heap, value);
  return heap;
}
