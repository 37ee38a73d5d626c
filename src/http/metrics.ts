import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { statSync } from 'node:fs';
import type { Principal } from '../auth/principal.js';
import type { ServerContext } from '../runtime/context.js';
import { SandboxActivity, type WorkspaceSummary } from './activity.js';
import { WeightedHistogram } from './weighted-histogram.js';

/**
 * The broker's figures in the Prometheus text format (prom-client), and as a JSON snapshot for
 * /metrics/stream. Most figures already exist as the counters INFO reports (ServerStats,
 * Broker.stats, Publisher); they are read at scrape time rather than counted twice. Only the
 * latencies need hooks (Publisher.observer), and HTTP's own figures are counted here.
 *
 * Each running server has its own registry (tests run several servers in one process); the
 * process metrics (CPU, memory, event loop lag, GC) are collected once per process.
 */

/** What the HTTP side reports about itself. */
export interface HttpFigures {
  /** Open HTTP connections (keep-alive ones and those carrying a stream). */
  sockets(): number;
  /** Open event streams by kind. */
  streams(): { channel: number; pattern: number; metrics: number };
  /** Malformed HTTP requests (the parser refused them). */
  protocolErrors(): number;
  /** Requests from browser pages on an origin `--http-cors-origin` does not allow. */
  corsRefused(): number;
}

export interface MetricsSnapshot {
  timestamp: number;
  uptime_seconds: number;
  connections: { tcp: number; http: number; sse: number };
  subscriptions: { tcp: number; sse: number };
  events: {
    published: number;
    delivered: number;
    published_per_second: number;
    delivered_per_second: number;
  };
  errors: {
    auth_failures: number;
    protocol_errors: number;
    slow_consumer_disconnects: number;
    rate_limited: number;
    /** Requests from browser pages on an origin not allowed (docs/http.md, "Browsers on another origin"). */
    cors_refused: number;
  };
  /** Sandboxes with at least one subscriber. */
  channels: number;
  /** The store: its kind, its size on disk or in memory where known, and a shared engine's state. */
  store: { kind: string; bytes: number | null; state: 'ready' | 'not_ready' };
  /** Only on a stream opened with a credential: its workspaces' figures (docs/http.md). */
  workspaces?: WorkspaceSummary[];
}

/** What a tenant's /metrics/stream reader gets when a metrics token guards the broker-wide figures. */
export type ScopedSnapshot = Pick<MetricsSnapshot, 'timestamp'> & { workspaces: WorkspaceSummary[] };

/** Latency buckets in seconds, 100 µs to 1 s: delivery is meant to take about a millisecond. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

let processRegistry: Registry | undefined;

function processMetrics(): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export class BrokerMetrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'route' | 'status'>;
  readonly activity: SandboxActivity;
  private last: { at: number; published: number; delivered: number } | undefined;

  constructor(
    private readonly context: ServerContext,
    private readonly http: HttpFigures,
  ) {
    const registers = [this.registry];
    const { stats, broker, publisher } = context;
    this.activity = new SandboxActivity(broker);

    new Gauge({
      name: 'sandbox_events_uptime_seconds',
      help: 'Seconds since the broker started',
      registers,
      collect() {
        this.set((Date.now() - context.startedAt) / 1000);
      },
    });
    new Gauge({
      name: 'sandbox_events_connections',
      help: 'Open client connections by transport (http counts keep-alive connections, sse the event streams among them)',
      labelNames: ['transport'],
      registers,
      collect: function (this: Gauge<'transport'>) {
        const streams = http.streams();
        this.set({ transport: 'tcp' }, context.connections.size);
        this.set({ transport: 'http' }, http.sockets());
        this.set({ transport: 'sse' }, streams.channel + streams.pattern + streams.metrics);
      },
    });
    new Gauge({
      name: 'sandbox_events_subscriptions',
      help: 'Subscriptions held, by transport and kind (channel or pattern)',
      labelNames: ['transport', 'kind'],
      registers,
      collect: function (this: Gauge<'transport' | 'kind'>) {
        let channels = 0;
        let patterns = 0;
        for (const connection of context.connections) {
          channels += connection.channels.size;
          patterns += connection.patterns.size;
        }
        const streams = http.streams();
        this.set({ transport: 'tcp', kind: 'channel' }, channels);
        this.set({ transport: 'tcp', kind: 'pattern' }, patterns);
        this.set({ transport: 'sse', kind: 'channel' }, streams.channel);
        this.set({ transport: 'sse', kind: 'pattern' }, streams.pattern);
      },
    });
    new Gauge({
      name: 'sandbox_events_channels',
      help: 'Channels (sandboxes) with at least one subscriber',
      registers,
      collect() {
        this.set(broker.channelCount);
      },
    });
    mirrorCounter(
      registers,
      'sandbox_events_events_published_total',
      'Events stored and fanned out',
      () => publisher.published,
    );
    mirrorCounter(
      registers,
      'sandbox_events_events_delivered_total',
      'Deliveries made (one per subscription reached)',
      () => broker.stats.delivered,
    );
    mirrorCounter(
      registers,
      'sandbox_events_publish_rate_limited_total',
      'Publishes refused by the per-sandbox rate limit',
      () => publisher.rateLimited,
    );
    mirrorCounter(
      registers,
      'sandbox_events_slow_consumer_disconnects_total',
      'Clients (TCP, SSE or HTTP) cut off for their unsent output: past the output limit or the daemon output budget',
      () => stats.slowConsumerDisconnects,
    );
    mirrorCounter(
      registers,
      'sandbox_events_output_budget_disconnects_total',
      'Clients (TCP, SSE or HTTP) cut off, the largest first, for passing the daemon output budget (--max-output-total)',
      () => context.outputBudget.cuts,
    );
    new Gauge({
      name: 'sandbox_events_output_queued_bytes',
      help: 'Unsent output of every client together (TCP, SSE and HTTP replies), measured at the scrape',
      registers,
      collect() {
        this.set(context.outputBudget.measure());
      },
    });
    new Gauge({
      name: 'sandbox_events_output_budget_bytes',
      help: 'The daemon output budget (--max-output-total); 0: none',
      registers,
      collect() {
        this.set(context.outputBudget.limit);
      },
    });
    mirrorCounter(
      registers,
      'sandbox_events_rejected_connections_total',
      'TCP connections refused at --max-clients',
      () => stats.rejectedConnections,
    );
    mirrorCounter(
      registers,
      'sandbox_events_commands_processed_total',
      'TCP commands run',
      () => stats.commandsProcessed,
    );
    new Counter({
      name: 'sandbox_events_auth_failures_total',
      help: 'Refused credentials by reason, every transport',
      labelNames: ['reason'],
      registers,
      collect: function (this: Counter<'reason'>) {
        this.reset();
        for (const [reason, count] of Object.entries(stats.authFailures)) this.inc({ reason }, count);
      },
    });
    new Counter({
      name: 'sandbox_events_protocol_errors_total',
      help: 'Malformed requests: broken RESP frames (tcp), requests the HTTP parser refused (http)',
      labelNames: ['transport'],
      registers,
      collect: function (this: Counter<'transport'>) {
        this.reset();
        this.inc({ transport: 'tcp' }, stats.protocolErrors);
        this.inc({ transport: 'http' }, http.protocolErrors());
      },
    });
    mirrorCounter(
      registers,
      'sandbox_events_http_cors_refused_total',
      'Requests from browser pages on an origin --http-cors-origin does not allow (the browser hides the answer)',
      () => http.corsRefused(),
    );
    this.httpRequests = new Counter({
      name: 'sandbox_events_http_requests_total',
      help: 'HTTP requests answered, by route and status',
      labelNames: ['route', 'status'],
      registers,
    });

    // Timed once per batch of publishes and counted for all of them (docs/performance.md, "Metrics").
    const deliverLatency = new WeightedHistogram(
      'sandbox_events_publish_to_deliver_seconds',
      'From a publish being accepted to its event queued for every subscriber (durable first)',
      LATENCY_BUCKETS,
      this.registry,
    );
    const storeLatency = new WeightedHistogram(
      'sandbox_events_store_write_seconds',
      'From a publish being accepted to the store reporting its event durable',
      LATENCY_BUCKETS,
      this.registry,
    );
    publisher.observer = {
      batch: (events, storedSeconds, deliveredSeconds) => {
        storeLatency.observeMany(storedSeconds, events);
        deliverLatency.observeMany(deliveredSeconds, events);
      },
      published: (last, events, receivers) => this.activity.record(last, receivers, events),
    };
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition: this broker's figures, then the process's. */
  async text(): Promise<string> {
    return (await this.registry.metrics()) + (await processMetrics().metrics());
  }

  /** The JSON figures of /metrics/stream; rates are since the previous snapshot. */
  snapshot(): MetricsSnapshot {
    const { context, http } = this;
    const now = Date.now();
    const published = context.publisher.published;
    const delivered = context.broker.stats.delivered;
    const last = this.last;
    const elapsed = last === undefined ? 0 : (now - last.at) / 1000;
    const rate = (value: number, previous: number | undefined): number =>
      elapsed > 0 && previous !== undefined ? Math.round(((value - previous) / elapsed) * 100) / 100 : 0;
    this.last = { at: now, published, delivered };
    let tcpSubscriptions = 0;
    for (const connection of context.connections) tcpSubscriptions += connection.subscriptionCount;
    const streams = http.streams();
    const stats = context.stats;
    return {
      timestamp: now,
      uptime_seconds: Math.floor((now - context.startedAt) / 1000),
      connections: {
        tcp: context.connections.size,
        http: http.sockets(),
        sse: streams.channel + streams.pattern + streams.metrics,
      },
      subscriptions: { tcp: tcpSubscriptions, sse: streams.channel + streams.pattern },
      events: {
        published,
        delivered,
        published_per_second: rate(published, last?.published),
        delivered_per_second: rate(delivered, last?.delivered),
      },
      errors: {
        auth_failures: Object.values(stats.authFailures).reduce((sum, n) => sum + n, 0),
        protocol_errors: stats.protocolErrors + http.protocolErrors(),
        slow_consumer_disconnects: stats.slowConsumerDisconnects,
        rate_limited: context.publisher.rateLimited,
        cors_refused: http.corsRefused(),
      },
      channels: context.broker.channelCount,
      store: storeFigures(context.store),
    };
  }

  /** A snapshot with the per-workspace figures this principal may see added. */
  scoped(snapshot: MetricsSnapshot, principal: Principal): MetricsSnapshot {
    return { ...snapshot, workspaces: this.activity.visibleWorkspaces(principal) };
  }

  /** Unhooks the latency observers (the server is closing). */
  detach(): void {
    this.context.publisher.observer = undefined;
  }
}

/**
 * What the console shows of the store. The stores have no common interface for this, so each
 * kind is asked what it has: SQLite its file and write-ahead log, the memory store its
 * retained bytes, the Redis engine whether it is connected and subscribed (`isReady`).
 */
function storeFigures(store: ServerContext['store']): MetricsSnapshot['store'] {
  const probe = store as Partial<{ path: string; retainedBytes(): number; isReady(): boolean }>;
  let bytes: number | null = null;
  if (typeof probe.path === 'string' && probe.path !== ':memory:') {
    bytes = fileSize(probe.path) + fileSize(`${probe.path}-wal`);
  } else if (typeof probe.retainedBytes === 'function') {
    bytes = probe.retainedBytes();
  }
  const ready = typeof probe.isReady === 'function' ? probe.isReady() : true;
  return { kind: store.kind, bytes, state: ready ? 'ready' : 'not_ready' };
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** A counter whose value lives elsewhere (a figure INFO reports too), read at scrape time. */
function mirrorCounter(registers: Registry[], name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers,
    collect: function (this: Counter) {
      this.reset();
      this.inc(read());
    },
  });
}
