import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from 'pino';
import { ApiKeyRegistry, apiKeysPath } from '../../src/auth/api-keys.js';
import { getJson, type HttpTestServer, postEvent, startHttpTestServer } from './support.js';

/**
 * API keys through the real CLI (`node bin/sandbox-events.js apikey ...`, compiled by
 * `npm run build`), against a daemon that is already running: it sees new and revoked keys
 * without a restart.
 */
const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.resolve(here, '../../bin/sandbox-events.js');
const run = promisify(execFile);

let dataDir: string;
let broker: HttpTestServer;

beforeAll(async () => {
  if (!existsSync(path.resolve(here, '../../dist/cli/apikey.js'))) {
    throw new Error('dist/ lacks the apikey command: run `npm run build` first');
  }
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-apikey-'));
  broker = await startHttpTestServer({
    http: { apiKeysFile: apiKeysPath(dataDir), apiKeyCacheMs: 200, heartbeatMs: 50, retryMs: 50 },
  });
});
afterAll(async () => {
  await broker?.close();
  if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
});

function apikey(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, [BIN, 'apikey', ...args, '--data-dir', dataDir]);
}

async function failing(...args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await apikey(...args);
    return { code: 0, stderr: '' };
  } catch (error) {
    return error as { code: number; stderr: string };
  }
}

const read = (key: string, sandbox = 'sb-k') => getJson(`${broker.url}/events/${sandbox}`, { 'x-api-key': key });

describe('sandbox-events apikey', () => {
  it('create prints the key once; the data dir keeps only its hash, mode 0600', async () => {
    const { stdout, stderr } = await apikey('create', '--workspace', '3', '--name', 'ci dashboard');
    expect(stdout).toMatch(/^sek_[0-9a-f]{16}_[A-Za-z0-9_-]{43}\n$/);
    const key = stdout.trim();
    const id = key.slice(4, 20);
    expect(stderr).toContain(id);
    expect(stderr).toMatch(/shown only this once/);
    const file = apiKeysPath(dataDir);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const content = await readFile(file, 'utf8');
    expect(content).not.toContain(key);
    expect(content).not.toContain(key.slice(21));
    expect(content).toContain(createHash('sha256').update(key).digest('hex'));
  });

  it('the running daemon accepts a new key at once, for its workspace only', async () => {
    const key = (await apikey('create', '--workspace', '3')).stdout.trim();
    const posted = await postEvent(broker.url, await broker.sandboxToken('sb-k', 3), { type: 't', data: { n: 1 } });
    expect(posted.status).toBe(201);
    const own = await read(key);
    expect(own.status).toBe(200);
    expect((own.body.data as { count: number }).count).toBe(1);
    // Authorization: Bearer <key> works too.
    expect((await getJson(`${broker.url}/events/sb-k`, { authorization: `Bearer ${key}` })).status).toBe(200);
    // Workspace 1's sandbox of the same name is another sandbox; its qualified name is refused.
    expect(((await read(key)).body.data as { count: number }).count).toBe(1);
    expect((await read(key, '%7B1%7Dsb-k')).status).toBe(403);
    // A key reads; it never publishes (it has no sandbox).
    const publish = await postEvent(broker.url, undefined, { type: 't' }, { 'x-api-key': key });
    expect(publish.status).toBe(403);
    // A made-up key of the right shape is refused and counted.
    const forged = await read(`sek_${'0'.repeat(16)}_${'A'.repeat(43)}`);
    expect(forged.status).toBe(401);
    expect(broker.server.context.stats.authFailures.unknown_api_key).toBeGreaterThanOrEqual(1);
  });

  it("revoke (by key or id) takes effect in the running daemon, and ends the key's streams", async () => {
    const key = (await apikey('create', '--workspace', '3')).stdout.trim();
    const id = key.slice(4, 20);
    expect((await read(key)).status).toBe(200);
    const stream = await fetch(`${broker.url}/events/sb-k/stream?token=${key}`);
    expect(stream.status).toBe(200);

    const { stderr } = await apikey('revoke', key);
    expect(stderr).toContain(`Revoked API key ${id}`);
    let status = 0;
    const deadline = Date.now() + 5_000;
    while (status !== 401 && Date.now() < deadline) status = (await read(key)).status;
    expect(status).toBe(401);
    expect((await read(key)).body).toEqual({ error: 'this API key was revoked', code: 'AUTH_FAILED' });
    expect(broker.server.context.stats.authFailures.revoked_api_key).toBeGreaterThanOrEqual(1);

    const text = await stream.text(); // the server ends it
    expect(text).toContain('event: close\ndata: {"reason":"api_key_revoked"}\n\n');

    const again = await apikey('revoke', id);
    expect(again.stderr).toMatch(/already revoked/);
  });

  it('list shows ids, workspaces and status, never keys; --json too', async () => {
    const { stdout } = await apikey('list');
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+WORKSPACE\s+STATUS\s+CREATED\s+NAME$/);
    expect(lines.some((line) => /\s3\s+active\s.*ci dashboard$/.test(line))).toBe(true);
    expect(lines.some((line) => /\s3\s+revoked\s/.test(line))).toBe(true);
    expect(stdout).not.toMatch(/sek_/);
    const rows = JSON.parse((await apikey('list', '--json')).stdout) as {
      id: string;
      status: string;
      workspaceId: number;
    }[];
    expect(rows.length).toBe(lines.length - 1);
    expect(rows.every((row) => /^[0-9a-f]{16}$/.test(row.id) && row.workspaceId === 3)).toBe(true);
    expect(JSON.stringify(rows)).not.toContain('hash');
  });

  it('refuses an unknown id and a bad workspace with a message and a non-zero exit', async () => {
    const unknown = await failing('revoke', 'ffffffffffffffff');
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/no API key with id 'ffffffffffffffff'.*\[API_KEY_NOT_FOUND\]/);
    const bad = await failing('create', '--workspace', 'zero');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--workspace.*expected an integer/);
  });

  it('concurrent creates lose nothing (the file is changed under a lock)', async () => {
    const before = JSON.parse((await apikey('list', '--json')).stdout) as unknown[];
    const keys = await Promise.all(Array.from({ length: 6 }, () => apikey('create', '--workspace', '4')));
    const after = JSON.parse((await apikey('list', '--json')).stdout) as unknown[];
    expect(after.length).toBe(before.length + 6);
    for (const { stdout } of keys) expect((await read(stdout.trim(), 'sb-4')).status).toBe(200);
  });

  it('a broken file (edited by hand) leaves the last good keys in force, loudly', async () => {
    const key = (await apikey('create', '--workspace', '3')).stdout.trim();
    const errors: string[] = [];
    const logger = { error: (_: unknown, message: string) => errors.push(message) } as unknown as Logger;
    const registry = new ApiKeyRegistry(apiKeysPath(dataDir), { cacheMs: 0, logger });
    expect((await registry.verify(key)).workspaceId).toBe(3);
    const file = apiKeysPath(dataDir);
    const good = await readFile(file, 'utf8');
    await writeFile(file, '{ not json', { mode: 0o600 });
    try {
      expect((await registry.verify(key)).workspaceId).toBe(3);
      expect(errors).toEqual(['cannot load the API key file; keeping the last good one']);
    } finally {
      await writeFile(file, good, { mode: 0o600 });
    }
    // A fresh daemon with no good copy refuses rather than guessing.
    await writeFile(file, '{ not json', { mode: 0o600 });
    try {
      await expect(new ApiKeyRegistry(file, { cacheMs: 0 }).verify(key)).rejects.toThrow('unknown API key');
    } finally {
      await writeFile(file, good, { mode: 0o600 });
    }
  });
});
