/**
 * Gap-fill (docs/scaling.md, "Gap-fill"): a node whose subscriber connection to Redis was cut
 * brings its subscribers up to date from the streams before live delivery resumes, or, when
 * events were trimmed meanwhile, cuts them off with an error line so that they resume. Never a
 * silent hole. Real redis-server (AOF, fsync always), two nodes in this process, plain RESP2
 * subscribers.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  fullHistory,
  hasRedis,
  idLess,
  loadGenerator,
  newSecret,
  startNode,
  startRedis,
  type Node,
  type RedisProcess,
  type RespClient,
} from './support.js';

const LOST = /^ERR events lost: /;

/** Event ids of every `pmessage` push received so far. */
function patternIds(client: RespClient): string[] {
  return client.replies
    .filter((reply): reply is string[] => Array.isArray(reply) && reply[0] === 'pmessage')
    .map((reply) => (JSON.parse(reply[3]!) as { id: string }).id);
}

/**
 * What a subscriber that was there from the first event must show: every id of the history,
 * once, in order; or the lost-events error line (then what it got is in order, and its part
 * still retained is the start of the history).
 */
async function expectNoSilentHole(watcher: RespClient, history: string[]): Promise<'complete' | 'told'> {
  const got = watcher.messages().map((m) => m.id);
  for (let k = 1; k < got.length; k++) expect(idLess(got[k - 1]!, got[k]!)).toBe(true);
  const error = watcher.replies.find((reply) => reply instanceof Error) as Error | undefined;
  if (error !== undefined) {
    expect(error.message).toMatch(LOST);
    const retained = new Set(history);
    const firstRetained = got.findIndex((id) => retained.has(id));
    if (firstRetained >= 0) expect(got.slice(firstRetained)).toEqual(history.slice(0, got.length - firstRetained));
    return 'told';
  }
  expect(got).toEqual(history);
  return 'complete';
}

describe.skipIf(!hasRedis)('gap-fill after the subscriber connection to Redis comes back', () => {
  let redis: RedisProcess;
  const secret = newSecret();
  let nodes: Node[] = [];

  beforeAll(async () => {
    redis = await startRedis(true);
  });
  afterEach(async () => {
    for (const node of nodes) await node.close();
    nodes = [];
  });
  afterAll(async () => {
    await redis?.stop();
  });

  async function twoNodes(retention?: { maxCount: number; maxAgeMs: number }): Promise<[Node, Node]> {
    const a = await startNode(redis.url, secret, retention);
    const b = await startNode(redis.url, secret, retention);
    nodes.push(a, b);
    return [a, b];
  }

  /** Waits until every acknowledged event is at the watcher, or it was cut off. */
  async function settled(watcher: RespClient, channel: string, node: Node): Promise<string[]> {
    const history = (await fullHistory(await node.client(), channel)).map((event) => event.id);
    // Either way the assertions that follow tell what happened; a timeout here is not the verdict.
    await watcher.until(() => watcher.closed || watcher.messages().length >= history.length).catch(() => {});
    return history;
  }

  it('a subscriber and a pattern subscriber at B get every event once, in order, across a killed subscriber connection', async () => {
    const [a, b] = await twoNodes();
    const watcher = await b.client();
    await watcher.command('SUBSCRIBE', 'gf-sub');
    const patternWatcher = await b.client();
    await patternWatcher.command('PSUBSCRIBE', 'gf-pat-*');
    const generators = [
      loadGenerator(await a.client(), 'gf-sub', 'g', 2),
      loadGenerator(await a.client(), 'gf-pat-1', 'g', 2),
    ];
    await watcher.until(() => watcher.messages().length >= 20);
    await patternWatcher.until(() => patternIds(patternWatcher).length >= 20);
    const fillsBefore = b.engine.stats.gapFills;
    // Redis drops every subscriber connection (A's and B's): messages published until they are
    // back are lost to them, while A goes on publishing (its command connection stays).
    redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await b.engine.waitReady();
    const acked = generators[0]!.acked.length;
    try {
      await watcher.until(() => generators[0]!.acked.length >= acked + 20);
    } catch (e) {
      console.log(
        'DEBUG',
        acked,
        generators.map((g) => [g.acked.length, g.failed.slice(0, 3)]),
        b.engine.stats,
        a.engine.stats,
      );
      throw e;
    }
    for (const generator of generators) await generator.stop();
    expect(b.engine.stats.gapFills).toBeGreaterThan(fillsBefore);
    const history = await settled(watcher, 'gf-sub', a);
    expect(await expectNoSilentHole(watcher, history)).toBe('complete');
    const patternHistory = (await fullHistory(await a.client(), 'gf-pat-1')).map((event) => event.id);
    await patternWatcher.until(() => patternIds(patternWatcher).length >= patternHistory.length);
    expect(patternIds(patternWatcher)).toEqual(patternHistory);
  });

  it('cuts a subscriber off with an error line when events were trimmed before it could be filled', async () => {
    const retention = { maxCount: 3, maxAgeMs: 3_600_000 };
    const a = await startNode(redis.url, secret, retention);
    // B's connections come back a second after a loss, however loaded the machine.
    const b = await startNode(redis.url, secret, retention, false, 1_000);
    nodes.push(a, b);
    const watcher = await b.client();
    await watcher.command('SUBSCRIBE', 'gf-trim');
    const generator = loadGenerator(await a.client(), 'gf-trim', 'g', 1);
    await watcher.until(() => watcher.messages().length >= 5);
    // B's subscriber connection is cut; A publishes one event a millisecond, so well past the
    // retention count of 3 before B's reconnect can read what it missed.
    redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await watcher.until(() => watcher.closed);
    await generator.stop();
    expect(b.engine.stats.gapsReported).toBeGreaterThan(0);
    const history = (await fullHistory(await a.client(), 'gf-trim')).map((event) => event.id);
    expect(await expectNoSilentHole(watcher, history)).toBe('told');
  });

  /**
   * One round as a user met it: A publishes one event every 2 ms, a plain RESP2 subscriber
   * listens at B; Redis is stalled (DEBUG SLEEP), shut down (SHUTDOWN queued behind the sleep:
   * it writes the AOF) and started again. Every acknowledged event must be in the history, and
   * the subscriber must have every event once, in order, or have been told.
   */
  async function restartRound(a: Node, b: Node, channel: string, stallSeconds: number): Promise<'complete' | 'told'> {
    const watcher = await b.client();
    await watcher.command('SUBSCRIBE', channel);
    const generator = loadGenerator(await a.client(), channel, 'round', 2);
    await watcher.until(() => watcher.messages().length >= 10);
    await redis.block(stallSeconds);
    await redis.shutdown();
    await redis.start();
    await Promise.all([a.engine.waitReady(), b.engine.waitReady()]);
    const acked = generator.acked.length;
    await watcher.until(() => watcher.closed || generator.acked.length >= acked + 10);
    await generator.stop();
    const history = await settled(watcher, channel, a);
    const stored = new Set((await fullHistory(await a.client(), channel)).map((event) => event.data.i));
    expect(generator.acked.filter((i) => !stored.has(i))).toEqual([]);
    const outcome = await expectNoSilentHole(watcher, history);
    watcher.close();
    return outcome;
  }

  it('three rounds of DEBUG SLEEP 2, SHUTDOWN and restart: nothing acknowledged lost, no silent hole', async () => {
    const [a, b] = await twoNodes();
    for (let round = 0; round < 3; round++) {
      expect(await restartRound(a, b, `gf-round-${round}`, 2)).toBe('complete');
    }
  }, 60_000);

  it('stress: 20 restart rounds (short stalls), every one without loss or silent hole', async () => {
    const [a, b] = await twoNodes();
    const outcomes: string[] = [];
    for (let round = 0; round < 20; round++) outcomes.push(await restartRound(a, b, `gf-stress-${round}`, 0.2));
    // Nothing is trimmed at this retention: every round is filled, none needs telling.
    expect(outcomes).toEqual(Array(20).fill('complete'));
  }, 120_000);
});
