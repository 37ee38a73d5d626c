/**
 * Readiness (docs/scaling.md, "Readiness"): a node serves no command that needs the engine
 * before the engine first connected (`-LOADING`, as Redis while it loads; `/readyz` 503), and an
 * address the engine cannot fully serve (a Redis Cluster with slots uncovered) is never half served. The real daemon, a real
 * redis-server.
 */
import { afterAll, describe, expect, it } from 'vitest';
import {
  hasRedis,
  newSecret,
  spawnNode,
  startRedis,
  waitForOutput,
  type ChildNode,
  type RedisProcess,
} from './support.js';

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

  it('stays -LOADING with /readyz 503 on a Redis Cluster whose slots are not all served, instead of half serving it', async () => {
    // A cluster node with no slots assigned: cluster_state:fail, every slot uncovered.
    const redis = await startRedis(false, ['--cluster-enabled', 'yes']);
    servers.push(redis);
    const node = await spawnNode(redis.url, secret, false);
    children.push(node);
    await waitForOutput(node, /the cluster does not serve every slot yet/);
    const client = await node.client();
    const publish = (await client.command('PUBLISH', 'sb-ready', '{"type":"t"}')) as Error;
    expect(publish.message).toMatch(/^LOADING /);
    const subscribe = (await client.command('RESUME', 'sb-ready', '0-0')) as Error;
    expect(subscribe.message).toMatch(/^LOADING /);
    const ready = await readyz(node);
    expect(ready.status).toBe(503);
    expect(node.output()).not.toMatch(/MOVED|CLUSTERDOWN/);
  }, 30_000);

  it('refuses at start, with the reason and exit status 1, a Redis user that may not run INFO', async () => {
    const redis = await startRedis();
    servers.push(redis);
    // Everything but INFO: the engine could not tell a single Redis from a cluster node.
    expect(redis.cli('ACL', 'SETUSER', 'no-info', 'on', '>no-info-pw', '~*', '&*', '+@all', '-info')).toBe('OK');
    const url = redis.url.replace('redis://', 'redis://no-info:no-info-pw@');
    const node = await spawnNode(url, secret, false).catch((error: Error) => error);
    // It may exit before or after it listens: either way the reason is in its output.
    const output = node instanceof Error ? node.message : await exited(node);
    expect(output).toMatch(/cannot use this Redis: INFO answered NOPERM[^"]*grant the user INFO/);
    if (!(node instanceof Error)) expect(node.child.exitCode).toBe(1);
  }, 30_000);

  async function exited(node: ChildNode): Promise<string> {
    children.push(node);
    while (node.child.exitCode === null) await node.outputChanged();
    return node.output();
  }
});
