/**
 * docs/scaling.md: several nodes sharing one Redis behave as one broker. A real redis-server, three
 * nodes in this process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  hasRedis,
  idLess,
  messageFrame,
  newSecret,
  sleep,
  startNode,
  startRedis,
  type Node,
  type RedisProcess,
  waitFor,
} from './support.js';

describe.skipIf(!hasRedis)('three nodes sharing one Redis', () => {
  let redis: RedisProcess;
  const secret = newSecret();
  let a: Node;
  let b: Node;
  let c: Node;

  beforeAll(async () => {
    redis = await startRedis();
    [a, b, c] = await Promise.all([
      startNode(redis.url, secret),
      startNode(redis.url, secret),
      startNode(redis.url, secret),
    ]);
  });
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close(), c?.close()]);
    await redis?.stop();
  });

  it('delivers an event published at A to subscribers at A, B and C, byte for byte', async () => {
    const subs = await Promise.all([a.client(), b.client(), c.client()]);
    for (const sub of subs) expect(await sub.command('SUBSCRIBE', 'sb-fan')).toEqual(['subscribe', 'sb-fan', 1]);
    const publisher = await a.client({ sandboxId: 'sb-fan', role: 'sandbox' });
    const receivers = await publisher.command('PUBLISH', 'sb-fan', '{"type":"exec","data":{"n":1}}');
    expect(receivers).toBe(1); // counted at the publishing node
    for (const sub of subs) await sub.until(() => sub.messages().length === 1);
    const json = subs[0]!.messages()[0]!.json;
    expect(JSON.parse(json)).toMatchObject({ sandboxId: 'sb-fan', workspaceId: 1, type: 'exec', data: { n: 1 } });
    const parsed = JSON.parse(json) as { id: string; timestamp: number };
    expect(Object.keys(JSON.parse(json) as object)).toEqual([
      'id',
      'sandboxId',
      'workspaceId',
      'type',
      'data',
      'timestamp',
    ]);
    expect(parsed.timestamp).toBe(Number(parsed.id.split('-')[0]));
    const frame = messageFrame('sb-fan', json);
    for (const sub of subs) expect(sub.raw.endsWith(frame)).toBe(true);
    await sleep(50);
    for (const sub of subs) expect(sub.messages()).toHaveLength(1); // exactly once, also at A
  });

  it('carries sandbox ids and types with braces, colons and non-ASCII text intact', async () => {
    const sandbox = 'odd}id:ü-€';
    const sub = await b.client();
    await sub.command('SUBSCRIBE', sandbox);
    const publisher = await a.client();
    await publisher.command('PUBLISH', sandbox, JSON.stringify({ type: 'ty:pe}1€', data: { s: 'ü\u0000"' } }));
    await sub.until(() => sub.messages().length === 1);
    const event = JSON.parse(sub.messages()[0]!.json) as Record<string, unknown>;
    expect(event).toMatchObject({ sandboxId: sandbox, type: 'ty:pe}1€', data: { s: 'ü\u0000"' } });
    const history = (await (await c.client()).command('HISTORY', sandbox)) as string[];
    expect(history).toEqual([sub.messages()[0]!.json]);
  });

  it('answers HISTORY identically at every node, with the ids subscribers saw', async () => {
    const publishers = [await a.client(), await b.client(), await c.client()];
    for (let i = 0; i < 30; i++) {
      await publishers[i % 3]!.command('PUBLISH', 'sb-hist', JSON.stringify({ type: `t${i % 2}`, data: { i } }));
    }
    const answers = [];
    for (const node of [a, b, c]) {
      const client = await node.client();
      answers.push(await client.command('HISTORY', 'sb-hist', 'LIMIT', '1000'));
      answers.push(await client.command('HISTORY', 'sb-hist', 'TYPE', 't1', 'NEWEST', 'LIMIT', '5'));
    }
    const all = answers[0] as string[];
    expect(all).toHaveLength(30);
    expect(all.map((json) => (JSON.parse(json) as { data: { i: number } }).data.i)).toEqual([...Array(30).keys()]);
    expect((answers[1] as string[]).map((json) => (JSON.parse(json) as { data: { i: number } }).data.i)).toEqual([
      21, 23, 25, 27, 29,
    ]);
    for (let i = 2; i < answers.length; i += 2) {
      expect(answers[i]).toEqual(answers[0]);
      expect(answers[i + 1]).toEqual(answers[1]);
    }
  });

  it('keeps ids strictly increasing per sandbox, in the same order at every node, under concurrent publishing at A and B', async () => {
    const watchers = [await a.client(), await b.client(), await c.client()];
    for (const watcher of watchers) await watcher.command('SUBSCRIBE', 'sb-race');
    const pa = await a.client({ sandboxId: 'sb-race', role: 'sandbox' });
    const pb = await b.client({ sandboxId: 'sb-race', role: 'sandbox' });
    const per = 300;
    // Pipelined: many appends in flight from both nodes at once.
    for (let i = 0; i < per; i++) {
      pa.send('PUBLISH', 'sb-race', JSON.stringify({ type: 'a', data: { i } }));
      pb.send('PUBLISH', 'sb-race', JSON.stringify({ type: 'b', data: { i } }));
    }
    await pa.until(() => pa.replies.length >= 1 + per);
    await pb.until(() => pb.replies.length >= 1 + per);
    for (const watcher of watchers) await watcher.until(() => watcher.messages().length >= 2 * per);
    const seen = watchers.map((watcher) => watcher.messages().map((message) => message.id));
    for (const ids of seen) {
      expect(ids).toHaveLength(2 * per);
      for (let i = 1; i < ids.length; i++) expect(idLess(ids[i - 1]!, ids[i]!)).toBe(true);
      expect(ids).toEqual(seen[0]);
    }
    // Each publisher's own events arrive in its publishing order.
    const fromA = watchers[2]!.messages().filter((m) => (JSON.parse(m.json) as { type: string }).type === 'a');
    expect(fromA.map((m) => m.data.i)).toEqual([...Array(per).keys()]);
    const history = await (await c.client()).command('HISTORY', 'sb-race', 'LIMIT', '1000');
    expect((history as string[]).map((json) => (JSON.parse(json) as { id: string }).id)).toEqual(seen[0]);
  });

  it('subscribes in Redis only to the sandboxes its own clients watch', async () => {
    const channel = 'se:{1:sb-interest}:live';
    const count = (): number => Number(redis.cli('PUBSUB', 'SHARDNUMSUB', channel).split('\n')[1]);
    expect(count()).toBe(0);
    const atB = await b.client();
    await atB.command('SUBSCRIBE', 'sb-interest');
    expect(count()).toBe(1);
    const atC = await c.client();
    const atC2 = await c.client();
    await atC.command('SUBSCRIBE', 'sb-interest');
    await atC2.command('SUBSCRIBE', 'sb-interest');
    expect(count()).toBe(2); // one per node, however many clients
    // Node A watches nothing of it and gets nothing of it.
    const receivedAtA = a.engine.stats.received;
    const publisher = await a.client({ sandboxId: 'sb-interest', role: 'sandbox' });
    await publisher.command('PUBLISH', 'sb-interest', '{"type":"x"}');
    await atB.until(() => atB.messages().length === 1);
    expect(a.engine.stats.received).toBe(receivedAtA);
    await atC.command('UNSUBSCRIBE', 'sb-interest');
    expect(count()).toBe(2);
    atC2.close();
    await waitFor(() => count() === 1);
    await atB.command('UNSUBSCRIBE', 'sb-interest');
    await waitFor(() => count() === 0);
    expect(redis.cli('PUBSUB', 'SHARDCHANNELS', 'se:{1:sb-interest}*')).toBe('');
  });

  it('delivers to pattern subscribers at other nodes through the workspace channel, once each', async () => {
    const patterns = await b.client();
    expect(await patterns.command('PSUBSCRIBE', 'sb-pat-*')).toEqual(['psubscribe', 'sb-pat-*', 1]);
    expect(redis.cli('PUBSUB', 'NUMSUB', 'se:ws:1:live').split('\n')[1]).toBe('1');
    // The same node also watches one of the sandboxes directly: both routes carry the event.
    const direct = await b.client();
    await direct.command('SUBSCRIBE', 'sb-pat-1');
    const publisher = await a.client();
    for (let i = 0; i < 20; i++)
      await publisher.command('PUBLISH', `sb-pat-${i % 2}`, JSON.stringify({ type: 'p', data: { i } }));
    await patterns.until(() => patterns.replies.filter((r) => Array.isArray(r) && r[0] === 'pmessage').length >= 20);
    await direct.until(() => direct.messages().length >= 10);
    await sleep(50);
    const pm = patterns.replies.filter((r) => Array.isArray(r) && r[0] === 'pmessage') as string[][];
    expect(pm.map((r) => (JSON.parse(r[3]!) as { data: { i: number } }).data.i)).toEqual([...Array(20).keys()]);
    expect(direct.messages().map((m) => m.data.i)).toEqual([1, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
    await patterns.command('PUNSUBSCRIBE');
    await waitFor(() => redis.cli('PUBSUB', 'NUMSUB', 'se:ws:1:live').split('\n')[1] === '0');
  });

  it('resumes at B exactly after an id seen at A while A keeps publishing (the seam across nodes)', async () => {
    const publisher = await a.client({ sandboxId: 'sb-seam', role: 'sandbox' });
    const watcherAtA = await a.client();
    await watcherAtA.command('SUBSCRIBE', 'sb-seam');
    let published = 0;
    let stop = false;
    const refused: string[] = [];
    const load = (async () => {
      while (!stop) {
        const reply = await publisher.command(
          'PUBLISH',
          'sb-seam',
          JSON.stringify({ type: 'seam', data: { n: published } }),
        );
        if (typeof reply !== 'number') refused.push(String(reply));
        published += 1;
      }
    })();
    await watcherAtA.until(() => watcherAtA.messages().length >= 50);
    const lastSeen = watcherAtA.messages()[49]!.id;
    const resumer = await b.client();
    resumer.send('RESUME', 'sb-seam', lastSeen);
    await sleep(200);
    stop = true;
    await load;
    // Every publish was acknowledged (a refused one would otherwise surface only as a timeout
    // below, its event missing).
    expect(refused).toEqual([]);
    await watcherAtA.until(() => watcherAtA.messages().length === published);
    await resumer.until(() => resumer.messages().length === published - 50);
    const confirmation = resumer.replies[1] as unknown[];
    expect(confirmation.slice(0, 4)).toEqual(['resume', 'sb-seam', 1, 'complete']);
    expect(resumer.messages().map((m) => m.id)).toEqual(
      watcherAtA
        .messages()
        .slice(50)
        .map((m) => m.id),
    );
  });

  it('resumes again and again at a node that publishes the sandbox too: every id once, in order (live copies lag the read)', async () => {
    // The read (command connection) and an event's live copy (subscriber connection) reach the
    // node on two sockets, in either order: a copy of a replayed event can come after the
    // replay. Publishing at the resuming node as well as at another one, and resuming with the
    // node's subscription both fresh and already in place, crosses that seam many times.
    const publishers = [await a.client(), await b.client()];
    let stop = false;
    const refused: string[] = [];
    const loads = publishers.map(async (publisher, p) => {
      for (let n = 0; !stop; n++) {
        const reply = await publisher.command('PUBLISH', 'sb-again', JSON.stringify({ type: 'again', data: { p, n } }));
        if (typeof reply !== 'number') refused.push(String(reply));
      }
    });
    const keeper = await b.client(); // keeps B's subscription in place for the odd rounds
    const seen: string[] = [];
    let lastId = '0';
    for (let round = 0; round < 16; round++) {
      if (round % 2 === 1) await keeper.command('SUBSCRIBE', 'sb-again');
      const resumer = await b.client();
      resumer.send('RESUME', 'sb-again', lastId);
      const target = 40;
      await resumer.until(() => resumer.messages().length >= target);
      const ids = resumer.messages().map((m) => m.id);
      seen.push(...ids);
      lastId = ids.at(-1)!;
      resumer.close();
      if (round % 2 === 1) await keeper.command('UNSUBSCRIBE', 'sb-again');
    }
    stop = true;
    await Promise.all(loads);
    expect(refused).toEqual([]);
    for (let k = 1; k < seen.length; k++) {
      if (!idLess(seen[k - 1]!, seen[k]!)) throw new Error(`id ${seen[k]} after ${seen[k - 1]} (position ${k})`);
    }
    // No gap either: what was seen is exactly the stream from its first id to its last.
    const reader = await a.client();
    const history: string[] = [];
    for (let after = '0-0'; ; ) {
      const page = (await reader.command('HISTORY', 'sb-again', 'AFTER', after, 'LIMIT', '1000')) as string[];
      for (const json of page) history.push((JSON.parse(json) as { id: string }).id);
      if (page.length < 1000) break;
      after = history.at(-1)!;
    }
    const first = history.indexOf(seen[0]!);
    expect(history.slice(first, first + seen.length)).toEqual(seen);
  });

  it('counts the subscriber at the publishing node in every PUBLISH reply, also when its copy comes back before the reply', async () => {
    // The script's reply (command connection) and the event's copy (subscriber connection) reach
    // the node in either order; the count was lost when the copy came first (before the fix,
    // 5-46 of 400 replies said 0).
    const watcher = await b.client();
    await watcher.command('SUBSCRIBE', 'sb-count');
    await waitFor(() => redis.cli('PUBSUB', 'SHARDNUMSUB', 'se:{1:sb-count}:live').split('\n')[1] === '1');
    const publisher = await b.client();
    const replies: unknown[] = [];
    for (let i = 0; i < 200; i++)
      replies.push(await publisher.command('PUBLISH', 'sb-count', JSON.stringify({ type: 't', data: { i } })));
    for (let i = 200; i < 400; i++) publisher.send('PUBLISH', 'sb-count', JSON.stringify({ type: 't', data: { i } }));
    for (let i = 200; i < 400; i++) replies.push(await publisher.next());
    await watcher.until(() => watcher.messages().length === 400);
    expect(replies.filter((reply) => reply !== 1)).toEqual([]);
    expect(watcher.messages().map((m) => m.data.i)).toEqual(Array.from({ length: 400 }, (_, i) => i));
  });

  it('reports trimmed, unknown and future like the embedded stores', async () => {
    const redis2 = redis; // same Redis, a node with a tiny retention
    const small = await startNode(redis2.url, secret, { maxCount: 3, maxAgeMs: 24 * 3600 * 1000 });
    try {
      const client = await small.client();
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        await client.command('PUBLISH', 'sb-trim', JSON.stringify({ type: 'x', data: { i } }));
        await sleep(3); // ids in distinct milliseconds: room for ids never issued
      }
      const history = (await client.command('HISTORY', 'sb-trim')) as string[];
      for (const json of history) ids.push((JSON.parse(json) as { id: string }).id);
      expect(ids).toHaveLength(3);
      const status = async (from: string): Promise<unknown[]> => {
        const resumer = await small.client();
        resumer.send('RESUME', 'sb-trim', from);
        return (await resumer.next()) as unknown[];
      };
      expect((await status(ids[0]!)).slice(3)).toEqual(['complete', ids[0], ids[2]]);
      expect((await status('1-0'))[3]).toBe('trimmed');
      const [ms, seq] = ids[0]!.split('-').map(Number);
      expect((await status(`${ms}-${seq! + 1}`))[3]).toBe('unknown');
      expect((await status(`${Date.now() + 60_000}-0`))[3]).toBe('future');
      expect((await status('0'))[3]).toBe('trimmed');
      expect((await status('$'))[3]).toBe('complete');
      expect((await status(ids[2]!)).slice(3)).toEqual(['complete', ids[0], ids[2]]);
      // A sandbox with no state: 0 is complete, an old id trimmed, a future one future.
      const fresh = async (from: string): Promise<unknown> => {
        const resumer = await small.client();
        resumer.send('RESUME', 'sb-never', from);
        return ((await resumer.next()) as unknown[])[3];
      };
      expect(await fresh('0')).toBe('complete');
      expect(await fresh('1-0')).toBe('trimmed');
      expect(await fresh(`${Date.now() + 60_000}-0`)).toBe('future');
    } finally {
      await small.close();
    }
  });
});
