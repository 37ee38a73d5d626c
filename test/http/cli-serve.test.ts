import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

/** `sandbox-events serve` as a user starts it (the compiled bin): the HTTP listener and its flag. */
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/sandbox-events.js');
const running: ChildProcess[] = [];
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-http-cli-'));
});
afterEach(() => {
  for (const child of running.splice(0)) child.kill('SIGKILL');
});
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

interface Listening {
  child: ChildProcess;
  port: number;
  httpPort: number | undefined;
}

function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Listening> {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--data-dir', dataDir, '--store', 'memory', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.push(child);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const record = JSON.parse(line) as { msg?: string; port?: number; httpPort?: number };
      if (record.msg === 'sandbox-events listening') resolve({ child, port: record.port!, httpPort: record.httpPort });
    });
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
  });
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
    const exited = new Promise((resolve) => daemon.child.once('exit', resolve));
    daemon.child.kill('SIGTERM');
    expect(await exited).toBe(0);
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
      expect((failure as Error).message).toMatch(/exited with 1: .*cannot listen for HTTP on 127\.0\.0\.1:\d+ .*--http-port 0 turns HTTP off \[HTTP_LISTEN_FAILED\]/s);
    } finally {
      taken.close();
    }
  });
});
