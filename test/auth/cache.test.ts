import { SignJWT } from 'jose';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { AuthError, TokenVerifier, type VerifierConfig } from '../../src/auth/verifier.js';

const SECRET = 'cache-test-secret-5d41402abc4b2a76b9719d911017c592';
// On a whole second, so that exp lands exactly ttl seconds later.
const T0 = Date.UTC(2030, 0, 1, 0, 0, 0);

beforeEach(() => {
  // Only Date: fetch, promises and jose's crypto keep running on real time.
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(T0);
});

afterEach(() => {
  vi.useRealTimers();
});

/**
 * The cache holds what jose verifies: HS384 here (HS256 is checked again each time, below).
 * Signed by jose's SignJWT, with the claims mintToken writes.
 */
const mint = (sandboxId: string, ttlSeconds: number, secret = SECRET): Promise<string> =>
  new SignJWT({ workspace_id: 7, role: 'sandbox', sandbox_id: sandboxId })
    .setProtectedHeader({ alg: 'HS384', typ: 'JWT' })
    .setIssuedAt(Math.floor(Date.now() / 1000))
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(new TextEncoder().encode(secret));

const verifierWith = (config: VerifierConfig = {}): TokenVerifier =>
  new TokenVerifier({ secret: SECRET, algorithms: ['HS256', 'HS384'], ...config });

describe('verification cache', () => {
  it('does not hold HS256 tokens: they are checked again each time', async () => {
    const verifier = verifierWith();
    const token = await mintToken({ secret: SECRET, workspaceId: 7, sandboxId: 'sb-1', ttlSeconds: 60 });
    const first = await verifier.verify(token);
    const second = await verifier.verify(token);
    expect(second).toEqual(first);
    expect(verifier.stats()).toEqual({ cacheEntries: 0, cacheHits: 0, cacheMisses: 0 });
    // Past exp and the tolerance, the same token is refused as expired.
    vi.setSystemTime(T0 + 60_000 + 5_000);
    await expect(verifier.verify(token)).rejects.toMatchObject({ reason: 'expired' });
  });

  it('answers a repeated token from the cache', async () => {
    const verifier = verifierWith();
    const token = await mint('sb-1', 60);
    const first = await verifier.verify(token);
    const second = await verifier.verify(token);
    expect(second).toBe(first);
    expect(verifier.stats()).toEqual({ cacheEntries: 1, cacheHits: 1, cacheMisses: 1 });
  });

  it('never returns a cached token once it has expired', async () => {
    const verifier = verifierWith({ clockToleranceSeconds: 5 });
    const token = await mint('sb-1', 2);
    expect(await verifier.verify(token)).toMatchObject({ expiresAt: T0 + 2000 });
    vi.setSystemTime(T0 + 1999);
    await verifier.verify(token);
    expect(verifier.stats().cacheHits).toBe(1);

    // At exp the cache steps aside; jose still accepts within the tolerance, but it is not cached again.
    vi.setSystemTime(T0 + 2000);
    await verifier.verify(token);
    expect(verifier.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 2, cacheEntries: 0 });

    vi.setSystemTime(T0 + 2000 + 5000);
    const err = await verifier.verify(token).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).reason).toBe('expired');
  });

  it('refuses an expired token that was cached, without passing through exp first', async () => {
    const verifier = verifierWith({ clockToleranceSeconds: 0 });
    const token = await mint('sb-1', 2);
    await verifier.verify(token);
    expect(verifier.stats().cacheEntries).toBe(1);
    vi.setSystemTime(T0 + 60_000);
    await expect(verifier.verify(token)).rejects.toMatchObject({ reason: 'expired' });
  });

  it('shares one check among concurrent verifications of one token', async () => {
    const verifier = verifierWith();
    const token = await mint('sb-1', 60);
    const principals = await Promise.all(Array.from({ length: 100 }, () => verifier.verify(token)));
    expect(new Set(principals).size).toBe(1);
    expect(verifier.stats()).toMatchObject({ cacheMisses: 1, cacheEntries: 1 });
  });

  it('is bounded and evicts the oldest entry', async () => {
    const verifier = verifierWith({ cacheSize: 2 });
    const [a, b, c] = await Promise.all([mint('a', 60), mint('b', 60), mint('c', 60)]);
    for (const token of [a!, b!, c!]) await verifier.verify(token);
    expect(verifier.stats()).toMatchObject({ cacheEntries: 2, cacheMisses: 3 });
    await verifier.verify(c!);
    expect(verifier.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 3 });
    await verifier.verify(a!);
    expect(verifier.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 4, cacheEntries: 2 });
  });

  it('does not cache refusals, and can be turned off', async () => {
    const verifier = verifierWith({ cacheSize: 0 });
    const token = await mint('sb-1', 60);
    await verifier.verify(token);
    await verifier.verify(token);
    expect(verifier.stats()).toEqual({ cacheEntries: 0, cacheHits: 0, cacheMisses: 0 });

    const caching = verifierWith();
    const forged = await mint('x', 60, 'some-other-secret-entirely');
    await expect(caching.verify(forged)).rejects.toMatchObject({ reason: 'bad_signature' });
    await expect(caching.verify(forged)).rejects.toMatchObject({ reason: 'bad_signature' });
    expect(caching.stats().cacheEntries).toBe(0);
  });
});
