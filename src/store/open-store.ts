import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { RedisEngine, type RedisEngineOptions } from './redis/redis-engine.js';
import { machineMemory } from '../config.js';
import { SandboxEventsError } from '../errors.js';
import { MemoryStore } from './memory-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { EventStore, RetentionPolicy } from './types.js';

export interface OpenStoreOptions {
  /** Where `sqlite` keeps `events.db`; created when missing. */
  dataDir: string;
  retention: RetentionPolicy;
  /** SQLite only: 'normal' survives the process dying, 'full' power loss too (SqliteStoreOptions). */
  synchronous?: 'normal' | 'full';
  /** Memory only: bytes of events kept over all sandboxes (MemoryStoreOptions.maxTotalBytes). */
  memoryMaxBytes?: number;
  /** SQLite only: called after each commit was announced (SqliteStoreOptions.afterCommit). */
  afterCommit?: () => void;
}

/** `--retention-bytes` by default: 64 MiB of events per sandbox (about 1,000 of the largest). */
export const DEFAULT_RETENTION_BYTES = 64 * 1024 * 1024;

/** `--memory-store-max` by default: a quarter of the machine's memory (or of the container's limit). */
export function defaultMemoryStoreMax(): number {
  return Math.floor(machineMemory() / 4);
}

/**
 * Opens the store named by `--store`: `memory`, `sqlite` (`<dataDir>/events.db`) or
 * `sqlite:<path>`.
 */
export function openStore(spec: string, options: OpenStoreOptions): EventStore {
  if (spec === 'memory') {
    return new MemoryStore({
      retention: options.retention,
      ...(options.memoryMaxBytes === undefined ? {} : { maxTotalBytes: options.memoryMaxBytes }),
    });
  }
  let path: string;
  if (spec === 'sqlite') {
    path = join(options.dataDir, 'events.db');
  } else if (spec.startsWith('sqlite:') && spec.length > 'sqlite:'.length) {
    path = spec.slice('sqlite:'.length);
  } else {
    throw new SandboxEventsError(
      'INVALID_ARGUMENT',
      `unknown store "${spec}": use "memory", "sqlite" or "sqlite:<path>"`,
    );
  }
  try {
    mkdirSync(dirname(path), { recursive: true });
  } catch (error) {
    throw new SandboxEventsError(
      'STORE_UNAVAILABLE',
      `cannot create the directory of the event store ${path}: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  return SqliteStore.open({
    path,
    retention: options.retention,
    synchronous: options.synchronous,
    ...(options.afterCommit === undefined ? {} : { afterCommit: options.afterCommit }),
  });
}

/**
 * Opens the shared engine named by `--engine` (docs/scaling.md): `redis://host:port[/db]` or
 * `rediss://...`. Connecting goes on in the background; until it succeeds publishes fail with
 * STORE_UNAVAILABLE and /readyz says not ready.
 */
export function openEngine(
  spec: string,
  options: Pick<RedisEngineOptions, 'retention' | 'onStatus' | 'onRefused'>,
): EventStore {
  if (!/^rediss?:\/\/[^/\s]+/.test(spec)) {
    throw new SandboxEventsError('INVALID_ARGUMENT', `unknown engine "${spec}": use redis://host:port`);
  }
  if ((options.retention.rules ?? []).length > 0) {
    // The engine would prune by count over all types, so metrics would still evict lifecycle
    // events: refused rather than silently ignored (docs/scaling.md).
    throw new SandboxEventsError(
      'INVALID_ARGUMENT',
      '--retention rules are not supported with --engine redis yet: use --store memory or sqlite',
    );
  }
  return new RedisEngine({ url: spec, ...options });
}
