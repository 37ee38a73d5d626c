import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  backoffCeiling,
  backoffDelay,
  createPubSubClient,
  EventsError,
  type ReconnectInfo,
} from '../../src/client/index.js';
import { startServer } from '../../src/daemon.js';
import { startTestServer } from '../support/test-server.js';
import { next } from './support/helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const OPTIONS = { baseDelay: 1000, maxDelay: 30_000 };

describe('backoff (pure)', () => {
  it('doubles the ceiling from reconnectDelay up to the maximum', () => {
    expect([1, 2, 3, 4, 5, 6, 50, 5000].map((attempt) => backoffCeiling(attempt, OPTIONS))).toEqual([
      2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000, 30_000,
    ]);
    expect(backoffCeiling(3, { baseDelay: 50_000, maxDelay: 30_000 })).toBe(50_000); // never below the base
  });

  it('draws uniformly between reconnectDelay and the ceiling (full jitter with a floor)', () => {
    expect(backoffDelay(3, { ...OPTIONS, random: () => 0 })).toBe(1000);
    expect(backoffDelay(3, { ...OPTIONS, random: () => 0.5 })).toBe(4500);
    expect(backoffDelay(3, { ...OPTIONS, random: () => 0.999_999 })).toBe(8000);
    const samples = Array.from({ length: 20_000 }, () => backoffDelay(3, OPTIONS));
    expect(Math.min(...samples)).toBeGreaterThanOrEqual(1000);
    expect(Math.max(...samples)).toBeLessThanOrEqual(8000);
    expect(Math.min(...samples)).toBeLessThan(1100);
    expect(Math.max(...samples)).toBeGreaterThan(7900);
    const mean = samples.reduce((sum, value) => sum + value, 0) / samples.length;
    expect(mean).toBeGreaterThan(4300);
    expect(mean).toBeLessThan(4700);
  });

  it('spreads the first retry of many clients over a whole second', () => {
    const firsts = Array.from({ length: 10_000 }, () => backoffDelay(1, OPTIONS));
    expect(new Set(firsts).size).toBeGreaterThan(900); // ten thousand clients, ~1000 distinct milliseconds
    expect(Math.min(...firsts)).toBeGreaterThanOrEqual(1000);
    expect(Math.max(...firsts)).toBeLessThanOrEqual(2000);
  });
});

describe("the client's reconnect schedule (fake timers)", () => {
  it('waits growing jittered delays, keeps growing on unstable connections, resets after a stable one', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const random = vi.spyOn(Math, 'random').mockReturnValue(0.999_999);
    const first = await startTestServer();
    const port = first.port;
    const sub = createPubSubClient({
      host: '127.0.0.1',
      port,
      accessToken: await first.token(),
      sandboxId: 'sb-b',
      heartbeatInterval: 0,
      stableAfter: 10_000,
    });
    cleanups.push(() => sub.disconnect());
    await sub.connect();
    const delays: number[] = [];
    const attempts: number[] = [];
    sub.on('reconnecting', (info: ReconnectInfo) => {
      delays.push(info.delay);
      attempts.push(info.attempt);
    });

    let pending = next<[ReconnectInfo]>(sub, 'reconnecting', 0);
    await first.close();
    await pending;
    // The broker is gone: every attempt is refused, and the wait doubles up to 30 s.
    for (let i = 0; i < 5; i += 1) {
      pending = next<[ReconnectInfo]>(sub, 'reconnecting', 0);
      await vi.advanceTimersByTimeAsync(delays.at(-1)!);
      await pending;
    }
    expect(delays).toEqual([2000, 4000, 8000, 16_000, 30_000, 30_000]);
    expect(attempts).toEqual([1, 2, 3, 4, 5, 6]);

    // The broker is back: the next attempt connects.
    const second = await startServer({ host: '127.0.0.1', port, auth: { secret: first.secret } });
    cleanups.push(() => second.close());
    const connected = next(sub, 'connect', 0);
    await vi.advanceTimersByTimeAsync(30_000);
    await connected;

    // Dropped at once: not stable, so the schedule goes on from where it was.
    pending = next<[ReconnectInfo]>(sub, 'reconnecting', 0);
    for (const connection of second.context.connections) connection.destroy();
    expect((await pending)[0]).toMatchObject({ attempt: 7, delay: 30_000 });
    const again = next(sub, 'connect', 0);
    await vi.advanceTimersByTimeAsync(30_000);
    await again;

    // Up for stableAfter: the next drop starts over at attempt 1, with fresh jitter.
    await vi.advanceTimersByTimeAsync(10_000);
    random.mockReturnValue(0);
    pending = next<[ReconnectInfo]>(sub, 'reconnecting', 0);
    for (const connection of second.context.connections) connection.destroy();
    expect((await pending)[0]).toMatchObject({ attempt: 1, delay: 1000 });
    const last = next(sub, 'connect', 0);
    await vi.advanceTimersByTimeAsync(1000);
    await last;
    expect(sub.getStats()).toMatchObject({ connects: 4, reconnects: 8 });
  });

  it('lets reconnectStrategy(attempt, cause) choose the delay or stop', async () => {
    const broker = await startTestServer();
    const calls: [number, string][] = [];
    const sub = createPubSubClient({
      host: '127.0.0.1',
      port: broker.port,
      accessToken: await broker.token(),
      sandboxId: 'sb-s',
      reconnectStrategy: (attempt, cause) => {
        expect(cause).toBeInstanceOf(EventsError);
        calls.push([attempt, cause.code]);
        return attempt < 3 ? 5 : false;
      },
    });
    cleanups.push(() => sub.disconnect());
    await sub.connect();
    const failed = next<[EventsError]>(sub, 'error');
    await broker.close();
    const [error] = await failed;
    expect(error).toMatchObject({ name: 'EventsPubSubError', code: 'RECONNECT_STOPPED' });
    expect(calls).toEqual([
      [1, 'CONNECTION_LOST'],
      [2, 'CONNECTION_FAILED'],
      [3, 'CONNECTION_FAILED'],
    ]);
    expect(sub.getState()).toBe('error');
  });
});
