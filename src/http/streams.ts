import type { Principal } from '../auth/principal.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { StoredEvent } from '../event/event.js';
import { EVENTS_ONLY } from '../broker/broker.js';
import { resolveChannel, resolvePatternScope } from '../broker/scope.js';
import { formatEventId, formatOrderCursor, parseOrderCursor } from '../event/event.js';
import { type ResumeFrom, resumePoint } from '../session/query.js';
import { type ResumeStatus, Session } from '../session/session.js';
import { TypeFilter } from '../session/type-filter.js';
import { recordOutputCut } from '../runtime/context.js';
import type { OutputCut } from '../runtime/output-budget.js';
import { type Authenticated, authenticateMetricsReader, authenticateRequest } from './credentials.js';
import { badRequest, HttpError } from './errors.js';
import type { HostedStream, HttpHost, StreamKind } from './host.js';
import {
  HEARTBEAT_FRAME,
  SSE_HEADERS,
  sseControlFrame,
  sseEventFrame,
  ssePatternEventFrame,
  sseRetryFrame,
} from './sse.js';

/**
 * The event streams (docs/http.md): one sandbox (`GET /events/<id>/stream`), a pattern over
 * the workspace's sandboxes (`GET /events/stream?pattern=<glob>`), and the broker's own
 * figures (`GET /metrics/stream`).
 */

/**
 * One open stream: the SSE transport of a session (src/session/session.ts), which holds its
 * subscription, its write path and its token's expiry. This class frames and ends it.
 */
export class OpenStream implements HostedStream {
  readonly session: Session;
  private opened = false;

  get principal(): Principal | undefined {
    return this.auth?.principal;
  }
  private cleanedUp = false;

  constructor(
    private readonly host: HttpHost,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    readonly kind: StreamKind,
    readonly auth: Authenticated | undefined,
    /** How an event is framed: the event's JSON line by default (docs/http.md). */
    frame: (event: StoredEvent) => Buffer = sseEventFrame,
  ) {
    const { limits } = host.context;
    // The same session and write path as a TCP client's, with the same output limit.
    this.session = new Session(host.context, res, EVENTS_ONLY, () => limits.maxOutputBytes, {
      liveFrame: frame,
      replayFrame: frame,
      isOpen: () => !this.closed,
      overflow: (pending, cause) => this.onOverflow(pending, cause),
      expired: () => this.end('token_expired'),
      eventsLost: () => this.end('events_lost'),
    });
    host.streams.add(this);
    res.on('close', () => this.cleanUp());
    req.socket.once('close', () => this.cleanUp());
  }

  get closed(): boolean {
    return this.session.outputClosed || this.res.destroyed;
  }

  /** True once the headers went out: from then on errors end the stream instead of a status. */
  get isOpened(): boolean {
    return this.opened;
  }

  write(frame: Buffer): void {
    this.session.write(frame);
  }

  /** Sends the headers and `retry:`; from here on errors end the stream instead of a status. */
  open(): void {
    this.opened = true;
    // The socket closes with the stream: an ended stream leaves no idle keep-alive behind.
    this.res.shouldKeepAlive = false;
    // As for TCP clients: a reader that vanished without a FIN is found by the kernel.
    const keepAlive = this.host.context.limits.tcpKeepAliveMs;
    if (keepAlive > 0) this.req.socket.setKeepAlive(true, keepAlive);
    this.res.writeHead(200, SSE_HEADERS);
    this.session.write(sseRetryFrame(this.host.settings.retryMs));
    const principal = this.auth?.principal;
    // As on TCP, a token that expires does not keep its stream open (docs/http.md).
    if (principal !== undefined) this.session.expireWith(principal);
  }

  heartbeat(): void {
    // Not before `open()`: a byte written first would send an implicit 200 without the
    // event-stream headers, and open() would then fail (a resume's first read is in between).
    if (!this.opened) return;
    this.session.write(HEARTBEAT_FRAME);
    const apiKey = this.auth?.apiKey;
    if (apiKey !== undefined && this.host.apiKeys !== undefined) {
      // A revoked API key does not keep its streams: checked again at each heartbeat.
      void this.host.apiKeys.stillValid(apiKey).then((valid) => {
        if (!valid) this.end('api_key_revoked');
      });
    }
  }

  /** Tells the reader why with an `event: close`, then ends the response. */
  end(reason: 'token_expired' | 'api_key_revoked' | 'shutdown' | 'replay_failed' | 'events_lost'): void {
    if (this.closed) return;
    if (!this.opened) {
      this.res.destroy();
      return;
    }
    this.session.write(sseControlFrame('close', { reason }));
    this.session.endAfterWrites();
  }

  /** Gives up before `open()` (the caller answers with an error status). */
  abandon(): void {
    this.cleanUp();
  }

  private onOverflow(pendingBytes: number, cause: OutputCut): void {
    const context = this.host.context;
    recordOutputCut(context, 'stream', cause, {
      transport: 'sse',
      addr: `${this.req.socket.remoteAddress}:${this.req.socket.remotePort}`,
      pendingBytes,
      limit: context.limits.maxOutputBytes,
    });
    this.res.destroy();
  }

  private cleanUp(): void {
    if (this.cleanedUp) return;
    this.cleanedUp = true;
    this.session.close();
    this.host.streams.delete(this);
  }
}

/**
 * Where a stream resumes: the `Last-Event-ID` header (what EventSource sends when it
 * reconnects) wins over `?lastEventId=` (what a page passes to a new EventSource). `0` means
 * from the oldest retained event, `$` from now, as with RESUME.
 */
function streamResumePoint(req: IncomingMessage, url: URL): ResumeFrom {
  const header = req.headers['last-event-id'];
  const text = typeof header === 'string' && header.length > 0 ? header : (url.searchParams.get('lastEventId') ?? '');
  return text === '' ? 'now' : resumePoint(text);
}

function refuseWhileClosing(host: HttpHost): void {
  if (host.closing) throw new HttpError(503, 'SHUTTING_DOWN', 'the server is shutting down', { 'retry-after': '1' });
}

/**
 * The checks just before a stream starts (after any await): the server may have begun to shut
 * down while the credential was verified, and a request pipelined behind another on its
 * connection has no socket of its own yet (Node queues its response and never closes it if the
 * connection dies): one connection could hold any number of such streams.
 */
function startStream(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  kind: StreamKind,
  auth: Authenticated | undefined,
  frame?: (event: StoredEvent) => Buffer,
): OpenStream {
  refuseWhileClosing(host);
  if (res.socket === null)
    throw badRequest(
      'BAD_HTTP_REQUEST',
      'a stream cannot be pipelined behind another request; open a connection for it',
    );
  return new OpenStream(host, req, res, kind, auth, frame);
}

/** What a stream route decides beyond the defaults: its types and its frames (seed-streams.ts). */
export interface StreamShape {
  types?: TypeFilter;
  frame?: (event: StoredEvent) => Buffer;
}

/**
 * GET /events/<sandboxId>/stream. Resuming has TCP RESUME's exact-replay promise: the channel
 * is subscribed with live events held back before the store is read, the replay is written,
 * and then the held events the replay did not cover. When the replay can't be exact (the id
 * is past retention, was never issued, or is in the future) an `event: gap` says so first.
 */
export async function sandboxStream(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  name: string,
  shape: StreamShape = { types: streamTypes(url) },
): Promise<void> {
  refuseWhileClosing(host);
  const auth = await authenticateRequest(host.context, host.apiKeys, req, url, true);
  const target = resolveChannel(auth.principal, name);
  const from = streamResumePoint(req, url);
  const { types } = shape;
  if (req.socket.destroyed) return;
  const stream = startStream(host, req, res, 'channel', auth, shape.frame);
  if (from === 'now') {
    stream.open();
    stream.session.subscribe(target, types);
    return;
  }
  try {
    await stream.session.resume(
      target,
      from,
      ({ status, earliestId, lastId }) => {
        stream.open();
        if (status === 'complete') return;
        stream.write(
          sseControlFrame('gap', {
            sandboxId: name,
            lastEventId: formatEventId(from),
            status,
            earliestId: earliestId === undefined ? null : formatEventId(earliestId),
            lastId: lastId === undefined ? null : formatEventId(lastId),
          }),
        );
      },
      types,
    );
  } catch (error) {
    replayFailed(host, stream, error);
  }
}

/**
 * GET /events/stream?pattern=<glob> (default `*`): every sandbox of the token's workspace
 * whose id matches. Each event's `id:` is a store-order cursor (`w<n>`, docs/http.md), so a
 * reconnect with Last-Event-ID replays what every matching sandbox got meanwhile, in store
 * order, then goes on live. A cursor that cannot be replayed exactly gets `event: gap` first
 * (`trimmed`, `future`, or `not_resumable` for a cursor of another form or a store that keeps
 * no order over the pattern's scope: the Redis engine keeps one per workspace, none over every
 * workspace, docs/scaling.md).
 */
export async function patternStream(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  pattern = url.searchParams.get('pattern') ?? '*',
  shape: StreamShape = { types: streamTypes(url), frame: ssePatternEventFrame },
): Promise<void> {
  refuseWhileClosing(host);
  const auth = await authenticateRequest(host.context, host.apiKeys, req, url, true);
  const scope = resolvePatternScope(auth.principal, pattern);
  const { types } = shape;
  const header = req.headers['last-event-id'];
  const lastEventId = typeof header === 'string' && header.length > 0 ? header : url.searchParams.get('lastEventId');
  if (req.socket.destroyed) return;
  const stream = startStream(host, req, res, 'pattern', auth, shape.frame);
  const resuming = lastEventId !== null && lastEventId !== '' && lastEventId !== '$';
  const after = resuming ? parseOrderCursor(lastEventId) : 'now';
  const tell = ({ status, lastOrder }: ResumeStatus): void => {
    stream.open();
    if (status === 'complete') return;
    stream.write(
      sseControlFrame('gap', {
        pattern,
        lastEventId: lastEventId!.slice(0, 64),
        status,
        earliestId: null,
        lastId: lastOrder === undefined ? null : formatOrderCursor(lastOrder),
      }),
    );
  };
  if (after === undefined) {
    tell({ status: 'not_resumable' });
    stream.session.psubscribe(pattern, scope, types);
    return;
  }
  try {
    await stream.session.presume(pattern, scope, after, tell, types);
  } catch (error) {
    replayFailed(host, stream, error);
  }
}

/**
 * A resume's replay failed: before the stream opened, the request gets an error status;
 * after, the status line is gone, so the stream ends and the reader resumes from what it got.
 */
function replayFailed(host: HttpHost, stream: OpenStream, error: unknown): void {
  if (!stream.isOpened) {
    stream.abandon();
    throw error;
  }
  host.context.logger.error({ err: error }, 'stream replay failed');
  stream.end('replay_failed');
}

/** `?type=<glob>`, repeated or comma-separated: the types a stream carries (default: all). */
function streamTypes(url: URL): TypeFilter | undefined {
  return TypeFilter.from(url.searchParams.getAll('type'));
}

/**
 * GET /metrics/stream: a JSON snapshot each period (the host broadcasts them). Without a
 * metrics token it needs no credential; one given (as on the other streams) adds the figures of
 * the workspaces it sees. With one, the broker-wide figures need it or an admin credential
 * (docs/http.md).
 */
export async function metricsStream(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<{ stream: OpenStream; wholeBroker: boolean } | undefined> {
  const { auth, wholeBroker } = await authenticateMetricsReader(
    host.context,
    host.apiKeys,
    host.metricsToken,
    req,
    url,
    false,
  );
  if (req.socket.destroyed) return undefined;
  const stream = startStream(host, req, res, 'metrics', auth);
  stream.open();
  return { stream, wholeBroker };
}
