import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NewEvent, StoredEvent } from '../../src/event/event.js';
import { formatEventId } from '../../src/event/event.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { RedisEngine } from '../../src/store/redis/redis-engine.js';
import { SqliteStore, type SqliteStoreOptions } from '../../src/store/sqlite-store.js';
import type { EventStore, RetentionPolicy } from '../../src/store/types.js';
import { startCluster, startRedis, type RedisCluster, type RedisProcess } from '../scale/support.js';
import { eventData } from '../support/event-data.js';

export const T0 = 1_700_000_000_000;

/** A clock the test moves by hand. */
export class Clock {
  constructor(public t = T0) {}
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

export type TestStore = EventStore & { prune(): Promise<number> };

export interface StoreFactory {
  kind: 'memory' | 'sqlite' | 'redis';
  /**
   * `injected`: ids and timestamps come from the `now` given to `create` (the embedded stores).
   * `server`: from Redis's clock, which a test cannot set (docs/scaling.md, "Differences from the
   * embedded stores").
   */
  clock: 'injected' | 'server';
  /** A new, empty store (timers off, so retention runs only on prune()). */
  create(options: { retention: RetentionPolicy; now: () => number }): Promise<TestStore>;
  /** Closes every store and removes every file this factory made. */
  cleanup(): Promise<void>;
}

export function memoryFactory(): StoreFactory {
  const stores: TestStore[] = [];
  return {
    kind: 'memory',
    clock: 'injected',
    async create({ retention, now }) {
      const store = new MemoryStore({ retention, now, pruneIntervalMs: 0 });
      stores.push(store);
      return store;
    },
    async cleanup() {
      await Promise.all(stores.splice(0).map((s) => s.close()));
    },
  };
}

export function sqliteFactory(extra: Partial<SqliteStoreOptions> = {}): StoreFactory {
  const stores: TestStore[] = [];
  const dirs: string[] = [];
  return {
    kind: 'sqlite',
    clock: 'injected',
    async create({ retention, now }) {
      const dir = await tempDir();
      dirs.push(dir);
      const store = SqliteStore.open({ path: join(dir, 'events.db'), retention, now, pruneIntervalMs: 0, ...extra });
      stores.push(store);
      return store;
    },
    async cleanup() {
      await Promise.all(stores.splice(0).map((s) => s.close()));
      await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
    },
  };
}

/** One redis-server for a whole test file, started on first use on a free port. */
export class SharedRedis {
  private started: Promise<RedisProcess> | undefined;
  get(): Promise<RedisProcess> {
    this.started ??= startRedis();
    return this.started;
  }
  async stop(): Promise<void> {
    const started = this.started;
    this.started = undefined;
    if (started !== undefined) await (await started).stop();
  }
}

/** One Redis Cluster (3 masters, a replica each) for a whole test file, started on first use. */
export class SharedCluster {
  private started: Promise<RedisCluster> | undefined;
  get(): Promise<RedisCluster> {
    this.started ??= startCluster(3);
    return this.started;
  }
  async stop(): Promise<void> {
    const started = this.started;
    this.started = undefined;
    if (started !== undefined) await (await started).stop();
  }
}

/**
 * The Redis engine on a real Redis Cluster, given every node as a seed, every master emptied
 * (FLUSHALL) for each new store; otherwise as redisFactory.
 */
export function clusterFactory(shared: SharedCluster): StoreFactory {
  const stores: TestStore[] = [];
  return {
    kind: 'redis',
    clock: 'server',
    async create({ retention }) {
      const cluster = await shared.get();
      for (const master of cluster.masters()) master.cli('FLUSHALL');
      const url = `redis://${cluster.nodes.map((node) => `127.0.0.1:${node.port}`).join(',')}`;
      const engine = new RedisEngine({ url, retention, redis: { retryStrategy: () => 100 } });
      await engine.waitReady(30_000);
      if (!engine.isCluster) throw new Error('the engine did not take the seeds for a cluster');
      const store = Object.assign(engine, { prune: async (): Promise<number> => 0 });
      stores.push(store);
      return store;
    },
    async cleanup() {
      await Promise.all(stores.splice(0).map((s) => s.close()));
    },
  };
}

/**
 * The Redis engine on a real redis-server, emptied (FLUSHALL) for each new store. `now` is not
 * used: ids are Redis's. `prune()` has nothing to do: the append script applies retention on
 * every write and the replay script the age limit on every read (docs/scaling.md, "Retention").
 */
export function redisFactory(server: SharedRedis): StoreFactory {
  const stores: TestStore[] = [];
  return {
    kind: 'redis',
    clock: 'server',
    async create({ retention }) {
      const redis = await server.get();
      redis.cli('FLUSHALL');
      const engine = new RedisEngine({ url: redis.url, retention, redis: { retryStrategy: () => 100 } });
      await engine.waitReady();
      const store = Object.assign(engine, { prune: async (): Promise<number> => 0 });
      stores.push(store);
      return store;
    },
    async cleanup() {
      await Promise.all(stores.splice(0).map((s) => s.close()));
    },
  };
}

export function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'sandbox-events-store-'));
}

export function newEvent(sandboxId: string, type = 'test.event', data: object = {}, workspaceId = 1): NewEvent {
  return { workspaceId, sandboxId, type, ...eventData(JSON.stringify(data)) };
}

export function ids(events: readonly StoredEvent[]): string[] {
  return events.map((e) => formatEventId(e.id));
}

export const BIG: RetentionPolicy = { maxCount: 1_000_000, maxAgeMs: 365 * 24 * 3_600_000 };
