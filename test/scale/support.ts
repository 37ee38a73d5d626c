/**
 * Test support for the Redis engine (docs/scaling.md): a real redis-server per test file on a free port,
 * broker nodes in process (or as child processes of the compiled CLI), and a small RESP client.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { mintToken, type MintOptions } from '../../src/auth/mint.js';
import { RedisEngine } from '../../src/store/redis/redis-engine.js';
import { startServer, type RunningServer } from '../../src/daemon.js';
import type { RetentionPolicy } from '../../src/store/types.js';
import { BIN } from '../support/daemon.js';
import { replyCollector, resp } from '../support/raw-client.js';
import { requireTool } from '../support/tools.js';

export const hasRedis = requireTool('redis-server', 'redis-server');

export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface RedisProcess {
  port: number;
  url: string;
  /** SIGKILL, then start again on the same port (and the same data dir). */
  restart(downMs?: number): Promise<void>;
  kill(): Promise<void>;
  start(): Promise<void>;
  cli(...args: string[]): string;
  /**
   * Blocks Redis for `seconds` (DEBUG SLEEP, sent without waiting for its reply): commands sent
   * meanwhile queue up and then run in arrival order, which makes races between nodes exact.
   */
  block(seconds: number): Promise<void>;
  /**
   * SHUTDOWN (sent on its own connection, so it queues behind a `block`), and waits for the
   * process to exit: Redis writes its AOF and closes every client connection.
   */
  shutdown(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * `persistent`: AOF with fsync always, so acknowledged writes survive a kill. `extraArgs`: more
 * redis-server options (`--cluster-enabled yes`); `fixedPort`: a port chosen by the caller.
 */
export async function startRedis(
  persistent = false,
  extraArgs: string[] = [],
  fixedPort?: number,
): Promise<RedisProcess> {
  const port = fixedPort ?? (await freePort());
  const dir = mkdtempSync(path.join(tmpdir(), 'se-redis-'));
  let child: ChildProcess | undefined;
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--enable-debug-command',
    'local',
  ];
  args.push(...(persistent ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']));
  args.push(...extraArgs);
  const start = async (): Promise<void> => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    const deadline = Date.now() + 5_000;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.destroy();
          resolve(true);
        });
        socket.on('error', () => resolve(false));
      });
      if (ok && cli('PING') === 'PONG') return;
      if (Date.now() > deadline) throw new Error('redis-server did not start');
      await sleep(30);
    }
  };
  const kill = async (): Promise<void> => {
    const running = child;
    child = undefined;
    if (running === undefined || running.exitCode !== null) return;
    running.kill('SIGKILL');
    await once(running, 'exit');
  };
  const cli = (...command: string[]): string =>
    spawnSync('redis-cli', ['-p', String(port), ...command], { encoding: 'utf8' }).stdout.trim();
  await start();
  const blockers: net.Socket[] = [];
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    start,
    kill,
    cli,
    async block(seconds) {
      const socket = net.connect(port, '127.0.0.1');
      blockers.push(socket);
      socket.on('error', () => {});
      await once(socket, 'connect');
      socket.write(resp('DEBUG', 'SLEEP', String(seconds)));
      // The sleep's start has no event to wait on (Redis answers nothing while it sleeps): a
      // short pause lets Redis read the command first, so that what the test sends next queues.
      await sleep(30);
    },
    async shutdown() {
      const running = child;
      if (running === undefined || running.exitCode !== null) return;
      const exited = once(running, 'exit');
      const socket = net.connect(port, '127.0.0.1');
      blockers.push(socket);
      socket.on('error', () => {});
      await once(socket, 'connect');
      socket.write(resp('SHUTDOWN'));
      await exited;
      child = undefined;
    },
    async restart(downMs = 300) {
      await kill();
      await sleep(downMs);
      await start();
    },
    async stop() {
      for (const socket of blockers) socket.destroy();
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `predicate` (state outside this process, such as Redis's, has no event to wait on). */
export async function waitFor(predicate: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met');
    await sleep(20);
  }
}

export const RETENTION: RetentionPolicy = { maxCount: 10_000, maxAgeMs: 24 * 3600 * 1000 };

export interface Node {
  server: RunningServer;
  engine: RedisEngine;
  port: number;
  client(token?: Partial<Omit<MintOptions, 'secret'>>): Promise<RespClient>;
  close(): Promise<void>;
}

/**
 * One broker node in this process, sharing `secret` and Redis with the others. Its connections to
 * Redis come back `reconnectMs` after a loss.
 */
export async function startNode(
  redisUrl: string,
  secret: string,
  retention = RETENTION,
  http = false,
  reconnectMs = 100,
): Promise<Node> {
  const engine = new RedisEngine({
    url: redisUrl,
    retention,
    redis: { retryStrategy: () => reconnectMs },
  });
  // A cluster may still be settling from the previous test's fault (a failover, a replica's sync).
  await engine.waitReady(30_000);
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    auth: { secret },
    store: engine,
    httpPort: http ? 0 : undefined,
  });
  const clients: RespClient[] = [];
  return {
    server,
    engine,
    port: server.port,
    async client(token = {}) {
      const client = await RespClient.connect(server.port);
      clients.push(client);
      await client.auth(await mint(secret, token));
      return client;
    },
    async close() {
      for (const client of clients) client.close();
      await server.close();
    },
  };
}

export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function mint(secret: string, extra: Partial<Omit<MintOptions, 'secret'>> = {}): Promise<string> {
  return mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600, ...extra });
}

/** The exact RESP2 frame a subscriber of `channel` gets for an event. */
export function messageFrame(channel: string, json: string): string {
  return `*3\r\n$7\r\nmessage\r\n$${Buffer.byteLength(channel)}\r\n${channel}\r\n$${Buffer.byteLength(json)}\r\n${json}\r\n`;
}

/** A RESP2 client over TCP: keeps the raw bytes and the parsed replies. */
export class RespClient {
  raw = '';
  readonly replies: unknown[] = [];
  private readonly parser = replyCollector(this.replies);
  private taken = 0;
  closed = false;
  private wakers: (() => void)[] = [];

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.raw += chunk.toString('utf8');
      this.parser.execute(chunk);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static connect(port: number): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: '127.0.0.1', noDelay: true }, () => resolve(new RespClient(socket)));
      socket.once('error', reject);
    });
  }

  private wake(): void {
    const wakers = this.wakers;
    this.wakers = [];
    for (const wake of wakers) wake();
  }

  async until(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0 || this.closed)
        throw new Error(
          `timed out (closed=${this.closed}); ${this.replies.length} replies, the last ones: ${JSON.stringify(this.replies.slice(-12)).slice(0, 4000)}`,
        );
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.wakers.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  send(...args: string[]): void {
    this.socket.write(resp(...args));
  }

  /** The next reply not yet taken. */
  async next(timeoutMs?: number): Promise<unknown> {
    await this.until(() => this.replies.length > this.taken, timeoutMs);
    return this.replies[this.taken++];
  }

  async command(...args: string[]): Promise<unknown> {
    this.send(...args);
    return this.next();
  }

  async auth(token: string): Promise<void> {
    const reply = await this.command('AUTH', token);
    if (reply !== 'OK') throw new Error(`AUTH failed: ${String(reply)}`);
  }

  /** JSON payloads of every `message` push received so far. */
  messages(): { id: string; data: Record<string, unknown>; sandboxId: string; json: string }[] {
    const out = [];
    for (const reply of this.replies) {
      if (Array.isArray(reply) && reply[0] === 'message') {
        const json = reply[2] as string;
        out.push({ ...(JSON.parse(json) as { id: string; data: Record<string, unknown>; sandboxId: string }), json });
      }
    }
    return out;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Parses `<ms>-<seq>` into a comparable pair. */
export function idPair(id: string): [number, number] {
  const [ms, seq] = id.split('-').map(Number);
  return [ms!, seq!];
}

export function idLess(a: string, b: string): boolean {
  const [am, as] = idPair(a);
  const [bm, bs] = idPair(b);
  return am < bm || (am === bm && as < bs);
}

/** Publishes numbered events until stopped; remembers which were acknowledged. */
export function loadGenerator(client: RespClient, channel: string, tag: string, pauseMs = 0) {
  const acked: number[] = [];
  const failed: string[] = [];
  let stop = false;
  let n = 0;
  const done = (async () => {
    while (!stop && !client.closed) {
      const i = n++;
      let reply: unknown;
      try {
        reply = await client.command('PUBLISH', channel, JSON.stringify({ type: tag, data: { i } }));
      } catch {
        break; // the connection died with its node
      }
      if (typeof reply === 'number') acked.push(i);
      else failed.push(reply instanceof Error ? reply.message : String(reply));
      if (failed.length > 0) await sleep(5);
      // A paced publisher (the round: one event every 2 ms), else flat out.
      if (pauseMs > 0) await sleep(pauseMs);
    }
  })();
  return {
    acked,
    failed,
    async stop() {
      stop = true;
      await done;
    },
  };
}

/** Every retained event of a sandbox after `after`, paging through HISTORY's 1,000 limit. */
export async function fullHistory(
  client: RespClient,
  channel: string,
  after = '0-0',
  ...filters: string[]
): Promise<{ id: string; type: string; data: { i: number } }[]> {
  const out: { id: string; type: string; data: { i: number } }[] = [];
  for (;;) {
    const page = (await client.command('HISTORY', channel, 'AFTER', after, ...filters, 'LIMIT', '1000')) as string[];
    for (const json of page) out.push(JSON.parse(json) as { id: string; type: string; data: { i: number } });
    if (page.length < 1000) return out;
    after = out.at(-1)!.id;
  }
}

// ------------------------------------------------------------ Redis Cluster

/** A free port whose cluster bus port (port + 10000, Redis Cluster's default) is free too. */
async function freeClusterPort(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port > 55_535 || taken.has(port) || taken.has(port + 10_000)) continue;
    const bus = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      bus.once('error', () => resolve(false));
      bus.listen(port + 10_000, '127.0.0.1', () => resolve(true));
    });
    if (ok) await new Promise<void>((resolve) => bus.close(() => resolve()));
    if (ok) {
      taken.add(port);
      taken.add(port + 10_000);
      return port;
    }
  }
}

export interface RedisCluster {
  /** Every node, masters first (as `redis-cli --cluster create` assigned them). */
  nodes: RedisProcess[];
  /** `redis://127.0.0.1:<port>` of each node, as seeds. */
  urls: string[];
  /** The node's role now (`master` / `slave`), from ROLE. */
  role(node: RedisProcess): string;
  /** Waits until every node (or those of `among`) reports `cluster_state:ok`. */
  waitHealthy(timeoutMs?: number, among?: RedisProcess[]): Promise<void>;
  /** The masters now, by ROLE. */
  masters(): RedisProcess[];
  /** The replica of `master` now (by its CLUSTER NODES line). */
  replicaOf(master: RedisProcess): RedisProcess;
  stop(): Promise<void>;
}

/**
 * A real Redis Cluster: `masters` masters with one replica each, from `redis-server
 * --cluster-enabled yes` on free ports (AOF, fsync always), joined by `redis-cli --cluster
 * create`. Every process and directory goes with `stop()`.
 */
export async function startCluster(masters = 3): Promise<RedisCluster> {
  const taken = new Set<number>();
  const nodes: RedisProcess[] = [];
  try {
    for (let i = 0; i < masters * 2; i++) {
      const port = await freeClusterPort(taken);
      nodes.push(await startRedis(true, ['--cluster-enabled', 'yes', '--cluster-node-timeout', '2000'], port));
    }
    const create = spawnSync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...nodes.map((node) => `127.0.0.1:${node.port}`),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
  } catch (error) {
    for (const node of nodes) await node.stop();
    throw error;
  }
  const cluster: RedisCluster = {
    nodes,
    urls: nodes.map((node) => node.url),
    role: (node) => node.cli('ROLE').split('\n')[0]!.trim(),
    async waitHealthy(timeoutMs = 30_000, among = nodes) {
      await waitFor(() => among.every((node) => /cluster_state:ok/.test(node.cli('CLUSTER', 'INFO'))), timeoutMs);
    },
    masters: () => nodes.filter((node) => cluster.role(node) === 'master'),
    replicaOf(master) {
      const id = master.cli('CLUSTER', 'MYID');
      const replica = nodes.find(
        (node) =>
          node !== master &&
          node.cli('ROLE').split('\n')[0] === 'slave' &&
          node
            .cli('CLUSTER', 'NODES')
            .split('\n')
            .some((line) => line.includes('myself') && line.includes(id)),
      );
      if (replica === undefined) throw new Error(`no replica of ${master.port}`);
      return replica;
    },
    async stop() {
      for (const node of nodes) await node.stop();
    },
  };
  try {
    await cluster.waitHealthy();
    // Every replica in sync: CLUSTER SLOTS lists a replica only then, and the engine waits for
    // one (WAIT) only where the slot map lists one.
    await waitFor(
      () => cluster.masters().every((node) => /slave0:.*state=online/.test(node.cli('INFO', 'replication'))),
      30_000,
    );
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

// ------------------------------------------------------------ child-process nodes

/** Waits until a child node's output matches `pattern` (a log line is the event). */
export async function waitForOutput(node: ChildNode, pattern: RegExp, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(node.output())) {
    if (Date.now() > deadline || node.child.exitCode !== null) throw new Error(`no ${pattern} in: ${node.output()}`);
    await Promise.race([node.outputChanged(), sleep(200)]);
  }
}

/** Polls a child node's /readyz (its only outward sign of the engine's state) until 200. */
export async function waitReadyz(node: ChildNode, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 0;
  while (Date.now() < deadline) {
    last = (await fetch(`http://127.0.0.1:${node.httpPort}/readyz`)).status;
    if (last === 200) return;
    await sleep(50);
  }
  throw new Error(`/readyz stayed ${last}; the node said: ${node.output()}`);
}

export interface ChildNode {
  port: number;
  httpPort: number;
  child: ChildProcess;
  /** Everything the node wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves when its output next changes. */
  outputChanged(): Promise<void>;
  client(token?: Partial<Omit<MintOptions, 'secret'>>): Promise<RespClient>;
  kill(): Promise<void>;
}

/**
 * A node as a real process (the package's bin, so it can be SIGKILLed). Resolves once it
 * listens and, with `waitForEngine`, once its subscriber connection to Redis is ready.
 */
export async function spawnNode(redisUrl: string, secret: string, waitForEngine = true): Promise<ChildNode> {
  const httpPort = await freePort(); // 0 turns HTTP off in the CLI
  const child = spawn(
    process.execPath,
    [
      BIN,
      'serve',
      '--engine',
      redisUrl,
      '--port',
      '0',
      '--http-port',
      String(httpPort),
      '--jwt-secret',
      secret,
      '--log-level',
      'info',
      '--data-dir',
      tmpdir(),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node did not start: ${output}`)), 10_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /"port":(\d+).*"msg":"sandbox-events listening"/.exec(output);
      if (match !== null && (!waitForEngine || /redis: subscriber ready/.test(output))) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('exit', () => reject(new Error(`node exited: ${output}`)));
  });
  const clients: RespClient[] = [];
  return {
    port,
    httpPort,
    child,
    output: () => output,
    outputChanged: () =>
      new Promise<void>((resolve) => {
        const done = (): void => {
          child.stdout!.off('data', done);
          child.stderr!.off('data', done);
          child.off('exit', done);
          resolve();
        };
        child.stdout!.on('data', done);
        child.stderr!.on('data', done);
        child.on('exit', done);
      }),
    async client(token = {}) {
      const client = await RespClient.connect(port);
      clients.push(client);
      await client.auth(await mint(secret, token));
      return client;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    },
  };
}
