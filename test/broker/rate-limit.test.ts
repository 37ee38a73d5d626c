import { describe, expect, it } from 'vitest';
import { RateLimitedError, RateLimiter } from '../../src/broker/rate-limit.js';

describe('RateLimiter', () => {
  it('allows the burst, then the sustained rate, and says when the next token comes', () => {
    let now = 1_000_000;
    const limiter = new RateLimiter({ perSecond: 10, burst: 5 }, () => now);
    for (let i = 0; i < 5; i += 1) limiter.take('a');
    const refused = (() => {
      try {
        limiter.take('a');
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    expect(refused).toBeInstanceOf(RateLimitedError);
    expect((refused as RateLimitedError).retryAfterMs).toBe(100);
    expect((refused as RateLimitedError).code).toBe('RATE_LIMITED');
    limiter.take('b'); // other keys have their own bucket
    now += 100;
    limiter.take('a');
    expect(() => limiter.take('a')).toThrow(RateLimitedError);
    now += 10_000;
    for (let i = 0; i < 5; i += 1) limiter.take('a'); // refilled to the burst, not beyond
    expect(() => limiter.take('a')).toThrow(RateLimitedError);
  });

  it('keeps memory bounded: full buckets are swept when the map is at its cap', () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 1000, burst: 10 }, () => now, 100);
    for (let i = 0; i < 100; i += 1) limiter.take(`k${i}`);
    now += 1_000;
    limiter.take('new');
    expect(limiter.size).toBe(1);
  });

  it('takes no tokens away when the wall clock steps back (a 5 s NTP step once locked a sandbox out)', () => {
    let now = 1_700_000_000_000;
    const limiter = new RateLimiter({ perSecond: 1000, burst: 2000 }, () => now);
    limiter.take('1:sb');
    now -= 5_000;
    for (let i = 0; i < 1999; i += 1) limiter.take('1:sb'); // the rest of the burst, still owed
    expect(() => limiter.take('1:sb')).toThrow(RateLimitedError);
    now += 5_001; // back to where it was, plus 1 ms: one token
    limiter.take('1:sb');
  });
});
