import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventsAuthError, EventsError, EventsNetworkError } from '../../src/client/errors.js';
import { createEventsClient, EventsGapError, SseParser } from '../../src/client/http-client.js';
import type { GapInfo } from '../../src/client/types.js';
import type { SandboxEvent } from '../../src/event/event.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { type HttpTestServer, startDropProxy, startHttpTestServer, until } from './support.js';

/** The package's HTTP client (ComputeSDK's surface, plus `stream()`) against the real daemon. */
let broker: HttpTestServer;

beforeAll(async () => {
  broker = await startHttpTestServer({
    store: new MemoryStore({ retention: { maxCount: 5, maxAgeMs: 3_600_000 } }),
    http: { retryMs: 20 },
  });
});
afterAll(() => broker.close());

async function sandboxClient(sandboxId: string) {
  return createEventsClient({ gatewayUrl: broker.url, accessToken: await broker.sandboxToken(sandboxId) });
}

describe('storeEvent and getEvents', () => {
  it('stores with the sandbox token and reads back with an API key (a workspace token here)', async () => {
    const producer = await sandboxClient('sb-c');
    const stored = await producer.storeEvent({ type: 'execution.started', data: { cell: 1 } });
    expect(stored).toEqual({
      eventId: expect.stringMatching(/^\d+-\d+$/),
      sandboxId: 'sb-c',
      type: 'execution.started',
      timestamp: expect.any(Number),
    });
    await producer.storeEvent({ type: 'execution.completed' });

    const reader = createEventsClient({ gatewayUrl: `${broker.url}/`, apiKey: await broker.token() });
    const events = await reader.getEvents('sb-c');
    expect(events.map((event) => event.type)).toEqual(['execution.started', 'execution.completed']);
    expect(events[0]).toEqual({
      id: stored.eventId,
      sandboxId: 'sb-c',
      workspaceId: 1,
      type: 'execution.started',
      data: { cell: 1 },
      timestamp: stored.timestamp,
    });
    expect(events[1]!.data).toEqual({});
    expect((await reader.getEvents('sb-c', { type: 'execution.completed' })).length).toBe(1);
    expect((await reader.getEvents('sb-c', { limit: 5000 })).length).toBe(2); // clamped to 1000
    expect((await reader.getEvents('sb-c', { limit: 1 })).length).toBe(1);
    expect((await reader.getEvents('sb-c', { since: stored.timestamp + 3_600_000 })).length).toBe(0);
    // With no apiKey, the access token reads (its own sandbox).
    expect((await producer.getEvents('sb-c')).length).toBe(2);
  });

  it('sandbox ids are percent-encoded on the way out', async () => {
    const producer = await sandboxClient('dir/with space?');
    await producer.storeEvent({ type: 't' });
    const events = await createEventsClient({ gatewayUrl: broker.url, apiKey: await broker.token() }).getEvents(
      'dir/with space?',
    );
    expect(events.map((event) => event.sandboxId)).toEqual(['dir/with space?']);
  });

  it("errors are the package client's: EventsAuthError for 401/403, EventsError with the status otherwise", async () => {
    const missing = await createEventsClient({ gatewayUrl: broker.url })
      .storeEvent({ type: 't' })
      .catch((error: unknown) => error);
    expect(missing).toBeInstanceOf(EventsAuthError);
    expect(missing).toMatchObject({ code: 'AUTH_FAILED', statusCode: 401 });
    const forged = createEventsClient({ gatewayUrl: broker.url, accessToken: 'eyJhbGciOiJIUzI1NiJ9.e30.AAAA' });
    const refused = await forged.storeEvent({ type: 't' }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(EventsAuthError);
    expect(refused).toMatchObject({
      statusCode: 401,
      code: 'AUTH_FAILED',
      reply: expect.stringMatching(/^AUTH_FAILED /),
    });

    const workspace = createEventsClient({ gatewayUrl: broker.url, accessToken: await broker.token() });
    const forbidden = await workspace.storeEvent({ type: 't' }).catch((error: unknown) => error);
    expect(forbidden).toBeInstanceOf(EventsAuthError);
    expect(forbidden).toMatchObject({ statusCode: 403, code: 'NO_PERMISSION' });
    const producer = await sandboxClient('sb-e');
    const invalid = await producer.storeEvent({ type: '' }).catch((error: unknown) => error);
    expect(invalid).toBeInstanceOf(EventsError);
    expect(invalid).not.toBeInstanceOf(EventsAuthError);
    expect(invalid).toMatchObject({
      statusCode: 400,
      code: 'INVALID_EVENT',
      reply: expect.stringMatching(/^INVALID_EVENT /),
    });
    const other = await producer.getEvents('sb-other').catch((error: unknown) => error);
    expect(other).toMatchObject({ statusCode: 403, code: 'NO_PERMISSION' });
  });

  it('network failures and timeouts are EventsNetworkError', async () => {
    const silent = net.createServer(() => {}); // accepts, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const sockets: net.Socket[] = [];
    silent.on('connection', (socket) => sockets.push(socket));
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const slow = createEventsClient({ gatewayUrl: `http://127.0.0.1:${port}`, apiKey: 'k', timeout: 100 });
      const timedOut = await slow.getEvents('sb').catch((error: unknown) => error);
      expect(timedOut).toBeInstanceOf(EventsNetworkError);
      expect(timedOut).toMatchObject({ code: 'CONNECT_TIMEOUT', message: 'request timed out after 100 ms' });
    } finally {
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
    const closed = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (probe.address() as net.AddressInfo).port;
        probe.close(() => resolve(port));
      });
    });
    const unreachable = await createEventsClient({ gatewayUrl: `http://127.0.0.1:${closed}`, apiKey: 'k' })
      .getEvents('sb')
      .catch((error: unknown) => error);
    expect(unreachable).toBeInstanceOf(EventsNetworkError);
    expect(unreachable).toMatchObject({ code: 'CONNECTION_FAILED', message: expect.stringContaining('ECONNREFUSED') });
    expect((unreachable as EventsNetworkError).originalError).toBeInstanceOf(Error);
  });
});

describe('stream()', () => {
  it('yields live events, reconnects after a drop and resumes exactly where it was', async () => {
    const proxy = broker.track(await startDropProxy(broker.httpPort));
    const client = createEventsClient({ gatewayUrl: proxy.url, apiKey: await broker.token() });
    const producer = await sandboxClient('sb-s');
    const controller = new AbortController();
    const seen: SandboxEvent[] = [];
    const consuming = (async () => {
      for await (const event of client.stream('sb-s', { signal: controller.signal })) {
        seen.push(event);
        if (seen.length === 4) break;
      }
    })();
    await until(() => broker.server.context.broker.subscriberCount('{1}sb-s') === 1, 'the stream to subscribe');
    const ids = [(await producer.storeEvent({ type: 't', data: { n: 1 } })).eventId];
    await until(() => seen.length === 1, 'the first event');
    proxy.dropAll();
    ids.push((await producer.storeEvent({ type: 't', data: { n: 2 } })).eventId);
    ids.push((await producer.storeEvent({ type: 't', data: { n: 3 } })).eventId);
    await until(() => proxy.connections === 2 && seen.length === 3, 'the resumed events');
    ids.push((await producer.storeEvent({ type: 't', data: { n: 4 } })).eventId);
    await consuming;
    expect(seen.map((event) => event.id)).toEqual(ids);
    expect(seen.map((event) => event.data.n)).toEqual([1, 2, 3, 4]);
    // Leaving the loop closed the connection: the server dropped the subscription.
    await until(() => broker.server.context.broker.subscriberCount('{1}sb-s') === 0, 'the unsubscribe');
  });

  it('a resume past retention throws EventsGapError, or calls onGap and goes on', async () => {
    const producer = await sandboxClient('sb-g');
    const ids: string[] = [];
    for (let i = 0; i < 8; i += 1) ids.push((await producer.storeEvent({ type: 't', data: { i } })).eventId);
    const client = createEventsClient({ gatewayUrl: broker.url, apiKey: await broker.token() });

    const thrown = await (async () => {
      for await (const _ of client.stream('sb-g', { lastEventId: ids[0] })) return undefined;
      return undefined;
    })().catch((error: unknown) => error);
    expect(thrown).toBeInstanceOf(EventsGapError);
    expect(thrown).toBeInstanceOf(EventsError);
    expect((thrown as EventsGapError).code).toBe('RESUME_GAP');
    expect((thrown as EventsGapError).gap).toEqual({
      reason: 'trimmed',
      channel: 'sb-g',
      requestedId: ids[0],
      earliestId: ids[3],
      lastId: ids[7],
    });

    const gaps: GapInfo[] = [];
    const got: string[] = [];
    for await (const event of client.stream('sb-g', { lastEventId: ids[0], onGap: (gap) => gaps.push(gap) })) {
      got.push(event.id);
      if (got.length === 5) break;
    }
    expect(gaps.map((gap) => gap.reason)).toEqual(['trimmed']);
    expect(got).toEqual(ids.slice(3));
  });

  it('a refusal ends the iteration with its error instead of retrying', async () => {
    const client = createEventsClient({ gatewayUrl: broker.url, apiKey: await broker.sandboxToken('sb-x') });
    const error = await (async () => {
      for await (const _ of client.stream('sb-y')) return undefined;
      return undefined;
    })().catch((caught: unknown) => caught);
    expect(error).toMatchObject({ statusCode: 403, code: 'NO_PERMISSION' });
  });
});

describe('SseParser', () => {
  it('follows the spec: any line ending, split anywhere, BOM, comments, multi-line data, retry', () => {
    const text = '\uFEFFretry: 1500\r\n\r\n: comment\nid: 1-0\nevent: a\ndata: x\ndata: y\n\nid: 2-0\rdata:z\r\r';
    for (let split = 0; split <= text.length; split += 1) {
      const parser = new SseParser();
      const messages = [...parser.feed(text.slice(0, split)), ...parser.feed(text.slice(split))];
      expect(messages, `split at ${split}`).toEqual([
        { event: 'message', data: undefined, id: undefined, retry: 1500 },
        { event: 'a', data: 'x\ny', id: '1-0', retry: undefined },
        { event: 'message', data: 'z', id: '2-0', retry: undefined },
      ]);
    }
  });
});
