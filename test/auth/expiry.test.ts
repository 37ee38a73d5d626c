import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DeadlineQueue } from '../../src/session/expiry.js';

const DAY = 24 * 3600 * 1000;

describe('DeadlineQueue', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_800_000_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('passes a holder once the wall clock reaches its deadline, not before', () => {
    const passed = vi.fn();
    const queue = new DeadlineQueue<string>(passed);
    queue.add('a', Date.now() + 1_000);
    vi.advanceTimersByTime(999);
    expect(passed).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(passed).toHaveBeenCalledTimes(1);
    expect(passed).toHaveBeenCalledWith('a');
    vi.advanceTimersByTime(DAY);
    expect(passed).toHaveBeenCalledTimes(1);
  });

  it("waits a deadline past setTimeout's 24.8 days out in steps", () => {
    const passed = vi.fn();
    new DeadlineQueue<string>(passed).add('a', Date.now() + 30 * DAY);
    vi.advanceTimersByTime(25 * DAY);
    expect(passed).not.toHaveBeenCalled();
    vi.advanceTimersByTime(5 * DAY - 1);
    expect(passed).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(passed).toHaveBeenCalledTimes(1);
  });

  it('waits again when its timer fires while the wall clock is still short of the deadline', () => {
    const passed = vi.fn();
    const deadline = Date.now() + 1_000;
    new DeadlineQueue<string>(passed).add('a', deadline);
    // The wall clock falls 5 ms behind the timers' clock, as Date.now() can behind a timer
    // armed from the event loop's cached time.
    vi.setSystemTime(Date.now() - 5);
    vi.advanceTimersByTime(1_000);
    expect(Date.now()).toBe(deadline - 5);
    expect(passed).not.toHaveBeenCalled();
    vi.advanceTimersByTime(5);
    expect(passed).toHaveBeenCalledTimes(1);
  });

  it('passes holders in deadline order, those of one instant together, and never a withdrawn one', () => {
    const order: string[] = [];
    const queue = new DeadlineQueue<string>((holder) => order.push(holder));
    const now = Date.now();
    const late = queue.add('late', now + 3_000)!;
    queue.add('first', now + 1_000);
    queue.add('second', now + 1_000);
    const withdrawn = queue.add('withdrawn', now + 500)!;
    queue.delete('withdrawn', withdrawn);
    queue.add('infinite', Number.POSITIVE_INFINITY);
    vi.advanceTimersByTime(1_000);
    expect(order).toEqual(['first', 'second']);
    queue.delete('late', late);
    queue.add('moved', now + 2_000); // a fresh AUTH moves the deadline
    vi.advanceTimersByTime(DAY);
    expect(order).toEqual(['first', 'second', 'moved']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('arms for an earlier deadline filed after a later one', () => {
    const passed = vi.fn();
    const queue = new DeadlineQueue<string>(passed);
    queue.add('later', Date.now() + 10_000);
    queue.add('sooner', Date.now() + 100);
    vi.advanceTimersByTime(100);
    expect(passed).toHaveBeenCalledWith('sooner');
    expect(passed).toHaveBeenCalledTimes(1);
  });

  it('rounds deadlines up to its step: holders filed within one step share an instant', () => {
    const passed = vi.fn();
    const queue = new DeadlineQueue<string>(passed, 100);
    const now = Date.now(); // a multiple of 100
    expect(queue.add('a', now + 1_001)).toBe(now + 1_100);
    expect(queue.add('b', now + 1_099)).toBe(now + 1_100);
    expect(queue.add('c', now + 1_100)).toBe(now + 1_100);
    vi.advanceTimersByTime(1_099);
    expect(passed).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(passed).toHaveBeenCalledTimes(3);
  });

  it('files holders that a passing holder files, and passes those already due', () => {
    const order: string[] = [];
    const queue: DeadlineQueue<string> = new DeadlineQueue<string>((holder) => {
      order.push(holder);
      if (holder === 'a') {
        queue.add('due', Date.now() - 1);
        queue.add('next', Date.now() + 1_000);
      }
    });
    queue.add('a', Date.now() + 1_000);
    vi.advanceTimersByTime(1_000);
    expect(order).toEqual(['a', 'due']);
    vi.advanceTimersByTime(1_000);
    expect(order).toEqual(['a', 'due', 'next']);
  });

  it('keeps its heap bounded when holders come and go at ever new instants', () => {
    const passed = vi.fn();
    const queue = new DeadlineQueue<number>(passed);
    const kept = queue.add(-1, Date.now() + DAY)!;
    for (let i = 0; i < 10_000; i++) {
      const at = queue.add(i, Date.now() + 60_000 + i)!;
      queue.delete(i, at);
    }
    expect((queue as unknown as { heap: number[] }).heap.length).toBeLessThanOrEqual(2 * 1 + 64 + 1);
    queue.delete(-1, kept);
    vi.advanceTimersByTime(2 * DAY);
    expect(passed).not.toHaveBeenCalled();
  });
});
