/**
 * Faults of a Redis Cluster under load (docs/scaling.md, "Redis Cluster", "Gap-fill"): a master
 * stalled (DEBUG SLEEP), shut down and restarted, failed over by hand (CLUSTER FAILOVER on its
 * replica), and killed (its replica promoted). A publisher at node A writes to sandboxes on every
 * master, a plain RESP2 subscriber at node B watches them. After each fault: every acknowledged
 * event is in the history, and the subscriber got every event once, in order, or was told. One
 * real cluster (3 masters, a replica each, AOF fsync always) for the whole file.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sandboxChannel } from '../../src/store/redis/keys.js';
import { slotOf } from '../../src/store/redis/slots.js';
import {
  fullHistory,
  hasRedis,
  idLess,
  loadGenerator,
  newSecret,
  sleep,
  startCluster,
  startNode,
  waitFor,
  type Node,
  type RedisCluster,
  type RedisProcess,
  type RespClient,
} from './support.js';

const LOST = /^ERR events lost: /;

/** Two sandboxes per master's slot range (redis-cli --cluster create: thirds of 16,384). */
function sandboxesOnEveryMaster(prefix: string): string[] {
  const perThird: string[][] = [[], [], []];
  for (let i = 0; perThird.some((list) => list.length < 2); i++) {
    const id = `${prefix}-${i}`;
    const third = Math.min(2, Math.floor(slotOf(sandboxChannel({ workspaceId: 1, sandboxId: id })) / 5461));
    if (perThird[third]!.length < 2) perThird[third]!.push(id);
  }
  return perThird.flat();
}

describe.skipIf(!hasRedis)('Redis Cluster faults under load', () => {
  let cluster: RedisCluster;
  const secret = newSecret();
  let nodes: Node[] = [];
  /** Redis nodes a test stopped, started again after it (they rejoin as replicas). */
  let down: RedisProcess[] = [];
  let rounds = 0;

  beforeAll(async () => {
    cluster = await startCluster(3);
  }, 90_000);
  afterEach(async () => {
    for (const node of nodes) await node.close();
    for (const node of nodes) await node.engine.close();
    nodes = [];
    // Every node back, and the cluster whole, for the next fault.
    for (const node of down) await node.start();
    down = [];
    await cluster.waitHealthy(60_000);
    // Every replica in sync again, so that appends are acknowledged once on a replica (WAIT).
    await waitFor(
      () => cluster.masters().every((node) => /slave0:.*state=online/.test(node.cli('INFO', 'replication'))),
      60_000,
    );
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  /**
   * Starts A and B on one master's address, a subscriber at B on every sandbox and a paced
   * publisher per sandbox at A; runs `fault`, lets the load go on, stops it, and checks.
   */
  async function round(
    fault: () => Promise<void>,
  ): Promise<{ told: number; acked: number; failed: number; errors: string[]; fills: number; filled: number }> {
    // New sandboxes each round: a history holds only this round's events.
    const sandboxes = sandboxesOnEveryMaster(`sb-r${++rounds}`);
    const seed = cluster.masters()[0]!;
    const a = await startNode(seed.url, secret);
    const b = await startNode(seed.url, secret);
    nodes.push(a, b);
    const { gapFills, gapFilled } = b.engine.stats;
    const watcher = await b.client();
    watcher.send('SUBSCRIBE', ...sandboxes);
    await watcher.until(() => watcher.replies.length >= sandboxes.length);
    const loads = await Promise.all(sandboxes.map(async (id) => loadGenerator(await a.client(), id, 'load', 2)));
    await waitAcked(loads, 20);
    await fault();
    // Load goes on after the fault until every sandbox has new acknowledged events.
    const ackedAtFault = loads.map((load) => load.acked.length);
    await waitAcked(loads, 20, ackedAtFault);
    for (const load of loads) await load.stop();

    const reader = await a.client();
    let told = 0;
    for (const [k, id] of sandboxes.entries()) {
      const history = await fullHistory(reader, id);
      const numbers = new Set(history.map((event) => event.data.i));
      // Every acknowledged event is in the history, once.
      for (const i of loads[k]!.acked) expect(numbers.has(i)).toBe(true);
      expect(numbers.size).toBe(history.length);
      if (
        (await expectNoSilentHole(
          watcher,
          id,
          history.map((event) => event.id),
        )) === 'told'
      )
        told += 1;
    }
    return {
      told,
      acked: loads.reduce((sum, load) => sum + load.acked.length, 0),
      failed: loads.reduce((sum, load) => sum + load.failed.length, 0),
      errors: [...new Set(loads.flatMap((load) => load.failed))],
      fills: b.engine.stats.gapFills - gapFills,
      filled: b.engine.stats.gapFilled - gapFilled,
    };
  }

  it('a subscriber connection cut before it carried anything: what was published meanwhile is filled', async () => {
    // The fill of a sandbox with nothing delivered at B starts where B's engine first connected
    // (docs/scaling.md, "Gap-fill"); for the connections made when the slot map was first read,
    // before the cluster was checked, that point must be known too.
    const seed = cluster.masters()[0]!;
    const a = await startNode(seed.url, secret);
    // B's connections come back a second after a loss: A publishes in that second.
    const b = await startNode(seed.url, secret, undefined, false, 1_000);
    nodes.push(a, b);
    const id = sandboxesOnEveryMaster(`sb-cut${++rounds}`)[0]!;
    const watcher = await b.client();
    expect(await watcher.command('SUBSCRIBE', id)).toEqual(['subscribe', id, 1]);
    await waitFor(() => b.engine.isReady());
    // Every node's subscriber connections cut (B's come back in a second), nothing delivered yet.
    for (const master of cluster.masters()) master.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
    const publisher = await a.client();
    for (let i = 0; i < 3; i++) {
      expect(typeof (await publisher.command('PUBLISH', id, JSON.stringify({ type: 'cut', data: { i } })))).toBe(
        'number',
      );
    }
    await watcher.until(() => watcher.messages().length >= 3, 15_000);
    const history = await fullHistory(publisher, id);
    expect(watcher.messages().map((message) => message.id)).toEqual(history.map((event) => event.id));
    expect(history.map((event) => event.data.i)).toEqual([0, 1, 2]);
  });

  it('a master stalled by DEBUG SLEEP 2: nothing acknowledged lost, the subscriber gets everything', async () => {
    const result = await round(async () => {
      await cluster.masters()[1]!.block(2);
    });
    expect(result.told).toBe(0);
  }, 90_000);

  it('a master shut down and restarted at once: nothing acknowledged lost, no silent hole', async () => {
    const result = await round(async () => {
      const master = cluster.masters()[1]!;
      await master.shutdown();
      await master.start();
    });
    // B's connection to that master came back: its sandboxes were brought up to date from the streams.
    expect(result.fills).toBeGreaterThan(0);
  }, 90_000);

  it('CLUSTER FAILOVER on a replica: nothing acknowledged lost, the subscriber gets everything', async () => {
    const result = await round(async () => {
      const master = cluster.masters()[2]!;
      const replica = cluster.replicaOf(master);
      expect(replica.cli('CLUSTER', 'FAILOVER')).toBe('OK');
      await waitRole(cluster, replica, 'master');
    });
    // The routes moved to the promoted replica's connection, which filled the meantime.
    expect(result.fills).toBeGreaterThan(0);
    expect(result.told).toBe(0);
  }, 90_000);

  it('a master killed, its replica promoted: nothing acknowledged lost, no silent hole', async () => {
    const result = await round(async () => {
      const master = cluster.masters()[0]!;
      const replica = cluster.replicaOf(master);
      await master.kill();
      down.push(master);
      await waitRole(cluster, replica, 'master', 30_000);
      await cluster.waitHealthy(
        30_000,
        cluster.nodes.filter((node) => node !== master),
      );
    });
    // Publishes to its slots failed meanwhile, clearly (never acknowledged, then lost).
    expect(result.failed).toBeGreaterThan(0);
    for (const error of result.errors) expect(error).toMatch(/^ERR store unavailable: |^LOADING /);
    expect(result.fills).toBeGreaterThan(0);
  }, 120_000);
});

async function waitRole(cluster: RedisCluster, node: RedisProcess, role: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (cluster.role(node) !== role) {
    if (Date.now() > deadline) throw new Error(`${node.port} is not ${role}`);
    await sleep(50);
  }
}

/** Waits until every load has `count` more acknowledged events than `from`. */
async function waitAcked(
  loads: { acked: number[] }[],
  count: number,
  from: number[] = loads.map(() => 0),
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (loads.some((load, k) => load.acked.length < from[k]! + count)) {
    if (Date.now() > deadline) throw new Error(`load stalled: ${loads.map((load) => load.acked.length).join(',')}`);
    await sleep(20);
  }
}

/**
 * What the subscriber shows for one sandbox: every id of the history, once, in order (waited
 * for), or the lost-events error line (then what it got is in order).
 */
async function expectNoSilentHole(
  watcher: RespClient,
  sandboxId: string,
  history: string[],
): Promise<'complete' | 'told'> {
  const got = (): string[] =>
    watcher
      .messages()
      .filter((m) => m.sandboxId === sandboxId)
      .map((m) => m.id);
  const error = (): Error | undefined => watcher.replies.find((reply) => reply instanceof Error) as Error | undefined;
  await watcher.until(() => error() !== undefined || got().length >= history.length, 20_000).catch(() => {});
  const ids = got();
  for (let k = 1; k < ids.length; k++) expect(idLess(ids[k - 1]!, ids[k]!)).toBe(true);
  if (error() !== undefined || watcher.closed) {
    expect(error()?.message).toMatch(LOST);
    return 'told';
  }
  expect(ids).toEqual(history);
  return 'complete';
}
