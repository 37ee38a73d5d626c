import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { TokenVerifier } from '../../src/auth/verifier.js';

const A = 'rotation-secret-a-0123456789-0123456789';
const B = 'rotation-secret-b-0123456789-0123456789';

const mint = (secret: string): Promise<string> =>
  mintToken({ secret, workspaceId: 3, role: 'workspace', ttlSeconds: 60 });

describe('several HS256 secrets', () => {
  it('verifies a token signed with any of them, and refuses others as a bad signature', async () => {
    const verifier = new TokenVerifier({ secret: [A, B] });
    expect((await verifier.verify(await mint(A))).workspaceId).toBe(3);
    expect((await verifier.verify(await mint(B))).workspaceId).toBe(3);
    await expect(verifier.verify(await mint('neither-secret-0123456789-0123456789'))).rejects.toMatchObject({
      reason: 'bad_signature',
    });
  });

  it('reports a claim failure of the secret that signed, not a signature mismatch of the first', async () => {
    const verifier = new TokenVerifier({ secret: [A, B], issuer: 'expected' });
    await expect(verifier.verify(await mint(B))).rejects.toMatchObject({ reason: 'bad_issuer' });
  });

  it('refuses an empty list and empty secrets', () => {
    expect(() => new TokenVerifier({ secret: [] })).toThrow(/non-empty/);
    expect(() => new TokenVerifier({ secret: [A, ''] })).toThrow(/non-empty/);
  });
});

describe('reconfigure', () => {
  it('forgets verified tokens, so a removed secret stops its tokens at once', async () => {
    // HS384: jose verifies it and the cache holds it (an HS256 token is checked again each time).
    const algorithms = ['HS256', 'HS384'];
    const verifier = new TokenVerifier({ secret: [A, B], algorithms });
    const withA = await new SignJWT({ workspace_id: 3, role: 'workspace' })
      .setProtectedHeader({ alg: 'HS384' })
      .setExpirationTime('60s')
      .sign(new TextEncoder().encode(A));
    await verifier.verify(withA);
    expect(verifier.stats().cacheEntries).toBe(1);
    verifier.reconfigure({ secret: [B], algorithms });
    expect(verifier.stats().cacheEntries).toBe(0);
    await expect(verifier.verify(withA)).rejects.toMatchObject({ reason: 'bad_signature' });
    await expect(verifier.verify(await mint(A))).rejects.toMatchObject({ reason: 'bad_signature' });
    expect((await verifier.verify(await mint(B))).workspaceId).toBe(3);
  });

  it('tells which principals were verified with a key removed since', async () => {
    const verifier = new TokenVerifier({ secret: [A, B] });
    const byA = await verifier.verify(await mint(A));
    const byB = await verifier.verify(await mint(B));
    expect(verifier.verifiedWithRemovedKey(byA)).toBe(false);
    verifier.reconfigure({ secret: [B, 'a-third-secret-0123456789-0123456789'] });
    expect(verifier.verifiedWithRemovedKey(byA)).toBe(true);
    expect(verifier.verifiedWithRemovedKey(byB)).toBe(false);
    // A principal this verifier did not make is nobody's to close.
    expect(verifier.verifiedWithRemovedKey({ workspaceId: 3, role: 'workspace', expiresAt: Date.now() + 1000 })).toBe(
      false,
    );
  });

  it('changes nothing when the new configuration is refused', async () => {
    const verifier = new TokenVerifier({ secret: A });
    expect(() => verifier.reconfigure({ jwksUrl: 'ftp://example.test/keys' })).toThrow(/http/);
    expect(() => verifier.reconfigure({})).toThrow(/no key source/);
    expect((await verifier.verify(await mint(A))).workspaceId).toBe(3);
  });

  it('answers a verification under way with the keys in force when it ends', async () => {
    const verifier = new TokenVerifier({ secret: [A, B] });
    const pending = verifier.verify(await mint(A));
    verifier.reconfigure({ secret: [B] });
    await expect(pending).rejects.toMatchObject({ reason: 'bad_signature' });
  });
});
