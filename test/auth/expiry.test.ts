import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ExpiryTimer } from '../../src/session/expiry.js';

const DAY = 24 * 3600 * 1000;

describe('ExpiryTimer', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_800_000_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fires once the wall clock reaches the deadline, not before', () => {
    const fired = vi.fn();
    const timer = new ExpiryTimer(fired);
    timer.start(Date.now() + 1_000);
    vi.advanceTimersByTime(999);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fired).toHaveBeenCalledTimes(1);
  });

  it("waits a deadline past setTimeout's 24.8 days out in steps", () => {
    const fired = vi.fn();
    new ExpiryTimer(fired).start(Date.now() + 30 * DAY);
    vi.advanceTimersByTime(25 * DAY);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(5 * DAY - 1);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fired).toHaveBeenCalledTimes(1);
  });

  it('starts again when it fires while the wall clock is still short of the deadline', () => {
    const fired = vi.fn();
    const deadline = Date.now() + 1_000;
    new ExpiryTimer(fired).start(deadline);
    // The wall clock falls 5 ms behind the timers' clock, as Date.now() can behind a timer
    // armed from the event loop's cached time.
    vi.setSystemTime(Date.now() - 5);
    vi.advanceTimersByTime(1_000);
    expect(Date.now()).toBe(deadline - 5);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(5);
    expect(fired).toHaveBeenCalledTimes(1);
  });

  it('restarts on start, stops on cancel, and never fires for an infinite deadline', () => {
    const fired = vi.fn();
    const timer = new ExpiryTimer(fired);
    timer.start(Date.now() + 1_000);
    timer.start(Date.now() + 5_000); // a fresh AUTH moves the deadline
    vi.advanceTimersByTime(4_999);
    expect(fired).not.toHaveBeenCalled();
    timer.cancel();
    vi.advanceTimersByTime(DAY);
    expect(fired).not.toHaveBeenCalled();
    timer.start(Number.POSITIVE_INFINITY);
    expect(vi.getTimerCount()).toBe(0);
  });
});
