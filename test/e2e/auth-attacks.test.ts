import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/daemon.js';
import { RawClient, resp } from '../support/raw-client.js';
import { startTestServer } from '../support/test-server.js';

/**
 * Auth attacks against the real daemon (docs/security.md; jose's own test suite is the catalogue):
 * each is refused with -WRONGPASS and logged without the token.
 */
/** Redis's text, then the verifier's reason (docs/protocol.md, "Authentication"). */
const WRONGPASS_TEXT = '-WRONGPASS invalid username-password pair or user is disabled.';
const WRONGPASS = /^-WRONGPASS invalid username-password pair or user is disabled\. reason: [a-z ]+\r\n$/;
const now = () => Math.floor(Date.now() / 1000);
const claims = { workspace_id: 1, role: 'workspace' };

let keys: Awaited<ReturnType<typeof generateKeyPair>>;
let publicPem: string;
let jwksServer: Server;
let jwksUrl: string;
let jwksFetches = 0;
const servers: RunningServer[] = [];
const clients: RawClient[] = [];

beforeAll(async () => {
  keys = await generateKeyPair('RS256', { extractable: true });
  publicPem = await exportSPKI(keys.publicKey);
  const jwk = { ...(await exportJWK(keys.publicKey)), kid: 'key-1', alg: 'RS256', use: 'sig' };
  jwksServer = createServer((_request, response) => {
    jwksFetches += 1;
    response.setHeader('content-type', 'application/json');
    response.end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
});

afterAll(async () => {
  for (const client of clients) client.close();
  for (const server of servers) await server.close();
  await new Promise((resolve) => jwksServer.close(resolve));
});

async function daemon(auth: Parameters<typeof startServer>[0]['auth'], logger = pino({ level: 'silent' })) {
  const server = await startServer({ host: '127.0.0.1', port: 0, auth, logger });
  servers.push(server);
  return server;
}

async function authReply(server: RunningServer, token: string): Promise<string> {
  const client = await RawClient.connect(server.port);
  clients.push(client);
  client.send(resp('AUTH', token));
  return client.line();
}

const rs256 = (payload: Record<string, unknown>, kid = 'key-1') =>
  new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid }).sign(keys.privateKey);
const hs256 = (payload: Record<string, unknown>, secret: string | Uint8Array) =>
  new SignJWT(payload)
    .setProtectedHeader({ alg: 'HS256' })
    .sign(typeof secret === 'string' ? new TextEncoder().encode(secret) : secret);

describe('an RS256-configured daemon', () => {
  it('accepts a valid RS256 token and refuses the HS256 key-confusion token signed with its public key', async () => {
    const server = await daemon({ publicKeyPem: publicPem });
    expect(await authReply(server, await rs256({ ...claims, exp: now() + 600 }))).toBe('+OK\r\n');
    const confused = await hs256({ ...claims, role: 'admin', exp: now() + 600 }, publicPem);
    expect(await authReply(server, confused)).toMatch(WRONGPASS);
  });

  it('an HS256 daemon refuses an RS256 token (the reverse confusion)', async () => {
    const broker = await startTestServer();
    try {
      const client = await broker.raw();
      client.send(resp('AUTH', await rs256({ ...claims, exp: now() + 600 })));
      expect(await client.line()).toMatch(WRONGPASS);
    } finally {
      await broker.close();
    }
  });
});

describe('a JWKS-configured daemon', () => {
  it('verifies with the fetched key, and a flood of unknown kids refetches at most once per cooldown', async () => {
    const server = await daemon({ jwksUrl, jwksCooldownMs: 60_000 });
    expect(await authReply(server, await rs256({ ...claims, exp: now() + 600 }))).toBe('+OK\r\n');
    const fetchesBefore = jwksFetches;
    const replies = await Promise.all(
      Array.from({ length: 200 }, async (_, i) =>
        authReply(server, await rs256({ ...claims, exp: now() + 600 }, `unknown-${i}`)),
      ),
    );
    expect(replies.every((reply) => WRONGPASS.test(reply))).toBe(true);
    expect(jwksFetches - fetchesBefore).toBeLessThanOrEqual(1);
  });
});

describe('issuer and audience when configured', () => {
  it('refuses a wrong iss or aud, accepts the right ones', async () => {
    const broker = await startTestServer({ issuer: 'https://issuer.example', audience: 'sandbox-events' });
    try {
      const sign = (extra: Record<string, unknown>) => hs256({ ...claims, exp: now() + 600, ...extra }, broker.secret);
      const cases: [Record<string, unknown>, string][] = [
        [{ iss: 'https://issuer.example', aud: 'sandbox-events' }, '+OK\r\n'],
        [{ iss: 'https://evil.example', aud: 'sandbox-events' }, `${WRONGPASS_TEXT} reason: bad issuer\r\n`],
        [{ iss: 'https://issuer.example', aud: 'someone-else' }, `${WRONGPASS_TEXT} reason: bad audience\r\n`],
        [{}, `${WRONGPASS_TEXT} reason: bad issuer\r\n`],
      ];
      for (const [extra, expected] of cases) {
        const client = await broker.raw();
        client.send(resp('AUTH', await sign(extra)));
        expect(await client.line()).toBe(expected);
      }
    } finally {
      await broker.close();
    }
  });
});

describe('logging', () => {
  it('auth failures and protocol errors are logged with the address and reason, never the token', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean))
          lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    const secret = 'logging-test-secret-logging-test-secret';
    const server = await daemon({ secret }, pino({ level: 'info' }, sink));
    const expired = await hs256({ ...claims, exp: now() - 3600 }, secret);
    expect(await authReply(server, expired)).toMatch(WRONGPASS);
    const client = await RawClient.connect(server.port);
    clients.push(client);
    client.send('*abc\r\n');
    expect(await client.line()).toBe('-ERR Protocol error: invalid multibulk length\r\n');
    await client.closedByServer();
    const failure = lines.find((line) => line.msg === 'authentication failed');
    expect(failure).toMatchObject({ level: 30, reason: 'expired' });
    expect(String(failure?.addr)).toMatch(/^127\.0\.0\.1:\d+$/);
    const protocol = lines.find((line) => line.msg === 'protocol error');
    expect(protocol).toMatchObject({ level: 40, err: 'Protocol error: invalid multibulk length' });
    const everything = JSON.stringify(lines);
    expect(everything).not.toContain(expired);
    expect(everything).not.toContain(expired.split('.')[2]!);
  });
});
