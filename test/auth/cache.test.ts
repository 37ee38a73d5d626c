import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { AuthError, TokenVerifier } from '../../src/auth/verifier.js';

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

const mint = (sandboxId: string, ttlSeconds: number): Promise<string> =>
  mintToken({ secret: SECRET, workspaceId: 7, sandboxId, ttlSeconds });

describe('verification cache', () => {
  it('answers a repeated token from the cache', async () => {
    const verifier = new TokenVerifier({ secret: SECRET });
    const token = await mint('sb-1', 60);
    const first = await verifier.verify(token);
    const second = await verifier.verify(token);
    expect(second).toBe(first);
    expect(verifier.stats()).toEqual({ cacheEntries: 1, cacheHits: 1, cacheMisses: 1 });
  });

  it('never returns a cached token once it has expired', async () => {
    const verifier = new TokenVerifier({ secret: SECRET, clockToleranceSeconds: 5 });
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
    const verifier = new TokenVerifier({ secret: SECRET, clockToleranceSeconds: 0 });
    const token = await mint('sb-1', 2);
    await verifier.verify(token);
    expect(verifier.stats().cacheEntries).toBe(1);
    vi.setSystemTime(T0 + 60_000);
    await expect(verifier.verify(token)).rejects.toMatchObject({ reason: 'expired' });
  });

  it('shares one check among concurrent verifications of one token', async () => {
    const verifier = new TokenVerifier({ secret: SECRET });
    const token = await mint('sb-1', 60);
    const principals = await Promise.all(Array.from({ length: 100 }, () => verifier.verify(token)));
    expect(new Set(principals).size).toBe(1);
    expect(verifier.stats()).toMatchObject({ cacheMisses: 1, cacheEntries: 1 });
  });

  it('is bounded and evicts the oldest entry', async () => {
    const verifier = new TokenVerifier({ secret: SECRET, cacheSize: 2 });
    const [a, b, c] = await Promise.all([mint('a', 60), mint('b', 60), mint('c', 60)]);
    for (const token of [a!, b!, c!]) await verifier.verify(token);
    expect(verifier.stats()).toMatchObject({ cacheEntries: 2, cacheMisses: 3 });
    await verifier.verify(c!);
    expect(verifier.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 3 });
    await verifier.verify(a!);
    expect(verifier.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 4, cacheEntries: 2 });
  });

  it('does not cache refusals, and can be turned off', async () => {
    const verifier = new TokenVerifier({ secret: SECRET, cacheSize: 0 });
    const token = await mint('sb-1', 60);
    await verifier.verify(token);
    await verifier.verify(token);
    expect(verifier.stats()).toEqual({ cacheEntries: 0, cacheHits: 0, cacheMisses: 0 });

    const caching = new TokenVerifier({ secret: SECRET });
    const forged = await mintToken({
      secret: 'some-other-secret-entirely',
      workspaceId: 7,
      sandboxId: 'x',
      ttlSeconds: 60,
    });
    await expect(caching.verify(forged)).rejects.toMatchObject({ reason: 'bad_signature' });
    await expect(caching.verify(forged)).rejects.toMatchObject({ reason: 'bad_signature' });
    expect(caching.stats().cacheEntries).toBe(0);
  });
});
