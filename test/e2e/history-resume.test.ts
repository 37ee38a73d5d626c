import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { formatEventId } from '../../src/event/event.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import type { RetentionPolicy } from '../../src/store/types.js';
import { killDaemons, spawnDaemon } from '../support/daemon.js';
import { LaggingStore } from '../support/lagging-store.js';
import { RawClient, replyCollector, resp } from '../support/raw-client.js';
import { startTestServer } from '../support/test-server.js';
import { eventData } from '../support/event-data.js';

/** docs/protocol.md, "History and resume", through the real daemon and a real SQLite file. */
const DAY = 24 * 3600 * 1000;
let dir: string;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-history-'));
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
async function sqliteServer(
  retention: RetentionPolicy = { maxCount: 10_000, maxAgeMs: DAY },
  file?: string,
  now?: () => number,
) {
  const dbPath = file ?? path.join(dir, `events-${(files += 1)}.db`);
  const store = SqliteStore.open({ path: dbPath, retention, now });
  const broker = await startTestServer({ store });
  cleanups.push(() => broker.close());
  return { broker, store, dbPath };
}

/** Reads RESP replies off a raw socket: events as parsed JSON, other replies as they are. */
class ReplyReader {
  readonly replies: unknown[] = [];
  private readonly parser = replyCollector(this.replies);
  private consumed = 0;

  constructor(readonly client: RawClient) {}

  async next(count = 1): Promise<unknown[]> {
    await this.client.waitFor(() => {
      const fresh = this.client.pending;
      if (fresh.length > 0) {
        this.parser.execute(Buffer.from(fresh, 'latin1'));
        void this.client.take(fresh.length);
      }
      return this.replies.length - this.consumed >= count;
    }, 20_000);
    const out = this.replies.slice(this.consumed, this.consumed + count);
    this.consumed += out.length;
    return out;
  }
}

/** Takes the complete `:<n>` replies received so far; returns how many. */
function takeIntegerReplies(client: RawClient): number {
  const text = client.pending;
  const end = text.lastIndexOf('\r\n');
  if (end < 0) return 0;
  void client.take(end + 2);
  return text.slice(0, end + 2).split('\r\n').length - 1;
}

const eventsOf = (reply: unknown) =>
  (reply as string[]).map(
    (json) => JSON.parse(json) as { id: string; type: string; data: { i: number }; timestamp: number },
  );

describe('HISTORY', () => {
  it('filters by type, after an id, since a time; limits; the newest N; oldest first', async () => {
    const { broker } = await sqliteServer();
    const client = await broker.authed();
    let pipeline = '';
    for (let i = 0; i < 10; i += 1)
      pipeline += resp('PUBLISH', 'sb-h', JSON.stringify({ type: i % 2 ? 'odd' : 'even', data: { i } }));
    client.send(pipeline);
    await client.read(':0\r\n'.repeat(10));
    const reader = new ReplyReader(client);
    client.send(resp('HISTORY', 'sb-h'));
    const all = eventsOf((await reader.next())[0]);
    expect(all.map((event) => event.data.i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    const queries: [string[], number[]][] = [
      [
        ['TYPE', 'odd'],
        [1, 3, 5, 7, 9],
      ],
      [
        ['AFTER', all[6]!.id],
        [7, 8, 9],
      ],
      [
        ['LIMIT', '3'],
        [0, 1, 2],
      ],
      [
        ['NEWEST', 'LIMIT', '2'],
        [8, 9],
      ],
      [
        ['TYPE', 'even', 'NEWEST', 'LIMIT', '2'],
        [6, 8],
      ],
      [['SINCE', String(all[9]!.timestamp + 1)], []],
      [
        ['SINCE', String(all[0]!.timestamp)],
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      ],
    ];
    for (const [options, expected] of queries) {
      client.send(resp('HISTORY', 'sb-h', ...options));
      expect(eventsOf((await reader.next())[0]).map((event) => event.data.i)).toEqual(expected);
    }
    for (const [options, error] of [
      [['LIMIT', '0'], 'ERR limit must be an integer from 1 to 1000'],
      [['LIMIT', '1001'], 'ERR limit must be an integer from 1 to 1000'],
      [['AFTER', 'nope'], "ERR invalid event id 'nope': expected <ms>-<seq>"],
      [['LIMIT'], 'ERR syntax error'],
      [['BOGUS', '1'], 'ERR syntax error'],
    ] as const) {
      client.send(resp('HISTORY', 'sb-h', ...options));
      expect(String((await reader.next())[0])).toContain(error.replace(/^ERR /, ''));
    }
  });

  it('a restart keeps the events and their ids, and new ids go on increasing', async () => {
    const first = await sqliteServer();
    const client = await first.broker.authed();
    client.send(resp('PUBLISH', 'sb-r', '{"type":"before"}').repeat(3));
    await client.read(':0\r\n'.repeat(3));
    client.send(resp('HISTORY', 'sb-r'));
    const before = eventsOf((await new ReplyReader(client).next())[0]);
    await first.broker.close();

    const second = await sqliteServer(undefined, first.dbPath);
    const again = await second.broker.raw();
    again.send(
      resp(
        'AUTH',
        await mintToken({ secret: second.broker.secret, workspaceId: 1, role: 'workspace', ttlSeconds: 60 }),
      ),
    );
    await again.line();
    again.send(resp('PUBLISH', 'sb-r', '{"type":"after"}') + resp('HISTORY', 'sb-r'));
    const reader = new ReplyReader(again);
    const [, history] = await reader.next(2);
    const after = eventsOf(history);
    expect(after.slice(0, 3)).toEqual(before);
    const [ms, seq] = after[3]!.id.split('-').map(Number) as [number, number];
    const [lastMs, lastSeq] = before[2]!.id.split('-').map(Number) as [number, number];
    expect(ms > lastMs || (ms === lastMs && seq > lastSeq)).toBe(true);
  });
});

describe('RESUME', () => {
  it('while a publisher runs flat out: every id once, in order, across four connections', async () => {
    const { broker } = await sqliteServer();
    const total = 6000;
    // Two connections that only subscribe: the channel's frames go to them as runs, which each
    // resuming connection below joins once its replay is over (docs/performance.md, "Ninth
    // round: per subscriber").
    const followers = [await broker.authed(), await broker.authed()];
    const subscribed = '*3\r\n$9\r\nsubscribe\r\n$7\r\nsb-flow\r\n:1\r\n';
    for (const follower of followers) {
      follower.send(resp('SUBSCRIBE', 'sb-flow'));
      expect(await follower.read(subscribed)).toBe(subscribed);
    }
    const publisher = await broker.authed();
    let acked = 0;
    const publishing = (async () => {
      for (let sent = 0; sent < total; sent += 200) {
        let batch = '';
        for (let i = sent; i < sent + 200; i += 1)
          batch += resp('PUBLISH', 'sb-flow', JSON.stringify({ type: 'n', data: { i } }));
        publisher.send(batch);
        for (let replies = 0; replies < 200; ) {
          await publisher.waitFor((received) => received.includes('\r\n'));
          replies += takeIntegerReplies(publisher);
        }
        acked = sent + 200;
      }
    })();

    const seen: { id: string; i: number }[] = [];
    let lastId = '0';
    const sliceSizes = [800, 1100, 1500];
    for (let round = 0; seen.length < total; round += 1) {
      const subscriber = await broker.authed();
      const reader = new ReplyReader(subscriber);
      subscriber.send(resp('RESUME', 'sb-flow', lastId));
      const [confirmation] = (await reader.next()) as [unknown[]];
      expect(confirmation.slice(0, 4)).toEqual(['resume', 'sb-flow', 1, 'complete']);
      // Take a slice of the stream (replayed and live alike), then drop the connection.
      const target = round < sliceSizes.length ? seen.length + sliceSizes[round]! : total;
      while (seen.length < target) {
        const [frame] = (await reader.next()) as [string[]];
        expect(frame[0]).toBe('message');
        const event = JSON.parse(frame[2]!) as { id: string; data: { i: number } };
        seen.push({ id: event.id, i: event.data.i });
        lastId = event.id;
      }
      subscriber.close();
    }
    await publishing;
    expect(acked).toBe(total);
    expect(seen.map((event) => event.i)).toEqual(Array.from({ length: total }, (_, i) => i));
    expect(new Set(seen.map((event) => event.id)).size).toBe(total);
    for (const follower of followers) {
      await follower.waitFor((received) => received.toString('latin1').split('"i":').length > total);
      const got = [...follower.pending.matchAll(/"data":\{"i":(\d+)\}/g)].map((match) => Number(match[1]));
      expect(got).toEqual(Array.from({ length: total }, (_, i) => i));
    }
  });

  it('tells when the replay cannot be exact: trimmed, unknown, future; refuses a malformed id', async () => {
    // The store's clock is the test's: one event per second, so ids are 1001000-0 ... 1006000-0.
    let clock = 1_000_000;
    const { broker, store } = await sqliteServer({ maxCount: 3, maxAgeMs: 1000 * DAY }, undefined, () => clock);
    const client = await broker.authed();
    const reader = new ReplyReader(client);
    for (let i = 0; i < 6; i += 1) {
      clock += 1000;
      client.send(resp('PUBLISH', 'sb-gap', '{"type":"t"}'));
      await reader.next();
    }
    await store.prune();
    client.send(resp('HISTORY', 'sb-gap', 'LIMIT', '1000'));
    expect(eventsOf((await reader.next())[0]).map((event) => event.id)).toEqual([
      '1004000-0',
      '1005000-0',
      '1006000-0',
    ]);

    const resumeFrom = async (id: string): Promise<unknown[]> => {
      const subscriber = await broker.authed();
      const subscriberReader = new ReplyReader(subscriber);
      subscriber.send(resp('RESUME', 'sb-gap', id));
      const [confirmation] = await subscriberReader.next();
      subscriber.close();
      return confirmation as unknown[];
    };
    const expectations: [string, string][] = [
      ['1001000-0', 'trimmed'], // older than what is retained
      ['0', 'trimmed'], // from the beginning, but the beginning was pruned
      ['1003000-0', 'complete'], // the last pruned id: everything after it is retained
      ['1004000-0', 'complete'],
      ['1004500-0', 'unknown'], // in the retained range, never issued
      ['1006000-0', 'complete'], // the newest: nothing missed
      ['2000000-0', 'future'],
      ['$', 'complete'],
    ];
    for (const [id, status] of expectations) {
      const confirmation = await resumeFrom(id);
      expect([id, confirmation[3]]).toEqual([id, status]);
      expect(confirmation.slice(0, 3)).toEqual(['resume', 'sb-gap', 1]);
      if (id !== '$') expect(confirmation.slice(4)).toEqual(['1004000-0', '1006000-0']);
    }

    client.send(resp('RESUME', 'sb-gap', 'not-an-id'));
    expect(String((await reader.next())[0])).toContain("invalid event id 'not-an-id'");
    client.send(resp('RESUME', 'sb-gap'));
    expect(String((await reader.next())[0])).toContain("wrong number of arguments for 'resume' command");
  });

  it('paces a replay of large events by bytes: a reader that keeps reading is never cut off at the output limit', async () => {
    // 160 events of about 60 KiB (each within the 64 KiB event limit): 9.6 MB in one page of the
    // replay, more than the 8 MiB default output limit (before the fix the client was cut off).
    const store = new MemoryStore({ retention: { maxCount: 10_000, maxAgeMs: DAY } });
    const broker = await startTestServer({ store });
    cleanups.push(() => broker.close());
    const data = Buffer.from(JSON.stringify({ blob: 'x'.repeat(60_000) }));
    for (let i = 0; i < 160; i++)
      await store.append({ workspaceId: 1, sandboxId: 'sb-big', type: 't', ...eventData(data) });
    const client = await broker.authed();
    let received = 0;
    client.socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    client.send(resp('RESUME', 'sb-big', '0'));
    await client.waitFor(() => received > 160 * 60_000, 20_000);
    expect(broker.server.context.stats.slowConsumerDisconnects).toBe(0);
    expect(client.closed).toBe(false);
  });

  it('resuming at the newest id, a late live copy of that event is dropped (the floor is the resume point)', async () => {
    const store = new LaggingStore(new MemoryStore({ retention: { maxCount: 1_000, maxAgeMs: DAY } }));
    const broker = await startTestServer({ store });
    cleanups.push(() => broker.close());
    const elsewhere = async () =>
      formatEventId((await store.append({ workspaceId: 1, sandboxId: 'sb-at', type: 't', ...eventData('{}') })).id);
    const seen = await elsewhere();
    const subscriber = await broker.authed();
    const reader = new ReplyReader(subscriber);
    subscriber.send(resp('RESUME', 'sb-at', seen));
    const [confirmation] = (await reader.next()) as string[][];
    expect(confirmation!.slice(0, 4)).toEqual(['resume', 'sb-at', 1, 'complete']);
    expect(store.release()).toBe(1);
    const next = await elsewhere();
    store.release();
    subscriber.send(resp('PING'));
    const [frame, pong] = (await reader.next(2)) as string[][];
    expect((JSON.parse(frame![2]!) as { id: string }).id).toBe(next);
    expect(pong).toEqual(['pong', '']);
  });

  it('leaves the pmessage frames of a pattern the resumed channel also matches alone (Redis sends both frames)', async () => {
    const store = new LaggingStore(new MemoryStore({ retention: { maxCount: 1_000, maxAgeMs: DAY } }));
    const broker = await startTestServer({ store });
    cleanups.push(() => broker.close());
    const subscriber = await broker.authed();
    const reader = new ReplyReader(subscriber);
    subscriber.send(resp('PSUBSCRIBE', 'sb-*'));
    expect(await reader.next()).toEqual([['psubscribe', 'sb-*', 1]]);
    const elsewhere = async () =>
      formatEventId((await store.append({ workspaceId: 1, sandboxId: 'sb-both', type: 't', ...eventData('{}') })).id);
    const ids = [await elsewhere(), await elsewhere()];
    subscriber.send(resp('RESUME', 'sb-both', '0'));
    const [confirmation, ...replayed] = (await reader.next(3)) as string[][];
    expect(confirmation!.slice(0, 4)).toEqual(['resume', 'sb-both', 2, 'complete']);
    expect(replayed.map((frame) => [frame[0], (JSON.parse(frame[2]!) as { id: string }).id])).toEqual(
      ids.map((id) => ['message', id]),
    );
    // Live now: the channel's copies were replayed and are dropped; the pattern's were not.
    expect(store.release()).toBe(2);
    subscriber.send(resp('PING'));
    const rest = (await reader.next(3)) as string[][];
    expect(
      rest.map((frame) =>
        frame[0] === 'pong' ? 'pong' : `${frame[0]} ${(JSON.parse(frame[3]!) as { id: string }).id}`,
      ),
    ).toEqual([`pmessage ${ids[0]}`, `pmessage ${ids[1]}`, 'pong']);
  });

  it('drops live copies of replayed events that arrive after the replay (a live path that lags reads, as across nodes)', async () => {
    const store = new LaggingStore(new MemoryStore({ retention: { maxCount: 1_000, maxAgeMs: DAY } }));
    const broker = await startTestServer({ store });
    cleanups.push(() => broker.close());
    // Another node's events: durable and readable at once, live later.
    const elsewhere = () => store.append({ workspaceId: 1, sandboxId: 'sb-lag', type: 't', ...eventData('{}') });
    const ids = [await elsewhere(), await elsewhere(), await elsewhere()].map((event) => formatEventId(event.id));
    const subscriber = await broker.authed();
    const reader = new ReplyReader(subscriber);
    subscriber.send(resp('RESUME', 'sb-lag', '0'));
    const [confirmation, ...replayed] = (await reader.next(4)) as string[][];
    expect(confirmation!.slice(0, 4)).toEqual(['resume', 'sb-lag', 1, 'complete']);
    expect(replayed.map((frame) => (JSON.parse(frame[2]!) as { id: string }).id)).toEqual(ids);
    // The replayed events now arrive live, then one the replay did not have.
    expect(store.release()).toBe(3);
    ids.push(formatEventId((await elsewhere()).id));
    expect(store.release()).toBe(1);
    // PING answers after everything delivered before it: exactly one more event, then pong.
    subscriber.send(resp('PING'));
    const [next, pong] = (await reader.next(2)) as string[][];
    expect(next![0]).toBe('message');
    expect((JSON.parse(next![2]!) as { id: string }).id).toBe(ids[3]);
    expect(pong).toEqual(['pong', '']);
    // Past the seam, live events flow as they come, nothing filtered.
    ids.push(formatEventId((await elsewhere()).id));
    store.release();
    subscriber.send(resp('PING'));
    const [after, secondPong] = (await reader.next(2)) as string[][];
    expect((JSON.parse(after![2]!) as { id: string }).id).toBe(ids[4]);
    expect(secondPong).toEqual(['pong', '']);
  });
});

describe('durability: kill -9 at any moment', () => {
  const spawnAt = (dataDir: string, secret: string) =>
    spawnDaemon([
      '--port',
      '0',
      '--http-port',
      '0',
      '--data-dir',
      dataDir,
      '--jwt-secret',
      secret,
      '--log-level',
      'info',
    ]);

  it('every acknowledged event and every delivered id is there after restart, in order', async () => {
    const dataDir = await mkdtemp(path.join(dir, 'crash-'));
    const secret = randomBytes(24).toString('base64url');
    const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 600 });
    const daemon = await spawnAt(dataDir, secret);
    const { child, port } = daemon;

    const subscriber = await RawClient.connect(port);
    cleanups.push(() => subscriber.close());
    const subscriberReader = new ReplyReader(subscriber);
    subscriber.send(resp('AUTH', token) + resp('SUBSCRIBE', 'sb-crash'));
    await subscriberReader.next(2);

    const publisher = await RawClient.connect(port);
    cleanups.push(() => publisher.close());
    publisher.send(resp('AUTH', token));
    await publisher.line();
    let acked = 0;
    let sent = 0;
    const killAfter = 2000 + Math.floor(Math.random() * 3000);
    while (!publisher.closed) {
      let batch = '';
      for (let i = 0; i < 100; i += 1, sent += 1)
        batch += resp('PUBLISH', 'sb-crash', JSON.stringify({ type: 'n', data: { i: sent } }));
      publisher.send(batch);
      await publisher.waitFor((received) => received.includes('\r\n') || publisher.closed);
      acked += takeIntegerReplies(publisher);
      if (sent >= killAfter && child.exitCode === null) child.kill('SIGKILL');
      if (child.signalCode !== null) break;
    }
    await daemon.exited;
    await subscriber.closedByServer();
    // What the subscriber was given before the crash.
    const delivered = subscriberReader.replies
      .slice(2)
      .filter((reply): reply is string[] => Array.isArray(reply) && reply[0] === 'message')
      .map((frame) => JSON.parse(frame[2]!) as { id: string; data: { i: number } });
    expect(acked).toBeGreaterThan(0);

    const restarted = await spawnAt(dataDir, secret);
    const reader = await RawClient.connect(restarted.port);
    cleanups.push(() => reader.close());
    const replies = new ReplyReader(reader);
    reader.send(resp('AUTH', token));
    await replies.next();
    const stored: { id: string; data: { i: number } }[] = [];
    let after = '0-0';
    for (;;) {
      reader.send(resp('HISTORY', 'sb-crash', 'AFTER', after, 'LIMIT', '1000'));
      const page = eventsOf((await replies.next())[0]);
      stored.push(...page);
      if (page.length < 1000) break;
      after = page[page.length - 1]!.id;
    }
    // Every acknowledged publish is stored, in publish order, with nothing in between.
    expect(stored.length).toBeGreaterThanOrEqual(acked);
    expect(stored.map((event) => event.data.i)).toEqual(Array.from({ length: stored.length }, (_, i) => i));
    // Every id a subscriber held is the id of the same event after the restart.
    const byId = new Map(stored.map((event) => [event.id, event.data.i]));
    for (const event of delivered) expect(byId.get(event.id)).toBe(event.data.i);
    killDaemons();
  });
});
