import { SandboxEventsError } from '../errors.js';

export interface RateLimit {
  /** Sustained rate, per second. */
  perSecond: number;
  /** Bucket size: how many may come at once after a quiet period. */
  burst: number;
}

export class RateLimitedError extends SandboxEventsError {
  constructor(readonly retryAfterMs: number) {
    super('RATE_LIMITED', 'rate limit exceeded');
  }
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/**
 * Token buckets keyed by publisher. Memory stays bounded: a bucket that has refilled completely
 * is the same as no bucket, so idle ones are dropped by a sweep of at most `maxBuckets`.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private limit: RateLimit,
    private readonly now: () => number = Date.now,
    private readonly maxBuckets = 100_000,
  ) {}

  /** Takes one token for `key`, or throws RateLimitedError saying when one will be there. */
  take(key: string): void {
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxBuckets) this.sweep(now);
      bucket = { tokens: this.limit.burst, updatedAt: now };
      this.buckets.set(key, bucket);
    } else if (now > bucket.updatedAt) {
      // Only forward: a wall clock stepped back (NTP) would otherwise take tokens away and
      // lock the sandbox out for as long as the step.
      const refill = ((now - bucket.updatedAt) * this.limit.perSecond) / 1000;
      bucket.tokens = Math.min(this.limit.burst, bucket.tokens + refill);
      bucket.updatedAt = now;
    }
    if (bucket.tokens < 1) {
      throw new RateLimitedError(Math.ceil(((1 - bucket.tokens) * 1000) / this.limit.perSecond));
    }
    bucket.tokens -= 1;
  }

  /** A new rate and burst (a config reload): buckets keep their tokens, capped at the new burst. */
  setLimit(limit: RateLimit): void {
    this.limit = { ...limit };
    for (const bucket of this.buckets.values()) bucket.tokens = Math.min(bucket.tokens, limit.burst);
  }

  get size(): number {
    return this.buckets.size;
  }

  private sweep(now: number): void {
    const fullAfterMs = (this.limit.burst * 1000) / this.limit.perSecond;
    for (const [key, bucket] of this.buckets) {
      if (now - bucket.updatedAt >= fullAfterMs) this.buckets.delete(key);
    }
  }
}
