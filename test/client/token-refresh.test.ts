import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EventsAuthError, type EventsError } from '../../src/client/errors.js';
import { freshTokenAfterRefusal, TokenRefresh } from '../../src/client/token-refresh.js';

/** An unsigned JWT: the client reads `exp`/`iat` only; the broker verifies. */
function jwt(iatSeconds: number, expSeconds: number, n = 0): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'HS256' })}.${part({ iat: iatSeconds, exp: expSeconds, n })}.sig`;
}

describe('TokenRefresh', () => {
  let sent: string[][];
  let refreshed: (number | undefined)[];
  let failures: EventsError[];
  let current: boolean;

  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
    sent = [];
    refreshed = [];
    failures = [];
    current = true;
  });
  afterEach(() => vi.useRealTimers());

  function start(source: () => string | Promise<string>, token: string, reply: () => Promise<unknown>) {
    const connection = {
      token,
      closed: false,
      command: (args: string[]) => {
        sent.push(args);
        return reply();
      },
    };
    const refresh = new TokenRefresh(source, connection, {
      isCurrent: () => current,
      refreshed: (expiresAt) => refreshed.push(expiresAt),
      failed: (error) => failures.push(error),
    });
    refresh.start();
    return { refresh, connection };
  }

  it('sends a fresh token with AUTH a quarter of its lifetime before exp, then arms for the next one', async () => {
    const now = 1_000; // seconds
    const next = jwt(now + 40, now + 80, 1);
    const { refresh, connection } = start(
      () => next,
      jwt(now, now + 40),
      async () => 'OK',
    );
    await vi.advanceTimersByTimeAsync(29_999);
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent).toEqual([['AUTH', 'default', next]]);
    expect(connection.token).toBe(next);
    expect(refreshed).toEqual([(now + 80) * 1000]);
    expect(vi.getTimerCount()).toBe(1); // armed for the new token
    refresh.stop();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('retries every second while the old token holds when AUTH fails, and stops on a replaced connection', async () => {
    const now = 1_000;
    const { connection } = start(
      () => jwt(now + 1, now + 100, 2),
      jwt(now, now + 8),
      async () => {
        throw new EventsAuthError('AUTH_FAILED', 'refused');
      },
    );
    await vi.advanceTimersByTimeAsync(6_000); // 8 s token: 2 s before exp
    expect(sent).toHaveLength(1);
    expect(failures.map((error) => error.code)).toEqual(['AUTH_FAILED']);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(sent).toHaveLength(2);
    current = false; // the client moved to another connection
    await vi.advanceTimersByTimeAsync(5_000);
    expect(sent).toHaveLength(2);
    expect(connection.token).toBe(jwt(now, now + 8));
    expect(refreshed).toEqual([]);
  });

  it('does not arm for a token without exp', () => {
    start(
      () => 'x',
      'opaque-token',
      async () => 'OK',
    );
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('freshTokenAfterRefusal', () => {
  it('returns only a different token', async () => {
    expect(await freshTokenAfterRefusal(() => 'b', 'a')).toBe('b');
    expect(await freshTokenAfterRefusal(async () => 'a', 'a')).toBeUndefined();
    expect(
      await freshTokenAfterRefusal(() => {
        throw new Error('down');
      }, 'a'),
    ).toBeUndefined();
  });
});
