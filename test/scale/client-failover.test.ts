/**
 * docs/scaling.md, "Clients across nodes": a client with `hosts: [A, B]` whose node A is SIGKILLed
 * mid-stream moves to B and resumes there from its last id, ending up with exactly the
 * published ids (nodes sharing a Redis engine issue the same ids). Plus the host rotation
 * itself (round robin, wrapping around; the first connect() trying each node once) against
 * in-process brokers, which needs no Redis.
 *
 * spawnNode runs the compiled bin: `npm run build` first.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createPubSubClient,
  EventsPubSubError,
  type GapInfo,
  type PubSubClient,
  type PubSubClientConfig,
  type ReconnectInfo,
} from '../../src/client/index.js';
import { startTestServer, type TestServer } from '../support/test-server.js';
import { next } from '../client/support/helpers.js';
import {
  freePort,
  hasRedis,
  mint,
  newSecret,
  spawnNode,
  startNode,
  startRedis,
  type ChildNode,
  type Node,
  type RedisProcess,
} from './support.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function client(config: PubSubClientConfig): PubSubClient {
  const made = createPubSubClient({ reconnectDelay: 20, maxReconnectDelay: 100, ...config });
  cleanups.push(() => made.disconnect());
  return made;
}

/** Destroys every connection a broker holds (the server side of a network fault). */
function dropConnections(target: TestServer): void {
  for (const connection of target.server.context.connections) connection.destroy();
}

describe('hosts: round robin', () => {
  it('moves to the next host after each loss and wraps around to the first', async () => {
    const brokers = await Promise.all([startTestServer(), startTestServer(), startTestServer()]);
    for (const broker of brokers) cleanups.push(() => broker.close());
    // No subscriptions: the brokers do not share a store, only the rotation is under test. Each
    // has its own secret, so the token function mints for the node being tried (`sub.port`).
    const sub: PubSubClient = client({
      host: '203.0.113.1', // ignored: `hosts` takes precedence
      hosts: brokers.map((broker) => ({ host: '127.0.0.1', port: broker.port })),
      accessToken: () => brokers.find((broker) => broker.port === sub.port)!.token(),
    });
    await sub.connect();
    expect(sub.port).toBe(brokers[0]!.port);
    const visited: number[] = [sub.port];
    const announced: ReconnectInfo[] = [];
    sub.on('reconnecting', (info) => announced.push(info));
    for (const step of [0, 1, 2, 0]) {
      const connected = next(sub, 'connect');
      dropConnections(brokers[step]!);
      await connected;
      visited.push(sub.port);
    }
    const ports = brokers.map((broker) => broker.port);
    expect(visited).toEqual([ports[0], ports[1], ports[2], ports[0], ports[1]]);
    expect(announced.map((info) => info.port)).toEqual([ports[1], ports[2], ports[0], ports[1]]);
    expect(announced.every((info) => info.host === '127.0.0.1')).toBe(true);
    expect(sub.getStats().reconnects).toBe(4);
  });

  it('tries each host once on the first connect(), and rejects only when all of them fail', async () => {
    const broker = await startTestServer();
    cleanups.push(() => broker.close());
    const [dead1, dead2] = [await freePort(), await freePort()];
    const sub = client({
      hosts: [
        { host: '127.0.0.1', port: dead1 },
        { host: '127.0.0.1', port: dead2 },
        { host: '127.0.0.1', port: broker.port },
      ],
      accessToken: await broker.token(),
      sandboxId: 'sb-1',
    });
    await sub.connect();
    expect(sub.port).toBe(broker.port);
    expect(sub.getStats().reconnects).toBe(0);

    const nowhere = client({
      hosts: [
        { host: '127.0.0.1', port: dead1 },
        { host: '127.0.0.1', port: dead2 },
      ],
      accessToken: await broker.token(),
    });
    await expect(nowhere.connect()).rejects.toMatchObject({ code: 'CONNECTION_FAILED' });
    expect(nowhere.getStatus()).toBe('failed');
    expect(nowhere.port).toBe(dead2);
  });

  it('keeps host/port working when hosts is absent or empty, and rejects a malformed hosts entry', () => {
    const single = createPubSubClient({ host: '10.0.0.1', port: 7000, accessToken: 't' });
    expect([single.host, single.port]).toEqual(['10.0.0.1', 7000]);
    const empty = createPubSubClient({ host: '10.0.0.2', port: 7001, hosts: [], accessToken: 't' });
    expect([empty.host, empty.port]).toEqual(['10.0.0.2', 7001]);
    const defaulted = createPubSubClient({ hosts: [{ host: 'a.example' }], accessToken: 't' });
    expect(defaulted.host).toBe('a.example');
    expect(defaulted.port).toBe(Number(process.env.COMPUTESDK_PUBSUB_PORT) || 6380);
    expect(() => createPubSubClient({ hosts: [{ host: '' }], accessToken: 't' })).toThrow(EventsPubSubError);
    expect(() => createPubSubClient({ hosts: [{ host: 'a', port: 0 }], accessToken: 't' })).toThrow(/hosts\[0\]\.port/);
  });
});

describe.skipIf(!hasRedis)('hosts: failover between nodes sharing a Redis engine', () => {
  let redis: RedisProcess;
  const secret = newSecret();
  const nodes: Node[] = [];
  const children: ChildNode[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const child of children) await child.kill();
    for (const node of nodes) await node.close();
    await redis?.stop();
  });

  it('a client on SIGKILLed node A moves to B and gets exactly the published ids, in order, no gap', async () => {
    const a = await spawnNode(redis.url, secret);
    children.push(a);
    const b = await startNode(redis.url, secret);
    nodes.push(b);
    const token = await mint(secret);
    const channel = 'sb-client-failover';
    const total = 3_000;

    const sub = client({
      hosts: [
        { host: '127.0.0.1', port: a.port },
        { host: '127.0.0.1', port: b.port },
      ],
      accessToken: token,
      sandboxId: channel,
    });
    const ids: string[] = [];
    const gaps: GapInfo[] = [];
    const reconnects: ReconnectInfo[] = [];
    let atLoss = -1;
    sub.on('disconnect', () => (atLoss = ids.length));
    sub.on('event', (event) => ids.push(event.id));
    sub.on('gap', (gap) => gaps.push(gap));
    sub.on('reconnecting', (info) => reconnects.push(info));
    await sub.connect();
    expect(sub.port).toBe(a.port);

    const pub = client({ host: '127.0.0.1', port: b.port, accessToken: token });
    await pub.connect();
    // Flat out: 50 publishes in flight at any time.
    let sent = 0;
    const publishing = Promise.all(
      Array.from({ length: 50 }, async () => {
        while (sent < total) {
          const i = sent++;
          await pub.publish(channel, 'tick', { i });
        }
      }),
    );
    let killed = false;
    const killing = (async () => {
      while (ids.length < 500 && sent < total) await new Promise((resolve) => setTimeout(resolve, 2));
      await a.kill();
      killed = true;
    })();
    await Promise.all([publishing, killing]);
    expect(killed).toBe(true);

    // Every stored id, in order, read at B (HISTORY pages of 1,000).
    const expected: string[] = [];
    for (let after = '0-0'; ; ) {
      const page = await pub.history(channel, { after, limit: 1000 });
      expected.push(...page.map((event) => event.id));
      if (page.length < 1000) break;
      after = page.at(-1)!.id;
    }
    expect(expected).toHaveLength(total);

    const deadline = Date.now() + 10_000;
    while (ids.length < total && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    await new Promise((resolve) => setTimeout(resolve, 100)); // nothing more may come
    expect(sub.port).toBe(b.port);
    expect(reconnects.length).toBeGreaterThanOrEqual(1);
    expect(reconnects[0]!.port).toBe(b.port);
    expect(atLoss).toBeGreaterThan(0); // the kill did land mid-stream
    expect(atLoss).toBeLessThan(total);
    expect(gaps).toEqual([]);
    expect(ids).toEqual(expected);
    expect(sub.getStats().connects).toBe(2);
    expect(sub.lastEventId(channel)).toBe(expected.at(-1));
  }, 20_000);
});
