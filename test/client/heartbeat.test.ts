import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { EventsNetworkError } from '../../src/client/errors.js';
import { Heartbeat } from '../../src/client/heartbeat.js';

// The heartbeat alone, on fake timers: a peer is a byte counter and a closed flag.
describe('Heartbeat', () => {
  let peer: { bytesIn: number; closed: boolean };
  let pings: number;
  let paused: boolean;
  let dead: EventsNetworkError[];
  let heartbeat: Heartbeat;

  beforeEach(() => {
    vi.useFakeTimers();
    peer = { bytesIn: 0, closed: false };
    pings = 0;
    paused = false;
    dead = [];
    heartbeat = new Heartbeat(
      peer,
      { interval: 1_000, timeout: 500 },
      {
        sendPing: () => {
          pings += 1;
        },
        readingPaused: () => paused,
        onDead: (error) => dead.push(error),
      },
    );
  });
  afterEach(() => {
    heartbeat.stop();
    vi.useRealTimers();
  });

  it('sends one PING after a quiet interval, and reports the peer dead when nothing follows it', () => {
    heartbeat.start();
    vi.advanceTimersByTime(999);
    expect(pings).toBe(0);
    vi.advanceTimersByTime(1);
    expect(pings).toBe(1);
    vi.advanceTimersByTime(499);
    expect(dead).toEqual([]);
    expect(pings).toBe(1); // at most one PING outstanding
    vi.advanceTimersByTime(1);
    // The verdict waits for the sockets to be polled once (setImmediate after the deadline).
    expect(dead).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(dead).toHaveLength(1);
    expect(dead[0]!.code).toBe('HEARTBEAT_TIMEOUT');
  });

  it('after a stall, reads what already arrived before it calls the peer dead', () => {
    heartbeat.start();
    vi.advanceTimersByTime(1_000);
    expect(pings).toBe(1);
    // The process was stalled past the deadline: the timer fires first, then the poll phase
    // reads the PONG that had arrived meanwhile, before the verdict.
    vi.advanceTimersByTime(500);
    peer.bytesIn += 7;
    vi.advanceTimersByTime(1);
    expect(dead).toEqual([]);
  });

  it('takes any byte after the PING as proof of life, and starts a new quiet period', () => {
    heartbeat.start();
    vi.advanceTimersByTime(1_000);
    expect(pings).toBe(1);
    peer.bytesIn += 7; // not necessarily the PONG: a replay frame counts too
    vi.advanceTimersByTime(500);
    expect(dead).toEqual([]);
    vi.advanceTimersByTime(999);
    expect(pings).toBe(1);
    // The proof of life is taken after the deadline's verdict turn (1 ms on fake timers).
    vi.advanceTimersByTime(251);
    expect(pings).toBe(2);
  });

  it('sends nothing while bytes keep arriving', () => {
    heartbeat.start();
    for (let i = 0; i < 20; i++) {
      peer.bytesIn += 1;
      vi.advanceTimersByTime(250);
    }
    expect(pings).toBe(0);
  });

  it('does not mistake silence for death while the owner paused reading', () => {
    heartbeat.start();
    vi.advanceTimersByTime(1_000);
    expect(pings).toBe(1);
    paused = true;
    vi.advanceTimersByTime(10_000);
    expect(dead).toEqual([]);
    expect(pings).toBe(1);
  });

  it('does nothing when turned off, once stopped, or once the peer is closed', () => {
    const off = new Heartbeat(
      peer,
      { interval: 0, timeout: 500 },
      { sendPing: () => void (pings += 1), readingPaused: () => false, onDead: (error) => dead.push(error) },
    );
    off.start();
    heartbeat.start();
    vi.advanceTimersByTime(1_000);
    expect(pings).toBe(1);
    heartbeat.stop();
    vi.advanceTimersByTime(10_000);
    expect(pings).toBe(1);
    expect(dead).toEqual([]);
    heartbeat.start();
    peer.closed = true;
    vi.advanceTimersByTime(10_000);
    expect(pings).toBe(1);
    expect(vi.getTimerCount()).toBe(1); // the restarted interval only; stop() clears it
    heartbeat.stop();
    expect(vi.getTimerCount()).toBe(0);
  });
});
