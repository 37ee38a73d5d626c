import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT, exportJWK } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { RawClient, resp } from '../support/raw-client.js';

const clients: RawClient[] = [];
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-cli-keys-'));
});
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
  killDaemons();
});
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

function startDaemon(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Daemon> {
  return spawnDaemon(['--port', '0', '--http-port', '0', '--data-dir', dataDir, '--store', 'memory', ...args], env);
}

async function connect(port: number): Promise<RawClient> {
  const client = await RawClient.connect(port);
  clients.push(client);
  return client;
}

const exp = () => Math.floor(Date.now() / 1000) + 3600;

describe('serve: key source flags', () => {
  let jwks: Server;
  let jwksUrl: string;
  let pemFile: string;
  const jwksKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pemKey = generateKeyPairSync('rsa', { modulusLength: 2048 });

  beforeAll(async () => {
    const jwk = { ...(await exportJWK(jwksKey.publicKey)), kid: 'k1', alg: 'RS256' };
    jwks = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
    pemFile = path.join(dataDir, 'pub.pem');
    await writeFile(pemFile, pemKey.publicKey.export({ type: 'spki', format: 'pem' }));
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => jwks.close(() => resolve()));
  });

  it('--jwt-public-key together with --jwks-url is refused, not one of them silently dropped', async () => {
    // The verifier refuses this combination ("configure either publicKeyPem or jwksUrl, not
    // both"); the CLI used to drop --jwks-url before the verifier could see it (found in review).
    let started: Daemon | undefined;
    let startError: unknown;
    try {
      started = await startDaemon(['--jwt-public-key', pemFile, '--jwks-url', jwksUrl]);
    } catch (error) {
      startError = error;
    }
    if (started !== undefined) {
      // Show what the operator gets: tokens signed by the JWKS key are refused.
      const token = await new SignJWT({ workspace_id: 1, role: 'workspace', exp: exp() })
        .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
        .sign(jwksKey.privateKey);
      const client = await connect(started.port);
      client.send(resp('AUTH', token));
      const reply = await client.line();
      expect.soft(reply, 'a token signed by the --jwks-url key').toBe('+OK\r\n');
    }
    expect(startError, 'serve started with conflicting key flags and ignored --jwks-url').toBeDefined();
  });

  it('SANDBOX_EVENTS_JWT_SECRET together with --jwks-url: HS256 tokens are accepted too', async () => {
    // The verifier supports a secret and a JWKS at once; serve used to pass only the JWKS.
    const secret = 'review-secret-0123456789';
    const daemon = await startDaemon(['--jwks-url', jwksUrl], { SANDBOX_EVENTS_JWT_SECRET: secret });
    const token = await new SignJWT({ workspace_id: 1, role: 'workspace', exp: exp() })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode(secret));
    const client = await connect(daemon.port);
    client.send(resp('AUTH', token));
    expect(await client.line()).toBe('+OK\r\n');
  });
});

describe('serve: --max-event-size', () => {
  it('an event within a raised --max-event-size (2mb) can be published over TCP (the RESP caps follow it)', async () => {
    const daemon = await startDaemon(['--max-event-size', '2mb'], { SANDBOX_EVENTS_JWT_SECRET: 'size-secret-0123456789' });
    const token = await new SignJWT({ workspace_id: 1, sandbox_id: 'sb-1', exp: exp() })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode('size-secret-0123456789'));
    const client = await connect(daemon.port);
    client.send(resp('AUTH', token));
    expect(await client.line()).toBe('+OK\r\n');
    const event = JSON.stringify({ type: 'big', data: { blob: 'x'.repeat(1536 * 1024) } }); // 1.5 MiB < 2 MiB
    client.send(resp('PUBLISH', 'sb-1', event));
    const reply = await client.line(10_000);
    expect(reply).toBe(':0\r\n');
  }, 20_000);
});
