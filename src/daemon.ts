import { randomBytes } from 'node:crypto';
import { SandboxEventsError } from './errors.js';
import type { Logger } from 'pino';
import { pino } from 'pino';
import { TokenVerifier, type VerifierConfig } from './auth/verifier.js';
import { Broker } from './broker/broker.js';
import { Publisher } from './broker/publisher.js';
import type { Connection } from './connection/connection.js';
import { DEFAULT_HOST, DEFAULT_LIMITS, DEFAULT_PORT, type Limits } from './config.js';
import type { HttpSettings } from './http/host.js';
import { HttpServer } from './http/http-server.js';
import { createStats, decoderLimitsFor, type ServerContext } from './runtime/context.js';
import { OutputBudget } from './runtime/output-budget.js';
import { flushWrites } from './session/write-path.js';
import { DEFAULT_BACKLOG, TcpListener } from './server/server.js';
import { type WarmUpReport, warmUp } from './server/warm-up.js';
import { MemoryStore } from './store/memory-store.js';
import { openEngine, openStore } from './store/open-store.js';
import type { EventStore, RetentionPolicy } from './store/types.js';

/** The store `serve` names with its flags; the daemon opens it, and closes it on stop. */
export interface StoreConfig {
  /** `--store`: `memory`, `sqlite` (`<dataDir>/events.db`) or `sqlite:<path>`. */
  store: string;
  /** `--engine`: `redis://host:port`; replaces `store` (docs/scaling.md). */
  engine?: string;
  dataDir: string;
  retention: RetentionPolicy;
  /** SQLite only: 'normal' survives the process dying, 'full' power loss too. */
  synchronous?: 'normal' | 'full';
  /** Memory only: bytes of events kept over all sandboxes (`--memory-store-max`). */
  memoryMaxBytes?: number;
  /** The engine refused its address (a node it cannot fully serve): `serve` stops there. */
  onEngineRefused?: (error: SandboxEventsError) => void;
}

export interface ServerOptions {
  host?: string;
  /** 0 picks a free port; read it back from `RunningServer.port`. */
  port?: number;
  /**
   * Length of the kernel's queue of connections not yet accepted (Redis's `tcp-backlog`).
   * Default DEFAULT_BACKLOG; Linux silently caps it at net.core.somaxconn.
   */
  backlog?: number;
  auth: VerifierConfig;
  /** An open store. Default: the one `storeConfig` names, else memory with the default retention. */
  store?: EventStore;
  /** The store to open when `store` is not given. */
  storeConfig?: StoreConfig;
  limits?: Partial<Limits>;
  logger?: Logger;
  /** HTTP on the same host: a port, 0 picks a free one; undefined: no HTTP. */
  httpPort?: number;
  /** HTTP settings beyond the port: the API key file, heartbeats, CORS. */
  http?: HttpSettings;
  /** Clients to run through a throwaway listener before listening (`--warm-up`); 0 or undefined: none. */
  warmUpClients?: number;
}

export interface RunningServer {
  readonly host: string;
  readonly port: number;
  /** The HTTP port actually bound; undefined when HTTP is off. */
  readonly httpPort: number | undefined;
  /** The context every client shares; its registry holds the server side of each TCP client. */
  readonly context: ServerContext<Connection>;
  /** The HTTP side, when it is on (a config reload changes its CORS origins). */
  readonly http: HttpServer | undefined;
  /** What the start-up warm-up did, when one was asked for: its report, or why it failed. */
  readonly warmUp: WarmUpReport | SandboxEventsError | undefined;
  /** Stops accepting, flushes and closes every client, closes the store. Idempotent. */
  close(): Promise<void>;
}

/** The state every client of one listener shares: one per daemon (and one per warm-up). */
function newContext(
  store: EventStore,
  auth: VerifierConfig,
  limits: Limits,
  logger: Logger,
  port: () => number,
): ServerContext<Connection> {
  const broker = new Broker(store);
  return {
    limits,
    decoderLimits: decoderLimitsFor(limits, true),
    preAuthDecoderLimits: decoderLimitsFor(limits, false),
    clockToleranceMs: (auth.clockToleranceSeconds ?? 5) * 1000,
    broker,
    publisher: new Publisher(store, broker, { perSecond: limits.publishRatePerSecond, burst: limits.publishBurst }),
    store,
    verifier: new TokenVerifier(auth),
    logger,
    stats: createStats(),
    outputBudget: new OutputBudget(limits.maxOutputTotalBytes),
    connections: new Set(),
    startedAt: Date.now(),
    port,
  };
}

/**
 * The warm-up (src/server/warm-up.ts) with a context of its own: a memory store, a verifier of
 * a random secret, fresh counters and a silent logger, all dropped after it, so it leaves no
 * event, count, log line or rate-limit state in the daemon's. A failure is returned, not
 * thrown: the daemon then starts cold.
 */
async function warmUpAlone(limits: Limits, clients: number): Promise<WarmUpReport | SandboxEventsError> {
  const secret = randomBytes(32).toString('base64url');
  const store = new MemoryStore({ retention: DEFAULT_RETENTION });
  // Its clients send no INFO, the one reader of the port.
  const context = newContext(store, { secret }, limits, pino({ level: 'silent' }), () => 0);
  try {
    return await warmUp(context, secret, clients);
  } catch (error) {
    return error instanceof SandboxEventsError
      ? error
      : new SandboxEventsError('WARM_UP_FAILED', `warm-up failed: ${String(error)}`, { cause: error });
  } finally {
    await store.close();
  }
}

/** Retention of the store built when none is given or named (docs/operations.md defaults). */
const DEFAULT_RETENTION: RetentionPolicy = { maxCount: 10_000, maxAgeMs: 24 * 60 * 60 * 1000 };
/** On stop, how long publishes in flight get to be stored and fanned out before clients are closed. */
const QUIET_WAIT_MS = 1_000;
/** On stop, how long clients get to read what was queued for them before they are cut off. */
const DRAIN_WAIT_MS = 2_000;

/**
 * The composition root: builds the store (or engine), the broker, the publisher, the verifier,
 * then runs the warm-up when one is asked for (with a context of its own), then opens the TCP
 * listener and the HTTP server, in that order, and stops them in the reverse one.
 * Everything below it is wired here and nowhere else. The returned server is ready for clients.
 */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const limits = withRoomForEvents({ ...DEFAULT_LIMITS, ...options.limits });
  const logger = options.logger ?? pino({ level: 'silent' });
  const store = options.store ?? openConfiguredStore(options.storeConfig, logger);
  let tcp: TcpListener | undefined;
  const context = newContext(store, options.auth, limits, logger, () => tcp?.port ?? 0);
  const warmUp = options.warmUpClients ? await warmUpAlone(limits, options.warmUpClients) : undefined;

  const host = options.host ?? DEFAULT_HOST;
  let http: HttpServer | undefined;
  try {
    tcp = await TcpListener.listen(context, {
      host,
      port: options.port ?? DEFAULT_PORT,
      backlog: options.backlog ?? DEFAULT_BACKLOG,
    });
    if (options.httpPort !== undefined) {
      http = await HttpServer.start(context, { ...options.http, host, port: options.httpPort });
    }
  } catch (error) {
    // Half a daemon is worse than none: what did start goes, and the store is released.
    await tcp?.close();
    await store.close();
    throw error;
  }

  const listener = tcp;
  let closing: Promise<void> | undefined;
  return {
    host,
    port: listener.port,
    httpPort: http?.port,
    http,
    context,
    warmUp,
    close() {
      closing ??= stop(context, listener, http);
      return closing;
    },
  };
}

/**
 * Stops in the reverse order of start. First no client sends anything new, and every PUBLISH
 * already read is stored and fanned out, so subscribers get the events their publishers were
 * told are stored; HTTP publishes in progress too (a POST told 201 must reach the TCP
 * subscribers). Then clients get what was queued for them, one that doesn't read is not waited
 * for long, and the store closes last.
 */
async function stop(context: ServerContext, tcp: TcpListener, http: HttpServer | undefined): Promise<void> {
  const httpStopped = http?.close();
  const tcpStopped = tcp.close();
  const quiet = Promise.all([
    context.publisher.whenIdle(),
    ...Array.from(context.connections, (connection) => connection.quiesce()),
  ]);
  await Promise.race([quiet, new Promise((resolve) => setTimeout(resolve, QUIET_WAIT_MS).unref())]);
  for (const connection of context.connections) connection.closeAfterReplies();
  const deadline = setTimeout(() => {
    for (const connection of context.connections) connection.destroy();
  }, DRAIN_WAIT_MS);
  await tcpStopped;
  clearTimeout(deadline);
  await httpStopped;
  await context.store.close();
}

function openConfiguredStore(config: StoreConfig | undefined, logger: Logger): EventStore {
  if (config === undefined) return new MemoryStore({ retention: DEFAULT_RETENTION });
  const { retention } = config;
  if (config.engine === undefined) {
    return openStore(config.store, {
      dataDir: config.dataDir,
      retention,
      ...(config.synchronous === undefined ? {} : { synchronous: config.synchronous }),
      ...(config.memoryMaxBytes === undefined ? {} : { memoryMaxBytes: config.memoryMaxBytes }),
      // A commit's deliveries and replies go out as it ends, not a turn later.
      afterCommit: flushWrites,
    });
  }
  return openEngine(config.engine, {
    retention,
    onStatus: (status, error) => {
      if (error === undefined) logger.info({ engine: 'redis' }, `redis: ${status}`);
      else logger.warn({ engine: 'redis', err: error }, `redis: ${status}`);
    },
    ...(config.onEngineRefused === undefined ? {} : { onRefused: config.onEngineRefused }),
  });
}

/**
 * An event the limits allow must fit in a PUBLISH: a raised event size (`--max-event-size`
 * over 1 MiB) raises the RESP bulk and request caps with it, which otherwise refused such a
 * PUBLISH as a protocol error. The bulk carries the payload (the event's JSON around `data`,
 * plus the type); the request adds the command name and the sandbox id.
 */
export function withRoomForEvents(limits: Limits): Limits {
  const bulk = Math.max(limits.maxBulkBytes, limits.maxEventBytes + 4 * 1024);
  const request = Math.max(limits.maxRequestBytes, bulk + 64 * 1024);
  return { ...limits, maxBulkBytes: bulk, maxRequestBytes: request };
}
