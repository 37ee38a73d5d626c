import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, expect } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { RawClient, resp } from '../support/raw-client.js';

export type LogRecord = { msg?: string; level?: number; [field: string]: unknown };

export interface ConfiguredDaemon extends Daemon {
  /** JSON log records written after the listening line. */
  records: LogRecord[];
  /** Resolves with the first record from index `from` on that `matches`. */
  record(matches: (record: LogRecord) => boolean, from?: number): Promise<LogRecord>;
  /** Sends SIGHUP and resolves with the reload's outcome record (`config reloaded` or `config reload failed...`). */
  reload(): Promise<LogRecord>;
}

/** `serve --config <file>` on ports the OS picks, memory store, data dir in `dir`. */
export async function startWithConfig(
  dir: string,
  file: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<ConfiguredDaemon> {
  const daemon = await spawnDaemon(['--config', file, '--data-dir', path.join(dir, 'data'), ...args], env);
  const records: LogRecord[] = [];
  let wake: (() => void)[] = [];
  createInterface({ input: daemon.child.stdout! }).on('line', (line) => {
    try {
      records.push(JSON.parse(line) as LogRecord);
    } catch {
      return;
    }
    const waiting = wake;
    wake = [];
    for (const resolve of waiting) resolve();
  });
  const record = async (matches: (record: LogRecord) => boolean, from = 0): Promise<LogRecord> => {
    for (;;) {
      const found = records.slice(from).find(matches);
      if (found !== undefined) return found;
      await Promise.race([
        new Promise<void>((resolve) => wake.push(resolve)),
        daemon.exited.then(() => {
          throw new Error(`the daemon exited: ${daemon.stderr()}`);
        }),
      ]);
    }
  };
  return {
    ...daemon,
    records,
    record,
    async reload() {
      const from = records.length;
      daemon.child.kill('SIGHUP');
      return record(
        (r) => r.msg === 'config reloaded' || (typeof r.msg === 'string' && r.msg.startsWith('config reload failed')),
        from,
      );
    },
  };
}

/** A temporary directory, removed by the returned function. */
export function tempDir(): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'se-config-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface PerTest {
  /** This test's temporary directory. */
  readonly dir: string;
  /** Closed after the test. */
  track<T extends { close(): void }>(thing: T): T;
  /** A raw client that sent AUTH with `token` and got +OK; closed after the test. */
  authed(port: number, token: string): Promise<RawClient>;
  /** The reply to AUTH with `token` on a new raw client (closed after the test). */
  authReply(port: number, token: string): Promise<string>;
}

/** Gives each test a temporary directory; after it, closes its clients, kills its daemons, removes the directory. */
export function perTest(): PerTest {
  let temp: ReturnType<typeof tempDir> | undefined;
  const tracked: { close(): void }[] = [];
  beforeEach(() => {
    temp = tempDir();
  });
  afterEach(() => {
    for (const thing of tracked.splice(0)) thing.close();
    killDaemons();
    temp?.remove();
  });
  const track = <T extends { close(): void }>(thing: T): T => {
    tracked.push(thing);
    return thing;
  };
  return {
    get dir() {
      return temp!.dir;
    },
    track,
    async authed(port, token) {
      const { client, reply } = await rawAuth(port, token);
      track(client);
      expect(reply).toBe('+OK\r\n');
      return client;
    },
    async authReply(port, token) {
      const { client, reply } = await rawAuth(port, token);
      track(client);
      return reply;
    },
  };
}

export function writeJson(file: string, value: unknown): void {
  writeFileSync(file, JSON.stringify(value, null, 2));
}

export function tokenFor(
  secret: string,
  extra: { workspaceId?: number; sandboxId?: string; role?: 'sandbox' | 'workspace' | 'admin'; issuer?: string } = {},
): Promise<string> {
  return mintToken({
    secret,
    workspaceId: 1,
    role: extra.sandboxId === undefined ? 'workspace' : 'sandbox',
    ttlSeconds: 3600,
    ...extra,
  });
}

/** A raw client that sent AUTH with `token`; resolves with it and the reply line. */
export async function rawAuth(port: number, token: string): Promise<{ client: RawClient; reply: string }> {
  const client = await RawClient.connect(port);
  client.send(resp('AUTH', token));
  return { client, reply: await client.line() };
}

/** An ioredis client authenticated with `token`, that never reconnects. */
export function redisClient(port: number, token: string): Redis {
  return new Redis({
    host: '127.0.0.1',
    port,
    password: token,
    enableReadyCheck: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
}

/** CONFIG GET's pairs as an object. */
export async function configGet(redis: Redis, pattern: string): Promise<Record<string, string>> {
  const flat = (await redis.call('CONFIG', 'GET', pattern)) as string[];
  const result: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) result[flat[i]!] = flat[i + 1]!;
  return result;
}
