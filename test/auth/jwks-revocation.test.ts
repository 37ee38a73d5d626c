/** Regression: tokens verified before a key was withdrawn from the JWKS stayed accepted (cached) until their exp. */
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenVerifier } from '../../src/auth/verifier.js';

let server: Server;
let url: string;
let published: JWK[] = [];

const oldKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
const newKey = generateKeyPairSync('rsa', { modulusLength: 2048 });

beforeAll(async () => {
  server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: published }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function sign(key: typeof oldKey, kid: string): Promise<string> {
  return new SignJWT({ workspace_id: 7, role: 'workspace', exp: Math.floor(Date.now() / 1000) + 3600 })
    .setProtectedHeader({ alg: 'RS256', kid })
    .sign(key.privateKey);
}

describe('verified-token cache vs. key revocation', () => {
  it('stops accepting a token once its key has been removed from the JWKS and the set was refetched', async () => {
    published = [{ ...(await exportJWK(oldKey.publicKey)), kid: 'old' }];
    const verifier = new TokenVerifier({ jwksUrl: url, jwksCooldownMs: 0 });
    const oldToken = await sign(oldKey, 'old');
    await expect(verifier.verify(oldToken)).resolves.toMatchObject({ workspaceId: 7 });

    // The issuer rotates: the old key is withdrawn (e.g. compromised), a new one published.
    published = [{ ...(await exportJWK(newKey.publicKey)), kid: 'new' }];
    // A token under the new kid makes the verifier refetch the set: it now knows only 'new'.
    await expect(verifier.verify(await sign(newKey, 'new'))).resolves.toMatchObject({ workspaceId: 7 });

    // A verifier that never saw the old token refuses it...
    const fresh = new TokenVerifier({ jwksUrl: url, jwksCooldownMs: 0 });
    await expect(fresh.verify(oldToken)).rejects.toMatchObject({ reason: 'unknown_key' });
    // ...and so should this one, whose key set no longer holds the key.
    await expect(verifier.verify(oldToken)).rejects.toMatchObject({ reason: 'unknown_key' });
  });
});
