import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer } from '../../src/daemon.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import type { EventStore, HistoryQuery } from '../../src/store/types.js';
import { resp } from '../support/raw-client.js';
import { getJson, type HttpTestServer, postEvent, startHttpTestServer } from './support.js';

/**
 * The REST side (docs/http.md): POST /events and GET /events/<id> as
 * ComputeSDK's HTTP client calls them, against the real daemon, every status code.
 */
let broker: HttpTestServer;

/** A store whose history reads fail with a plain Error for one sandbox: the 500 path. */
class FailingStore extends MemoryStore {
  override history(query: HistoryQuery) {
    if (query.sandboxId === 'sb-broken') return Promise.reject(new Error('disk on fire'));
    return super.history(query);
  }

  override historyPages(query: HistoryQuery) {
    if (query.sandboxId === 'sb-broken') return Promise.reject(new Error('disk on fire'));
    return super.historyPages(query);
  }
}

beforeAll(async () => {
  broker = await startHttpTestServer({
    store: new FailingStore({ retention: { maxCount: 10_000, maxAgeMs: 3_600_000 } }),
    limits: { maxEventBytes: 1024, publishRatePerSecond: 1, publishBurst: 3 },
  });
});
afterAll(() => broker.close());

describe('POST /events', () => {
  it('stores with a sandbox token and answers the ComputeSDK shape with 201', async () => {
    const token = await broker.sandboxToken('sb-post');
    const before = Date.now();
    const { status, body } = await postEvent(broker.url, token, { type: 'execution.completed', data: { exitCode: 0 } });
    expect(status).toBe(201);
    expect(body.success).toBe(true);
    const data = body.data as Record<string, unknown>;
    expect(Object.keys(data).sort()).toEqual(['eventId', 'sandboxId', 'timestamp', 'type']);
    expect(data.sandboxId).toBe('sb-post');
    expect(data.type).toBe('execution.completed');
    expect(data.eventId).toMatch(/^\d+-\d+$/);
    expect(data.timestamp).toBeGreaterThanOrEqual(before);

    const history = await getJson(`${broker.url}/events/sb-post`, { 'x-api-key': await broker.token() });
    expect(history.status).toBe(200);
    expect(history.body).toEqual({
      success: true,
      data: {
        sandboxId: 'sb-post',
        count: 1,
        events: [
          {
            id: data.eventId,
            sandboxId: 'sb-post',
            workspaceId: 1,
            type: 'execution.completed',
            data: { exitCode: 0 },
            timestamp: data.timestamp,
          },
        ],
      },
    });
  });

  it('400 for bad JSON, a bad type, extra fields, data that is not an object; nothing stored', async () => {
    const token = await broker.sandboxToken('sb-bad');
    const cases: [unknown, string][] = [
      ['{"type": ', 'INVALID_EVENT'],
      [{ data: {} }, 'INVALID_EVENT'],
      [{ type: '' }, 'INVALID_EVENT'],
      [{ type: 'x'.repeat(129) }, 'INVALID_EVENT'],
      [{ type: 't', data: [1] }, 'INVALID_EVENT'],
      [{ type: 't', sandboxId: 'sb-other' }, 'INVALID_EVENT'],
      [[], 'INVALID_EVENT'],
    ];
    for (const [payload, code] of cases) {
      const { status, body } = await postEvent(broker.url, token, payload);
      expect(status, JSON.stringify(payload)).toBe(400);
      expect(body.code).toBe(code);
      expect(typeof body.error).toBe('string');
    }
    const history = await getJson(`${broker.url}/events/sb-bad`, { authorization: `Bearer ${token}` });
    expect((history.body.data as { count: number }).count).toBe(0);
  });

  it('401 without or with a bad credential, with WWW-Authenticate; counted by reason', async () => {
    const none = await postEvent(broker.url, undefined, { type: 't' });
    expect(none.status).toBe(401);
    expect(none.body).toEqual({ error: expect.any(String), code: 'UNAUTHENTICATED' });
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);

    const forged = await postEvent(broker.url, `${(await broker.sandboxToken('sb-1')).slice(0, -4)}AAAA`, {
      type: 't',
    });
    expect(forged.status).toBe(401);
    expect(forged.body.code).toBe('AUTH_FAILED');
    expect(broker.server.context.stats.authFailures.bad_signature).toBeGreaterThanOrEqual(1);

    const basic = await postEvent(broker.url, undefined, { type: 't' }, { authorization: 'Basic dXNlcjpwYXNz' });
    expect(basic.status).toBe(401);
    expect(basic.body.code).toBe('BAD_AUTHORIZATION');

    const expired = await broker.token({
      workspaceId: 1,
      sandboxId: 'sb-1',
      role: 'sandbox',
      now: Date.now() - 7_200_000,
    });
    const late = await postEvent(broker.url, expired, { type: 't' });
    expect(late.status).toBe(401);
    expect(broker.server.context.stats.authFailures.expired).toBeGreaterThanOrEqual(1);
  });

  it("403 for a token without a sandbox (the event goes to the token's own sandbox)", async () => {
    const { status, body } = await postEvent(broker.url, await broker.token(), { type: 't' });
    expect(status).toBe(403);
    expect(body.code).toBe('NO_PERMISSION');
  });

  it('413 over the event size limit, and a huge declared body is refused without being sent', async () => {
    const token = await broker.sandboxToken('sb-big');
    const big = await postEvent(broker.url, token, { type: 't', data: { blob: 'x'.repeat(2000) } });
    expect(big.status).toBe(413);
    expect(big.body.code).toBe('EVENT_TOO_LARGE');

    // Claims 100 MB, sends a few bytes: the answer comes at once, and the connection closes.
    const socket = net.connect(broker.httpPort, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString();
    });
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write(
      `POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\n` +
        'Content-Length: 100000000\r\n\r\n{"type":"t","data":{"blob":"',
    );
    await closed;
    expect(received).toMatch(/^HTTP\/1\.1 413 /);
    expect(received.toLowerCase()).toContain('connection: close');
    expect(received).toContain('"code":"EVENT_TOO_LARGE"');

    // A chunked body (no length declared) is cut off as soon as it passes the limit.
    let sent = 0;
    const chunked = await fetch(`${broker.url}/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: new ReadableStream({
        pull(controller) {
          sent += 1;
          if (sent > 64) controller.close();
          else controller.enqueue(new TextEncoder().encode('x'.repeat(512)));
        },
      }),
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(((await chunked.json()) as { code: string }).code).toBe('EVENT_TOO_LARGE');
  });

  it("429 with Retry-After past the sandbox token's rate limit, nothing of it stored", async () => {
    const token = await broker.sandboxToken('sb-rate');
    const statuses: number[] = [];
    let limited: Awaited<ReturnType<typeof postEvent>> | undefined;
    for (let i = 0; i < 5; i += 1) {
      const result = await postEvent(broker.url, token, { type: 't', data: { i } });
      statuses.push(result.status);
      if (result.status === 429) limited ??= result;
    }
    expect(statuses.slice(0, 3)).toEqual([201, 201, 201]);
    expect(statuses.slice(3)).toContain(429);
    expect(limited!.body.code).toBe('RATE_LIMITED');
    expect(Number(limited!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(limited!.body.retryAfterMs).toBeGreaterThan(0);
    const history = await getJson(`${broker.url}/events/sb-rate`, { authorization: `Bearer ${token}` });
    expect((history.body.data as { count: number }).count).toBe(statuses.filter((s) => s === 201).length);
  });
});

describe('GET /events/<sandboxId>', () => {
  it('filters by type, since and limit; oldest first; `after` pages exactly; `newest` takes the last', async () => {
    const app = await broker.authed({ workspaceId: 1 });
    for (let i = 0; i < 6; i += 1)
      app.send(resp('PUBLISH', 'sb-hist', JSON.stringify({ type: i % 2 === 0 ? 'even' : 'odd', data: { i } })));
    await app.read(':0\r\n'.repeat(6));
    const key = { 'x-api-key': await broker.token() };
    const all = await getJson(`${broker.url}/events/sb-hist`, key);
    const events = (all.body.data as { events: { id: string; timestamp: number; data: { i: number } }[] }).events;
    expect(events.map((event) => event.data.i)).toEqual([0, 1, 2, 3, 4, 5]);

    const even = await getJson(`${broker.url}/events/sb-hist?type=even&limit=2`, key);
    expect((even.body.data as { events: { data: { i: number } }[] }).events.map((e) => e.data.i)).toEqual([0, 2]);
    expect((even.body.data as { count: number }).count).toBe(2);

    const since = await getJson(`${broker.url}/events/sb-hist?since=${events[5]!.timestamp}`, key);
    expect((since.body.data as { events: { id: string }[] }).events.map((e) => e.id)).toContain(events[5]!.id);

    const after = await getJson(`${broker.url}/events/sb-hist?after=${events[3]!.id}`, key);
    expect((after.body.data as { events: { data: { i: number } }[] }).events.map((e) => e.data.i)).toEqual([4, 5]);

    const newest = await getJson(`${broker.url}/events/sb-hist?limit=2&newest=1`, key);
    expect((newest.body.data as { events: { data: { i: number } }[] }).events.map((e) => e.data.i)).toEqual([4, 5]);
  });

  it('400 for a bad limit, since, type or after', async () => {
    const key = { 'x-api-key': await broker.token() };
    for (const [query, code] of [
      ['limit=0', 'INVALID_LIMIT'],
      ['limit=1001', 'INVALID_LIMIT'],
      ['limit=ten', 'INVALID_LIMIT'],
      ['since=-5', 'INVALID_SINCE'],
      ['since=yesterday', 'INVALID_SINCE'],
      [`type=${'x'.repeat(129)}`, 'INVALID_TYPE'],
      ['after=12', 'INVALID_EVENT_ID'],
    ]) {
      const { status, body } = await getJson(`${broker.url}/events/sb-hist?${query}`, key);
      expect(status, query).toBe(400);
      expect(body.code, query).toBe(code);
    }
  });

  it('reads with Authorization: Bearer too, but never with ?token= (streams only)', async () => {
    const token = await broker.token();
    expect((await getJson(`${broker.url}/events/sb-hist`, { authorization: `Bearer ${token}` })).status).toBe(200);
    const query = await getJson(`${broker.url}/events/sb-hist?token=${token}`);
    expect(query.status).toBe(401);
    expect(query.body.code).toBe('UNAUTHENTICATED');
  });

  it('a sandbox token reads its own sandbox only: 403 for another', async () => {
    const token = await broker.sandboxToken('sb-own');
    expect((await getJson(`${broker.url}/events/sb-own`, { 'x-api-key': token })).status).toBe(200);
    const other = await getJson(`${broker.url}/events/sb-hist`, { 'x-api-key': token });
    expect(other.status).toBe(403);
    expect(other.body.code).toBe('NO_PERMISSION');
  });

  it('percent-decodes the sandbox id; an invalid id is a 400', async () => {
    const token = await broker.sandboxToken('a/b c');
    expect((await postEvent(broker.url, token, { type: 't' })).status).toBe(201);
    const read = await getJson(`${broker.url}/events/${encodeURIComponent('a/b c')}`, {
      'x-api-key': await broker.token(),
    });
    expect((read.body.data as { count: number; sandboxId: string }).count).toBe(1);
    expect((read.body.data as { sandboxId: string }).sandboxId).toBe('a/b c');
    const bad = await getJson(`${broker.url}/events/%7Bnot-qualified`, { 'x-api-key': await broker.token() });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe('INVALID_SANDBOX_ID');
    const broken = await getJson(`${broker.url}/events/%E0%A4%A`, { 'x-api-key': await broker.token() });
    expect(broken.status).toBe(400);
  });

  it('500 with a JSON body when the store fails unexpectedly; the daemon keeps serving', async () => {
    const { status, body } = await getJson(`${broker.url}/events/sb-broken`, { 'x-api-key': await broker.token() });
    expect(status).toBe(500);
    expect(body).toEqual({ error: 'internal server error', code: 'INTERNAL_ERROR' });
    expect((await getJson(`${broker.url}/healthz`)).status).toBe(200);
  });
});

describe('workspace isolation over HTTP', () => {
  it('no credential of workspace 2 reads or streams workspace 1, whatever name it uses', async () => {
    const ownerToken = await broker.sandboxToken('sb-secret', 1);
    expect((await postEvent(broker.url, ownerToken, { type: 'private', data: { pin: 1234 } })).status).toBe(201);
    const intruder = await broker.token({ workspaceId: 2 });
    // Same name in workspace 2: a different, empty sandbox.
    const same = await getJson(`${broker.url}/events/sb-secret`, { 'x-api-key': intruder });
    expect(same.status).toBe(200);
    expect((same.body.data as { count: number }).count).toBe(0);
    for (const path of [
      '/events/%7B1%7Dsb-secret',
      '/events/%7B1%7Dsb-secret/stream',
      '/events/stream?pattern=%7B1%7D*',
    ]) {
      const response = await fetch(`${broker.url}${path}`, { headers: { 'x-api-key': intruder } });
      expect(response.status, path).toBe(403);
      expect(((await response.json()) as { code: string }).code).toBe('NO_PERMISSION');
    }
    // A sandbox token of workspace 2 with the same sandbox id publishes into workspace 2 only.
    const twin = await broker.sandboxToken('sb-secret', 2);
    expect((await postEvent(broker.url, twin, { type: 'evil' })).status).toBe(201);
    const owner = await getJson(`${broker.url}/events/sb-secret`, { 'x-api-key': await broker.token() });
    expect((owner.body.data as { events: { type: string }[] }).events.map((e) => e.type)).toEqual(['private']);
    // An admin reaches it by its qualified name.
    const admin = await broker.token({ workspaceId: 9, role: 'admin' });
    const qualified = await getJson(`${broker.url}/events/%7B1%7Dsb-secret`, { authorization: `Bearer ${admin}` });
    expect((qualified.body.data as { count: number }).count).toBe(1);
  });
});

describe('across transports', () => {
  it('an event POSTed over HTTP reaches a TCP subscriber, byte for byte as PUBLISH would', async () => {
    const subscriber = await broker.authed({ workspaceId: 1 });
    subscriber.send(resp('SUBSCRIBE', 'sb-cross'));
    await subscriber.read('*3\r\n$9\r\nsubscribe\r\n$8\r\nsb-cross\r\n:1\r\n');
    const { body } = await postEvent(broker.url, await broker.sandboxToken('sb-cross'), {
      type: 'kernel_started',
      data: {},
    });
    const data = body.data as { eventId: string; timestamp: number };
    const json = `{"id":"${data.eventId}","sandboxId":"sb-cross","workspaceId":1,"type":"kernel_started","data":{},"timestamp":${data.timestamp}}`;
    const frame = `*3\r\n$7\r\nmessage\r\n$8\r\nsb-cross\r\n$${json.length}\r\n${json}\r\n`;
    expect(await subscriber.read(frame)).toBe(frame);
  });

  it('a TCP PUBLISH is readable over HTTP at once', async () => {
    const sandbox = await broker.authed({ workspaceId: 1, role: 'sandbox', sandboxId: 'sb-tcp' });
    sandbox.send(resp('PUBLISH', 'sb-tcp', '{"type":"process.exited","data":{"code":3}}'));
    expect(await sandbox.line()).toBe(':0\r\n');
    const read = await getJson(`${broker.url}/events/sb-tcp`, { 'x-api-key': await broker.token() });
    expect((read.body.data as { events: { type: string; data: unknown }[] }).events).toMatchObject([
      { type: 'process.exited', data: { code: 3 } },
    ]);
  });
});

describe('routing and operations', () => {
  it('404 for unknown paths, 405 with Allow for wrong methods, OPTIONS lists methods', async () => {
    const missing = await getJson(`${broker.url}/nope`);
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({ error: 'no such endpoint', code: 'NOT_FOUND' });
    expect((await getJson(`${broker.url}/events/a/b/c`)).status).toBe(404);

    const wrong = await fetch(`${broker.url}/events`, { method: 'GET' });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('POST');
    expect(((await wrong.json()) as { code: string }).code).toBe('METHOD_NOT_ALLOWED');
    const del = await fetch(`${broker.url}/events/sb-1`, { method: 'DELETE' });
    expect(del.status).toBe(405);
    expect(del.headers.get('allow')).toBe('GET');
    await del.body?.cancel();

    const options = await fetch(`${broker.url}/events`, { method: 'OPTIONS' });
    expect(options.status).toBe(204);
    expect(options.headers.get('allow')).toBe('POST, OPTIONS');
  });

  it('/healthz and /readyz answer 200 while serving', async () => {
    expect(await getJson(`${broker.url}/healthz`)).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await getJson(`${broker.url}/readyz`)).toMatchObject({
      status: 200,
      body: { status: 'ready', checks: { listening: 'ok', store: 'ok' } },
    });
  });

  it('serves an absolute-form request target (RFC 9112 3.2.2) by its path; refuses `*` with a documented code', async () => {
    const exchange = async (request: string): Promise<string> => {
      const socket = net.connect(broker.httpPort, '127.0.0.1');
      let received = '';
      socket.on('data', (chunk: Buffer) => {
        received += chunk.toString();
      });
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      socket.write(request);
      await closed;
      return received;
    };
    expect(
      await exchange('GET http://proxy.example/healthz HTTP/1.1\r\nHost: proxy.example\r\nConnection: close\r\n\r\n'),
    ).toMatch(/^HTTP\/1\.1 200 /);
    const star = await exchange('OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(star).toMatch(/^HTTP\/1\.1 400 /);
    expect(star).toContain('"code":"BAD_HTTP_REQUEST"');
  });

  it('a malformed request gets a JSON 400 and counts as an HTTP protocol error', async () => {
    const socket = net.connect(broker.httpPort, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString();
    });
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write('GET /healthz HTTP/1.1\r\nHost x\r\n\r\n');
    await closed;
    expect(received).toMatch(/^HTTP\/1\.1 400 /);
    expect(received).toContain('"code":"BAD_HTTP_REQUEST"');
    const metrics = await (await fetch(`${broker.url}/metrics`)).text();
    expect(metrics).toMatch(/sandbox_events_protocol_errors_total\{transport="http"\} [1-9]/);
  });
});

describe('readiness', () => {
  it('/readyz is 503 once the store is closed, /healthz stays 200', async () => {
    const store: EventStore = new MemoryStore({ retention: { maxCount: 10, maxAgeMs: 60_000 } });
    const local = await startHttpTestServer({ store });
    try {
      await store.close();
      const ready = await getJson(`${local.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(ready.body).toMatchObject({ code: 'NOT_READY', checks: { store: expect.stringContaining('closed') } });
      expect((await getJson(`${local.url}/healthz`)).status).toBe(200);
      // A write to a closed store is a 503 too, with Retry-After.
      const post = await postEvent(local.url, await local.sandboxToken('sb-1'), { type: 't' });
      expect(post.status).toBe(503);
      expect(post.body.code).toBe('STORE_CLOSED');
      expect(post.headers.get('retry-after')).toBe('1');
    } finally {
      await local.close();
    }
  });

  it('an HTTP port already taken fails the start with a clear error, and releases the TCP port', async () => {
    const tcpProbe = net.createServer();
    await new Promise<void>((resolve) => tcpProbe.listen(0, '127.0.0.1', resolve));
    const freeTcpPort = (tcpProbe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => tcpProbe.close(() => resolve()));
    const failed = await startServer({
      host: '127.0.0.1',
      port: freeTcpPort,
      httpPort: broker.httpPort,
      auth: { secret: 's' },
    }).catch((error: unknown) => error);
    expect(failed).toMatchObject({
      code: 'HTTP_LISTEN_FAILED',
      message: expect.stringContaining('--http-port 0 turns HTTP off'),
    });
    // The TCP side went with it: its port can be bound again.
    const again = net.createServer();
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.listen(freeTcpPort, '127.0.0.1', resolve);
    });
    await new Promise<void>((resolve) => again.close(() => resolve()));
  });

  it('closes cleanly: the HTTP port stops accepting with the TCP one', async () => {
    const local = await startHttpTestServer();
    const url = local.url;
    expect((await getJson(`${url}/healthz`)).status).toBe(200);
    await local.close();
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });
});

describe('CORS', () => {
  it('answers browsers of the configured origins only, preflight included', async () => {
    const local = await startHttpTestServer({ http: { corsOrigin: 'https://dash.example, https://ops.example' } });
    try {
      const allowed = await fetch(`${local.url}/events/sb-1?limit=1`, {
        headers: { origin: 'https://dash.example', 'x-api-key': await local.token() },
      });
      expect(allowed.status).toBe(200);
      expect(allowed.headers.get('access-control-allow-origin')).toBe('https://dash.example');
      expect(allowed.headers.get('vary')).toBe('origin');
      const other = await fetch(`${local.url}/healthz`, { headers: { origin: 'https://evil.example' } });
      expect(other.headers.get('access-control-allow-origin')).toBeNull();
      const preflight = await fetch(`${local.url}/events`, {
        method: 'OPTIONS',
        headers: { origin: 'https://ops.example', 'access-control-request-method': 'POST' },
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get('access-control-allow-methods')).toBe('POST, OPTIONS');
      expect(preflight.headers.get('access-control-allow-headers')).toContain('authorization');
      expect(preflight.headers.get('access-control-allow-headers')).toContain('last-event-id');
    } finally {
      await local.close();
    }
    // Off by default.
    const plain = await fetch(`${broker.url}/healthz`, { headers: { origin: 'https://dash.example' } });
    expect(plain.headers.get('access-control-allow-origin')).toBeNull();
  });
});
