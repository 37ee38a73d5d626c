import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { CompactSign, SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { SandboxEventsError } from '../../src/errors.js';
import { mintToken } from '../../src/auth/mint.js';
import { isValidSandboxId } from '../../src/auth/principal.js';
import {
  AuthError,
  looksLikeJwt,
  MAX_TOKEN_LENGTH,
  TokenVerifier,
  type AuthFailureReason,
} from '../../src/auth/verifier.js';

const SECRET = 'verifier-test-secret-8b1f1c2a9d3e4f50a6b7c8d9';
const encoder = new TextEncoder();
const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

function pemKeys(type: 'rsa' | 'ec' | 'ed25519'): { privateKey: KeyObject; pem: string } {
  const { privateKey, publicKey } =
    type === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : type === 'ec'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('ed25519');
  return { privateKey, pem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

const rsa = pemKeys('rsa');

/** Signs any claims at all, so that the verifier's own checks are what is tested. */
function sign(
  claims: JWTPayload,
  key: KeyObject | Uint8Array = encoder.encode(SECRET),
  alg = 'HS256',
  kid?: string,
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader(kid === undefined ? { alg } : { alg, kid }).sign(key);
}

// Record, not JWTPayload: the point is to send claims of the wrong type.
const valid = (extra: Record<string, unknown> = {}): JWTPayload =>
  ({ workspace_id: 7, sandbox_id: 'sb-123', exp: nowSeconds() + 600, ...extra }) as JWTPayload;

async function expectRefused(verifier: TokenVerifier, token: string, reason: AuthFailureReason): Promise<void> {
  let caught: unknown;
  try {
    await verifier.verify(token);
  } catch (err) {
    caught = err;
  }
  expect(caught, `token was accepted, expected ${reason}`).toBeInstanceOf(AuthError);
  const err = caught as AuthError;
  expect(err.reason).toBe(reason);
  expect(err.code).toBe('AUTH_FAILED');
  expect(err).toBeInstanceOf(SandboxEventsError);
  if (token.length > 0) expect(err.message).not.toContain(token);
  // Not even the signature, which is the secret-derived part.
  const signature = token.split('.')[2];
  if (signature !== undefined && signature.length > 8) expect(err.message).not.toContain(signature);
}

function configError(fn: () => unknown): SandboxEventsError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SandboxEventsError);
    return err as SandboxEventsError;
  }
  throw new Error('expected a configuration error');
}

describe('mint then verify', () => {
  const verifier = new TokenVerifier({ secret: SECRET });

  it('round-trips a sandbox token', async () => {
    const now = Date.now();
    const token = await mintToken({ secret: SECRET, workspaceId: 7, sandboxId: 'sb-123', ttlSeconds: 60, now });
    const principal = await verifier.verify(token);
    expect(principal).toEqual({
      workspaceId: 7,
      sandboxId: 'sb-123',
      role: 'sandbox',
      expiresAt: Math.ceil((now + 60_000) / 1000) * 1000,
      // The secret that verified it, by fingerprint, never the secret itself.
      keyId: expect.stringMatching(/^hs:[0-9a-f]{16}$/),
    });
  });

  it('round-trips a workspace token, with and without a sandbox id', async () => {
    const bare = await mintToken({ secret: SECRET, workspaceId: 42, role: 'workspace', ttlSeconds: 60 });
    expect(await verifier.verify(bare)).toMatchObject({ workspaceId: 42, role: 'workspace' });
    expect((await verifier.verify(bare)).sandboxId).toBeUndefined();
    const scoped = await mintToken({
      secret: SECRET,
      workspaceId: 42,
      sandboxId: 'x',
      role: 'workspace',
      ttlSeconds: 60,
    });
    expect(await verifier.verify(scoped)).toMatchObject({ workspaceId: 42, role: 'workspace', sandboxId: 'x' });
  });

  it('round-trips an admin token', async () => {
    const token = await mintToken({ secret: SECRET, workspaceId: 1, role: 'admin', ttlSeconds: 60 });
    expect(await verifier.verify(token)).toMatchObject({ workspaceId: 1, role: 'admin' });
  });

  it('defaults the role to sandbox and reports sub as subject', async () => {
    const exp = nowSeconds() + 60;
    const principal = await verifier.verify(await sign({ workspace_id: 3, sandbox_id: 'a', exp, sub: 'user-9' }));
    expect(principal).toEqual({
      workspaceId: 3,
      sandboxId: 'a',
      role: 'sandbox',
      expiresAt: exp * 1000,
      subject: 'user-9',
      keyId: expect.stringMatching(/^hs:[0-9a-f]{16}$/),
    });
    expect(Object.isFrozen(principal)).toBe(true);
  });

  it('checks issuer and audience that mintToken sets', async () => {
    const strict = new TokenVerifier({ secret: SECRET, issuer: 'se', audience: 'broker' });
    const token = await mintToken({
      secret: SECRET,
      workspaceId: 7,
      sandboxId: 's',
      ttlSeconds: 60,
      issuer: 'se',
      audience: 'broker',
    });
    expect(await strict.verify(token)).toMatchObject({ workspaceId: 7 });
  });
});

describe('refusals', () => {
  const verifier = new TokenVerifier({ secret: SECRET });

  it('refuses alg none built by hand', async () => {
    const token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(valid())}.`;
    expect(looksLikeJwt(token)).toBe(true);
    await expectRefused(verifier, token, 'algorithm_not_allowed');
    await expectRefused(new TokenVerifier({ publicKeyPem: rsa.pem }), token, 'algorithm_not_allowed');
  });

  it('refuses a token signed with another secret', async () => {
    await expectRefused(
      verifier,
      await sign(valid(), encoder.encode('another-secret-entirely-0123456789')),
      'bad_signature',
    );
  });

  it('refuses a tampered payload under the original signature', async () => {
    const [header, , signature] = (await sign(valid())).split('.');
    const forged = `${header}.${b64(valid({ workspace_id: 8 }))}.${signature}`;
    await expectRefused(verifier, forged, 'bad_signature');
  });

  it('refuses a validly signed token without exp', async () => {
    await expectRefused(verifier, await sign({ workspace_id: 7, sandbox_id: 'sb' }), 'missing_exp');
  });

  it('refuses exp in the past beyond the tolerance, accepts it within', async () => {
    await expectRefused(verifier, await sign(valid({ exp: nowSeconds() - 60 })), 'expired');
    const recent = await sign(valid({ exp: nowSeconds() - 2 }));
    expect(await verifier.verify(recent)).toMatchObject({ workspaceId: 7 });
    await expectRefused(new TokenVerifier({ secret: SECRET, clockToleranceSeconds: 0 }), recent, 'expired');
  });

  it('refuses a token whose nbf is in the future', async () => {
    await expectRefused(verifier, await sign(valid({ nbf: nowSeconds() + 120 })), 'not_yet_valid');
    expect(await verifier.verify(await sign(valid({ nbf: nowSeconds() + 2 })))).toMatchObject({ workspaceId: 7 });
  });

  it('checks iss and aud when configured', async () => {
    const strict = new TokenVerifier({ secret: SECRET, issuer: 'https://issuer.example', audience: 'sandbox-events' });
    const good = { iss: 'https://issuer.example', aud: 'sandbox-events' };
    expect(await strict.verify(await sign(valid(good)))).toMatchObject({ workspaceId: 7 });
    expect(await strict.verify(await sign(valid({ ...good, aud: ['other', 'sandbox-events'] })))).toMatchObject({
      workspaceId: 7,
    });
    await expectRefused(strict, await sign(valid({ ...good, iss: 'https://evil.example' })), 'bad_issuer');
    await expectRefused(strict, await sign(valid({ aud: 'sandbox-events' })), 'bad_issuer');
    await expectRefused(strict, await sign(valid({ ...good, aud: 'other' })), 'bad_audience');
    await expectRefused(strict, await sign(valid({ iss: 'https://issuer.example' })), 'bad_audience');
    // Not configured: not checked.
    expect(await verifier.verify(await sign(valid({ iss: 'anyone', aud: 'anything' })))).toMatchObject({
      workspaceId: 7,
    });
  });

  it('refuses an HS256 token signed with the PEM public key as HMAC secret (key confusion)', async () => {
    const rsaBroker = new TokenVerifier({ publicKeyPem: rsa.pem });
    expect(await rsaBroker.verify(await sign(valid(), rsa.privateKey, 'RS256'))).toMatchObject({ workspaceId: 7 });
    await expectRefused(rsaBroker, await sign(valid(), encoder.encode(rsa.pem), 'HS256'), 'algorithm_not_allowed');
  });

  it('refuses an RS256 token on an HMAC broker', async () => {
    await expectRefused(verifier, await sign(valid(), rsa.privateKey, 'RS256'), 'algorithm_not_allowed');
  });

  it('will not be configured into key confusion', () => {
    expect(configError(() => new TokenVerifier({ publicKeyPem: rsa.pem, algorithms: ['HS256', 'RS256'] })).code).toBe(
      'AUTH_CONFIG',
    );
    expect(configError(() => new TokenVerifier({ secret: SECRET, algorithms: ['RS256'] })).code).toBe('AUTH_CONFIG');
    expect(configError(() => new TokenVerifier({ secret: SECRET, algorithms: ['none'] })).code).toBe('AUTH_CONFIG');
  });

  it('with a secret and a public key, picks the key by algorithm family', async () => {
    const both = new TokenVerifier({ secret: SECRET, publicKeyPem: rsa.pem });
    expect(both.algorithms).toEqual(['HS256', 'RS256']);
    expect(await both.verify(await sign(valid()))).toMatchObject({ workspaceId: 7 });
    expect(await both.verify(await sign(valid(), rsa.privateKey, 'RS256'))).toMatchObject({ workspaceId: 7 });
    await expectRefused(both, await sign(valid(), encoder.encode(rsa.pem), 'HS256'), 'bad_signature');
  });

  const badClaims: Array<[string, Record<string, unknown>]> = [
    ['workspace_id as a string', { workspace_id: '7' }],
    ['workspace_id 0', { workspace_id: 0 }],
    ['workspace_id -1', { workspace_id: -1 }],
    ['workspace_id 1.5', { workspace_id: 1.5 }],
    ['workspace_id beyond safe integers', { workspace_id: 2 ** 53 }],
    ['workspace_id missing', { workspace_id: undefined }],
    ['role root', { role: 'root' }],
    ['role null', { role: null }],
    ['role sandbox without sandbox_id', { role: 'sandbox', sandbox_id: undefined }],
    ['default role without sandbox_id', { sandbox_id: undefined }],
    ['sandbox_id starting with {', { sandbox_id: '{8}sb-1' }],
    ['sandbox_id with a newline', { sandbox_id: 'sb\n1' }],
    ['sandbox_id empty', { sandbox_id: '' }],
    ['sandbox_id too long', { sandbox_id: 'x'.repeat(257) }],
    ['sandbox_id a number', { sandbox_id: 123 }],
    ['sub a number', { sub: 5 }],
    ['exp a string', { exp: 'tomorrow' }],
  ];
  it.each(badClaims)('refuses bad claims: %s', async (_name, change) => {
    await expectRefused(verifier, await sign(valid(change)), 'bad_claims');
  });

  it('refuses tokens longer than 16 KiB without looking at them', async () => {
    const big = await sign(valid({ pad: 'x'.repeat(MAX_TOKEN_LENGTH) }));
    expect(big.length).toBeGreaterThan(MAX_TOKEN_LENGTH);
    await expectRefused(verifier, big, 'malformed');
  });

  it.each([
    '',
    'not-a-token',
    'a.b.c',
    'eyJhbGciOiJIUzI1NiJ9.e30',
    'eyJ!!.e30.abc',
    `${b64('str')}.${b64(valid())}.sig`,
  ])('refuses malformed input %j', async (token) => {
    await expectRefused(verifier, token, 'malformed');
  });

  it('refuses a validly signed payload that is not a JSON object', async () => {
    for (const payload of ['not json', '[1,2]', '"text"']) {
      const token = await new CompactSign(encoder.encode(payload))
        .setProtectedHeader({ alg: 'HS256' })
        .sign(encoder.encode(SECRET));
      await expectRefused(verifier, token, 'malformed');
    }
  });
});

describe('public key types', () => {
  it('verifies ES256 with a P-256 PEM and refuses other algorithms', async () => {
    const ec = pemKeys('ec');
    const verifier = new TokenVerifier({ publicKeyPem: ec.pem });
    expect(verifier.algorithms).toEqual(['ES256']);
    expect(await verifier.verify(await sign(valid(), ec.privateKey, 'ES256'))).toMatchObject({ workspaceId: 7 });
    await expectRefused(verifier, await sign(valid(), rsa.privateKey, 'RS256'), 'algorithm_not_allowed');
  });

  it('verifies EdDSA with an Ed25519 PEM', async () => {
    const ed = pemKeys('ed25519');
    const verifier = new TokenVerifier({ publicKeyPem: ed.pem });
    expect(await verifier.verify(await sign(valid(), ed.privateKey, 'EdDSA'))).toMatchObject({ workspaceId: 7 });
    await expectRefused(verifier, await sign(valid(), pemKeys('ed25519').privateKey, 'EdDSA'), 'bad_signature');
  });

  it('refuses bad configurations with AUTH_CONFIG', () => {
    for (const config of [
      {},
      { publicKeyPem: 'not a pem' },
      { publicKeyPem: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
      { secret: '' },
      { publicKeyPem: rsa.pem, jwksUrl: 'http://127.0.0.1:1/jwks' },
      { jwksUrl: 'file:///etc/passwd' },
      { secret: SECRET, algorithms: [] },
      { secret: SECRET, clockToleranceSeconds: -1 },
    ]) {
      expect(configError(() => new TokenVerifier(config)).code, JSON.stringify(config)).toBe('AUTH_CONFIG');
    }
  });
});

describe('looksLikeJwt', () => {
  it('recognises tokens and nothing else', async () => {
    expect(looksLikeJwt(await sign(valid()))).toBe(true);
    for (const text of ['sb-123', 'eyJ', 'eyJabc.def', 'eyJa.b.c.d', 'abc.def.ghi', 'eyJa b.c.d', 'eyJa.b=.c', '']) {
      expect(looksLikeJwt(text), text).toBe(false);
    }
    expect(looksLikeJwt(`eyJ${'a'.repeat(MAX_TOKEN_LENGTH)}.b.c`)).toBe(false);
  });
});

describe('isValidSandboxId', () => {
  it.each([
    ['sb-123', true],
    ['x', true],
    ['a'.repeat(256), true],
    ['with space', true],
    ['ünïcode', true],
    ['a}{b', true],
    ['', false],
    ['a'.repeat(257), false],
    ['{7}sb', false],
    ['{', false],
    ['tab\there', false],
    ['nul\u0000', false],
    ['del\u007f', false],
    ['cr\r', false],
  ])('%j -> %s', (id, expected) => {
    expect(isValidSandboxId(id)).toBe(expected);
  });
});

describe('verifyEarly', () => {
  it('answers an HS256 token and a cached one at once, the same principal verify gives', async () => {
    for (const cacheSize of [0, 10]) {
      const verifier = new TokenVerifier({ secret: SECRET, cacheSize, algorithms: ['HS256', 'HS384'] });
      const token = await mintToken({ secret: SECRET, workspaceId: 7, sandboxId: 'sb-1', ttlSeconds: 60 });
      const early = verifier.verifyEarly(token);
      expect(early).not.toBeInstanceOf(Promise);
      expect(early).toEqual(await verifier.verify(token));
      expect(verifier.verifyEarly(token)).not.toBeInstanceOf(Promise);
      // jose's tokens: at once only from the cache, once verified.
      const hs384 = await sign(valid(), encoder.encode(SECRET), 'HS384');
      expect(verifier.verifyEarly(hs384)).toBeInstanceOf(Promise);
      const verified = await verifier.verify(hs384);
      const again = verifier.verifyEarly(hs384);
      if (cacheSize > 0) expect(again).toBe(verified);
      else expect(again).toBeInstanceOf(Promise);
      await again;
    }
  });

  it('never throws: refusals and the other algorithms come as promises, with the reasons verify gives', async () => {
    const verifier = new TokenVerifier({ secret: SECRET, publicKeyPem: rsa.pem });
    const cases: [string, AuthFailureReason | undefined][] = [
      ['', 'malformed'],
      ['x'.repeat(MAX_TOKEN_LENGTH + 1), 'malformed'],
      [await sign({ workspace_id: 1, exp: nowSeconds() + 60 }, encoder.encode('another-secret')), 'bad_signature'],
      // A good signature over claims the broker refuses: principalFromClaims throws inside.
      [await sign({ exp: nowSeconds() + 60 }), 'bad_claims'],
      [await sign({ workspace_id: 1, exp: nowSeconds() - 3600 }), 'expired'],
      [await sign({ workspace_id: 1, role: 'workspace', exp: nowSeconds() + 60 }, rsa.privateKey, 'RS256'), undefined],
    ];
    for (const [token, reason] of cases) {
      const early = verifier.verifyEarly(token);
      expect(early).toBeInstanceOf(Promise);
      if (reason === undefined) await expect(early).resolves.toMatchObject({ workspaceId: 1 });
      else await expect(early).rejects.toMatchObject({ reason });
    }
  });
});
