import { readFileSync } from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import { pino, type Logger } from 'pino';
import { TokenVerifier, type VerifierConfig } from '../auth/verifier.js';
import { Broker } from '../broker/broker.js';
import { Publisher } from '../broker/publisher.js';
import { runCommand } from '../commands/dispatch.js';
import { DEFAULT_HOST, DEFAULT_LIMITS, DEFAULT_PORT, type Limits } from '../config.js';
import { Connection } from '../connection/connection.js';
import { destroyAfterGrace } from '../connection/write-path.js';
import type { HttpSettings } from '../http/host.js';
import { HttpServer } from '../http/http-server.js';
import { errorReply } from '../protocol/encode.js';
import { MemoryStore } from '../store/memory-store.js';
import type { EventStore } from '../store/types.js';
import { createStats, decoderLimitsFor, type ServerContext } from './context.js';

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
  /** Defaults to an in-memory store with the contract's default retention. */
  store?: EventStore;
  limits?: Partial<Limits>;
  logger?: Logger;
  /** HTTP on the same host (issue 5): a port, 0 picks a free one; undefined: no HTTP. */
  httpPort?: number;
  /** HTTP settings beyond the port: the API key file, heartbeats, CORS. */
  http?: HttpSettings;
}

export interface RunningServer {
  readonly host: string;
  readonly port: number;
  /** The HTTP port actually bound; undefined when HTTP is off. */
  readonly httpPort: number | undefined;
  readonly context: ServerContext;
  /** The HTTP side, when it is on. */
  readonly http: HttpServer | undefined;
  /** Stops accepting, flushes and closes every client, closes the store. Idempotent. */
  close(): Promise<void>;
}

const MAX_CLIENTS_REACHED = errorReply('ERR max number of clients reached');
/** How long a client refused at --max-clients has to read its error line. */
const REFUSED_GRACE_MS = 2_000;

/**
 * Node's (and Redis's) default backlog is 511. When thousands of clients connect at once
 * (every sandbox watcher reconnecting after a restart) and the event loop is busy verifying
 * the first ones' tokens, a queue of 511 overflows: Linux then drops the SYN or the final ACK
 * (TcpExtListenOverflows) and the client retransmits after its 1 s initial RTO, so a few
 * milliseconds of work become a second or three of waiting. 4096 is the kernel's default cap
 * (net.core.somaxconn since Linux 5.4); a larger queue costs kernel memory only while full.
 */
export const DEFAULT_BACKLOG = 4096;

/** Linux's cap on listen backlogs (net.core.somaxconn); undefined elsewhere or when unreadable. */
export function kernelBacklogCap(): number | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const value = Number.parseInt(readFileSync('/proc/sys/net/core/somaxconn', 'latin1'), 10);
    return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Builds everything and listens. The returned server is ready for clients. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const limits = withRoomForEvents({ ...DEFAULT_LIMITS, ...options.limits });
  const logger = options.logger ?? pino({ level: 'silent' });
  const store: EventStore =
    options.store ?? new MemoryStore({ retention: { maxCount: 10_000, maxAgeMs: 24 * 60 * 60 * 1000 } });
  const broker = new Broker(store);
  const verifier = new TokenVerifier(options.auth);
  const tcp = net.createServer({ noDelay: true });
  const context: ServerContext = {
    limits,
    decoderLimits: decoderLimitsFor(limits, true),
    preAuthDecoderLimits: decoderLimitsFor(limits, false),
    clockToleranceMs: (options.auth.clockToleranceSeconds ?? 5) * 1000,
    broker,
    publisher: new Publisher(store, broker, { perSecond: limits.publishRatePerSecond, burst: limits.publishBurst }),
    store,
    verifier,
    logger,
    stats: createStats(),
    connections: new Set(),
    startedAt: Date.now(),
    port: () => {
      const address = tcp.address();
      return typeof address === 'object' && address !== null ? address.port : 0;
    },
  };

  tcp.on('connection', (socket) => {
    context.stats.connectionsReceived += 1;
    if (context.connections.size >= limits.maxClients) {
      context.stats.rejectedConnections += 1;
      logger.warn({ addr: `${socket.remoteAddress}:${socket.remotePort}` }, 'max number of clients reached');
      socket.on('error', () => {});
      socket.end(MAX_CLIENTS_REACHED);
      // Past the limit, a peer that never closes its side must not hold a descriptor, nor keep
      // shutdown waiting for ever (found in review).
      destroyAfterGrace(socket, Math.min(limits.closeGraceMs, REFUSED_GRACE_MS));
      return;
    }
    const connection = new Connection(socket, context, runCommand);
    context.connections.add(connection);
    logger.debug({ conn: connection.id, addr: connection.remoteAddress }, 'connection opened');
  });
  tcp.on('error', (error) => logger.error({ err: error }, 'server socket error'));

  const host = options.host ?? DEFAULT_HOST;
  const backlog = options.backlog ?? DEFAULT_BACKLOG;
  tcp.listen({ port: options.port ?? DEFAULT_PORT, host, backlog });
  await once(tcp, 'listening');
  let http: HttpServer | undefined;
  if (options.httpPort !== undefined) {
    try {
      http = await HttpServer.start(context, { ...options.http, host, port: options.httpPort });
    } catch (error) {
      // Half a daemon is worse than none: the TCP side goes too, and the store is released.
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      await store.close();
      throw error;
    }
  }

  let closing: Promise<void> | undefined;
  return {
    host,
    port: context.port(),
    httpPort: http?.port,
    context,
    http,
    close() {
      closing ??= (async () => {
        const httpStopped = http?.close();
        const stopped = new Promise<void>((resolve) => tcp.close(() => resolve()));
        // First no client sends anything new, and every PUBLISH already read is stored and
        // fanned out, so subscribers get the events their publishers were told are stored.
        // HTTP publishes in progress too: a POST told 201 must reach the TCP subscribers.
        const quiet = Promise.all([
          context.publisher.whenIdle(),
          ...Array.from(context.connections, (connection) => connection.quiesce()),
        ]);
        await Promise.race([quiet, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
        for (const connection of context.connections) connection.closeAfterReplies();
        // Clients get what was queued for them; one that doesn't read is not waited for long.
        const deadline = setTimeout(() => {
          for (const connection of context.connections) connection.destroy();
        }, 2_000);
        await stopped;
        clearTimeout(deadline);
        await httpStopped;
        await store.close();
      })();
      return closing;
    },
  };
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
