import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { SignJWT, exportJWK } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BIN, type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { RawClient, resp } from '../support/raw-client.js';

const run = promisify(execFile);
const clients: RawClient[] = [];
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-cli-'));
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

describe('sandbox-events serve', () => {
  it('starts on embedded defaults, prints a working redis-cli line, keeps its secret 0600, stops on SIGTERM', async () => {
    const daemon = await startDaemon([]);
    const banner = await daemon.stderrContaining('Mint more with');
    const match = /redis-cli -h 127\.0\.0\.1 -p (\d+) --no-auth-warning -a (\S+)/.exec(banner);
    expect(match?.[1]).toBe(String(daemon.port));
    const client = await connect(daemon.port);
    client.send(resp('AUTH', match![2]!) + resp('PING'));
    expect(await client.read('+OK\r\n+PONG\r\n')).toBe('+OK\r\n+PONG\r\n');
    expect((await stat(path.join(dataDir, 'jwt-secret'))).mode & 0o777).toBe(0o600);

    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    expect(await client.closedByServer()).toBe(true);
  });

  it('tokens minted by `sandbox-events token` survive a restart; sandbox tokens reach their sandbox only', async () => {
    const { stdout } = await run(process.execPath, [
      BIN,
      'token',
      '--data-dir',
      dataDir,
      '--workspace',
      '3',
      '--sandbox',
      'sb-x',
    ]);
    expect(stdout).toMatch(/^eyJ[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const token = stdout.trim();
    for (let restart = 0; restart < 2; restart += 1) {
      const daemon = await startDaemon([]);
      const client = await connect(daemon.port);
      client.send(
        resp('AUTH', token) + resp('PUBLISH', 'sb-x', '{"type":"t"}') + resp('PUBLISH', 'sb-y', '{"type":"t"}'),
      );
      const expected =
        '+OK\r\n:0\r\n-NOPERM this user has no permissions to access one of the channels used as arguments\r\n';
      expect(await client.read(expected)).toBe(expected);
      daemon.child.kill('SIGINT');
      expect(await daemon.exited).toBe(0);
    }
  });

  it('takes its secret from SANDBOX_EVENTS_JWT_SECRET and prints no development banner', async () => {
    const daemon = await startDaemon([], { SANDBOX_EVENTS_JWT_SECRET: 'configured-secret-configured-secret' });
    expect(daemon.stderr()).not.toContain('development mode');
    const { stdout } = await run(process.execPath, [
      BIN,
      'token',
      '--secret',
      'configured-secret-configured-secret',
      '--workspace',
      '5',
    ]);
    const client = await connect(daemon.port);
    client.send(resp('AUTH', stdout.trim()));
    expect(await client.line()).toBe('+OK\r\n');
    const devToken = await run(process.execPath, [BIN, 'token', '--data-dir', dataDir, '--workspace', '5']);
    client.send(resp('AUTH', devToken.stdout.trim()));
    expect(await client.line()).toBe(
      '-WRONGPASS invalid username-password pair or user is disabled. reason: bad signature\r\n',
    );
  });

  it('refuses bad flags with a clear message and a non-zero exit', async () => {
    const failing = (args: string[]) =>
      run(process.execPath, [BIN, ...args]).then(
        () => ({ code: 0, stderr: '' }),
        (error: { code: number; stderr: string }) => error,
      );
    const badPort = await failing(['serve', '--port', 'seventy']);
    expect(badPort.code).not.toBe(0);
    expect(badPort.stderr).toMatch(/--port.*expected an integer from 0 to 65535/);
    for (const backlog of ['0', '65536']) {
      const badBacklog = await failing([
        'serve',
        '--port',
        '0',
        '--http-port',
        '0',
        '--store',
        'memory',
        '--tcp-backlog',
        backlog,
      ]);
      expect(badBacklog.code).not.toBe(0);
      expect(badBacklog.stderr).toMatch(/--tcp-backlog.*expected an integer from 1 to 65535/);
    }
    const badSync = await failing(['serve', '--port', '0', '--http-port', '0', '--sqlite-synchronous', 'off']);
    expect(badSync.code).not.toBe(0);
    expect(badSync.stderr).toMatch(/--sqlite-synchronous.*'off' is invalid.*normal, full/);
    const noWorkspace = await failing(['token', '--secret', 's']);
    expect(noWorkspace.code).not.toBe(0);
    expect(noWorkspace.stderr).toMatch(/required option '--workspace <id>'/);
  });
});

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
    // both"); the CLI used to drop --jwks-url before the verifier could see it.
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
    const daemon = await startDaemon(['--max-event-size', '2mb'], {
      SANDBOX_EVENTS_JWT_SECRET: 'size-secret-0123456789',
    });
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

describe('serve: --sqlite-synchronous', () => {
  it('defaults to normal and takes full (an fsync per commit), saying which in the listening line', async () => {
    const normal = await startDaemon(['--store', 'sqlite'], { SANDBOX_EVENTS_JWT_SECRET: 'sync-secret-0123456789' });
    expect(normal.listening).toMatchObject({ store: 'sqlite', synchronous: 'normal' });
    killDaemons();
    const full = await startDaemon(['--store', 'sqlite', '--sqlite-synchronous', 'full'], {
      SANDBOX_EVENTS_JWT_SECRET: 'sync-secret-0123456789',
    });
    expect(full.listening).toMatchObject({ store: 'sqlite', synchronous: 'full' });
    const token = await new SignJWT({ workspace_id: 1, sandbox_id: 'sb-1', exp: exp() })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode('sync-secret-0123456789'));
    const client = await connect(full.port);
    client.send(resp('AUTH', token) + resp('PUBLISH', 'sb-1', '{"type":"synced"}'));
    expect(await client.read('+OK\r\n:0\r\n')).toBe('+OK\r\n:0\r\n');
  });
});
