import type { Principal } from '../auth/principal.js';
import type { ServerContext } from '../runtime/context.js';
import type { ApiKeyRegistry } from '../auth/api-keys.js';
import type { MetricsToken } from './credentials.js';
import type { BrokerMetrics } from './metrics.js';

/** HTTP settings beyond the port (ServerOptions.http). */
export interface HttpSettings {
  /** The API key file (`<data-dir>/api-keys.json`); without it only JWTs are accepted. */
  apiKeysFile?: string;
  /** How long a found API key is trusted before the file is checked again (default 1000 ms). */
  apiKeyCacheMs?: number;
  /** Comment heartbeat on every stream (default 15000 ms). */
  heartbeatMs?: number;
  /** The `retry:` an EventSource waits before reconnecting (default 2000 ms). */
  retryMs?: number;
  /** Period of /metrics/stream snapshots (default 1000 ms). */
  metricsIntervalMs?: number;
  /**
   * Origins that browsers on another origin may call from (CORS), comma-separated, or `*`.
   * Default: none (same-origin and non-browser clients only).
   */
  corsOrigin?: string;
  /** Serve the browser console at /console (default true; docs/console.md). */
  console?: boolean;
  /** The event type hopx's metrics stream carries (default `sandbox.metrics`; docs/http.md). */
  metricsType?: string;
  /** `--metrics-token`: what /metrics and the broker-wide /metrics/stream figures require (docs/http.md). */
  metricsToken?: string;
}

export const DEFAULT_HTTP_PORT = 8080;

export const HTTP_DEFAULTS = {
  apiKeyCacheMs: 1_000,
  heartbeatMs: 15_000,
  retryMs: 2_000,
  metricsIntervalMs: 1_000,
  console: true,
  metricsType: 'sandbox.metrics',
} as const;

export type StreamKind = 'channel' | 'pattern' | 'metrics';

/** An open event stream as its listener sees it (streams.ts, OpenStream). */
export interface HostedStream {
  readonly kind: StreamKind;
  /** Who opened the stream, when it was opened with a credential (/metrics/stream may be read without). */
  readonly principal: Principal | undefined;
  /** Writes one frame to the stream (the /metrics/stream snapshots). */
  write(frame: Buffer): void;
  /** A comment line that keeps proxies from timing the stream out. */
  heartbeat(): void;
  /** Tells the reader why, then ends the stream (token_expired: its key was removed at a reload). */
  end(reason: 'shutdown' | 'token_expired'): void;
}

/** What request handlers and streams reach: one per HTTP listener. */
export interface HttpHost {
  readonly context: ServerContext;
  readonly settings: Required<Omit<HttpSettings, 'apiKeysFile' | 'corsOrigin' | 'metricsToken'>>;
  readonly apiKeys: ApiKeyRegistry | undefined;
  readonly metrics: BrokerMetrics;
  readonly metricsToken: MetricsToken;
  readonly streams: Set<HostedStream>;
  /** Stopping: new streams are refused, readiness fails. */
  readonly closing: boolean;
  /** Both listeners bound and not closing. */
  listening(): boolean;
  /** Starts sending /metrics/stream snapshots to this stream, with the broker-wide figures or not. */
  addMetricsReader(stream: HostedStream, wholeBroker: boolean): void;
}
