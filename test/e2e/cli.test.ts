import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
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
    const { stdout } = await run(process.execPath, [BIN, 'token', '--data-dir', dataDir, '--workspace', '3', '--sandbox', 'sb-x']);
    expect(stdout).toMatch(/^eyJ[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const token = stdout.trim();
    for (let restart = 0; restart < 2; restart += 1) {
      const daemon = await startDaemon([]);
      const client = await connect(daemon.port);
      client.send(resp('AUTH', token) + resp('PUBLISH', 'sb-x', '{"type":"t"}') + resp('PUBLISH', 'sb-y', '{"type":"t"}'));
      const expected = '+OK\r\n:0\r\n-NOPERM this user has no permissions to access one of the channels used as arguments\r\n';
      expect(await client.read(expected)).toBe(expected);
      daemon.child.kill('SIGINT');
      expect(await daemon.exited).toBe(0);
    }
  });

  it('takes its secret from SANDBOX_EVENTS_JWT_SECRET and prints no development banner', async () => {
    const daemon = await startDaemon([], { SANDBOX_EVENTS_JWT_SECRET: 'configured-secret-configured-secret' });
    expect(daemon.stderr()).not.toContain('development mode');
    const { stdout } = await run(process.execPath, [BIN, 'token', '--secret', 'configured-secret-configured-secret', '--workspace', '5']);
    const client = await connect(daemon.port);
    client.send(resp('AUTH', stdout.trim()));
    expect(await client.line()).toBe('+OK\r\n');
    const devToken = await run(process.execPath, [BIN, 'token', '--data-dir', dataDir, '--workspace', '5']);
    client.send(resp('AUTH', devToken.stdout.trim()));
    expect(await client.line()).toBe('-WRONGPASS invalid username-password pair or user is disabled.\r\n');
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
      const badBacklog = await failing(['serve', '--port', '0', '--http-port', '0', '--store', 'memory', '--tcp-backlog', backlog]);
      expect(badBacklog.code).not.toBe(0);
      expect(badBacklog.stderr).toMatch(/--tcp-backlog.*expected an integer from 1 to 65535/);
    }
    const noWorkspace = await failing(['token', '--secret', 's']);
    expect(noWorkspace.code).not.toBe(0);
    expect(noWorkspace.stderr).toMatch(/required option '--workspace <id>'/);
  });
});
