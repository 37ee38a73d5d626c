import { totalmem } from 'node:os';

/**
 * The limits of docs/security.md ("Limits"), each configurable, plus the protocol caps that
 * keep one client's input and output bounded.
 */
export interface Limits {
  /** One event as published (64 KiB by default). */
  maxEventBytes: number;
  /** Arguments in one command (1,024 by default). */
  maxArgs: number;
  /** One inline line, and one `*`/`$` header line (64 KiB by default). */
  maxInlineBytes: number;
  /** One bulk string of an authenticated client. */
  maxBulkBytes: number;
  /** One whole request of an authenticated client. */
  maxRequestBytes: number;
  /** Before AUTH: arguments per command (10 by default; Redis's CVE-2021-32675 fix). */
  preAuthMaxArgs: number;
  /** Before AUTH: bytes per bulk / command (16 KiB by default). */
  preAuthMaxBulkBytes: number;
  /** Before AUTH: unsent output (CVE-2025-21605: an unauthenticated client can't grow it). */
  preAuthMaxOutputBytes: number;
  /** Before AUTH: time to authenticate. */
  authTimeoutMs: number;
  /** One client's unsent output (8 MiB by default); past it the client is disconnected. */
  maxOutputBytes: number;
  /**
   * Every client's unsent output together (`--max-output-total`, an eighth of the machine's
   * memory by default); past it the clients holding the most are disconnected first. 0: none.
   */
  maxOutputTotalBytes: number;
  /** Open connections (`--max-clients`). */
  maxClients: number;
  /** Channels plus patterns one connection may hold. */
  maxSubscriptionsPerConnection: number;
  /** PUBLISH commands of one connection waiting for the store at once. */
  maxPipelinedPublishes: number;
  /** Publishes per second of one sandbox token (1,000 by default). */
  publishRatePerSecond: number;
  /** Publishes one sandbox token may make at once after a quiet period (2,000 by default). */
  publishBurst: number;
  /**
   * Idle time before the kernel probes a silent peer (Redis's `tcp-keepalive`); a client that
   * vanished without FIN is then reset and reaped. 0 turns keepalive off.
   */
  tcpKeepAliveMs: number;
  /**
   * Once a closing client's last frames are queued (QUIT, a closing error, a stream's `event:
   * close`), the time it gets to read them; then it is cut off, so that one which stopped
   * reading does not keep its socket and subscriptions for good.
   */
  closeGraceMs: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxEventBytes: 64 * 1024,
  maxArgs: 1024,
  maxInlineBytes: 64 * 1024,
  maxBulkBytes: 1024 * 1024,
  maxRequestBytes: 2 * 1024 * 1024,
  preAuthMaxArgs: 10,
  preAuthMaxBulkBytes: 16 * 1024,
  preAuthMaxOutputBytes: 1024,
  authTimeoutMs: 10_000,
  maxOutputBytes: 8 * 1024 * 1024,
  maxOutputTotalBytes: defaultMaxOutputTotal(),
  maxClients: 10_000,
  maxSubscriptionsPerConnection: 1_000,
  maxPipelinedPublishes: 1_024,
  publishRatePerSecond: 1_000,
  publishBurst: 2_000,
  tcpKeepAliveMs: 60_000,
  closeGraceMs: 10_000,
});

/**
 * The memory this process may use: the machine's, or its control group's limit when lower (a
 * container's; `process.constrainedMemory` reports no limit as a huge number).
 */
export function machineMemory(): number {
  const constrained = process.constrainedMemory();
  const total = totalmem();
  return constrained > 0 && constrained < total ? constrained : total;
}

/**
 * `--max-output-total` by default: an eighth of the machine's memory (docs/operations.md,
 * "Output budget"). Output is held in Buffers outside the JavaScript heap, so the heap limit
 * does not bound it; the memory store takes a quarter by default, this an eighth, which leaves
 * the process and the machine the rest.
 */
export function defaultMaxOutputTotal(): number {
  return Math.floor(machineMemory() / 8);
}

export const DEFAULT_PORT = 6380;
export const DEFAULT_HOST = '127.0.0.1';

/** The Redis version that HELLO and INFO report, so Redis clients enable 7.x behaviour. */
export const COMPATIBLE_REDIS_VERSION = '7.0.15';
