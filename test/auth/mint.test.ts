import { decodeJwt, decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { SandboxEventsError } from '../../src/errors.js';
import { mintToken, type MintOptions } from '../../src/auth/mint.js';

const base: MintOptions = {
  secret: 'mint-test-secret-0123456789abcdef',
  workspaceId: 7,
  sandboxId: 'sb-1',
  ttlSeconds: 3600,
};

describe('mintToken', () => {
  it('writes HS256 with workspace_id, sandbox_id, role, iat and exp', async () => {
    const now = 1_900_000_000_500;
    const token = await mintToken({ ...base, now });
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'HS256', typ: 'JWT' });
    expect(decodeJwt(token)).toEqual({
      workspace_id: 7,
      sandbox_id: 'sb-1',
      role: 'sandbox',
      iat: 1_900_000_000,
      exp: 1_900_003_601,
    });
  });

  it('leaves sandbox_id out when not given, and writes iss and aud when given', async () => {
    const token = await mintToken({
      ...base,
      sandboxId: undefined,
      role: 'admin',
      issuer: 'se',
      audience: 'broker',
      now: 1_000_000,
    });
    expect(decodeJwt(token)).toEqual({
      workspace_id: 7,
      role: 'admin',
      iat: 1000,
      exp: 4600,
      iss: 'se',
      aud: 'broker',
    });
  });

  it('keeps a sub-second ttl valid for a moment', async () => {
    const claims = decodeJwt(await mintToken({ ...base, ttlSeconds: 0.5, now: 2_000_000 }));
    expect(claims.exp).toBeGreaterThan(2000);
  });

  it.each<[string, Partial<MintOptions>]>([
    ['sandbox role without sandboxId', { sandboxId: undefined }],
    ['default role without sandboxId', { sandboxId: undefined, role: undefined }],
    ['workspaceId 0', { workspaceId: 0 }],
    ['workspaceId -3', { workspaceId: -3 }],
    ['workspaceId 1.5', { workspaceId: 1.5 }],
    ['workspaceId NaN', { workspaceId: Number.NaN }],
    ['workspaceId as a string', { workspaceId: '7' as unknown as number }],
    ['ttl 0', { ttlSeconds: 0 }],
    ['ttl negative', { ttlSeconds: -5 }],
    ['ttl Infinity', { ttlSeconds: Number.POSITIVE_INFINITY }],
    ['unknown role', { role: 'root' as unknown as 'admin' }],
    ['sandboxId starting with {', { sandboxId: '{7}sb' }],
    ['empty sandboxId', { sandboxId: '' }],
    ['empty secret', { secret: '' }],
    ['empty issuer', { issuer: '' }],
  ])('refuses %s with INVALID_ARGUMENT', async (_name, change) => {
    const err = await mintToken({ ...base, ...change }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SandboxEventsError);
    expect((err as SandboxEventsError).code).toBe('INVALID_ARGUMENT');
  });
});
