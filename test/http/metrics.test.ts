import { EventSource } from 'eventsource';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resp } from '../support/raw-client.js';
import { parsePrometheus, sampleValue } from './prometheus.js';
import { type HttpTestServer, postEvent, startHttpTestServer } from './support.js';

/** /metrics read as Prometheus reads it, the figures moving as events flow; /metrics/stream. */
let broker: HttpTestServer;

beforeAll(async () => {
  broker = await startHttpTestServer({ http: { metricsIntervalMs: 50 } });
});
afterAll(() => broker.close());

async function scrape() {
  const response = await fetch(`${broker.url}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await response.text());
}

describe('GET /metrics', () => {
  it('exposes every family docs/http.md names, with types, in valid text format', async () => {
    const families = await scrape();
    const expected: [string, string][] = [
      ['sandbox_events_connections', 'gauge'],
      ['sandbox_events_subscriptions', 'gauge'],
      ['sandbox_events_events_published_total', 'counter'],
      ['sandbox_events_events_delivered_total', 'counter'],
      ['sandbox_events_publish_to_deliver_seconds', 'histogram'],
      ['sandbox_events_store_write_seconds', 'histogram'],
      ['sandbox_events_auth_failures_total', 'counter'],
      ['sandbox_events_slow_consumer_disconnects_total', 'counter'],
      ['sandbox_events_output_budget_disconnects_total', 'counter'],
      ['sandbox_events_output_queued_bytes', 'gauge'],
      ['sandbox_events_output_budget_bytes', 'gauge'],
      ['sandbox_events_protocol_errors_total', 'counter'],
      ['sandbox_events_uptime_seconds', 'gauge'],
      ['process_resident_memory_bytes', 'gauge'],
    ];
    for (const [name, type] of expected) {
      expect(families.get(name)?.type, name).toBe(type);
      expect(families.get(name)?.help, name).toBeTruthy();
    }
  });

  it('counters move as events flow over both transports', async () => {
    const before = await scrape();
    const tcp = await broker.authed({ workspaceId: 1 });
    tcp.send(resp('SUBSCRIBE', 'sb-m') + resp('PSUBSCRIBE', 'sb-*'));
    await tcp.read('*3\r\n$9\r\nsubscribe\r\n$4\r\nsb-m\r\n:1\r\n*3\r\n$10\r\npsubscribe\r\n$4\r\nsb-*\r\n:2\r\n');
    const stream = broker.track(new EventSource(`${broker.url}/events/sb-m/stream?token=${await broker.token()}`));
    await new Promise<void>((resolve) => stream.addEventListener('open', () => resolve(), { once: true }));

    const during = await scrape();
    expect(sampleValue(during, 'sandbox_events_connections', { transport: 'tcp' })).toBe(
      sampleValue(before, 'sandbox_events_connections', { transport: 'tcp' }) + 1,
    );
    expect(sampleValue(during, 'sandbox_events_connections', { transport: 'sse' })).toBe(1);
    expect(sampleValue(during, 'sandbox_events_connections', { transport: 'http' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(during, 'sandbox_events_subscriptions', { transport: 'tcp', kind: 'channel' })).toBe(1);
    expect(sampleValue(during, 'sandbox_events_subscriptions', { transport: 'tcp', kind: 'pattern' })).toBe(1);
    expect(sampleValue(during, 'sandbox_events_subscriptions', { transport: 'sse', kind: 'channel' })).toBe(1);

    const token = await broker.sandboxToken('sb-m');
    for (let i = 0; i < 3; i += 1)
      expect((await postEvent(broker.url, token, { type: 't', data: { i } })).status).toBe(201);
    await postEvent(broker.url, 'not-a-jwt', { type: 't' });
    await postEvent(broker.url, undefined, { type: 't' });

    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}): number =>
      sampleValue(after, name, labels) - sampleValue(before, name, labels);
    expect(delta('sandbox_events_events_published_total')).toBe(3);
    // Each event reached three subscriptions: the channel, the pattern, the stream.
    expect(delta('sandbox_events_events_delivered_total')).toBe(9);
    expect(delta('sandbox_events_publish_to_deliver_seconds_count')).toBe(3);
    expect(delta('sandbox_events_store_write_seconds_count')).toBe(3);
    expect(sampleValue(after, 'sandbox_events_publish_to_deliver_seconds_bucket', { le: '+Inf' })).toBe(
      sampleValue(after, 'sandbox_events_publish_to_deliver_seconds_count'),
    );
    expect(delta('sandbox_events_auth_failures_total', { reason: 'malformed' })).toBe(1);
    expect(delta('sandbox_events_auth_failures_total', { reason: 'missing_credentials' })).toBe(1);
    expect(delta('sandbox_events_http_requests_total', { route: '/events', status: '201' })).toBe(3);
    expect(delta('sandbox_events_http_requests_total', { route: '/events', status: '401' })).toBe(2);
  });

  it('counts broken RESP frames as tcp protocol errors', async () => {
    const before = await scrape();
    const client = await broker.authed();
    client.send('*1\r\n$-5\r\n');
    await client.closedByServer();
    const after = await scrape();
    expect(sampleValue(after, 'sandbox_events_protocol_errors_total', { transport: 'tcp' })).toBe(
      sampleValue(before, 'sandbox_events_protocol_errors_total', { transport: 'tcp' }) + 1,
    );
  });
});

describe('GET /metrics/stream', () => {
  it('streams a JSON snapshot each period, the figures following the traffic', async () => {
    const source = broker.track(new EventSource(`${broker.url}/metrics/stream`));
    const snapshots: Record<string, unknown>[] = [];
    let wake: (() => void) | undefined;
    source.addEventListener('metrics', (event: MessageEvent) => {
      snapshots.push(JSON.parse(String(event.data)) as Record<string, unknown>);
      wake?.();
    });
    const next = async (check: (snapshot: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
      const deadline = Date.now() + 5_000;
      for (;;) {
        const found = snapshots.find(check);
        if (found !== undefined) return found;
        if (Date.now() > deadline) throw new Error(`no such snapshot among ${JSON.stringify(snapshots.at(-1))}`);
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 200);
        });
      }
    };
    const first = await next(() => true);
    // Without a credential: no `workspaces` (docs/http.md, GET /metrics/stream).
    expect(Object.keys(first).sort()).toEqual([
      'channels',
      'connections',
      'errors',
      'events',
      'store',
      'subscriptions',
      'timestamp',
      'uptime_seconds',
    ]);
    expect(first).toMatchObject({
      uptime_seconds: expect.any(Number),
      connections: { tcp: expect.any(Number), http: expect.any(Number), sse: expect.any(Number) },
      events: { published: expect.any(Number), published_per_second: expect.any(Number) },
      errors: {
        auth_failures: expect.any(Number),
        protocol_errors: expect.any(Number),
        slow_consumer_disconnects: expect.any(Number),
      },
    });
    const published = (first.events as { published: number }).published;
    await postEvent(broker.url, await broker.sandboxToken('sb-ms'), { type: 't' });
    const later = await next((snapshot) => (snapshot.events as { published: number }).published === published + 1);
    expect((later.connections as { sse: number }).sse).toBeGreaterThanOrEqual(1);
    expect(snapshots.length).toBeGreaterThanOrEqual(2);
  });
});
