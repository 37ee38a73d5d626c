import { spawn } from 'node:child_process';
import net from 'node:net';
import { EventSource } from 'eventsource';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../src/auth/principal.js';
import { formatEventId } from '../../src/event/event.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { LaggingStore } from '../support/lagging-store.js';
import { resp } from '../support/raw-client.js';
import { requireTool } from '../support/tools.js';
import { type DropProxy, type HttpTestServer, postEvent, startDropProxy, startHttpTestServer } from './support.js';
import { eventData } from '../support/event-data.js';

/**
 * The event streams with a real EventSource client (the `eventsource` package): live events,
 * resume after the connection drops (Last-Event-ID), the exact seam under load, the gap
 * signal past retention, patterns, ?token=, heartbeats (curl -N), slow readers, expiry.
 */

interface Received {
  type: string;
  id: string;
  data: string;
}

interface ParsedEvent {
  id: string;
  sandboxId: string;
  type: string;
  data: Record<string, unknown>;
}

/** An EventSource and everything it received, with waits that wake on each arrival. */
class Watcher {
  readonly received: Received[] = [];
  readonly errors: { code?: number; message?: string }[] = [];
  opens = 0;
  private waiters: (() => void)[] = [];

  constructor(
    readonly source: EventSource,
    types: string[],
  ) {
    for (const type of types) {
      source.addEventListener(type, (event: MessageEvent) => {
        this.received.push({ type, id: event.lastEventId, data: String(event.data) });
        this.wake();
      });
    }
    source.addEventListener('open', () => {
      this.opens += 1;
      this.wake();
    });
    source.addEventListener('error', (event) => {
      const error = event as unknown as { code?: number; message?: string };
      this.errors.push({ code: error.code, message: error.message });
      this.wake();
    });
  }

  /** The data of received events of these types, parsed. */
  events(type = 't'): ParsedEvent[] {
    return this.received.filter((r) => r.type === type).map((r) => JSON.parse(r.data) as ParsedEvent);
  }

  async until(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      const remaining = deadline - Date.now();
      if (remaining <= 0)
        throw new Error(`timed out waiting for ${what}; received ${JSON.stringify(this.received).slice(0, 500)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.source.close();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}

function withHeaders(headers: Record<string, string>) {
  return {
    fetch: (input: string | URL | Request, init?: RequestInit) =>
      fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), ...headers } }),
  };
}

let broker: HttpTestServer;

/** Open SSE streams, as /metrics counts them. */
async function sseStreamCount(): Promise<number> {
  const text = await (await fetch(`${broker.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('sandbox_events_connections{transport="sse"} '));
  return Number(line?.split(' ')[1]);
}
const app: Principal = Object.freeze({ workspaceId: 1, role: 'workspace', expiresAt: Number.POSITIVE_INFINITY });

/** Publishes through the one publish path, as any transport does. */
async function publish(
  sandboxId: string,
  data: Record<string, unknown> = {},
  type = 't',
  workspaceId = 1,
): Promise<string> {
  const principal = workspaceId === 1 ? app : { ...app, workspaceId };
  const { event } = await broker.server.context.publisher.publish(
    principal,
    { workspaceId, sandboxId },
    type,
    Buffer.from(JSON.stringify(data)),
  );
  return `${event.id.ms}-${event.id.seq}`;
}

function watch(url: string, types: string[], headers?: Record<string, string>): Watcher {
  return broker.track(
    new Watcher(new EventSource(url, headers === undefined ? undefined : withHeaders(headers)), types),
  );
}

beforeAll(async () => {
  broker = await startHttpTestServer({
    store: new MemoryStore({ retention: { maxCount: 1_000, maxAgeMs: 3_600_000 } }),
    http: { retryMs: 50, heartbeatMs: 100 },
  });
});
afterAll(() => broker.close());

describe('GET /events/<sandboxId>/stream', () => {
  it('delivers each event as id / event / data, whatever transport published it', async () => {
    const token = await broker.token();
    const watcher = watch(
      `${broker.url}/events/sb-live/stream`,
      ['execution.completed', 'kernel_started', 'process.exited'],
      {
        authorization: `Bearer ${token}`,
      },
    );
    await watcher.until(() => watcher.opens === 1, 'open');
    const posted = await postEvent(broker.url, await broker.sandboxToken('sb-live'), {
      type: 'execution.completed',
      data: { exitCode: 0 },
    });
    const tcp = await broker.authed({ workspaceId: 1, role: 'sandbox', sandboxId: 'sb-live' });
    tcp.send(resp('PUBLISH', 'sb-live', '{"type":"kernel_started"}'));
    await tcp.line();
    const direct = await publish('sb-live', { code: 1 }, 'process.exited');
    await watcher.until(() => watcher.received.length === 3, '3 events');
    expect(watcher.received.map((r) => r.type)).toEqual(['execution.completed', 'kernel_started', 'process.exited']);
    expect(watcher.received[0]!.id).toBe((posted.body.data as { eventId: string }).eventId);
    expect(watcher.received[2]!.id).toBe(direct);
    const first = JSON.parse(watcher.received[0]!.data) as Record<string, unknown>;
    expect(first).toEqual({
      id: watcher.received[0]!.id,
      sandboxId: 'sb-live',
      workspaceId: 1,
      type: 'execution.completed',
      data: { exitCode: 0 },
      timestamp: (posted.body.data as { timestamp: number }).timestamp,
    });
  });

  it('resumes with Last-Event-ID after the connection drops: every event once, in order', async () => {
    const proxy: DropProxy = broker.track(await startDropProxy(broker.httpPort));
    const watcher = watch(`${proxy.url}/events/sb-resume/stream`, ['t'], { 'x-api-key': await broker.token() });
    await watcher.until(() => watcher.opens === 1, 'open');
    const ids = [await publish('sb-resume', { n: 1 }), await publish('sb-resume', { n: 2 })];
    await watcher.until(() => watcher.received.length === 2, 'the first two events');

    proxy.dropAll();
    await watcher.until(() => watcher.errors.length === 1, 'the drop to be seen');
    // Published while the client is away: the resume must replay exactly these.
    ids.push(await publish('sb-resume', { n: 3 }), await publish('sb-resume', { n: 4 }));
    await watcher.until(() => watcher.opens === 2, 'the reconnect');
    ids.push(await publish('sb-resume', { n: 5 }));
    await watcher.until(() => watcher.received.length >= 5, 'five events');
    expect(watcher.received.map((r) => r.id)).toEqual(ids);
    expect(watcher.events().map((e) => e.data.n)).toEqual([1, 2, 3, 4, 5]);
    expect(proxy.connections).toBe(2);
    expect(watcher.received.filter((r) => r.type !== 't')).toEqual([]);
  });

  it('keeps the exact-replay promise while publishing goes on (no gap, no repeat at the seam)', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 50; i += 1) ids.push(await publish('sb-seam', { i }));
    let publishing = true;
    const producer = (async () => {
      for (let i = 50; i < 600; i += 1) {
        ids.push(await publish('sb-seam', { i }));
        if (i % 25 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      publishing = false;
    })();
    // Resumes from event 20 while the producer runs: the replay and live events meet.
    const watcher = watch(`${broker.url}/events/sb-seam/stream?lastEventId=${ids[20]}`, ['t', 'gap'], {
      authorization: `Bearer ${await broker.token()}`,
    });
    await producer;
    expect(publishing).toBe(false);
    await watcher.until(() => watcher.received.length >= 579, 'every event after #20', 10_000);
    expect(watcher.received.map((r) => r.id)).toEqual(ids.slice(21));
  });

  it('drops live copies of replayed events that arrive after the replay (a live path that lags reads, as across nodes)', async () => {
    const store = new LaggingStore(new MemoryStore({ retention: { maxCount: 1_000, maxAgeMs: 3_600_000 } }));
    const lagging = await startHttpTestServer({ store, http: { retryMs: 50, heartbeatMs: 100 } });
    try {
      const elsewhere = async () =>
        formatEventId((await store.append({ workspaceId: 1, sandboxId: 'sb-lag', type: 't', ...eventData('{}') })).id);
      const ids = [await elsewhere(), await elsewhere(), await elsewhere()];
      const watcher = lagging.track(
        new Watcher(
          new EventSource(`${lagging.url}/events/sb-lag/stream?lastEventId=0&token=${await lagging.token()}`),
          ['t'],
        ),
      );
      await watcher.until(() => watcher.received.length === 3, 'the replay');
      expect(store.release()).toBe(3);
      ids.push(await elsewhere());
      expect(store.release()).toBe(1);
      await watcher.until(() => watcher.received.length >= 4, 'the live event');
      ids.push(await elsewhere());
      store.release();
      await watcher.until(() => watcher.received.length >= 5, 'the next live event');
      expect(watcher.received.map((r) => r.id)).toEqual(ids);
    } finally {
      await lagging.close();
    }
  });

  it('resuming at the newest id, a late live copy of that event is not sent again (the floor is the resume point)', async () => {
    const store = new LaggingStore(new MemoryStore({ retention: { maxCount: 1_000, maxAgeMs: 3_600_000 } }));
    const lagging = await startHttpTestServer({ store, http: { retryMs: 50, heartbeatMs: 100 } });
    try {
      const elsewhere = async () =>
        formatEventId(
          (await store.append({ workspaceId: 1, sandboxId: 'sb-floor', type: 't', ...eventData('{}') })).id,
        );
      const seen = await elsewhere(); // the reader had it from another node
      const watcher = lagging.track(
        new Watcher(
          new EventSource(`${lagging.url}/events/sb-floor/stream?lastEventId=${seen}&token=${await lagging.token()}`),
          ['t'],
        ),
      );
      await watcher.until(() => watcher.opens === 1, 'open');
      expect(store.release()).toBe(1); // the late live copy of `seen`
      const next = await elsewhere();
      store.release();
      await watcher.until(() => watcher.received.length >= 1, 'the next event');
      expect(watcher.received.map((r) => r.id)).toEqual([next]);
    } finally {
      await lagging.close();
    }
  });

  it('sends no heartbeat before the stream opens (a resume waiting for its first read)', async () => {
    const store = new LaggingStore(new MemoryStore({ retention: { maxCount: 1_000, maxAgeMs: 3_600_000 } }));
    const slow = await startHttpTestServer({ store, http: { retryMs: 50, heartbeatMs: 20 } });
    try {
      const id = formatEventId(
        (await store.append({ workspaceId: 1, sandboxId: 'sb-slow', type: 't', ...eventData('{}') })).id,
      );
      store.holdReads = true;
      const response = fetch(`${slow.url}/events/sb-slow/stream?lastEventId=0`, {
        headers: { authorization: `Bearer ${await slow.token()}` },
      });
      const deadline = Date.now() + 5_000;
      while (store.readsHeld === 0 && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve));
      // Heartbeats tick (every 20 ms) while the read waits; a byte written now would have sent
      // the head without the event-stream headers (a regression test).
      await new Promise((resolve) => setTimeout(resolve, 100));
      store.holdReads = false;
      expect(store.releaseReads()).toBe(1);
      const opened = await response;
      expect(opened.status).toBe(200);
      expect(opened.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      const reader = opened.body!.getReader();
      let text = '';
      while (!text.includes(`id: ${id}`)) text += new TextDecoder().decode((await reader.read()).value);
      await reader.cancel();
    } finally {
      await slow.close();
    }
  });

  it('refuses a stream pipelined behind another request on its connection, and leaves nothing behind', async () => {
    const token = await broker.token();
    const socket = net.connect(broker.httpPort, '127.0.0.1');
    socket.on('error', () => {});
    let received = '';
    const headArrived = new Promise<void>((resolve) =>
      socket.on('data', (chunk: Buffer) => {
        received += chunk.toString();
        if (received.includes('\r\n\r\n')) resolve();
      }),
    );
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const before = await sseStreamCount();
    let requests = '';
    for (let i = 0; i < 20; i++)
      requests += `GET /events/sb-pipe-${i}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`;
    socket.write(requests);
    await headArrived; // the first stream is open; the parser has read the rest of the chunk
    expect(await sseStreamCount()).toBe(before + 1);
    socket.destroy();
    const deadline = Date.now() + 5_000;
    while ((await sseStreamCount()) !== before && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await sseStreamCount()).toBe(before);
  });

  it('?lastEventId=0 replays everything retained; Last-Event-ID wins over ?lastEventId=', async () => {
    const ids = [await publish('sb-zero'), await publish('sb-zero'), await publish('sb-zero')];
    const token = await broker.token();
    const all = watch(`${broker.url}/events/sb-zero/stream?lastEventId=0&token=${token}`, ['t']);
    await all.until(() => all.received.length === 3, 'the whole history');
    expect(all.received.map((r) => r.id)).toEqual(ids);

    const response = await fetch(`${broker.url}/events/sb-zero/stream?lastEventId=0`, {
      headers: { authorization: `Bearer ${token}`, 'last-event-id': ids[1]! },
    });
    const reader = response.body!.getReader();
    let text = '';
    while (!text.includes(`id: ${ids[2]}`)) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(text).not.toContain(`id: ${ids[0]}`);
    expect(text).not.toContain(`id: ${ids[1]}`);
  });

  it('signals a resume past retention with event: gap, then sends what is retained', async () => {
    const small = await startHttpTestServer({
      store: new MemoryStore({ retention: { maxCount: 3, maxAgeMs: 3_600_000 } }),
    });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 6; i += 1) {
        const { body } = await postEvent(
          small.url,
          await small.token({ workspaceId: 1, sandboxId: 'sb-gap', role: 'sandbox' }),
          { type: 't', data: { i } },
        );
        ids.push((body.data as { eventId: string }).eventId);
      }
      const watcher = small.track(
        new Watcher(
          new EventSource(`${small.url}/events/sb-gap/stream?lastEventId=${ids[0]}&token=${await small.token()}`),
          ['t', 'gap'],
        ),
      );
      await watcher.until(() => watcher.received.length === 4, 'the gap and the retained events');
      expect(watcher.received[0]!.type).toBe('gap');
      expect(JSON.parse(watcher.received[0]!.data)).toEqual({
        sandboxId: 'sb-gap',
        lastEventId: ids[0],
        status: 'trimmed',
        earliestId: ids[3],
        lastId: ids[5],
      });
      expect(watcher.received.slice(1).map((r) => r.id)).toEqual(ids.slice(3));

      const future = small.track(
        new Watcher(
          new EventSource(
            `${small.url}/events/sb-gap/stream?lastEventId=99999999999999-0&token=${await small.token()}`,
          ),
          ['gap'],
        ),
      );
      await future.until(() => future.received.length === 1, 'the future gap');
      expect(JSON.parse(future.received[0]!.data)).toMatchObject({ status: 'future', lastId: ids[5] });
    } finally {
      await small.close();
    }
  });

  it('refuses: 401 without or with a bad credential, 403 for another sandbox, 400 for a bad id', async () => {
    const cases: [string, Record<string, string>, number, string][] = [
      ['/events/sb-1/stream', {}, 401, 'UNAUTHENTICATED'],
      ['/events/sb-1/stream?token=eyJhbGciOiJIUzI1NiJ9.e30.xxxx', {}, 401, 'AUTH_FAILED'],
      ['/events/sb-1/stream', { 'x-api-key': await broker.sandboxToken('sb-2') }, 403, 'NO_PERMISSION'],
      ['/events/sb-1/stream?lastEventId=yesterday', { 'x-api-key': await broker.token() }, 400, 'INVALID_EVENT_ID'],
      ['/events/stream', { 'x-api-key': await broker.sandboxToken('sb-2') }, 403, 'NO_PERMISSION'],
      [`/events/stream?pattern=${'x'.repeat(1025)}`, { 'x-api-key': await broker.token() }, 400, 'INVALID_PATTERN'],
    ];
    for (const [path, headers, status, code] of cases) {
      const response = await fetch(`${broker.url}${path}`, { headers });
      expect(response.status, path).toBe(status);
      expect(response.headers.get('content-type')).toContain('application/json');
      expect(((await response.json()) as { code: string }).code, path).toBe(code);
    }
    // A real EventSource stops on a 401 instead of retrying.
    const refused = watch(`${broker.url}/events/sb-1/stream`, ['t']);
    await refused.until(() => refused.errors.length === 1, 'the refusal');
    expect(refused.errors[0]!.code).toBe(401);
    expect(refused.source.readyState).toBe(EventSource.CLOSED);
  });

  it('ends the stream when its token expires, saying so', async () => {
    const strict = await startHttpTestServer({ clockToleranceSeconds: 0, http: { retryMs: 50 } });
    try {
      const token = await strict.token({ ttlSeconds: 1 });
      const watcher = strict.track(
        new Watcher(new EventSource(`${strict.url}/events/sb-1/stream?token=${token}`), ['close']),
      );
      await watcher.until(() => watcher.received.length === 1, 'the close event', 5_000);
      expect(JSON.parse(watcher.received[0]!.data)).toEqual({ reason: 'token_expired' });
      // The reconnect with the same token is refused: the EventSource gives up.
      await watcher.until(() => watcher.errors.some((error) => error.code === 401), 'the 401 on reconnect', 5_000);
    } finally {
      await strict.close();
    }
  });

  it('ends every stream on shutdown with event: close', async () => {
    const local = await startHttpTestServer();
    // Not tracked: the test server would close it before stopping.
    const watcher = new Watcher(new EventSource(`${local.url}/events/sb-1/stream?token=${await local.token()}`), [
      'close',
    ]);
    try {
      await watcher.until(() => watcher.opens === 1, 'open');
      await local.close();
      await watcher.until(() => watcher.received.length === 1, 'the close event');
      expect(JSON.parse(watcher.received[0]!.data)).toEqual({ reason: 'shutdown' });
    } finally {
      watcher.close();
      await local.close();
    }
  });
});

describe('GET /events/stream?pattern=', () => {
  it("delivers matching sandboxes of the token's workspace only", async () => {
    const watcher = watch(`${broker.url}/events/stream?pattern=job-*&token=${await broker.token()}`, ['t']);
    await watcher.until(() => watcher.opens === 1, 'open');
    await publish('job-1', { n: 1 });
    await publish('other', { n: 2 });
    await publish('job-1', { n: 3 }, 't', 2); // same name, workspace 2
    await publish('job-2', { n: 4 });
    await watcher.until(() => watcher.received.length === 2, 'two events');
    expect(watcher.events().map((e) => [e.sandboxId, e.data.n])).toEqual([
      ['job-1', 1],
      ['job-2', 4],
    ]);
  });

  it('a reconnect with Last-Event-ID is told the pattern stream cannot resume (event: gap)', async () => {
    const response = await fetch(`${broker.url}/events/stream`, {
      headers: { authorization: `Bearer ${await broker.token()}`, 'last-event-id': '1-0' },
    });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    let text = '';
    while (!text.includes('event: gap')) text += new TextDecoder().decode((await reader.read()).value);
    while (!text.includes('\n\n', text.indexOf('event: gap')))
      text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(text).toMatch(/^retry: 50\n\n/);
    const data = /event: gap\ndata: (.*)\n\n/.exec(text)![1]!;
    expect(JSON.parse(data)).toEqual({
      pattern: '*',
      lastEventId: '1-0',
      status: 'not_resumable',
      earliestId: null,
      lastId: null,
    });
  });
});

describe('stream framing', () => {
  it('an event type holding a line break cannot forge fields: it goes out as `message`', async () => {
    const watcher = watch(`${broker.url}/events/sb-forge/stream?token=${await broker.token()}`, ['message', 'evil']);
    await watcher.until(() => watcher.opens === 1, 'open');
    await publish('sb-forge', {}, 'x\nevent: evil\ndata: {"forged":true}\n');
    await watcher.until(() => watcher.received.length === 1, 'the event');
    expect(watcher.received[0]!.type).toBe('message');
    expect((JSON.parse(watcher.received[0]!.data) as { type: string }).type).toBe(
      'x\nevent: evil\ndata: {"forged":true}\n',
    );
  });

  it('curl -N sees the raw stream: retry, heartbeats, id / event / data', async () => {
    if (!requireTool('curl', 'curl')) return;
    const curl = spawn('curl', [
      '-N',
      '-s',
      '-H',
      `Authorization: Bearer ${await broker.token()}`,
      `${broker.url}/events/sb-curl/stream`,
    ]);
    broker.track({ close: () => curl.kill('SIGKILL') });
    let output = '';
    let wake: (() => void) | undefined;
    curl.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      wake?.();
    });
    const seen = async (text: string): Promise<void> => {
      const deadline = Date.now() + 5_000;
      while (!output.includes(text)) {
        if (Date.now() > deadline)
          throw new Error(`curl never printed ${JSON.stringify(text)}; got ${JSON.stringify(output)}`);
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 100);
        });
      }
    };
    await seen('retry: 50\n\n');
    const id = await publish('sb-curl', { line: 'hello' }, 'terminal.output');
    await seen(
      `id: ${id}\nevent: terminal.output\ndata: {"id":"${id}","sandboxId":"sb-curl","workspaceId":1,"type":"terminal.output","data":{"line":"hello"},`,
    );
    await seen(': heartbeat\n\n');
    curl.kill('SIGKILL');
  });

  it('a reader that does not read is cut off at the output limit, counted; others are unaffected', async () => {
    const tight = await startHttpTestServer({
      limits: { maxOutputBytes: 256 * 1024 },
      store: new MemoryStore({ retention: { maxCount: 5, maxAgeMs: 3_600_000 } }),
    });
    try {
      const token = await tight.token();
      const stalled = net.connect(tight.httpPort, '127.0.0.1');
      tight.track({ close: () => stalled.destroy() });
      stalled.on('error', () => {});
      let head = '';
      await new Promise<void>((resolve) => {
        stalled.on('data', (chunk: Buffer) => {
          head += chunk.toString();
          if (head.includes('retry:')) {
            stalled.pause(); // and never read again
            resolve();
          }
        });
        stalled.write(`GET /events/sb-flood/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`);
      });
      const healthy = tight.track(
        new Watcher(new EventSource(`${tight.url}/events/sb-flood/stream?token=${token}`), ['t']),
      );
      await healthy.until(() => healthy.opens === 1, 'open');

      const stats = tight.server.context.stats;
      const payload = Buffer.from(JSON.stringify({ blob: 'x'.repeat(60_000) }));
      let published = 0;
      while (stats.slowConsumerDisconnects === 0 && published < 3_000) {
        await tight.server.context.publisher.publish(app, { workspaceId: 1, sandboxId: 'sb-flood' }, 't', payload);
        published += 1;
        // Two 60 KB events per turn stay under the 256 KiB limit for a reader that keeps up.
        if (published % 2 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      expect(stats.slowConsumerDisconnects).toBe(1);
      await healthy.until(() => healthy.received.length === published, 'the healthy reader to get everything', 20_000);
      const metrics = await (await fetch(`${tight.url}/metrics`)).text();
      expect(metrics).toMatch(/^sandbox_events_slow_consumer_disconnects_total 1$/m);
    } finally {
      await tight.close();
    }
  });
});
