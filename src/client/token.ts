import { describeError, EventsAuthError } from './errors.js';

/** A token, or a function that returns one (sync or async), called on every (re)connect. */
export type AccessToken = string | (() => string | Promise<string>);

/** What the client reads from a JWT it holds: only timing, never trusted for anything else. */
export interface TokenTiming {
  /** `exp` in Unix milliseconds. */
  expiresAt: number;
  /** `iat` in Unix milliseconds, when present. */
  issuedAt: number | undefined;
}

/**
 * Reads `exp` (and `iat`) from a JWT's payload without verifying it: the client only needs to
 * know when to fetch a fresh token; the broker does the verifying. Undefined when the token is
 * not a JWT or has no numeric `exp`.
 */
export function readTokenTiming(token: string): TokenTiming | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[1] === undefined) return undefined;
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof payload !== 'object' || payload === null) return undefined;
  const { exp, iat } = payload as { exp?: unknown; iat?: unknown };
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return undefined;
  return {
    expiresAt: exp * 1000,
    issuedAt: typeof iat === 'number' && Number.isFinite(iat) ? iat * 1000 : undefined,
  };
}

/**
 * When to fetch the next token: before `exp` by a quarter of the token's lifetime, at least
 * one second and at most `maxMargin`, so a one-hour token is refreshed a minute early and a
 * four-second token one second early. Never sooner than `minDelay` from `now` (a token that is
 * already nearly expired must not make the client spin).
 */
export function refreshDelay(timing: TokenTiming, now: number, maxMargin = 60_000, minDelay = 250): number {
  const lifetime = timing.expiresAt - (timing.issuedAt ?? now);
  const margin = Math.min(maxMargin, Math.max(1_000, lifetime / 4));
  return Math.max(minDelay, Math.floor(timing.expiresAt - margin - now));
}

/** Calls the token source; any failure or a non-string becomes `TOKEN_PROVIDER_FAILED`. */
export async function resolveToken(source: AccessToken): Promise<string> {
  let token: unknown;
  try {
    token = typeof source === 'function' ? await source() : source;
  } catch (error) {
    throw new EventsAuthError('TOKEN_PROVIDER_FAILED', `the accessToken function failed: ${describeError(error)}`, {
      cause: error,
    });
  }
  if (typeof token !== 'string' || token.length === 0 || /[\r\n\s]/.test(token)) {
    throw new EventsAuthError('TOKEN_PROVIDER_FAILED', 'accessToken must be a non-empty string without whitespace');
  }
  return token;
}
