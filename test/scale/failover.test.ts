/**
 * docs/scaling.md, failures: a node dies under load and its subscribers resume at another node with
 * exactly the published ids; Redis restarts under load and no acknowledged event is lost.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  hasRedis,
  idLess,
  newSecret,
  sleep,
  spawnNode,
  startNode,
  startRedis,
  type ChildNode,
  type Node,
  type RedisProcess,
  fullHistory,
  loadGenerator,
} from './support.js';

describe.skipIf(!hasRedis)('failover', () => {
  let redis: RedisProcess;
  const secret = newSecret();
  const nodes: Node[] = [];
  const children: ChildNode[] = [];

  beforeAll(async () => {
    redis = await startRedis(true);
  });
  afterAll(async () => {
    for (const child of children) await child.kill();
    for (const node of nodes) await node.close();
    await redis?.stop();
  });

  it('resumes the subscribers of a SIGKILLed node at another node with exactly the published ids', async () => {
    const a = await spawnNode(redis.url, secret);
    children.push(a);
    const b = await startNode(redis.url, secret);
    nodes.push(b);
    const channels = ['sb-k1', 'sb-k2', 'sb-k3'];
    const watchers = await Promise.all(
      channels.map(async (channel) => {
        const client = await a.client();
        await client.command('SUBSCRIBE', channel);
        return client;
      }),
    );
    // Load at both nodes: A's publisher dies with A, B's goes on.
    const loads = [
      ...channels.map(async (channel) => loadGenerator(await a.client(), channel, 'from-a')),
      ...channels.map(async (channel) => loadGenerator(await b.client(), channel, 'from-b')),
    ];
    const generators = await Promise.all(loads);
    await Promise.all(watchers.map((watcher) => watcher.until(() => watcher.messages().length >= 100)));
    await a.kill();
    const lastSeen = watchers.map((watcher) => watcher.messages().at(-1)!.id);
    // Each watcher reconnects to B and resumes from the last id it saw at A.
    const resumed = await Promise.all(
      channels.map(async (channel, i) => {
        const client = await b.client();
        client.send('RESUME', channel, lastSeen[i]!);
        return client;
      }),
    );
    await sleep(300);
    for (const generator of generators) await generator.stop();
    for (const [i, channel] of channels.entries()) {
      const expected = (await fullHistory(await b.client(), channel, lastSeen[i]!)).map((event) => event.id);
      expect(expected.length).toBeGreaterThan(0);
      const client = resumed[i]!;
      await client.until(() => client.messages().length >= expected.length);
      await sleep(50);
      expect((client.replies[1] as unknown[]).slice(0, 4)).toEqual(['resume', channel, 1, 'complete']);
      expect(client.messages().map((m) => m.id)).toEqual(expected);
      // Seen at A, then resumed at B: the whole stream, no gap, no repeat.
      const all = [...watchers[i]!.messages().map((m) => m.id), ...expected];
      for (let k = 1; k < all.length; k++) expect(idLess(all[k - 1]!, all[k]!)).toBe(true);
    }
    // Every publish acknowledged by either node is in the history.
    for (const [g, generator] of generators.entries()) {
      const channel = channels[g % 3]!;
      const tag = g < 3 ? 'from-a' : 'from-b';
      const history = await fullHistory(await b.client(), channel, '0-0', 'TYPE', tag);
      const stored = new Set(history.map((event) => event.data.i));
      for (const i of generator.acked) expect(stored.has(i)).toBe(true);
      expect(generator.acked.length).toBeGreaterThan(0);
    }
  });

  it('survives a Redis restart under load: no acknowledged event lost, clear errors meanwhile, subscribers carry on', async () => {
    const a = await startNode(redis.url, secret, undefined, true);
    const b = await startNode(redis.url, secret, undefined, true);
    nodes.push(a, b);
    const watcher = await b.client();
    await watcher.command('SUBSCRIBE', 'sb-restart');
    const generator = loadGenerator(await a.client(), 'sb-restart', 'r');
    await watcher.until(() => watcher.messages().length >= 50);
    await redis.kill();
    await sleep(100);
    expect(a.engine.isReady()).toBe(false);
    const readyz = await fetch(`http://127.0.0.1:${b.server.httpPort}/readyz`);
    expect(readyz.status).toBe(503);
    await sleep(400);
    await redis.start();
    await Promise.all([a.engine.waitReady(), b.engine.waitReady()]);
    expect((await fetch(`http://127.0.0.1:${b.server.httpPort}/readyz`)).status).toBe(200);
    const before = watcher.messages().length;
    await watcher.until(() => watcher.messages().length >= before + 50);
    await generator.stop();
    expect(watcher.closed).toBe(false);
    expect(generator.failed.length).toBeGreaterThan(0);
    for (const message of generator.failed)
      expect(message).toMatch(/^ERR store unavailable: the Redis engine is unavailable/);
    const history = await fullHistory(await a.client(), 'sb-restart');
    const stored = new Set(history.map((event) => event.data.i));
    const lost = generator.acked.filter((i) => !stored.has(i));
    expect(lost).toEqual([]);
    // What the watcher got is in order and stored.
    const ids = watcher.messages().map((m) => m.id);
    for (let k = 1; k < ids.length; k++) expect(idLess(ids[k - 1]!, ids[k]!)).toBe(true);
  });
});
