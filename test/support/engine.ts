/**
 * The Redis engine under the real daemon (docs/scaling.md): a redis-server for a test file,
 * started on first use on a free port, and the daemon arguments that use it. A daemon with an
 * engine listens at once but serves commands that need the engine only once connected
 * (docs/scaling.md, "Readiness"), so `spawnEngineDaemon` waits for `/readyz` to say so.
 */
import { SharedRedis } from '../store/helpers.js';
import { hasRedis } from '../scale/support.js';
import { type Daemon, spawnDaemon } from './daemon.js';
import { freePort } from './e2e.js';

export { hasRedis, SharedRedis };

/** The stores an e2e test runs on: the embedded ones, and the Redis engine where redis-server is. */
export const STORES_AND_ENGINE: readonly ('memory' | 'sqlite' | 'redis')[] = hasRedis
  ? ['memory', 'sqlite', 'redis']
  : ['memory', 'sqlite'];

/** `--store <store>`, or for 'redis' `--engine <url of the shared server>`. */
export async function storeArgs(store: 'memory' | 'sqlite' | 'redis', redis: SharedRedis): Promise<string[]> {
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
