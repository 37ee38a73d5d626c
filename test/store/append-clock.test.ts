/**
 * The memory store's appends share a clock reading within one synchronous run, a few at a time
 * (src/store/append-clock.ts): never more than READS_SHARED of them, never past the run.
 */
import { describe, expect, it } from 'vitest';
import { AppendClock, READS_SHARED } from '../../src/store/append-clock.js';

/** A clock source that answers a new millisecond at every read, and counts them. */
function countingSource(): { reads: number; read: () => number } {
  const source = {
    reads: 0,
    read: () => {
      source.reads += 1;
      return 1_000 + source.reads;
    },
  };
  return source;
}

describe('AppendClock', () => {
  it('serves one reading to at most READS_SHARED appends of one synchronous run', () => {
    const source = countingSource();
    const clock = new AppendClock(source.read);
    const first = Array.from({ length: READS_SHARED }, () => clock.now());
    expect(source.reads).toBe(1);
    expect(new Set(first)).toEqual(new Set([1_001]));
    expect(clock.now()).toBe(1_002);
    expect(source.reads).toBe(2);
  });

  it('reads the clock again once the run ends (a microtask later)', async () => {
    const source = countingSource();
    const clock = new AppendClock(source.read);
    expect(clock.now()).toBe(1_001);
    await Promise.resolve();
    expect(clock.now()).toBe(1_002);
    expect(source.reads).toBe(2);
  });
});
