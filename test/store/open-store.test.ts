import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/store/memory-store.js';
import { openStore } from '../../src/store/open-store.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import type { EventStore } from '../../src/store/types.js';
import { BIG, newEvent, tempDir } from './helpers.js';

describe('openStore', () => {
  let dir: string;
  const stores: EventStore[] = [];

  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await rm(dir, { recursive: true, force: true });
  });

  const open = (spec: string, dataDir = dir): EventStore => {
    const store = openStore(spec, { dataDir, retention: BIG });
    stores.push(store);
    return store;
  };

  it('opens a memory store', () => {
    const store = open('memory');
    expect(store).toBeInstanceOf(MemoryStore);
    expect(store.kind).toBe('memory');
  });

  it('opens <dataDir>/events.db for "sqlite", creating the directory', async () => {
    const dataDir = join(dir, 'nested', 'data');
    const store = open('sqlite', dataDir);
    expect(store).toBeInstanceOf(SqliteStore);
    expect(store.kind).toBe('sqlite');
    await store.append(newEvent('sb-1'));
    expect(existsSync(join(dataDir, 'events.db'))).toBe(true);
  });

  it('opens the given file for "sqlite:<path>"', async () => {
    const path = join(dir, 'elsewhere', 'my.db');
    const store = open(`sqlite:${path}`);
    await store.append(newEvent('sb-1'));
    expect(existsSync(path)).toBe(true);
    expect(existsSync(join(dir, 'events.db'))).toBe(false);
  });

  it.each(['', 'redis', 'sqlite:', 'SQLITE', 'memory:x', ' memory'])('refuses %j with INVALID_ARGUMENT', (spec) => {
    expect(() => open(spec)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
