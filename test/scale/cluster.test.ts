/**
 * Redis Cluster (docs/scaling.md, "Redis Cluster"): a real cluster of 3 masters with a replica
 * each, started by the test. Nodes given one master's address use the whole cluster: commands
 * by slot, one subscriber connection per master (SSUBSCRIBE), histories the same everywhere.
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectionOptions, openClusterCommands, quitConnection } from '../../src/store/redis/connection.js';
import { sandboxChannel } from '../../src/store/redis/keys.js';
import { slotOf } from '../../src/store/redis/slots.js';
import {
  fullHistory,
  hasRedis,
  idLess,
  newSecret,
  spawnNode,
  startCluster,
  waitFor,
  waitReadyz,
  type ChildNode,
  type RedisCluster,
} from './support.js';

describe.skipIf(!hasRedis)('Redis Cluster', () => {
  let cluster: RedisCluster;
  const secret = newSecret();
  const nodes: ChildNode[] = [];

  beforeAll(async () => {
    cluster = await startCluster(3);
  }, 90_000);
  afterEach(async () => {
    // Each test starts its own nodes: none left running to load the next.
    for (const node of nodes.splice(0)) await node.kill();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('is a healthy cluster of 3 masters and 3 replicas', () => {
    const roles = cluster.nodes.map((node) => cluster.role(node)).sort();
    expect(roles).toEqual(['master', 'master', 'master', 'slave', 'slave', 'slave']);
    const info = cluster.nodes[0]!.cli('CLUSTER', 'INFO');
    expect(info).toMatch(/cluster_slots_assigned:16384/);
    expect(info).toMatch(/cluster_known_nodes:6/);
  });

  it('computes the slot of a name as Redis does (CLUSTER KEYSLOT)', () => {
    const names = [
      'foo',
      '{user1000}.following',
      'a{}b',
      'x{y}z{w}',
      '{',
      sandboxChannel({ workspaceId: 7, sandboxId: 'sb-é-日本' }),
      sandboxChannel({ workspaceId: 1, sandboxId: 'a}b{c' }),
    ];
    for (const name of names) expect(slotOf(name)).toBe(Number(cluster.nodes[0]!.cli('CLUSTER', 'KEYSLOT', name)));
  });

  it('the commands client is ready at its first connect: its ready check meets no node connection half made', async () => {
    // ioredis's ready check sends CLUSTER INFO to a sampled master right after reading the slot
    // map, and with the offline queue off fails on a connection still connecting, then starts
    // over: node connections must be made on first use only, never at once when the map is read.
    const master = cluster.masters()[0]!;
    const commands = openClusterCommands([master.url], connectionOptions({ retryStrategy: () => 100 }));
    try {
      const seenAtRefresh: string[] = [];
      commands.once('refresh', () => {
        for (const node of commands.nodes('master')) seenAtRefresh.push(node.status);
      });
      let closes = 0;
      commands.on('close', () => closes++);
      await once(commands, 'ready');
      expect(seenAtRefresh).toHaveLength(3);
      expect(seenAtRefresh.filter((status) => status !== 'wait' && status !== 'ready')).toEqual([]);
      expect(closes).toBe(0);
    } finally {
      await quitConnection(commands);
    }
  });

  it('two nodes given one master address serve 12 sandboxes over all masters: 120 events across, the same histories', async () => {
    const master = cluster.nodes.find((node) => cluster.role(node) === 'master')!;
    const a = await spawnNode(master.url, secret, false);
    nodes.push(a);
    const b = await spawnNode(master.url, secret, false);
    nodes.push(b);
    await Promise.all([waitReadyz(a), waitReadyz(b)]);
    const sandboxes = Array.from({ length: 12 }, (_, i) => `sb-${i}`);
    // Spread over the three masters' slot ranges (redis-cli --cluster create: 0-5460, 5461-10922, 10923-16383).
    const thirds = new Set(
      sandboxes.map((id) => Math.min(2, Math.floor(slotOf(sandboxChannel({ workspaceId: 1, sandboxId: id })) / 5461))),
    );
    expect(thirds.size).toBe(3);

    const subscriber = await b.client();
    subscriber.send('SUBSCRIBE', ...sandboxes);
    await subscriber.until(() => subscriber.replies.length >= 12);
    const publisher = await a.client();
    for (let i = 0; i < 10; i++) {
      for (const id of sandboxes) {
        const reply = await publisher.command('PUBLISH', id, JSON.stringify({ type: 'n', data: { i } }));
        expect(typeof reply).toBe('number');
      }
    }
    await subscriber.until(() => subscriber.messages().length >= 120);
    const received = subscriber.messages();
    expect(received).toHaveLength(120);
    for (const id of sandboxes) {
      const mine = received.filter((message) => message.sandboxId === id);
      expect(mine.map((message) => message.data.i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
    const readerA = await a.client();
    const readerB = await b.client();
    for (const id of sandboxes) {
      const fromA = await fullHistory(readerA, id);
      const fromB = await fullHistory(readerB, id);
      expect(fromA.map((event) => event.data.i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect(fromB).toEqual(fromA);
      // What B's subscriber got is exactly the history.
      expect(received.filter((message) => message.sandboxId === id).map((message) => message.id)).toEqual(
        fromA.map((event) => event.id),
      );
    }
    // Each sandbox's stream lives on the master of its slot only.
    const masters = cluster.nodes.filter((node) => cluster.role(node) === 'master');
    const holders = new Set<number>();
    for (const id of sandboxes) {
      const key = `se:{1:${id}}:events`;
      const on = masters.filter((node) => node.cli('EXISTS', key) === '1').map((node) => node.port);
      expect(on).toHaveLength(1);
      holders.add(on[0]!);
    }
    expect(holders.size).toBe(3);
  }, 60_000);

  it('acknowledges publishes once a replica has them, one WAIT covering the appends answered before it', async () => {
    const master = cluster.nodes.find((node) => cluster.role(node) === 'master')!;
    const a = await spawnNode(master.url, secret, false);
    nodes.push(a);
    await waitReadyz(a);
    const waits = (): number => {
      let calls = 0;
      for (const node of cluster.nodes.filter((n) => cluster.role(n) === 'master')) {
        calls += Number(/cmdstat_wait:calls=(\d+)/.exec(node.cli('INFO', 'commandstats'))?.[1] ?? '0');
      }
      return calls;
    };
    const before = waits();
    const publisher = await a.client();
    // 300 publishes in flight at once, over sandboxes of every master.
    const count = 300;
    for (let i = 0; i < count; i++)
      publisher.send('PUBLISH', `wt-${i % 12}`, JSON.stringify({ type: 'w', data: { i } }));
    // The first reply is AUTH's.
    await publisher.until(() => publisher.replies.length >= count + 1, 30_000);
    expect(publisher.replies.slice(1).filter((reply) => typeof reply !== 'number')).toEqual([]);
    const used = waits() - before;
    expect(used).toBeGreaterThan(0);
    expect(used).toBeLessThan(count);
    // Each acknowledged event is on the replica of its master too.
    const reader = await a.client();
    for (let k = 0; k < 12; k++) {
      const key = `se:{1:wt-${k}}:events`;
      const owner = cluster.masters().find((node) => node.cli('EXISTS', key) === '1')!;
      const replica = cluster.replicaOf(owner);
      const onReplica = spawnSync('redis-cli', ['-p', String(replica.port)], {
        input: `READONLY\nXLEN ${key}\n`,
        encoding: 'utf8',
      })
        .stdout.trim()
        .split('\n')
        .at(-1);
      expect(Number(onReplica)).toBe((await fullHistory(reader, `wt-${k}`)).length);
    }
  }, 60_000);

  /** PUBLISH calls Redis ran on every master so far (scripts' calls included, INFO commandstats). */
  function publishCalls(): number {
    let calls = 0;
    for (const node of cluster.nodes.filter((n) => cluster.role(n) === 'master')) {
      calls += Number(/cmdstat_publish:calls=(\d+)/.exec(node.cli('INFO', 'commandstats'))?.[1] ?? '0');
    }
    return calls;
  }

  /** Members of a sorted set of the pattern registry, read from the master that holds it. */
  function registryMembers(key: string): string[] {
    for (const master of cluster.masters()) {
      const members = master.cli('ZRANGE', key, '0', '-1');
      if (!/^(MOVED|ASK) /.test(members)) return members === '' ? [] : members.split('\n');
    }
    throw new Error(`no master answered ZRANGE ${key}`);
  }

  it('publishes on workspace channels only while some node holds a pattern, and the pattern misses nothing', async () => {
    const master = cluster.nodes.find((node) => cluster.role(node) === 'master')!;
    const seenBefore = new Set(registryMembers('se:{patterns}:seen'));
    const a = await spawnNode(master.url, secret, false);
    nodes.push(a);
    const b = await spawnNode(master.url, secret, false);
    nodes.push(b);
    await Promise.all([waitReadyz(a), waitReadyz(b)]);
    // Until a node has read the registry it puts every event on its workspace channel
    // (docs/scaling.md): wait for both to have reported a read.
    await waitFor(
      () => registryMembers('se:{patterns}:seen').filter((node) => !seenBefore.has(node)).length >= 2,
      10_000,
    );
    const sandboxes = Array.from({ length: 6 }, (_, i) => `pt-${i}`);
    const publisher = await a.client();
    const publishRound = async (round: number): Promise<void> => {
      for (const id of sandboxes) {
        expect(typeof (await publisher.command('PUBLISH', id, JSON.stringify({ type: 'p', data: { i: round } })))).toBe(
          'number',
        );
      }
    };
    // Nobody holds a pattern: no plain PUBLISH at all (it would go to every node of the cluster).
    const before = publishCalls();
    await publishRound(0);
    expect(publishCalls()).toBe(before);

    // A pattern at B, and at once events at A, which does not know of it yet: they reach the
    // pattern all the same (filled from the streams once every node has read the registration).
    const watcher = await b.client();
    expect(await watcher.command('PSUBSCRIBE', 'pt-*')).toEqual(['psubscribe', 'pt-*', 1]);
    await publishRound(1);
    const patternMessages = (): { sandboxId: string; i: number; id: string }[] =>
      watcher.replies
        .filter((reply): reply is string[] => Array.isArray(reply) && reply[0] === 'pmessage')
        .map((reply) => {
          const event = JSON.parse(reply[3]!) as { id: string; sandboxId: string; data: { i: number } };
          return { sandboxId: event.sandboxId, i: event.data.i, id: event.id };
        });
    await watcher.until(() => patternMessages().filter((m) => m.i === 1).length >= 6, 15_000);
    // Once A knows of the pattern, its events go on the workspace channel and arrive live.
    const withPattern = publishCalls();
    await publishRound(2);
    await watcher.until(() => patternMessages().filter((m) => m.i === 2).length >= 6, 15_000);
    expect(publishCalls()).toBeGreaterThan(withPattern);
    // Every event since the pattern, once, in order (events from just before it may come too:
    // the fill allows for clocks of nodes and masters to differ, docs/scaling.md).
    const got = patternMessages();
    expect(new Set(got.map((m) => `${m.sandboxId}/${m.id}`)).size).toBe(got.length);
    for (const id of sandboxes) {
      const mine = got.filter((m) => m.sandboxId === id);
      for (let k = 1; k < mine.length; k++) expect(idLess(mine[k - 1]!.id, mine[k]!.id)).toBe(true);
      expect(mine.map((m) => m.i).filter((i) => i >= 1)).toEqual([1, 2]);
    }
  }, 60_000);

  it('a node watching sandboxes by channel and by pattern delivers each event once to each, in order', async () => {
    const master = cluster.nodes.find((node) => cluster.role(node) === 'master')!;
    const a = await spawnNode(master.url, secret, false);
    nodes.push(a);
    const b = await spawnNode(master.url, secret, false);
    nodes.push(b);
    await Promise.all([waitReadyz(a), waitReadyz(b)]);
    const sandboxes = Array.from({ length: 6 }, (_, i) => `pd-${i}`);
    const channels = await b.client();
    channels.send('SUBSCRIBE', ...sandboxes);
    await channels.until(() => channels.replies.length >= 1 + sandboxes.length);
    const patterns = await b.client();
    expect(await patterns.command('PSUBSCRIBE', 'pd-*')).toEqual(['psubscribe', 'pd-*', 1]);
    const publisher = await a.client();
    for (let round = 0; round < 5; round++) {
      for (const id of sandboxes) {
        const reply = await publisher.command('PUBLISH', id, JSON.stringify({ type: 'd', data: { i: round } }));
        expect(typeof reply).toBe('number');
      }
    }
    const patternEvents = (): { sandboxId: string; i: number }[] =>
      patterns.replies
        .filter((reply): reply is string[] => Array.isArray(reply) && reply[0] === 'pmessage')
        .map((reply) => {
          const event = JSON.parse(reply[3]!) as { sandboxId: string; data: { i: number } };
          return { sandboxId: event.sandboxId, i: event.data.i };
        });
    await channels.until(() => channels.messages().length >= 30, 15_000);
    await patterns.until(() => patternEvents().length >= 30, 15_000);
    // Events of pd-0 until A publishes them on the workspace channel too (it has read B's pattern
    // registration): from then on each arrives at B by both routes.
    const before = publishCalls();
    let last = 4;
    while (publishCalls() === before) {
      last += 1;
      if (last > 200) throw new Error('the workspace channel was never published');
      await publisher.command('PUBLISH', 'pd-0', JSON.stringify({ type: 'd', data: { i: last } }));
    }
    for (let k = 0; k < 5; k++) {
      last += 1;
      await publisher.command('PUBLISH', 'pd-0', JSON.stringify({ type: 'd', data: { i: last } }));
    }
    const total = 30 + last - 4;
    await channels.until(() => channels.messages().length >= total, 15_000);
    await patterns.until(() => patternEvents().length >= total, 15_000);
    for (const id of sandboxes) {
      const expected = Array.from({ length: id === 'pd-0' ? last + 1 : 5 }, (_, i) => i);
      expect(
        channels
          .messages()
          .filter((m) => m.sandboxId === id)
          .map((m) => m.data.i),
      ).toEqual(expected);
      expect(
        patternEvents()
          .filter((m) => m.sandboxId === id)
          .map((m) => m.i),
      ).toEqual(expected);
    }
  }, 60_000);
});
