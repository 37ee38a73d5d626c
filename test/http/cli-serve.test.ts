import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';

/** `sandbox-events serve` as a user starts it (the compiled bin): the HTTP listener and its flag. */
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-http-cli-'));
});
afterEach(() => killDaemons());
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Daemon> {
  return spawnDaemon(['--port', '0', '--data-dir', dataDir, '--store', 'memory', ...args], env);
}

/** A port that was free a moment ago (the OS picks it, then it is released). */
async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

describe('sandbox-events serve --http-port', () => {
  it('serves HTTP beside TCP, says where in its listening line, and stops on SIGTERM', async () => {
    const httpPort = await freePort();
    const daemon = await serve(['--http-port', String(httpPort)]);
    expect(daemon.httpPort).toBe(httpPort);
    const health = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
    expect(await health.json()).toEqual({ status: 'ok' });
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    await expect(fetch(`http://127.0.0.1:${httpPort}/healthz`)).rejects.toThrow();
  });

  it('SANDBOX_EVENTS_HTTP_PORT=0 turns HTTP off', async () => {
    const daemon = await serve([], { SANDBOX_EVENTS_HTTP_PORT: '0' });
    expect(daemon.httpPort).toBeUndefined();
    expect(daemon.port).toBeGreaterThan(0);
  });

  it('an HTTP port in use stops the daemon with a clear message', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const failure = await serve(['--http-port', String(port)]).catch((error: Error) => error);
      expect(failure).toBeInstanceOf(Error);
      expect((failure as Error).message).toMatch(
        /exited with 1: .*cannot listen for HTTP on 127\.0\.0\.1:\d+ .*--http-port 0 turns HTTP off \[HTTP_LISTEN_FAILED\]/s,
      );
    } finally {
      taken.close();
    }
  });
});
