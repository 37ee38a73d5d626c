/**
 * Readiness (docs/scaling.md, "Readiness"): a node serves no command that needs the engine
 * before the engine first connected (`-LOADING`, as Redis while it loads; `/readyz` 503), and an
 * address the engine cannot fully serve is refused at start. The real daemon, a real
 * redis-server.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN } from '../support/daemon.js';
import { hasRedis, newSecret, spawnNode, startRedis, type ChildNode, type RedisProcess } from './support.js';

describe.skipIf(!hasRedis)('readiness of a node on the Redis engine', () => {
  const secret = newSecret();
  const children: ChildNode[] = [];
  const servers: RedisProcess[] = [];

  afterAll(async () => {
    for (const child of children) await child.kill();
    for (const server of servers) await server.stop();
  });

  async function readyz(node: ChildNode): Promise<{ status: number; body: { checks?: { store?: string } } }> {
    const response = await fetch(`http://127.0.0.1:${node.httpPort}/readyz`);
    return { status: response.status, body: (await response.json()) as { checks?: { store?: string } } };
  }

  it('answers -LOADING and /readyz 503 until the engine is connected, then serves the first RESUME', async () => {
    const redis = await startRedis();
    servers.push(redis);
    // Redis is not there yet when the node starts (its port stays reserved for it): the node
    // listens, and its engine keeps retrying until the test starts Redis below.
    await redis.kill();
    const node = await spawnNode(redis.url, secret, false);
    children.push(node);
    const client = await node.client(); // AUTH needs no store
    const resume = (await client.command('RESUME', 'sb-ready', '0-0')) as Error;
    expect(resume.message).toBe('LOADING the node is connecting to its event engine (Redis); try again');
    const publish = (await client.command('PUBLISH', 'sb-ready', '{"type":"t"}')) as Error;
    expect(publish.message).toMatch(/^LOADING /);
    const early = await readyz(node);
    expect(early.status).toBe(503);
    expect(early.body.checks?.store).not.toBe('ok');
    await redis.start();
    // /readyz is the only outward sign of the engine's connection: polled.
    let last = early.status;
    const deadline = Date.now() + 15_000;
    while (last !== 200 && Date.now() < deadline) last = (await readyz(node)).status;
    expect(last).toBe(200);
    const reply = (await client.command('RESUME', 'sb-ready', '0-0')) as unknown[];
    expect(reply.slice(0, 4)).toEqual(['resume', 'sb-ready', 1, 'complete']);
  }, 30_000);

  it('refuses at start a node of a Redis Cluster, with a clear error, instead of half serving it', async () => {
    const dir = tmpdir();
    const redis = await startRedis(false, ['--cluster-enabled', 'yes']);
    servers.push(redis);
    const child = spawn(
      process.execPath,
      [BIN, 'serve', '--engine', redis.url, '--port', '0', '--jwt-secret', secret, '--data-dir', dir],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(1);
    expect(output).toMatch(/cannot use this Redis: the address is a node of a Redis Cluster/);
  }, 30_000);
});
