import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { resp } from '../support/raw-client.js';

/**
 * Errors that clients we don't control can act on (docs/protocol.md, "Authentication" and
 * "The ComputeSDK events client"), through the real daemon: WRONGPASS with its reason, as
 * ioredis and node-redis surface it; an inline ComputeSDK SUBSCRIBE with a bad token gets
 * `-ERR` and the connection ends at once.
 */

const secret = randomBytes(32).toString('hex');
const TEXT = '-WRONGPASS invalid username-password pair or user is disabled.';
let dataDir: string;
let daemon: Daemon;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-errors-'));
  daemon = await spawnDaemon([
    '--port',
    '0',
    '--http-port',
    '0',
    '--data-dir',
    dataDir,
    '--store',
    'memory',
    '--jwt-secret',
    secret,
  ]);
});
afterAll(async () => {
  killDaemons();
  await rm(dataDir, { recursive: true, force: true });
});

const expiredToken = (): Promise<string> =>
  mintToken({ secret, workspaceId: 1, sandboxId: 'sb-1', ttlSeconds: 60, now: Date.now() - 3_600_000 });
const badSignature = async (): Promise<string> =>
  `${(await mintToken({ secret, workspaceId: 1, sandboxId: 'sb-1', ttlSeconds: 600 })).slice(0, -4)}AAAA`;

/** Sends `bytes` on a fresh connection; resolves with everything received once the server closes it (or after `untilText`). */
function exchange(bytes: string, untilText?: string): Promise<{ text: string; closedByServer: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(daemon.port, '127.0.0.1', () => socket.write(bytes));
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (untilText !== undefined && text.includes(untilText)) {
        socket.destroy();
        resolve({ text, closedByServer: false });
      }
    });
    socket.on('end', () => {
      socket.destroy();
      resolve({ text, closedByServer: true });
    });
    socket.on('error', reject);
  });
}

describe('-WRONGPASS with the reason', () => {
  it.each([
    ['expired', expiredToken],
    ['malformed', async () => 'not-a-jwt'],
    ['bad signature', badSignature],
  ])('%s: Redis text, then the reason; the connection stays open', async (reason, token) => {
    const { text, closedByServer } = await exchange(resp('AUTH', await token()) + resp('PING'), '-NOAUTH');
    expect(text).toBe(`${TEXT} reason: ${reason}\r\n-NOAUTH Authentication required.\r\n`);
    expect(closedByServer).toBe(false);
  });

  it('ioredis and node-redis still report it as their authentication error', async () => {
    const token = await expiredToken();
    const ioredis = new Redis({
      port: daemon.port,
      host: '127.0.0.1',
      password: token,
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
    });
    // ioredis emits the AUTH reply's error as its 'error' event (its auth-failure path).
    const ioFailure = new Promise<Error>((resolve) => ioredis.on('error', resolve));
    await ioredis.connect().catch(() => {});
    expect((await ioFailure).message).toMatch(/^WRONGPASS invalid username-password pair .* reason: expired$/);
    ioredis.disconnect();

    const nodeRedis = createClient({
      socket: { port: daemon.port, host: '127.0.0.1', reconnectStrategy: false },
      password: token,
    });
    nodeRedis.on('error', () => {});
    const nodeFailure = await nodeRedis.connect().catch((error: Error) => error);
    expect(nodeFailure).toBeInstanceOf(Error);
    expect((nodeFailure as Error).message).toMatch(/^WRONGPASS invalid username-password pair .* reason: expired$/);
    if (nodeRedis.isOpen) await nodeRedis.disconnect();
  });
});

describe('the ComputeSDK inline SUBSCRIBE with a bad token', () => {
  it.each([
    ['not a JWT at all', async () => 'opaque-token-123'],
    ['an expired JWT', expiredToken],
    ['a JWT with a bad signature', badSignature],
  ])('%s: -ERR authentication failed, then the connection is closed', async (_name, token) => {
    const { text, closedByServer } = await exchange(`SUBSCRIBE sb-1 ${await token()}\r\n`);
    expect(text).toMatch(/^-ERR authentication failed: [^\r\n]+\r\n$/);
    expect(closedByServer).toBe(true);
  });

  it('a Redis client (an array, not inline) subscribing to two channels before AUTH still gets -NOAUTH', async () => {
    const { text, closedByServer } = await exchange(resp('SUBSCRIBE', 'a', 'b'), '\r\n');
    expect(text).toBe('-NOAUTH Authentication required.\r\n');
    expect(closedByServer).toBe(false);
  });
});
