import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killDaemons } from '../support/daemon.js';
import { cliToken, freePort } from '../support/e2e.js';
import { SharedRedis, spawnStoreDaemon, STORES_AND_ENGINE, storeArgs } from '../support/engine.js';
import { requireTool } from '../support/tools.js';

/**
 * Listing the sandboxes that hold events, from the store (docs/protocol.md, SANDBOXES;
 * docs/http.md, GET /sandboxes): each with its newest id, limited to what the credential
 * sees, the same after a restart (SQLite, the Redis engine), through redis-cli, ioredis and HTTP.
 */

const run = promisify(execFile);
const hasRedisCli = requireTool('redis-cli', 'redis-tools');
let dataDir: string;
const redis = new SharedRedis();

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-listing-'));
});
afterEach(() => killDaemons());
afterAll(async () => {
  await redis.stop();
  await rm(dataDir, { recursive: true, force: true });
});

const token = (...args: string[]): Promise<string> => cliToken(dataDir, ...args);

describe.each(STORES_AND_ENGINE)('listing sandboxes, %s store', (store) => {
  it('RESP SANDBOXES and GET /sandboxes list the sandboxes holding events with their newest id', async () => {
    const storeArg =
      store === 'sqlite' ? ['--store', `sqlite:${path.join(dataDir, 'listing.db')}`] : await storeArgs(store, redis);
    if (store === 'redis') (await redis.get()).cli('FLUSHALL');
    const args = ['--port', '0', '--data-dir', dataDir, ...storeArg];
    const httpPort = await freePort();
    let daemon = await spawnStoreDaemon([...args, '--http-port', String(httpPort)]);
    const [workspace, other, sandboxOnly] = await Promise.all([
      token('--workspace', '1'),
      token('--workspace', '2'),
      token('--workspace', '1', '--sandbox', 'sb-b'),
    ]);
    const newest = new Map<string, string>();
    for (const [workspaceToken, sandboxId, n] of [
      [workspace, 'sb-b', 2],
      [workspace, 'sb-a', 3],
      [other, 'sb-z', 1],
    ] as const) {
      const publisher = new Redis({ port: daemon.port, host: '127.0.0.1', password: workspaceToken });
      for (let i = 0; i < n; i += 1) await publisher.publish(sandboxId, JSON.stringify({ type: 't', data: { i } }));
      const last = (await publisher.call('HISTORY', sandboxId, 'NEWEST', 'LIMIT', '1')) as string[];
      newest.set(sandboxId, (JSON.parse(last[0]!) as { id: string }).id);
      publisher.disconnect();
    }

    const listOver = async (port: number, credential: string): Promise<unknown> => {
      const client = new Redis({ port, host: '127.0.0.1', password: credential });
      try {
        return await client.call('SANDBOXES');
      } finally {
        client.disconnect();
      }
    };
    const expected = ['sb-a', newest.get('sb-a'), 'sb-b', newest.get('sb-b')];
    expect(await listOver(daemon.port, workspace)).toEqual(expected);
    expect(await listOver(daemon.port, other)).toEqual(['sb-z', newest.get('sb-z')]);
    expect(await listOver(daemon.port, sandboxOnly)).toEqual(['sb-b', newest.get('sb-b')]);

    const http = await fetch(`http://127.0.0.1:${httpPort}/sandboxes`, {
      headers: { authorization: `Bearer ${workspace}` },
    });
    const body = (await http.json()) as { data: { sandboxes: { sandboxId: string; lastEventId: string | null }[] } };
    const listed = Object.fromEntries(body.data.sandboxes.map((row) => [row.sandboxId, row.lastEventId]));
    expect(listed).toEqual({ 'sb-a': newest.get('sb-a'), 'sb-b': newest.get('sb-b') });

    if (store !== 'memory') {
      // What is listed is in the file, or in Redis: the same after a restart.
      daemon.child.kill('SIGTERM');
      await daemon.exited;
      daemon = await spawnStoreDaemon([...args, '--http-port', String(await freePort())]);
      expect(await listOver(daemon.port, workspace)).toEqual(expected);
    }
    if (hasRedisCli) {
      const { stdout } = await run('redis-cli', [
        ...['-p', String(daemon.port), '--no-auth-warning', '-a', workspace, 'SANDBOXES'],
      ]);
      expect(stdout.trim().split('\n')).toEqual(expected);
    }
  });
});
