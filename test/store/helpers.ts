import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NewEvent, StoredEvent } from '../../src/event/event.js';
import { formatEventId } from '../../src/event/event.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { SqliteStore, type SqliteStoreOptions } from '../../src/store/sqlite-store.js';
import type { EventStore, RetentionPolicy } from '../../src/store/types.js';

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
  kind: 'memory' | 'sqlite';
  /** A new, empty store (timers off, so retention runs only on prune()). */
  create(options: { retention: RetentionPolicy; now: () => number }): Promise<TestStore>;
  /** Closes every store and removes every file this factory made. */
  cleanup(): Promise<void>;
}

export function memoryFactory(): StoreFactory {
  const stores: TestStore[] = [];
  return {
    kind: 'memory',
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

export function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'sandbox-events-store-'));
}

export function newEvent(sandboxId: string, type = 'test.event', data: object = {}, workspaceId = 1): NewEvent {
  return { workspaceId, sandboxId, type, dataJson: JSON.stringify(data) };
}

export function ids(events: readonly StoredEvent[]): string[] {
  return events.map((e) => formatEventId(e.id));
}

export const BIG: RetentionPolicy = { maxCount: 1_000_000, maxAgeMs: 365 * 24 * 3_600_000 };
