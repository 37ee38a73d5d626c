import { afterEach, describe, expect, it } from 'vitest';
import {
  createPubSubClient,
  EventsAuthError,
  EventsNetworkError,
  type GapInfo,
  type PubSubClient,
  type PubSubClientConfig,
} from '../../src/client/index.js';
import type { SandboxEvent } from '../../src/event/event.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { startTestServer, type TestServer } from '../support/test-server.js';
import { FaultProxy } from './support/fault-proxy.js';
import { Collector, next, until } from './support/helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function server(options: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const started = await startTestServer(options);
  cleanups.push(() => started.close());
  return started;
}

function client(config: PubSubClientConfig): PubSubClient {
  const made = createPubSubClient({ host: '127.0.0.1', reconnectDelay: 10, maxReconnectDelay: 50, ...config });
  cleanups.push(() => made.disconnect());
  return made;
}

async function proxyFor(target: TestServer): Promise<FaultProxy> {
  const proxy = await FaultProxy.start(target.port);
  cleanups.push(() => proxy.close());
  return proxy;
}

/** Publishes `count` events to `sandboxId` through a client of its own; returns nothing (ids come from subscribers). */
async function publisher(target: TestServer): Promise<PubSubClient> {
  const made = client({ port: target.port, accessToken: await target.token() });
  await made.connect();
  return made;
}

describe('subscribing, publishing, history', () => {
  it('connects, subscribes, delivers typed events, answers ping and history, disconnects', async () => {
    const broker = await server();
    const sub = client({ port: broker.port, accessToken: await broker.token(), sandboxId: 'sb-1' });
    expect(sub.getState()).toBe('disconnected');
    const connected = next(sub, 'connect');
    await sub.connect();
    await connected;
    expect(sub.getState()).toBe('connected');
    const pub = await publisher(broker);
    const collected = new Collector(sub);
    expect(await pub.publish('sb-1', 'execution.completed', { exitCode: 0, text: 'ünïcödé ✓' })).toBe(1);
    await collected.waitFor(1);
    const [event] = collected.events as [SandboxEvent];
    expect(event).toMatchObject({
      sandboxId: 'sb-1',
      workspaceId: 1,
      type: 'execution.completed',
      data: { exitCode: 0, text: 'ünïcödé ✓' },
    });
    expect(event.id).toMatch(/^\d+-\d+$/);
    expect(sub.lastEventId('sb-1')).toBe(event.id);
    await sub.ping();
    expect(await sub.history('sb-1', { limit: 10 })).toEqual([event]);
    expect(await sub.history('sb-1', { after: event.id })).toEqual([]);
    await sub.disconnect();
    expect(sub.getState()).toBe('disconnected');
    await expect(sub.ping()).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
  });

  it('starts from 0 or from an id, and several sandboxes and patterns share one connection', async () => {
    const broker = await server();
    const pub = await publisher(broker);
    for (let i = 0; i < 3; i += 1) await pub.publish('sb-a', 'early', { i });
    const early = await pub.history('sb-a');
    const sub = client({ port: broker.port, accessToken: await broker.token(), sandboxId: 'sb-a', from: '0' });
    const collected = new Collector(sub);
    await sub.connect();
    // An iterator started after connect() still gets the replay that came with the confirmation.
    const replayed: string[] = [];
    for await (const event of sub.events()) {
      replayed.push(event.id);
      if (replayed.length === 3) break;
    }
    expect(replayed).toEqual(early.map((event) => event.id));
    expect(collected.ids).toEqual(replayed);

    await sub.subscribe('sb-b', { from: early[0]!.id }); // nothing there yet: complete, nothing replayed
    await sub.psubscribe('sb-*');
    const metas: string[] = [];
    sub.on('event', (event, meta) => metas.push(`${event.sandboxId}:${meta.channel}:${meta.pattern ?? '-'}`));
    await pub.publish('sb-a', 'late');
    await pub.publish('sb-b', 'late');
    await pub.publish('sb-c', 'late'); // only the pattern covers sb-c
    await collected.waitFor(6);
    // sb-a and sb-b come once each, through their own (resumable) subscription; the pattern's copy is dropped.
    expect(metas).toEqual(['sb-a:sb-a:-', 'sb-b:sb-b:-', 'sb-c:sb-c:sb-*']);
    expect(sub.getStats().duplicatesDropped).toBe(0);
    expect(sub.subscriptions()).toEqual({ channels: ['sb-a', 'sb-b'], patterns: ['sb-*'] });

    await sub.unsubscribe('sb-b');
    await sub.punsubscribe('sb-*');
    await pub.publish('sb-b', 'after-unsubscribe');
    await pub.publish('sb-a', 'still-here');
    await collected.waitFor(7);
    expect(collected.events.at(-1)).toMatchObject({ sandboxId: 'sb-a', type: 'still-here' });
  });

  it('delivers an event once when two patterns match its sandbox', async () => {
    const broker = await server();
    const sub = client({ port: broker.port, accessToken: await broker.token() });
    await sub.connect();
    await sub.psubscribe('sb-*');
    await sub.psubscribe('*-x');
    const collected = new Collector(sub);
    const pub = await publisher(broker);
    expect(await pub.publish('sb-x', 'both')).toBe(2); // the broker sends it twice, one per pattern
    await pub.publish('sb-y', 'one');
    await collected.waitFor(2);
    await sub.ping(); // the second copy of the first event is in by now
    expect(collected.events.map((event) => event.type)).toEqual(['both', 'one']);
    expect(sub.getStats().duplicatesDropped).toBe(1);
  });

  it('serves `for await` with an AbortSignal', async () => {
    const broker = await server();
    const sub = client({ port: broker.port, accessToken: await broker.token(), sandboxId: 'sb-it' });
    await sub.connect();
    const pub = await publisher(broker);
    const controller = new AbortController();
    const seen: string[] = [];
    const loop = (async () => {
      for await (const event of sub.events({ signal: controller.signal })) {
        seen.push(event.type);
        if (seen.length === 3) controller.abort();
      }
    })();
    for (const type of ['one', 'two', 'three', 'four']) await pub.publish('sb-it', type);
    await loop; // ended by the signal, not by an error
    expect(seen).toEqual(['one', 'two', 'three']);

    // disconnect() ends a loop too.
    const ended = (async () => {
      const got: string[] = [];
      for await (const event of sub.events()) got.push(event.type);
      return got;
    })();
    await pub.publish('sb-it', 'five');
    await until(sub, 'event', () => sub.getStats().events >= 5, 'the fifth event');
    await sub.disconnect();
    expect(await ended).toEqual(['five']);
  });

  it('refuses what the broker refuses, with typed errors', async () => {
    const broker = await server();
    const pub = await publisher(broker);
    await expect(pub.publish('sb-1', '')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(pub.publish('sb-1', 'x'.repeat(200))).rejects.toMatchObject({
      name: 'EventsPubSubError',
      code: 'INVALID_EVENT',
    });
    const sandbox = client({
      port: broker.port,
      accessToken: await broker.token({ role: 'sandbox', sandboxId: 'sb-own' }),
    });
    await sandbox.connect();
    await expect(sandbox.publish('sb-other', 'x')).rejects.toMatchObject({
      name: 'EventsAuthError',
      code: 'NO_PERMISSION',
      statusCode: 403,
    });
    await expect(sandbox.subscribe('sb-other')).rejects.toMatchObject({ code: 'NO_PERMISSION' });
    expect(sandbox.subscriptions().channels).toEqual([]);
    await expect(sandbox.psubscribe('*')).rejects.toMatchObject({ code: 'NO_PERMISSION' });
    expect(await sandbox.publish('sb-own', 'fine')).toBe(0);
  });
});

describe('exact resume', () => {
  it('resumes after the connection drops: nothing missed, nothing twice, in order', async () => {
    const broker = await server();
    const sub = client({ port: broker.port, accessToken: await broker.token(), sandboxId: 'sb-r' });
    const collected = new Collector(sub);
    await sub.connect();
    const pub = await publisher(broker);
    await pub.publish('sb-r', 'before');
    await collected.waitFor(1);
    const disconnected = next(sub, 'disconnect');
    // Only the subscriber's connection: the publisher keeps going while it is away.
    for (const connection of broker.server.context.connections) if (connection.channels.size > 0) connection.destroy();
    await disconnected;
    for (let i = 0; i < 5; i += 1) await pub.publish('sb-r', 'while-away', { i });
    await collected.waitFor(6);
    await pub.publish('sb-r', 'after');
    await collected.waitFor(7);
    const stored = await pub.history('sb-r');
    expect(collected.ids).toEqual(stored.map((event) => event.id));
    expect(sub.getStats().connects).toBe(2);
  });

  it('knows its position before the first event: "from now" survives a reconnect', async () => {
    const broker = await server();
    const pub = await publisher(broker);
    await pub.publish('sb-now', 'old');
    const sub = client({ port: broker.port, accessToken: await broker.token(), sandboxId: 'sb-now' });
    const collected = new Collector(sub);
    await sub.connect();
    const reconnected = next(sub, 'connect');
    for (const connection of broker.server.context.connections) if (connection.channels.size > 0) connection.destroy();
    await pub.publish('sb-now', 'published-while-away');
    await reconnected;
    await collected.waitFor(1);
    expect(collected.events.map((event) => event.type)).toEqual(['published-while-away']);
  });

  it('emits gap for trimmed and future ids, and goes on delivering', async () => {
    const store = new MemoryStore({ retention: { maxCount: 5, maxAgeMs: 3_600_000 } });
    const broker = await server({ store });
    const pub = await publisher(broker);
    for (let i = 0; i < 10; i += 1) await pub.publish('sb-g', 'e', { i });
    const retained = await pub.history('sb-g');
    expect(retained).toHaveLength(5);
    const [first, last] = [retained[0]!, retained.at(-1)!];

    const gaps: GapInfo[] = [];
    const trimmed = client({ port: broker.port, accessToken: await broker.token(), sandboxId: 'sb-g', from: '1-0' });
    trimmed.on('gap', (gap) => gaps.push(gap));
    const fromTrimmed = new Collector(trimmed);
    await trimmed.connect();
    await fromTrimmed.waitFor(5);
    expect(gaps).toEqual([
      { reason: 'trimmed', channel: 'sb-g', requestedId: '1-0', earliestId: first.id, lastId: last.id },
    ]);
    expect(fromTrimmed.ids).toEqual(retained.map((event) => event.id));

    const future = client({ port: broker.port, accessToken: await broker.token() });
    future.on('gap', (gap) => gaps.push(gap));
    const fromFuture = new Collector(future);
    await future.connect();
    await future.subscribe('sb-g', { from: '99999999999999-0' });
    expect(gaps[1]).toEqual({
      reason: 'future',
      channel: 'sb-g',
      requestedId: '99999999999999-0',
      earliestId: first.id,
      lastId: last.id,
    });
    // The cursor restarted at the broker's newest id: the next event is delivered, not dropped as "old".
    await pub.publish('sb-g', 'after-future');
    await fromFuture.waitFor(1);
    expect(fromFuture.events[0]!.type).toBe('after-future');
    await fromTrimmed.waitFor(6);
  });

  it('reports an unknown id (inside the retained range, never issued)', async () => {
    const broker = await server();
    const pub = await publisher(broker);
    await pub.publish('sb-u', 'e');
    const [first] = (await pub.history('sb-u')) as [SandboxEvent];
    const msOf = (id: string): string => id.split('-')[0]!;
    let last = first;
    while (msOf(last.id) === msOf(first.id)) {
      await pub.publish('sb-u', 'e');
      last = (await pub.history('sb-u', { newest: true, limit: 1 }))[0]!;
    }
    const between = `${msOf(first.id)}-999999`;
    const gaps: GapInfo[] = [];
    const sub = client({ port: broker.port, accessToken: await broker.token(), sandboxId: 'sb-u', from: between });
    sub.on('gap', (gap) => gaps.push(gap));
    const collected = new Collector(sub);
    await sub.connect();
    expect(gaps).toEqual([
      { reason: 'unknown', channel: 'sb-u', requestedId: between, earliestId: first.id, lastId: last.id },
    ]);
    await collected.waitFor(1); // what follows the id is still replayed
    expect(collected.events[0]!.id).toBe((await pub.history('sb-u', { after: between, limit: 1 }))[0]!.id);
  });

  it('continues after the last event when connect() is called again after disconnect()', async () => {
    const broker = await server();
    const pub = await publisher(broker);
    const sub = client({ port: broker.port, accessToken: await broker.token(), sandboxId: 'sb-again' });
    const collected = new Collector(sub);
    await sub.connect();
    await pub.publish('sb-again', 'first');
    await collected.waitFor(1);
    await sub.disconnect();
    await pub.publish('sb-again', 'while-disconnected');
    await sub.connect();
    await collected.waitFor(2);
    expect(collected.events.map((event) => event.type)).toEqual(['first', 'while-disconnected']);
  });

  it('after a broker that lost its store (future), starts over from its newest id', async () => {
    const first = await startTestServer();
    const port = first.port;
    const sub = client({ port, accessToken: await first.token(), sandboxId: 'sb-f' });
    const collected = new Collector(sub);
    await sub.connect();
    const pub = await publisher(first);
    await pub.publish('sb-f', 'one');
    await pub.publish('sb-f', 'two');
    await collected.waitFor(2);
    await pub.disconnect();
    const gap = next<[GapInfo]>(sub, 'gap');
    await first.close();
    // A new, empty broker on the same port with the same secret: our ids are "from the future" to it.
    const { startServer } = await import('../../src/daemon.js');
    const second = await startServer({ host: '127.0.0.1', port, auth: { secret: first.secret } });
    cleanups.push(() => second.close());
    expect((await gap)[0]).toMatchObject({ reason: 'future', channel: 'sb-f', lastId: null });
    const pub2 = client({ port, accessToken: await first.token() });
    await pub2.connect();
    await pub2.publish('sb-f', 'three'); // its id may well be below "two"'s: delivered anyway
    await collected.waitFor(3);
    expect(collected.events.map((event) => event.type)).toEqual(['one', 'two', 'three']);
  });

  it("a pattern's cursor a new broker never issued (future): gap, then it starts over from that broker's newest", async () => {
    const first = await startTestServer();
    const port = first.port;
    const sub = client({ port, accessToken: await first.token() });
    const collected = new Collector(sub);
    await sub.connect();
    await sub.psubscribe('job-*');
    const pub = await publisher(first);
    await pub.publish('job-1', 'one');
    await pub.publish('job-2', 'two');
    await collected.waitFor(2);
    const cursor = sub.lastCursor('job-*');
    await pub.disconnect();
    const gap = next<[GapInfo]>(sub, 'gap');
    await first.close();
    // A new, empty memory store on the same port: its order begins again, below our cursor.
    const { startServer } = await import('../../src/daemon.js');
    const second = await startServer({ host: '127.0.0.1', port, auth: { secret: first.secret } });
    cleanups.push(() => second.close());
    expect((await gap)[0]).toEqual({
      reason: 'future',
      pattern: 'job-*',
      requestedId: cursor,
      earliestId: null,
      lastId: 'w0',
    });
    expect(sub.lastCursor('job-*')).toBe('w0');
    const pub2 = client({ port, accessToken: await first.token() });
    await pub2.connect();
    await pub2.publish('job-1', 'three');
    await collected.waitFor(3);
    expect(collected.events.map((event) => event.type)).toEqual(['one', 'two', 'three']);
    expect(sub.lastCursor('job-*')).toBe('w1');
  });

  it('resumes patterns after a reconnect from the cursor of the last event: what matched meanwhile, once, no gap', async () => {
    const broker = await server();
    const proxy = await proxyFor(broker);
    const sub = client({ port: proxy.port, accessToken: await broker.token(), connectTimeout: 500 });
    await sub.connect();
    await sub.psubscribe('job-*');
    const start = sub.lastCursor('job-*');
    expect(start).toMatch(/^w[0-9]+$/);
    const collected = new Collector(sub);
    const cursors: (string | undefined)[] = [];
    sub.on('event', (_event, meta) => cursors.push(meta.cursor));
    const gaps: GapInfo[] = [];
    sub.on('gap', (gap) => gaps.push(gap));
    const pub = await publisher(broker);
    await pub.publish('job-1', 'before');
    await collected.waitFor(1);
    expect(sub.lastCursor('job-*')).toBe(cursors[0]);
    // Away: the connection is cut and attempts vanish until the path heals.
    proxy.blackhole(true);
    proxy.cutAll();
    await next(sub, 'reconnecting');
    await pub.publish('job-2', 'away-1');
    await pub.publish('other', 'not matched');
    await pub.publish('job-1', 'away-2');
    proxy.blackhole(false);
    await collected.waitFor(3);
    await pub.publish('job-2', 'after');
    await collected.waitFor(4);
    expect(collected.events.map((event) => `${event.sandboxId}:${event.type}`)).toEqual([
      'job-1:before',
      'job-2:away-1',
      'job-1:away-2',
      'job-2:after',
    ]);
    expect(gaps).toEqual([]);
    expect(cursors.every((cursor) => cursor !== undefined && /^w[0-9]+$/.test(cursor))).toBe(true);
    expect(sub.lastCursor('job-*')).toBe(cursors[3]);
    await sub.punsubscribe('job-*');
    expect(sub.lastCursor('job-*')).toBeUndefined();
  });
});

describe('the connection', () => {
  it('detects a half-open connection with heartbeats and resumes exactly once the path is back', async () => {
    const broker = await server();
    const proxy = await proxyFor(broker);
    const sub = client({
      port: proxy.port,
      accessToken: await broker.token(),
      sandboxId: 'sb-h',
      heartbeatInterval: 100,
      heartbeatTimeout: 200,
      connectTimeout: 300,
    });
    const collected = new Collector(sub);
    await sub.connect();
    const pub = await publisher(broker);
    await pub.publish('sb-h', 'before');
    await collected.waitFor(1);

    proxy.blackhole(true);
    const [cause] = await next<[EventsNetworkError]>(sub, 'disconnect');
    expect(cause).toMatchObject({ code: 'HEARTBEAT_TIMEOUT' });
    for (let i = 0; i < 3; i += 1) await pub.publish('sb-h', 'during', { i });
    // New connections are swallowed too: the attempt times out and is retried.
    const [{ cause: retryCause }] = await next<[{ cause: EventsNetworkError }]>(sub, 'reconnecting');
    expect(retryCause.code).toBe('CONNECT_TIMEOUT');
    proxy.blackhole(false);
    await collected.waitFor(4);
    await pub.publish('sb-h', 'after');
    await collected.waitFor(5);
    expect(collected.ids).toEqual((await pub.history('sb-h')).map((event) => event.id));
  });

  it('reads events whose bytes arrive one at a time (multi-byte UTF-8 split across chunks)', async () => {
    const broker = await server();
    const proxy = await proxyFor(broker);
    proxy.splitBytes(true);
    const sub = client({ port: proxy.port, accessToken: await broker.token(), sandboxId: 'sb-split' });
    const collected = new Collector(sub);
    await sub.connect();
    const pub = await publisher(broker);
    const texts = ['é', '€uro', '🚀🚀', '日本語テキスト', 'a\u0301 mixed ✓'];
    for (const text of texts) await pub.publish('sb-split', 'text', { text });
    await collected.waitFor(texts.length);
    expect(collected.events.map((event) => event.data.text)).toEqual(texts);
  });

  it('lets publish wait for a reconnect, and gives up after commandTimeout', async () => {
    const broker = await server();
    const proxy = await proxyFor(broker);
    const pub = client({
      port: proxy.port,
      accessToken: await broker.token(),
      connectTimeout: 200,
      commandTimeout: 1_000,
    });
    await pub.connect();
    proxy.blackhole(true);
    proxy.cutAll();
    await next(pub, 'disconnect');
    await expect(pub.publish('sb-1', 'waits')).rejects.toMatchObject({
      name: 'EventsNetworkError',
      code: 'COMMAND_TIMEOUT',
    });
    const waiting = pub.publish('sb-1', 'waits');
    proxy.blackhole(false);
    await expect(waiting).resolves.toBe(0);
  });

  it('rejects connect() when the broker is not there (and does not loop)', async () => {
    const sub = createPubSubClient({ host: '127.0.0.1', port: 1, accessToken: 'x.y.z', sandboxId: 'sb' });
    const error = await sub.connect().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(EventsNetworkError);
    expect(error).toMatchObject({ code: 'CONNECTION_FAILED' });
    expect(sub.getState()).toBe('error');
    expect(sub.getStats().reconnects).toBe(0);
  });
});

describe('flow control and runtime changes', () => {
  it('stops reading while a for-await loop is behind, without the heartbeat mistaking it for a dead peer', async () => {
    const broker = await server();
    const sub = client({
      port: broker.port,
      accessToken: await broker.token(),
      sandboxId: 'sb-slow',
      // Short enough that each pause below spans a few timeouts; long enough that a PONG
      // delayed by a loaded machine (two test workers on two cores) is not taken for a dead peer.
      heartbeatInterval: 50,
      heartbeatTimeout: 200,
    });
    const iterator = sub.events({ highWaterMark: 5 });
    await sub.connect();
    const pub = await publisher(broker);
    const published = 200;
    await Promise.all(Array.from({ length: published }, (_, n) => pub.publish('sb-slow', 'e', { n })));
    const seen: number[] = [];
    for await (const event of iterator) {
      seen.push(event.data.n as number);
      // A slow consumer: each event takes a few heartbeat timeouts' worth of time.
      if (seen.length % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 500));
      if (seen.length === published) break;
    }
    expect(seen).toEqual(Array.from({ length: published }, (_, n) => n));
    expect(sub.getStats().connects).toBe(1); // never torn down while paused
  });

  it('subscribes while reconnecting, and drops (and reports) a sandbox the new token may not reach', async () => {
    const broker = await server();
    const proxy = await proxyFor(broker);
    const tokens = [await broker.token(), await broker.token({ role: 'sandbox', sandboxId: 'sb-keep' })];
    let calls = 0;
    const sub = client({ port: proxy.port, accessToken: () => tokens[Math.min(calls++, 1)]!, sandboxId: 'sb-keep' });
    const errors: EventsAuthError[] = [];
    sub.on('error', (error) => {
      if (error instanceof EventsAuthError) errors.push(error);
    });
    await sub.connect();
    await sub.subscribe('sb-lose');
    proxy.blackhole(true);
    proxy.cutAll();
    await next(sub, 'disconnect');
    const late = sub.subscribe('sb-lose-too'); // waits for the next connection
    proxy.blackhole(false);
    await expect(late).rejects.toMatchObject({ code: 'NO_PERMISSION' });
    expect(errors.map((error) => error.code)).toEqual(['NO_PERMISSION', 'NO_PERMISSION']);
    expect(sub.subscriptions().channels).toEqual(['sb-keep']);
    const collected = new Collector(sub);
    const pub = await publisher(broker);
    await pub.publish('sb-keep', 'still-here');
    await collected.waitFor(1);
  });
});

describe('authentication', () => {
  it('surfaces a refused token as EventsAuthError and stops', async () => {
    const broker = await server();
    const sub = client({ port: broker.port, accessToken: 'eyJhbGciOiJIUzI1NiJ9.e30.invalid', sandboxId: 'sb' });
    const error = await sub.connect().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(EventsAuthError);
    expect(error).toMatchObject({ code: 'AUTH_FAILED', statusCode: 401 });
    expect(sub.getState()).toBe('error');
    expect(sub.getStats().reconnects).toBe(0);
    expect(broker.server.context.stats.connectionsReceived).toBe(1);
  });

  it('asks the token function again after a refusal: a new token is tried, the same one stops', async () => {
    const broker = await server();
    const good = await broker.token();
    const tokens = ['eyJhbGciOiJIUzI1NiJ9.e30.bad', good];
    let calls = 0;
    const sub = client({ port: broker.port, accessToken: () => tokens[Math.min(calls++, 1)]!, sandboxId: 'sb' });
    await sub.connect();
    expect(calls).toBe(2);

    let sameCalls = 0;
    const stuck = client({
      port: broker.port,
      accessToken: async () => {
        sameCalls++;
        return 'eyJhbGciOiJIUzI1NiJ9.e30.bad';
      },
      sandboxId: 'sb',
    });
    await expect(stuck.connect()).rejects.toMatchObject({ code: 'AUTH_FAILED' });
    expect(sameCalls).toBe(2); // the connect, then once more to see whether a new token comes
    expect(stuck.getStats().reconnects).toBe(0);
  });

  it('refuses a sandbox it may not reach with NO_PERMISSION', async () => {
    const broker = await server();
    const sub = client({
      port: broker.port,
      accessToken: await broker.token({ role: 'sandbox', sandboxId: 'sb-mine' }),
      sandboxId: 'sb-theirs',
    });
    await expect(sub.connect()).rejects.toMatchObject({ name: 'EventsAuthError', code: 'NO_PERMISSION' });
  });

  it('refreshes a short-lived token with AUTH on the open connection', async () => {
    const broker = await server({ clockToleranceSeconds: 0 });
    let minted = 0;
    const sub = client({
      port: broker.port,
      accessToken: () => {
        minted++;
        return broker.token({ ttlSeconds: 2 });
      },
      sandboxId: 'sb-t',
    });
    const collected = new Collector(sub);
    let disconnects = 0;
    sub.on('disconnect', () => disconnects++);
    await sub.connect();
    const pub = await publisher(broker);
    // Two refreshes take the connection past the first token's expiry (the broker allows no skew here).
    for (let round = 0; round < 2; round += 1) {
      await next(sub, 'tokenRefresh', 5_000);
      await pub.publish('sb-t', 'tick', { round });
    }
    await pub.publish('sb-t', 'tick', { round: 2 });
    await collected.waitFor(3);
    expect(disconnects).toBe(0);
    expect(sub.getStats().connects).toBe(1);
    expect(minted).toBe(3);
    expect(sub.getStats().tokenRefreshes).toBe(2);
  });

  it('with a plain token that expires: the broker closes, the reconnect is refused, the client stops', async () => {
    const broker = await server({ clockToleranceSeconds: 0 });
    const sub = client({ port: broker.port, accessToken: await broker.token({ ttlSeconds: 1 }), sandboxId: 'sb-x' });
    const errors: Error[] = [];
    sub.on('error', (error) => errors.push(error));
    await sub.connect();
    const [cause] = await next<[EventsAuthError]>(sub, 'disconnect', 5_000);
    expect(cause).toMatchObject({ code: 'TOKEN_EXPIRED' });
    await until(sub, 'status', () => sub.getStatus() === 'failed', 'the client to stop');
    expect(errors.at(-1)).toMatchObject({ name: 'EventsAuthError', code: 'AUTH_FAILED' });
    expect(sub.getStats().reconnects).toBe(1);
  });
});
