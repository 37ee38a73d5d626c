import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { killDaemons } from '../support/daemon.js';
import { cliToken } from '../support/e2e.js';
import { StoreDaemons, STORES_AND_ENGINE } from '../support/engine.js';
import { requireTool } from '../support/tools.js';

/**
 * Listing the sandboxes that hold events, from the store (docs/protocol.md, SANDBOXES;
 * docs/http.md, GET /sandboxes): each with its newest id, limited to what the credential
 * sees, the same after a restart (SQLite, the Redis engine), through redis-cli, ioredis and HTTP.
 */

const run = promisify(execFile);
const hasRedisCli = requireTool('redis-cli', 'redis-tools');
const daemons = new StoreDaemons();

afterEach(() => killDaemons());
afterAll(() => daemons.cleanup());

describe.each(STORES_AND_ENGINE)('listing sandboxes, %s store', (store) => {
  it('RESP SANDBOXES and GET /sandboxes list the sandboxes holding events with their newest id', async () => {
    const first = await daemons.start(store);
    const { dir, httpPort } = first;
    let daemon = first.daemon;
    const token = (...args: string[]): Promise<string> => cliToken(dir, ...args);
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
      ({ daemon } = await daemons.start(store, [], dir));
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
