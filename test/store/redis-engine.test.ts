/**
 * The Redis engine's own bookkeeping (docs/scaling.md, "How it works"), on a real redis-server:
 * the byte counter stays equal to what is retained through every kind of trim, the sandbox
 * index drops sandboxes whose stream is gone, and without the workspace keys (as in a Redis
 * Cluster) listing scans the stream keys and pattern resume is left out.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { StoredEvent } from '../../src/event/event.js';
import { RedisEngine } from '../../src/store/redis/redis-engine.js';
import { MIN_RETENTION_BYTES } from '../../src/store/semantics.js';
import type { RetentionPolicy } from '../../src/store/types.js';
import { hasRedis } from '../scale/support.js';
import { BIG, newEvent, redisFactory, SharedRedis, type StoreFactory } from './helpers.js';

const server = new SharedRedis();
afterAll(() => server.stop());

describe.runIf(hasRedis)('redis engine bookkeeping', () => {
  let factory: StoreFactory;
  const engines: RedisEngine[] = [];
  afterEach(async () => {
    await factory?.cleanup();
    await Promise.all(engines.splice(0).map((engine) => engine.close()));
  });

  async function open(retention: RetentionPolicy = BIG) {
    factory = redisFactory(server);
    return factory.create({ retention, now: Date.now });
  }

  const cli = async (...args: string[]): Promise<string> => (await server.get()).cli(...args).trim();
  const retainedBytes = (events: readonly StoredEvent[]): number =>
    events.reduce((sum, event) => sum + Buffer.byteLength(event.json), 0);

  it('keeps the byte counter equal to the retained lines through count, bytes and age trims', async () => {
    const store = await open({ maxCount: 5, maxAgeMs: 300, maxBytes: MIN_RETENTION_BYTES });
    const ref = { workspaceId: 1, sandboxId: 'sb-1' };
    const counter = async (): Promise<number> => Number(await cli('HGET', 'se:{1:sb-1}:meta', 'b'));
    const text = 'ü'.repeat(20_000);
    for (let i = 0; i < 8; i++) await store.append(newEvent('sb-1', 't', { i, text: i % 2 === 0 ? text : 'small' }));
    let kept = await store.history({ ...ref, limit: 100 });
    expect(kept.length).toBeLessThanOrEqual(5);
    expect(await counter()).toBe(retainedBytes(kept));
    // Past the age limit (Redis's clock, the same as this process's): the next append drops
    // every older event, subtracting their bytes.
    const last = kept[kept.length - 1]!;
    while (Date.now() <= last.id.ms + 300) await new Promise((resolve) => setTimeout(resolve, 20));
    const fresh = await store.append(newEvent('sb-1', 't', { fresh: true }));
    kept = await store.history({ ...ref, limit: 100 });
    expect(kept).toEqual([fresh]);
    expect(await counter()).toBe(retainedBytes(kept));
  });

  it('drops from the sandbox index a sandbox whose stream is gone, when listing', async () => {
    const store = await open();
    await store.append(newEvent('a'));
    await store.append(newEvent('b'));
    expect(await cli('ZCARD', 'se:ws:1:sandboxes')).toBe('2');
    await cli('DEL', 'se:{1:a}:events');
    expect((await store.listSandboxes!(1)).map((row) => row.sandboxId)).toEqual(['b']);
    expect(await cli('ZCARD', 'se:ws:1:sandboxes')).toBe('1');
    // Holding events again puts it back.
    await store.append(newEvent('a'));
    expect((await store.listSandboxes!('all')).map((row) => row.sandboxId)).toEqual(['a', 'b']);
  });

  it('keeps an index nobody lists near the sandboxes that hold events, by sampling on new ones', async () => {
    const store = await open();
    const direct = new Redis((await server.get()).url);
    try {
      for (let i = 0; i < 100; i++) {
        await store.append(newEvent(`gone-${i}`));
        await direct.del(`se:{1:gone-${i}}:events`);
      }
      // Each new member samples two and drops those whose stream is gone: without that, 100.
      expect(await direct.zcard('se:ws:1:sandboxes')).toBeLessThan(20);
    } finally {
      direct.disconnect();
    }
  });

  it('without the workspace keys: lists by SCAN, has no pattern resume, writes no workspace keys', async () => {
    factory = redisFactory(server);
    await factory.create({ retention: BIG, now: Date.now }); // empties the server
    const redis = await server.get();
    const engine = new RedisEngine({
      url: redis.url,
      retention: BIG,
      workspaceKeys: false,
      redis: { retryStrategy: () => 100 },
    });
    engines.push(engine);
    await engine.waitReady();
    const b = await engine.append(newEvent('b'));
    const a = await engine.append(newEvent('a'));
    const other = await engine.append(newEvent('z', 't', {}, 2));
    expect(await engine.listSandboxes(1)).toEqual([
      { workspaceId: 1, sandboxId: 'a', lastId: a.id },
      { workspaceId: 1, sandboxId: 'b', lastId: b.id },
    ]);
    expect((await engine.listSandboxes('all')).map((row) => row.lastId)).toEqual([a.id, b.id, other.id]);
    expect(engine.replayWorkspaceAfter).toBeUndefined();
    expect((await cli('KEYS', 'se:ws:*')).trim()).toBe('');
  });
});
