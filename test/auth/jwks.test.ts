import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, type JWK, type JWTPayload } from 'jose';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { AuthError, TokenVerifier, type AuthFailureReason } from '../../src/auth/verifier.js';

interface Signer {
  privateKey: KeyObject;
  jwk: JWK;
}

async function rsaSigner(kid?: string): Promise<Signer> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = await exportJWK(publicKey);
  return { privateKey, jwk: kid === undefined ? jwk : { ...jwk, kid } };
}

const claims = (): JWTPayload => ({ workspace_id: 7, sandbox_id: 'sb-1', exp: Math.floor(Date.now() / 1000) + 3600 });

function sign(signer: Signer, kid: string | undefined, alg = 'RS256', payload = claims()): Promise<string> {
  return new SignJWT(payload).setProtectedHeader(kid === undefined ? { alg } : { alg, kid }).sign(signer.privateKey);
}

async function reasonOf(promise: Promise<unknown>): Promise<AuthFailureReason> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(AuthError);
    return (err as AuthError).reason;
  }
  throw new Error('token was accepted');
}

let server: Server;
let base: string;
let published: JWK[] = [];
let failing = false;
const hits = { jwks: 0, failing: 0 };

beforeAll(async () => {
  server = createServer((request, response) => {
    if (request.url === '/jwks.json' && !failing) {
      hits.jwks++;
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ keys: published }));
      return;
    }
    hits.failing++;
    response.writeHead(500).end('down');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

let main: Signer;
let second: Signer;

beforeAll(async () => {
  main = await rsaSigner('main');
  second = await rsaSigner('second');
});

beforeEach(() => {
  published = [main.jwk];
  failing = false;
  hits.jwks = 0;
  hits.failing = 0;
});

afterEach(() => {
  vi.useRealTimers();
});

describe('JWKS', () => {
  it('verifies an RS256 token by kid, fetching the set once', async () => {
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json` });
    expect(await verifier.verify(await sign(main, 'main'))).toMatchObject({ workspaceId: 7, sandboxId: 'sb-1' });
    expect(await verifier.verify(await sign(main, 'main', 'RS256', { ...claims(), sandbox_id: 'sb-2' }))).toMatchObject(
      {
        sandboxId: 'sb-2',
      },
    );
    expect(hits.jwks).toBe(1);
  });

  it('refetches at most once per cooldown for 200 concurrent unknown kids', async () => {
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json` });
    await verifier.verify(await sign(main, 'main'));
    const tokens = await Promise.all(Array.from({ length: 200 }, () => sign(main, randomUUID())));
    const reasons = await Promise.all(tokens.map((token) => reasonOf(verifier.verify(token))));
    expect(new Set(reasons)).toEqual(new Set(['unknown_key']));
    expect(hits.jwks).toBeLessThanOrEqual(2);
  });

  it('does not refetch for unknown kids arriving one after another within the cooldown', async () => {
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json` });
    await verifier.verify(await sign(main, 'main'));
    for (let i = 0; i < 20; i++) {
      expect(await reasonOf(verifier.verify(await sign(main, randomUUID())))).toBe('unknown_key');
    }
    expect(hits.jwks).toBe(1);
  });

  it('fetches once for 200 concurrent unknown kids on a cold verifier', async () => {
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json` });
    const tokens = await Promise.all(Array.from({ length: 200 }, () => sign(main, randomUUID())));
    const reasons = await Promise.all(tokens.map((token) => reasonOf(verifier.verify(token))));
    expect(new Set(reasons)).toEqual(new Set(['unknown_key']));
    expect(hits.jwks).toBeLessThanOrEqual(2);
  });

  it('picks up a rotated-in key once the cooldown has passed', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json`, jwksCooldownMs: 30_000 });
    await verifier.verify(await sign(main, 'main'));
    published = [main.jwk, second.jwk];
    const rotated = await sign(second, 'second');
    expect(await reasonOf(verifier.verify(rotated))).toBe('unknown_key');
    expect(hits.jwks).toBe(1);
    vi.setSystemTime(Date.now() + 30_001);
    expect(await verifier.verify(rotated)).toMatchObject({ workspaceId: 7 });
    expect(hits.jwks).toBe(2);
  });

  it('keeps using its keys while a stale refresh fails', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json` });
    const token = await sign(main, 'main', 'RS256', { ...claims(), exp: Math.floor(Date.now() / 1000) + 86_400 });
    await verifier.verify(token);
    failing = true;
    vi.setSystemTime(Date.now() + 11 * 60_000);
    // A different token, so the verification cache does not answer.
    const other = await sign(main, 'main', 'RS256', {
      ...claims(),
      sandbox_id: 'sb-9',
      exp: Math.floor(Date.now() / 1000) + 60,
    });
    expect(await verifier.verify(other)).toMatchObject({ sandboxId: 'sb-9' });
    await vi.waitFor(() => expect(hits.failing).toBe(1));
  });

  it('reports key_fetch_failed when the set cannot be fetched, without hammering the server', async () => {
    const verifier = new TokenVerifier({ jwksUrl: `${base}/down.json` });
    const token = await sign(main, 'main');
    expect(await reasonOf(verifier.verify(token))).toBe('key_fetch_failed');
    const again = await Promise.all(Array.from({ length: 20 }, () => reasonOf(verifier.verify(token))));
    expect(new Set(again)).toEqual(new Set(['key_fetch_failed']));
    expect(hits.failing).toBe(1);
  });

  it('reports key_fetch_failed when nothing listens', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const verifier = new TokenVerifier({ jwksUrl: `http://127.0.0.1:${port}/jwks.json` });
    const err = await verifier.verify(await sign(main, 'main')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).reason).toBe('key_fetch_failed');
    expect((err as AuthError).cause).toBeDefined();
  });

  it('tries each key for a token without kid', async () => {
    const plainA = await rsaSigner();
    const plainB = await rsaSigner();
    published = [plainA.jwk, plainB.jwk];
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json` });
    expect(await verifier.verify(await sign(plainB, undefined))).toMatchObject({ workspaceId: 7 });
    expect(await verifier.verify(await sign(plainA, undefined))).toMatchObject({ workspaceId: 7 });
    expect(await reasonOf(verifier.verify(await sign(main, undefined)))).toBe('bad_signature');
  });

  it('refuses a signature by a different key under a known kid', async () => {
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json` });
    expect(await reasonOf(verifier.verify(await sign(second, 'main')))).toBe('bad_signature');
  });

  it('refuses HMAC tokens, whatever they claim', async () => {
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json` });
    const token = await new SignJWT(claims())
      .setProtectedHeader({ alg: 'HS256', kid: 'main' })
      .sign(new TextEncoder().encode(JSON.stringify(main.jwk)));
    expect(await reasonOf(verifier.verify(token))).toBe('algorithm_not_allowed');
    expect(hits.jwks).toBe(0);
  });

  it('verifies ES256 keys from the set', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    published = [main.jwk, { ...(await exportJWK(publicKey)), kid: 'ec' }];
    const verifier = new TokenVerifier({ jwksUrl: `${base}/jwks.json` });
    const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'ES256', kid: 'ec' }).sign(privateKey);
    expect(await verifier.verify(token)).toMatchObject({ workspaceId: 7 });
  });
});
