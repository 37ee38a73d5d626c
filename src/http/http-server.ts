import { once } from 'node:events';
import http, { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { SandboxEventsError } from '../errors.js';
import type { ServerContext } from '../runtime/context.js';
import { ApiKeyRegistry } from '../auth/api-keys.js';
import { QueryError } from '../session/query.js';
import { MetricsToken } from './credentials.js';
import { badRequest, HttpError, methodNotAllowed, notFound, toHttpError } from './errors.js';
import { type HostedStream, HTTP_DEFAULTS, type HttpHost, type HttpSettings } from './host.js';
import { BrokerMetrics, type MetricsSnapshot, type ScopedSnapshot } from './metrics.js';
import { sendError } from './respond.js';
import { matchRoute } from './routes.js';

export interface HttpListenOptions extends HttpSettings {
  host: string;
  /** 0 picks a free port. */
  port: number;
}

/** Slowloris guards: the whole request head within this, the whole request within that. */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** Room for a 16 KiB token (MAX_TOKEN_LENGTH) in a header, with the rest of the head. */
const MAX_HEADER_BYTES = 32 * 1024;
/** On close, requests and streams get this long to finish before their sockets are cut. */
const CLOSE_GRACE_MS = 2_000;

/**
 * The HTTP listener beside the TCP one (docs/http.md): node:http, no framework. It shares the
 * server's context, so both transports publish through the one Publisher, deliver through the
 * one Broker and read the one store, with the same tokens and permissions.
 */
export class HttpServer implements HttpHost {
  readonly server: http.Server;
  readonly settings: HttpHost['settings'];
  readonly apiKeys: ApiKeyRegistry | undefined;
  readonly metrics: BrokerMetrics;
  readonly streams = new Set<HostedStream>();
  closing = false;
  private readonly sockets = new Set<Socket>();
  private corsOrigins: '*' | Set<string> | undefined;
  /** Requests from a browser page on an origin not allowed (see applyCors). */
  private corsRefused = 0;
  /** Origins whose refusal was logged: once each, at most MAX_LOGGED_ORIGINS of them. */
  private readonly refusedOrigins = new Set<string>();
  readonly metricsToken = new MetricsToken();
  /** /metrics/stream readers that get the broker-wide figures (docs/http.md). */
  private readonly wholeBrokerReaders = new WeakSet<HostedStream>();
  private protocolErrors = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private metricsTimer: NodeJS.Timeout | undefined;
  private closingPromise: Promise<void> | undefined;

  private constructor(
    readonly context: ServerContext,
    options: HttpListenOptions,
  ) {
    this.settings = {
      apiKeyCacheMs: options.apiKeyCacheMs ?? HTTP_DEFAULTS.apiKeyCacheMs,
      heartbeatMs: options.heartbeatMs ?? HTTP_DEFAULTS.heartbeatMs,
      retryMs: options.retryMs ?? HTTP_DEFAULTS.retryMs,
      metricsIntervalMs: options.metricsIntervalMs ?? HTTP_DEFAULTS.metricsIntervalMs,
      console: options.console ?? HTTP_DEFAULTS.console,
      metricsType: options.metricsType ?? HTTP_DEFAULTS.metricsType,
    };
    this.apiKeys =
      options.apiKeysFile === undefined
        ? undefined
        : new ApiKeyRegistry(options.apiKeysFile, { cacheMs: this.settings.apiKeyCacheMs, logger: context.logger });
    this.setCorsOrigin(options.corsOrigin);
    this.metricsToken.set(options.metricsToken);
    this.metrics = new BrokerMetrics(context, {
      sockets: () => this.sockets.size,
      streams: () => {
        const counts = { channel: 0, pattern: 0, metrics: 0 };
        for (const stream of this.streams) counts[stream.kind] += 1;
        return counts;
      },
      protocolErrors: () => this.protocolErrors,
      corsRefused: () => this.corsRefused,
    });

    this.server = http.createServer({ noDelay: true, maxHeaderSize: MAX_HEADER_BYTES }, (req, res) => {
      void this.handle(req, res);
    });
    this.server.headersTimeout = HEADERS_TIMEOUT_MS;
    this.server.requestTimeout = REQUEST_TIMEOUT_MS;
    // Streams are subscribers: bounded like TCP clients.
    this.server.maxConnections = context.limits.maxClients;
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => this.onClientError(error, socket));
  }

  static async start(context: ServerContext, options: HttpListenOptions): Promise<HttpServer> {
    const server = new HttpServer(context, options);
    try {
      server.server.listen(options.port, options.host);
      await once(server.server, 'listening');
    } catch (error) {
      server.metrics.detach();
      const reason = error instanceof Error ? error.message : String(error);
      throw new SandboxEventsError(
        'HTTP_LISTEN_FAILED',
        `cannot listen for HTTP on ${options.host}:${options.port} (${reason}); --http-port 0 turns HTTP off`,
        { cause: error },
      );
    }
    server.heartbeatTimer = setInterval(() => {
      for (const stream of server.streams) stream.heartbeat();
    }, server.settings.heartbeatMs);
    server.heartbeatTimer.unref();
    return server;
  }

  get port(): number {
    const address = this.server.address();
    return typeof address === 'object' && address !== null ? address.port : 0;
  }

  listening(): boolean {
    return !this.closing && this.server.listening && this.context.port() !== 0;
  }

  /** A /metrics/stream reader: a snapshot now, then one each period to every reader. */
  addMetricsReader(stream: HostedStream, wholeBroker: boolean): void {
    if (wholeBroker) this.wholeBrokerReaders.add(stream);
    stream.write(this.metricsFrame(this.metrics.snapshot(), stream));
    if (this.metricsTimer === undefined) {
      this.metricsTimer = setInterval(() => {
        let readers = 0;
        const snapshot = this.metrics.snapshot();
        const frame = this.metricsFrame(snapshot, undefined);
        for (const reader of this.streams) {
          if (reader.kind !== 'metrics') continue;
          const anonymous = reader.principal === undefined && this.wholeBrokerReaders.has(reader);
          reader.write(anonymous ? frame : this.metricsFrame(snapshot, reader));
          readers += 1;
        }
        if (readers === 0) {
          clearInterval(this.metricsTimer);
          this.metricsTimer = undefined;
        }
      }, this.settings.metricsIntervalMs);
      this.metricsTimer.unref();
    }
  }

  /**
   * A stream opened with a credential gets its workspaces' figures too; the broker-wide figures
   * go only to the readers admitted to them (docs/http.md, "GET /metrics/stream").
   */
  private metricsFrame(snapshot: MetricsSnapshot, reader: HostedStream | undefined): Buffer {
    const principal = reader?.principal;
    const wholeBroker = reader === undefined || this.wholeBrokerReaders.has(reader);
    let figures: MetricsSnapshot | ScopedSnapshot = snapshot;
    if (principal !== undefined) {
      figures = wholeBroker
        ? this.metrics.scoped(snapshot, principal)
        : { timestamp: snapshot.timestamp, workspaces: this.metrics.activity.visibleWorkspaces(principal) };
    }
    return Buffer.from(`event: metrics\ndata: ${JSON.stringify(figures)}\n\n`);
  }

  /**
   * A new --metrics-token (a config reload). Readers admitted without a credential, or by the old
   * token, end (`token_expired`: they reconnect with the new one); a tenant's reader admitted while
   * no token was set keeps only its workspaces' figures.
   */
  setMetricsToken(token: string | undefined): void {
    if (!this.metricsToken.set(token) || !this.metricsToken.required) return;
    for (const stream of this.streams) {
      if (stream.kind !== 'metrics' || !this.wholeBrokerReaders.has(stream)) continue;
      if (stream.principal === undefined) stream.end('token_expired');
      else if (stream.principal.role !== 'admin') this.wholeBrokerReaders.delete(stream);
    }
  }

  /** Stops accepting, ends every stream, lets requests under way finish. Idempotent. */
  close(): Promise<void> {
    this.closingPromise ??= (async () => {
      this.closing = true;
      clearInterval(this.heartbeatTimer);
      clearInterval(this.metricsTimer);
      const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
      for (const stream of this.streams) stream.end('shutdown');
      // Keep-alive connections between requests hold nothing: closed now, and again once
      // the requests under way have been answered.
      this.server.closeIdleConnections();
      const idle = setInterval(() => this.server.closeIdleConnections(), 50);
      const deadline = setTimeout(() => this.server.closeAllConnections(), CLOSE_GRACE_MS);
      await stopped;
      clearInterval(idle);
      clearTimeout(deadline);
      this.metrics.detach();
    })();
    return this.closingPromise;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let routeName = 'unmatched';
    const startedAt = performance.now();
    res.once('close', () => {
      this.metrics.httpRequests.inc({ route: routeName, status: String(res.statusCode) });
      const logger = this.context.logger;
      if (logger.isLevelEnabled('debug')) {
        // The route, not the URL: a stream's URL may carry ?token=.
        logger.debug(
          {
            transport: 'http',
            method: req.method,
            route: routeName,
            status: res.statusCode,
            ms: Math.round(performance.now() - startedAt),
          },
          'http request',
        );
      }
    });
    try {
      this.applyCors(req, res);
      const url = requestUrl(req.url ?? '');
      const match = matchRoute(req.method ?? 'GET', url.pathname);
      if (match === undefined) throw notFound();
      routeName = match.name;
      if (req.method === 'OPTIONS') {
        this.preflight(res, match.allowed);
        return;
      }
      if (match.handler === undefined) throw methodNotAllowed(match.allowed);
      await match.handler(this, req, res, url, match.params);
    } catch (error) {
      this.fail(req, res, error);
    }
  }

  private fail(req: IncomingMessage, res: ServerResponse, error: unknown): void {
    // A refused history or resume query is a 400 with the refusal's code (session/query.ts).
    let httpError =
      toHttpError(error) ?? (error instanceof QueryError ? badRequest(error.code, error.message) : undefined);
    if (httpError === undefined) {
      this.context.logger.error(
        { err: error, method: req.method, path: req.url?.split('?')[0] },
        'http request failed',
      );
      httpError = new HttpError(500, 'INTERNAL_ERROR', 'internal server error');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // A body not read to its end can't be skipped safely: the connection ends with this answer.
    if (!req.complete) res.setHeader('connection', 'close');
    sendError(res, httpError);
  }

  /** The origins browsers may call from (comma-separated, or `*`); also at a config reload. */
  setCorsOrigin(corsOrigin: string | undefined): void {
    const cors = corsOrigin?.trim();
    this.corsOrigins =
      cors === undefined || cors === ''
        ? undefined
        : cors === '*'
          ? '*'
          : new Set(cors.split(',').map((origin) => origin.trim()));
    this.refusedOrigins.clear(); // an origin still refused under the new setting is told again
  }

  private applyCors(req: IncomingMessage, res: ServerResponse): void {
    const origin = req.headers.origin;
    if (this.corsOrigins === '*') {
      res.setHeader('access-control-allow-origin', '*');
    } else {
      if (this.corsOrigins !== undefined) res.setHeader('vary', 'origin');
      if (origin === undefined) return;
      if (this.corsOrigins === undefined || !this.corsOrigins.has(origin)) {
        if (isCrossOrigin(req, origin)) this.refuseOrigin(origin, req);
        return;
      }
      res.setHeader('access-control-allow-origin', origin);
    }
    res.setHeader('access-control-expose-headers', 'retry-after');
  }

  /**
   * A page on another origin called the API and is not allowed to read the answer: the browser
   * gives the page no status and no reason (WHATWG Fetch, "CORS check"; an EventSource only
   * fires `error`), so the operator hears it here instead: a warning once per origin, with the
   * setting that allows it (docs/http.md, "Browsers on another origin").
   */
  private refuseOrigin(origin: string, req: IncomingMessage): void {
    this.corsRefused += 1;
    const shown = origin.slice(0, 256);
    if (this.refusedOrigins.has(shown) || this.refusedOrigins.size >= MAX_LOGGED_ORIGINS) return;
    this.refusedOrigins.add(shown);
    this.context.logger.warn(
      {
        transport: 'http',
        origin: shown,
        method: req.method,
        path: (req.url ?? '').split('?')[0]!.slice(0, 256),
        fix: `start the daemon with --http-cors-origin ${shown} (or add it to http-cors-origin) to let pages there read the API`,
      },
      'cross-origin request refused: the browser hides the answer from the page',
    );
  }

  private preflight(res: ServerResponse, allowed: string[]): void {
    const methods = [...allowed, 'OPTIONS'].join(', ');
    const headers: Record<string, string> = { allow: methods };
    if (res.hasHeader('access-control-allow-origin')) {
      headers['access-control-allow-methods'] = methods;
      headers['access-control-allow-headers'] = 'authorization, content-type, x-api-key, last-event-id';
      headers['access-control-max-age'] = '600';
    }
    res.writeHead(204, headers);
    res.end();
  }

  private onClientError(error: NodeJS.ErrnoException, socket: Socket): void {
    if (error.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    this.protocolErrors += 1;
    this.context.logger.warn(
      { transport: 'http', addr: `${socket.remoteAddress}:${socket.remotePort}`, err: error.message, code: error.code },
      'bad HTTP request',
    );
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const body = JSON.stringify({
      error: `bad HTTP request (${error.code ?? 'parse error'})`,
      code: 'BAD_HTTP_REQUEST',
    });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
}

/** Refused origins logged by name before the rest are only counted (a bound on memory and log lines). */
const MAX_LOGGED_ORIGINS = 100;

/**
 * Whether `origin` (the Origin header) is another origin than the one the request was sent to
 * (its Host header): the console and any page served by the daemon itself are same-origin.
 * `null` (a sandboxed frame, a file) and anything unparsable count as another origin.
 */
function isCrossOrigin(req: IncomingMessage, origin: string): boolean {
  try {
    return new URL(origin).host !== req.headers.host;
  } catch {
    return true;
  }
}

/**
 * The request target as a URL. Origin form (`/path?query`) is the usual one; absolute form
 * (`http://host/path`, what a client speaking to a proxy sends) must be accepted too (RFC 9112
 * §3.2.2), and only its path and query count. Anything else (`*`, authority form) is refused.
 */
function requestUrl(target: string): URL {
  if (target.startsWith('/')) return new URL(`http://localhost${target}`);
  if (/^https?:\/\//i.test(target)) {
    try {
      const absolute = new URL(target);
      return new URL(`http://localhost${absolute.pathname}${absolute.search}`);
    } catch {
      // not a URL after all: refused below
    }
  }
  throw badRequest('BAD_HTTP_REQUEST', 'the request target must be a path or an absolute http URL');
}
