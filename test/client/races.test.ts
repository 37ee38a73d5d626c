/**
 * Races in the client, each a regression test failing before its fix: work started from a
 * 'disconnect' listener (it spun, or failed at once), replayed events held for the next turn
 * (dropped by a disconnect(), or handed out before `connect` with several sandboxes), a
 * subscribe right behind an unsubscribe of the same sandbox, and queued next() calls.
 */
import vm from 'node:vm';
import { afterEach, expect, it } from 'vitest';
import { createPubSubClient, type PubSubClient } from '../../src/client/index.js';
import { EventQueue } from '../../src/client/event-queue.js';
import type { SandboxEvent } from '../../src/event/event.js';
import { startTestServer, type TestServer } from '../support/test-server.js';
import { FaultProxy } from './support/fault-proxy.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function server(): Promise<TestServer> {
  const s = await startTestServer();
  cleanups.push(() => s.close());
  return s;
}

function client(config: Parameters<typeof createPubSubClient>[0]): PubSubClient {
  const c = createPubSubClient({ host: '127.0.0.1', reconnectDelay: 20, maxReconnectDelay: 50, ...config });
  cleanups.push(() => c.disconnect());
  return c;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(pred: () => boolean, what: string, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

// ── 1. subscribe() from a 'disconnect' listener spins forever ─────────────────────────────────
it('subscribe() called from a disconnect listener returns (does not spin synchronously)', async () => {
  const s = await server();
  const proxy = await FaultProxy.start(s.port);
  cleanups.push(() => proxy.close());
  const sub = client({ port: proxy.port, accessToken: await s.token(), sandboxId: 'sb-1' });
  await sub.connect();
  let outcome = 'listener not called';
  sub.on('disconnect', () => {
    try {
      // vm's watchdog interrupts anything running under this call after 1 s, so a busy loop
      // inside subscribe() surfaces as "Script execution timed out" instead of hanging vitest.
      vm.runInNewContext('go()', { go: () => void sub.subscribe('sb-2').catch(() => {}) }, { timeout: 1_000 });
      outcome = 'returned';
    } catch (error) {
      outcome = `threw: ${(error as Error).message}`;
    }
  });
  proxy.cutAll();
  await waitFor(() => outcome !== 'listener not called', 'the disconnect listener');
  expect(outcome).toBe('returned');
});

it('publish() called from a disconnect listener waits for the reconnect (commandTimeout) instead of NOT_CONNECTED', async () => {
  const s = await server();
  const proxy = await FaultProxy.start(s.port);
  cleanups.push(() => proxy.close());
  const sub = client({ port: proxy.port, accessToken: await s.token(), sandboxId: 'sb-1', commandTimeout: 5_000 });
  await sub.connect();
  let result: Promise<unknown> | undefined;
  sub.on('disconnect', () => {
    result = sub.publish('sb-1', 'after.cut', {}).then(
      (n) => `published to ${n}`,
      (e: { code?: string }) => `rejected ${e.code}`,
    );
  });
  proxy.cutAll();
  await waitFor(() => result !== undefined, 'the disconnect listener');
  expect(await result).toMatch(/^published/);
});

// ── 2. disconnect() right after connect() loses the held replay for good ──────────────────────
it('events held for the next turn are not skipped by a later connect() when disconnect() came first', async () => {
  const s = await server();
  const token = await s.token();
  const pub = client({ port: s.port, accessToken: token });
  await pub.connect();
  for (let i = 1; i <= 3; i++) await pub.publish('sb-h', 'old', { i });

  const sub = client({ port: s.port, accessToken: token, sandboxId: 'sb-h', from: '0' });
  const got: number[] = [];
  sub.on('event', (e) => got.push(e.data.i as number));
  await sub.connect();
  const cursorAfterFirstConnect = sub.lastEventId('sb-h');
  await sub.disconnect();
  const deliveredBeforeReconnect = [...got];

  await sub.connect();
  await pub.publish('sb-h', 'marker', { i: 99 });
  await waitFor(() => got.includes(99), 'the marker');
  // docs/client.md, "Exact resume": connect() again resumes after the last event *delivered*.
  expect({ deliveredBeforeReconnect, cursorAfterFirstConnect: cursorAfterFirstConnect !== undefined, got }).toEqual({
    deliveredBeforeReconnect: [],
    cursorAfterFirstConnect: true,
    got: [1, 2, 3, 99],
  });
});

// ── 3. several channels: the first channels' replay is handed out before connect() resolves ───
it('a loop started right after await connect() sees the replay of every subscribed sandbox', async () => {
  const s = await server();
  const token = await s.token();
  const pub = client({ port: s.port, accessToken: token });
  await pub.connect();
  for (let i = 1; i <= 3; i++) await pub.publish('sb-a', 'old', { i });
  for (let i = 1; i <= 3; i++) await pub.publish('sb-b', 'old', { i });

  const sub = client({ port: s.port, accessToken: token, sandboxId: 'sb-a', from: '0' });
  await sub.subscribe('sb-b', { from: '0' }); // remembered, restored by connect()
  const order: string[] = [];
  sub.on('connect', () => order.push('connect'));
  sub.on('event', (e) => order.push(`${e.sandboxId}:${e.data.i}`));
  await sub.connect();
  const seen: string[] = [];
  const loop = (async () => {
    for await (const e of sub.events()) {
      seen.push(`${e.sandboxId}:${e.data.i}`);
      if (e.type === 'marker') break;
    }
  })();
  await pub.publish('sb-b', 'marker', { i: 99 });
  await loop;
  expect({ order: order.slice(0, 1), seen }).toEqual({
    order: ['connect'],
    seen: ['sb-a:1', 'sb-a:2', 'sb-a:3', 'sb-b:1', 'sb-b:2', 'sb-b:3', 'sb-b:99'],
  });
});

// ── 4. unsubscribe() racing subscribe({ from: '0' }): the replay is dropped as duplicates ─────
it("subscribe({ from: '0' }) right after an un-awaited unsubscribe() delivers every retained event", async () => {
  const s = await server();
  const token = await s.token();
  const pub = client({ port: s.port, accessToken: token });
  await pub.connect();
  const sub = client({ port: s.port, accessToken: token, sandboxId: 'sb-r' });
  await sub.connect();
  await sleep(20); // past the held turn
  // A consumer that does not read: the client stops reading the socket after one event, so
  // the following live frames wait in the kernel ("in flight").
  const iterator = sub.events({ highWaterMark: 1 });
  for (let i = 1; i <= 20; i++) await pub.publish('sb-r', 'e', { i });
  await sleep(100);

  const after: number[] = [];
  sub.on('event', (e: SandboxEvent) => after.push(e.data.i as number));
  void sub.unsubscribe('sb-r');
  const resubscribed = sub.subscribe('sb-r', { from: '0' });
  await iterator.return!(); // the reader goes on
  await resubscribed;
  await pub.publish('sb-r', 'e', { i: 99 });
  await waitFor(() => after.includes(99), 'the marker');
  // from '0': every retained event, in order, then the live one.
  expect(after).toEqual([...Array.from({ length: 20 }, (_, k) => k + 1), 99]);
});

// ── 5. EventQueue: two next() calls before an event arrives ──────────────────────────────────
it('EventQueue settles every pending next() (async iterator protocol allows queued next calls)', async () => {
  const queue = new EventQueue(
    100,
    () => {},
    () => {},
  );
  const first = queue.next();
  const second = queue.next();
  const ev = (id: string): SandboxEvent => ({ id, sandboxId: 's', workspaceId: 1, type: 't', data: {}, timestamp: 1 });
  queue.push(ev('1-0'));
  queue.push(ev('2-0'));
  const firstResult = await Promise.race([first.then((r) => r.value?.id), sleep(200).then(() => 'never settled')]);
  const secondResult = await Promise.race([second.then((r) => r.value?.id), sleep(200).then(() => 'never settled')]);
  expect([firstResult, secondResult]).toEqual(['1-0', '2-0']);
});
