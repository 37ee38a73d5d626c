import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createPubSubClient, type GapInfo, type PubSubClient } from '../../src/client/index.js';
import { FaultProxy } from '../client/support/fault-proxy.js';
import { Collector, next } from '../client/support/helpers.js';
import { BIN, type Daemon, killDaemons } from '../support/daemon.js';
import { hasRedis, StoreDaemons } from '../support/engine.js';
import { cliToken } from '../support/e2e.js';
import { RawClient, resp } from '../support/raw-client.js';
import { requireTool } from '../support/tools.js';

/**
 * The package client's pattern subscriptions and `tail <pattern>` resume from a store-order
 * cursor (docs/client.md, "Exact resume"; docs/protocol.md, "Pattern resume", WITHCURSOR),
 * through the real daemon: a cut connection and a daemon restart (SQLite, and the Redis engine,
 * whose order per workspace lives in Redis) in the middle, events
 * published meanwhile across 3 sandboxes delivered once each, each sandbox in order; a trimmed
 * cursor reports its gap; the WITHCURSOR frames byte for byte, beside unchanged PSUBSCRIBE frames.
 */

const hasRedisCli = requireTool('redis-cli', 'redis-tools');
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  killDaemons();
});
const daemons = new StoreDaemons();
afterAll(() => daemons.cleanup());

/** A daemon on SQLite, or on the Redis engine (StoreDaemons.start), a workspace token and a publisher. */
async function start(extra: string[] = [], dataDir?: string, store: 'sqlite' | 'redis' = 'sqlite') {
  const { daemon, dir } = await daemons.start(store, extra, dataDir);
  const token = await cliToken(dir, '--workspace', '1');
  const publisher = new Redis({ port: daemon.port, host: '127.0.0.1', password: token });
  cleanups.push(() => publisher.disconnect());
  return { daemon, dir, token, publisher };
}

async function stop(daemon: Daemon): Promise<void> {
  daemon.child.kill('SIGTERM');
  await daemon.exited;
}

function patternClient(port: number, token: string): PubSubClient {
  const client = createPubSubClient({
    host: '127.0.0.1',
    port,
    accessToken: token,
    reconnectDelay: 20,
    maxReconnectDelay: 200,
    connectTimeout: 1_000,
  });
  cleanups.push(() => client.disconnect());
  return client;
}

async function proxyTo(port: number): Promise<FaultProxy> {
  const proxy = await FaultProxy.start(port);
  cleanups.push(() => proxy.close());
  return proxy;
}

/** Publishes `perSandbox` events to each of `sandboxes`, interleaved; returns their names in order. */
async function publishAcross(publisher: Redis, sandboxes: string[], perSandbox: number, tag: string) {
  const names: string[] = [];
  for (let round = 0; round < perSandbox; round += 1) {
    for (const sandbox of sandboxes) {
      const name = `${tag}-${sandbox}-${round}`;
      await publisher.publish(sandbox, JSON.stringify({ type: 'step', data: { name } }));
      names.push(name);
    }
  }
  return names;
}

const nameOf = (event: { data: Record<string, unknown> }): string => event.data.name as string;
const cursorOrder = (cursor: string | undefined): number => Number(cursor?.slice(1));

describe('the package client resumes a pattern (real daemon)', () => {
  it.each(hasRedis ? (['sqlite', 'redis'] as const) : (['sqlite'] as const))(
    'on %s, after a cut and a daemon restart: the 15 events of 3 sandboxes published meanwhile, once, in order, no gap',
    async (store) => {
      const first = await start([], undefined, store);
      const proxy = await proxyTo(first.daemon.port);
      const client = patternClient(proxy.port, first.token);
      const collected = new Collector(client);
      const cursors: (string | undefined)[] = [];
      client.on('event', (_event, meta) => cursors.push(meta.cursor));
      const gaps: GapInfo[] = [];
      client.on('gap', (gap) => gaps.push(gap));
      await client.psubscribe('p-*');
      await client.connect();
      expect(client.lastCursor('p-*')).toMatch(/^w[0-9]+$/);
      await first.publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'seen' } }));
      await collected.waitFor(1);

      // Away: the connection is cut and every attempt vanishes until the path heals.
      proxy.blackhole(true);
      proxy.cutAll();
      await next(client, 'reconnecting');
      const beforeRestart = await publishAcross(first.publisher, ['p-1', 'p-2', 'p-3'], 2, 'old');
      await first.publisher.publish('q-1', JSON.stringify({ type: 'step', data: { name: 'unmatched' } }));
      first.publisher.disconnect();
      await stop(first.daemon);
      const second = await start([], first.dir, store);
      proxy.retarget(second.daemon.port);
      const afterRestart = await publishAcross(second.publisher, ['p-1', 'p-2', 'p-3'], 3, 'new');
      proxy.blackhole(false);

      await collected.waitFor(16, 30_000);
      await second.publisher.publish('p-2', JSON.stringify({ type: 'step', data: { name: 'live' } }));
      await collected.waitFor(17);
      const names = collected.events.map(nameOf);
      // Store order over the workspace: each sandbox's events in their id order, nothing twice.
      expect(names).toEqual(['seen', ...beforeRestart, ...afterRestart, 'live']);
      expect(gaps).toEqual([]);
      const orders = cursors.map(cursorOrder);
      expect(orders.every((order, i) => i === 0 || order > orders[i - 1]!)).toBe(true);
      expect(client.lastCursor('p-*')).toBe(cursors.at(-1));
      expect(client.getStats().connects).toBeGreaterThanOrEqual(2);
    },
    90_000,
  ); // two daemon starts and a stop: slow on a loaded machine

  it('a cursor whose events were trimmed reports a trimmed gap, then delivers what is retained', async () => {
    const { daemon, publisher, token } = await start(['--retention-count', '3']);
    const proxy = await proxyTo(daemon.port);
    const client = patternClient(proxy.port, token);
    const collected = new Collector(client);
    await client.psubscribe('p-*');
    await client.connect();
    await publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'seen' } }));
    await collected.waitFor(1);
    const cursor = client.lastCursor('p-*')!;

    proxy.blackhole(true);
    proxy.cutAll();
    await next(client, 'reconnecting');
    await publishAcross(publisher, ['p-1', 'p-2'], 5, 'away');
    // SQLite applies the count limit just after the commit: wait until HISTORY shows it did.
    for (const sandbox of ['p-1', 'p-2']) {
      while (((await publisher.call('HISTORY', sandbox)) as unknown[]).length > 3);
    }
    const gap = next<[GapInfo]>(client, 'gap', 30_000);
    proxy.blackhole(false);
    expect((await gap)[0]).toMatchObject({ reason: 'trimmed', pattern: 'p-*', requestedId: cursor, earliestId: null });
    await collected.waitFor(7);
    expect(collected.events.map(nameOf)).toEqual([
      'seen',
      ...['away-p-1-2', 'away-p-2-2', 'away-p-1-3', 'away-p-2-3', 'away-p-1-4', 'away-p-2-4'],
    ]);
  });

  it('psubscribe(pattern, { from }) continues from a cursor kept by an earlier run', async () => {
    const { daemon, publisher, token } = await start();
    const earlier = patternClient(daemon.port, token);
    const seen = new Collector(earlier);
    const kept: string[] = [];
    earlier.on('event', (_event, meta) => kept.push(meta.cursor!));
    await earlier.psubscribe('p-*', { types: ['step'] });
    await earlier.connect();
    await publishAcross(publisher, ['p-1', 'p-2'], 1, 'a');
    await seen.waitFor(2);
    await earlier.disconnect();

    const missed = await publishAcross(publisher, ['p-1', 'p-2', 'p-3'], 2, 'b');
    await publisher.publish('p-3', JSON.stringify({ type: 'other', data: { name: 'filtered' } }));
    const later = patternClient(daemon.port, token);
    const collected = new Collector(later);
    await later.psubscribe('p-*', { from: kept.at(-1), types: ['step'] });
    await later.connect();
    await collected.waitFor(6);
    await publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'live' } }));
    await collected.waitFor(7);
    expect(collected.events.map(nameOf)).toEqual([...missed, 'live']);
  });
});

/** A running `sandbox-events tail`, its stdout lines and stderr. */
function tail(args: string[]) {
  const child: ChildProcess = spawn(process.execPath, [BIN, 'tail', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines: string[] = [];
  let stderr = '';
  let wake: () => void = () => {};
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    wake();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    wake();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const until = async (test: () => boolean): Promise<void> => {
    while (!test()) await new Promise<void>((resolve) => (wake = resolve));
  };
  return { child, lines, stderr: () => stderr, until, exited };
}

describe('tail <pattern>', () => {
  it('prints the events, says where it stopped, and --from <cursor> continues exactly there', async () => {
    const { daemon, publisher, token } = await start();
    const connection = ['--port', String(daemon.port), '--token', token, '--json'];
    const firstRun = tail(['p-*', ...connection]);
    await firstRun.until(() => firstRun.stderr().includes('following pattern p-*'));
    const shown = await publishAcross(publisher, ['p-1', 'p-2'], 1, 'first');
    await firstRun.until(() => firstRun.lines.length === 2);
    expect(firstRun.lines.map((line) => nameOf(JSON.parse(line)))).toEqual(shown);
    firstRun.child.kill('SIGINT');
    await firstRun.exited;
    const cursor = /continue with --from (w[0-9]+)/.exec(firstRun.stderr())?.[1];
    expect(cursor).toMatch(/^w[0-9]+$/);

    const missed = await publishAcross(publisher, ['p-1', 'p-2', 'p-3'], 1, 'missed');
    const secondRun = tail(['p-*', '--from', cursor!, ...connection]);
    await secondRun.until(() => secondRun.lines.length === 3);
    await publisher.publish('p-3', JSON.stringify({ type: 'step', data: { name: 'live' } }));
    await secondRun.until(() => secondRun.lines.length === 4);
    expect(secondRun.lines.map((line) => nameOf(JSON.parse(line)))).toEqual([...missed, 'live']);
    expect(secondRun.stderr()).not.toContain('gap');
    secondRun.child.kill('SIGINT');
    await secondRun.exited;
  });
});

describe('PRESUME ... WITHCURSOR on the wire', () => {
  it('adds the cursor as a fifth pmessage element (null when ephemeral); PSUBSCRIBE frames stay Redis’s', async () => {
    const { daemon, publisher, token } = await start(['--ephemeral-types', 'sandbox.metrics']);
    await publisher.publish('p-1', JSON.stringify({ type: 'step', data: { n: 1 } }));
    const [stored] = (await publisher.call('HISTORY', 'p-1')) as [string];

    const plain = await RawClient.connect(daemon.port);
    const resp2 = await RawClient.connect(daemon.port);
    const resp3 = await RawClient.connect(daemon.port);
    cleanups.push(() => {
      for (const raw of [plain, resp2, resp3]) raw.socket.destroy();
    });
    plain.send(resp('AUTH', token) + resp('PSUBSCRIBE', 'p-*'));
    expect(await plain.read('+OK\r\n*3\r\n$10\r\npsubscribe\r\n$3\r\np-*\r\n:1\r\n')).toBe(
      '+OK\r\n*3\r\n$10\r\npsubscribe\r\n$3\r\np-*\r\n:1\r\n',
    );
    resp2.send(resp('AUTH', token) + resp('PRESUME', 'p-*', 'w0', 'WITHCURSOR'));
    const replayed = `*5\r\n$8\r\npmessage\r\n$3\r\np-*\r\n$3\r\np-1\r\n$${stored.length}\r\n${stored}\r\n$2\r\nw1\r\n`;
    const confirmed = '+OK\r\n*6\r\n$7\r\npresume\r\n$3\r\np-*\r\n:1\r\n$8\r\ncomplete\r\n$-1\r\n$2\r\nw1\r\n';
    expect(await resp2.read(confirmed + replayed)).toBe(confirmed + replayed);
    resp3.send(resp('HELLO', '3', 'AUTH', 'default', token) + resp('PRESUME', 'p-*', '$', 'WITHCURSOR'));
    const confirmed3 = '>6\r\n$7\r\npresume\r\n$3\r\np-*\r\n:1\r\n$8\r\ncomplete\r\n_\r\n$2\r\nw1\r\n';
    const afterHello = (await resp3.waitFor((bytes) => bytes.toString('latin1').endsWith(confirmed3))).toString(
      'latin1',
    );
    expect(afterHello.endsWith(confirmed3)).toBe(true);
    await resp3.take(afterHello.length);

    await publisher.publish('p-2', JSON.stringify({ type: 'step', data: { n: 2 } }));
    await publisher.publish('p-2', JSON.stringify({ type: 'sandbox.metrics', data: { cpu: 1 } }));
    const history = (await publisher.call('HISTORY', 'p-2')) as string[];
    expect(history).toHaveLength(1); // the metrics event is ephemeral: live only, no cursor
    const live = history[0]!;
    const metrics =
      /\{"id":"[^"]+","sandboxId":"p-2","workspaceId":1,"type":"sandbox.metrics","data":\{"cpu":1\},"timestamp":[0-9]+\}/;

    const plainText = (await plain.waitFor((bytes) => bytes.toString().includes('cpu'))).toString('latin1');
    expect(
      plainText.startsWith(`*4\r\n$8\r\npmessage\r\n$3\r\np-*\r\n$3\r\np-2\r\n$${live.length}\r\n${live}\r\n*4\r\n`),
    ).toBe(true);
    const resp2Text = (await resp2.waitFor((bytes) => bytes.toString().includes('cpu'))).toString('latin1');
    expect(resp2Text).toMatch(/\r\n\$-1\r\n$/);
    expect(
      resp2Text.startsWith(
        `*5\r\n$8\r\npmessage\r\n$3\r\np-*\r\n$3\r\np-2\r\n$${live.length}\r\n${live}\r\n$2\r\nw2\r\n*5\r\n`,
      ),
    ).toBe(true);
    expect(metrics.test(resp2Text)).toBe(true);
    const resp3Text = (await resp3.waitFor((bytes) => bytes.toString().includes('cpu'))).toString('latin1');
    expect(
      resp3Text.startsWith(
        `>5\r\n$8\r\npmessage\r\n$3\r\np-*\r\n$3\r\np-2\r\n$${live.length}\r\n${live}\r\n$2\r\nw2\r\n>5\r\n`,
      ),
    ).toBe(true);
    expect(resp3Text).toMatch(/\r\n_\r\n$/);
  });

  it.skipIf(!hasRedisCli)('redis-cli -3 --show-pushes y prints each event with its cursor', async () => {
    const { daemon, publisher, token } = await start();
    await publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'before' } }));
    // stdbuf: redis-cli's stdout is a pipe here, which C buffers until exit.
    const child = spawn('stdbuf', [
      ...['-o0', 'redis-cli', '-3', '--show-pushes', 'y', '-p', String(daemon.port), '--no-auth-warning'],
      ...['-a', token, 'PRESUME', 'p-*', 'w0', 'WITHCURSOR'],
    ]);
    cleanups.push(() => void child.kill());
    let out = '';
    let wake: () => void = () => {};
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      wake();
    });
    const until = async (text: string): Promise<void> => {
      while (!out.includes(text)) await new Promise<void>((resolve) => (wake = resolve));
    };
    await until('"name":"before"');
    await publisher.publish('p-2', JSON.stringify({ type: 'step', data: { name: 'live' } }));
    await until('"name":"live"');
    await until('w2');
    expect(out).toContain('presume\np-*\n1\ncomplete\n\nw1\n');
    expect(out).toMatch(/pmessage\np-\*\np-1\n\{[^\n]*"name":"before"[^\n]*\}\nw1\n/);
    expect(out).toMatch(/pmessage\np-\*\np-2\n\{[^\n]*"name":"live"[^\n]*\}\nw2\n/);
  });
});
