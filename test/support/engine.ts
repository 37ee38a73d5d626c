/**
 * The Redis engine under the real daemon (docs/scaling.md): a redis-server for a test file,
 * started on first use on a free port, and the daemon arguments that use it. A daemon with an
 * engine listens at once but serves commands that need the engine only once connected
 * (docs/scaling.md, "Readiness"), so `spawnStoreDaemon` waits for `/readyz` to say so.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SharedRedis } from '../store/helpers.js';
import { hasRedis } from '../scale/support.js';
import { type Daemon, spawnDaemon } from './daemon.js';
import { freePort } from './e2e.js';

export { hasRedis, SharedRedis };

/** The stores an e2e test runs on: the embedded ones, and the Redis engine where redis-server is. */
export type StoreKind = 'memory' | 'sqlite' | 'redis';

export const STORES_AND_ENGINE: readonly StoreKind[] = hasRedis ? ['memory', 'sqlite', 'redis'] : ['memory', 'sqlite'];

/** `--store <store>`, or for 'redis' `--engine <url of the shared server>`. */
export async function storeArgs(store: StoreKind, redis: SharedRedis): Promise<string[]> {
  if (store !== 'redis') return ['--store', store];
  return ['--engine', (await redis.get()).url];
}

/** Resolves once the daemon's `/readyz` answers 200 (its engine connected and subscribed). */
export async function whenReady(daemon: Daemon, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${daemon.httpPort}/readyz`).then(
      (response) => response.status,
      () => 0,
    );
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error(`the daemon was not ready within ${timeoutMs} ms: ${daemon.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * `spawnDaemon`, then, with an engine (`--engine` in `args`), waits until it is ready (on an
 * HTTP port of its own for /readyz unless `args` gives one).
 */
export async function spawnStoreDaemon(args: string[]): Promise<Daemon> {
  if (!args.includes('--engine')) return spawnDaemon(args);
  const http = args.includes('--http-port') ? [] : ['--http-port', String(await freePort())];
  const daemon = await spawnDaemon([...args, ...http]);
  await whenReady(daemon);
  return daemon;
}

export interface StoreDaemon {
  daemon: Daemon;
  /** Its `--data-dir` (where its token secret lives): give it to `start` again for a restart. */
  dir: string;
  httpPort: number;
}

/**
 * The daemons a test file starts on its stores, and what they share: the file's redis-server
 * (started on first use) and their data directories. `cleanup()` (afterAll) stops the one and
 * removes the others; `killDaemons()` kills the daemons.
 */
export class StoreDaemons {
  readonly redis = new SharedRedis();
  private readonly dirs: string[] = [];

  /**
   * `sandbox-events serve` on `store` with `extra` arguments, on free ports, once ready. Without
   * `dataDir`, on a new data directory and, for the engine, an emptied Redis; with it, on that
   * directory and Redis as it is: the same data again (a restart, or a second node).
   */
  async start(store: StoreKind, extra: string[] = [], dataDir?: string): Promise<StoreDaemon> {
    let dir = dataDir;
    if (dir === undefined) {
      dir = await mkdtemp(path.join(tmpdir(), `sandbox-events-${store}-`));
      this.dirs.push(dir);
      if (store === 'redis') (await this.redis.get()).cli('FLUSHALL');
    }
    const httpPort = await freePort();
    const daemon = await spawnStoreDaemon([
      ...['--port', '0', '--http-port', String(httpPort), '--data-dir', dir],
      ...(await storeArgs(store, this.redis)),
      ...extra,
    ]);
    daemon.httpPort ??= httpPort;
    return { daemon, dir, httpPort };
  }

  async cleanup(): Promise<void> {
    await this.redis.stop();
    await Promise.all(this.dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  }
}
