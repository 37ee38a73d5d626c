/**
 * The engine's Redis connections and the error every failed Redis call becomes.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { SandboxEventsError } from '../../errors.js';
import {
  APPEND_SCRIPT,
  HISTORY_IDS_SCRIPT,
  LIST_SCRIPT,
  REPLAY_SCRIPT,
  STREAM_LAST_SCRIPT,
  WORKSPACE_REPLAY_SCRIPT,
} from './scripts.js';

/** The engine's counters (RedisEngine.stats), each part owned by the module that counts it. */
export interface RedisEngineStats {
  appended: number;
  received: number;
  duplicatesDropped: number;
  fences: number;
  resubscribes: number;
  gapFills: number;
  gapFilled: number;
  gapsReported: number;
}

/** The engine's scripts (ioredis `defineCommand`: EVALSHA, EVAL on NOSCRIPT). */
interface EngineScripts {
  /** `keys`: how many of `args` are keys (2, or 6 with the workspace keys). Resolves to [id, order or '']. */
  seAppend(keys: number, ...args: string[]): Promise<[string, string]>;
  seReplay(stream: string, meta: string, ...args: string[]): Promise<unknown[]>;
  seHistoryIds(stream: string, ...args: string[]): Promise<string[]>;
  seList(index: string, ...args: string[]): Promise<[string, string, string[]]>;
  seStreamLast(stream: string): Promise<[number, string]>;
  seWorkspaceReplay(order: string, orders: string, ...args: string[]): Promise<[string, string, string, unknown[]]>;
}

/** The commands connection of a standalone Redis, with the engine's scripts. */
export interface RedisWithScripts extends Redis, EngineScripts {}

/** The commands client of a Redis Cluster (routes each command by its key's slot), with the scripts. */
export interface ClusterWithScripts extends Cluster, EngineScripts {}

/** What the reads and the gap-fill send their commands on. */
export type ScriptedRedis = RedisWithScripts | ClusterWithScripts;

/** What a failed Redis call is reported as: `STORE_UNAVAILABLE`, the cause kept. */
export function unavailable(error: unknown): SandboxEventsError {
  if (error instanceof SandboxEventsError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new SandboxEventsError('STORE_UNAVAILABLE', `the Redis engine is unavailable: ${detail}`, { cause: error });
}

/** Options shared by both connections; `extra` (tests: retry timing) overrides them. */
export function connectionOptions(extra: RedisOptions | undefined): RedisOptions {
  return {
    // Never queue a command while disconnected: a publish fails at once with a clear error
    // instead of being acknowledged later, or never (docs/scaling.md, "Loss of Redis").
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000),
    lazyConnect: false,
    ...extra,
  };
}

export function openCommandConnection(url: string, common: RedisOptions): RedisWithScripts {
  const commands = new Redis(url, { ...common, connectionName: 'sandbox-events:commands' }) as RedisWithScripts;
  defineScripts(commands);
  return commands;
}

/** How often the cluster client asks for the slot map besides on MOVED and on lost nodes. */
const SLOTS_REFRESH_MS = 1_000;

/**
 * The commands client of a Redis Cluster from its seed addresses: ioredis `Cluster` reads the
 * slot map (CLUSTER SLOTS), sends each command to its slot's master and follows MOVED / ASK.
 * Like the standalone connection, it never queues a command while a node is unreachable.
 */
export function openClusterCommands(seeds: string[], common: RedisOptions): ClusterWithScripts {
  const options: ClusterOptions = {
    enableOfflineQueue: false,
    enableReadyCheck: true,
    scaleReads: 'master',
    slotsRefreshInterval: SLOTS_REFRESH_MS,
    // A failover takes the cluster's node timeout plus an election: the client keeps trying.
    clusterRetryStrategy: (attempt) => Math.min(100 * attempt, 2_000),
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    // ioredis makes a node's connection on its first command; its ready check (CLUSTER INFO to
    // a sampled master as soon as the slot map is read) fails, with the offline queue off, on a
    // connection still being made, and the client starts over. The standalone connection's
    // `lazyConnect: false` would connect every node at once when the map is read.
    redisOptions: { ...common, lazyConnect: true, connectionName: 'sandbox-events:commands' },
  };
  const commands = new Cluster(seeds, options) as ClusterWithScripts;
  defineScripts(commands);
  return commands;
}

function defineScripts(commands: Redis | Cluster): void {
  commands.defineCommand('seAppend', { lua: APPEND_SCRIPT });
  commands.defineCommand('seReplay', { numberOfKeys: 2, lua: REPLAY_SCRIPT });
  commands.defineCommand('seHistoryIds', { numberOfKeys: 1, lua: HISTORY_IDS_SCRIPT });
  commands.defineCommand('seList', { numberOfKeys: 1, lua: LIST_SCRIPT });
  commands.defineCommand('seStreamLast', { numberOfKeys: 1, lua: STREAM_LAST_SCRIPT });
  commands.defineCommand('seWorkspaceReplay', { numberOfKeys: 2, lua: WORKSPACE_REPLAY_SCRIPT });
}

/** QUIT when connected (replies in flight still arrive), else just drop the socket. */
export async function quitConnection(redis: Redis | Cluster): Promise<void> {
  try {
    if (redis.status === 'ready') await redis.quit();
    else redis.disconnect();
  } catch {
    redis.disconnect();
  }
}

/**
 * A cluster node's `host:port`, the form CLUSTER SLOTS / ioredis's slot map name a master by
 * (`cluster.slots[slot][0]`).
 */
export function nodeAddress(node: { options: { host?: string; port?: number } }): string {
  return `${node.options.host}:${node.options.port}`;
}

/** The cluster client's own connection to `master` (`host:port`), the one its commands to it use. */
export function masterConnection(cluster: Cluster, master: string): Redis | undefined {
  return cluster.nodes('master').find((node) => nodeAddress(node) === master);
}
