import type { IncomingMessage, ServerResponse } from 'node:http';
import { ExpiryTimer } from '../auth/expiry.js';
import { resolveChannel, resolvePatternScope } from '../broker/scope.js';
import { WritePath } from '../connection/write-path.js';
import { REPLAY_PAGE, sendReplay } from '../store/replay.js';
import { type EventId, formatEventId, parseEventId } from '../event/event.js';
import type { ReplayResult } from '../store/types.js';
import { type Authenticated, authenticateRequest } from './credentials.js';
import { badRequest, HttpError } from './errors.js';
import type { HttpHost } from './host.js';
import {
  EventStreamSubscriber,
  HEARTBEAT_FRAME,
  SSE_HEADERS,
  sseControlFrame,
  sseEventFrame,
  sseRetryFrame,
} from './sse.js';

/**
 * The event streams (issue 5): one sandbox (`GET /events/<id>/stream`), a pattern over the
 * workspace's sandboxes (`GET /events/stream?pattern=<glob>`), and the broker's own figures
 * (`GET /metrics/stream`).
 */

export type StreamKind = 'channel' | 'pattern' | 'metrics';

/** One open stream: its write path, its subscription, its timers. */
export class OpenStream {
  readonly writer: WritePath;
  readonly subscriber: EventStreamSubscriber;
  private readonly cleanups: (() => void)[] = [];
  private readonly expiry = new ExpiryTimer(() => this.end('token_expired'));
  private opened = false;
  private cleanedUp = false;

  constructor(
    private readonly host: HttpHost,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    readonly kind: StreamKind,
    readonly auth: Authenticated | undefined,
  ) {
    // The same write path as a TCP client's, with the same output limit.
    this.writer = new WritePath(
      res,
      () => host.context.limits.maxOutputBytes,
      (pending) => this.onOverflow(pending),
      host.context.limits.closeGraceMs,
    );
    this.subscriber = new EventStreamSubscriber(this.writer);
    host.streams.add(this);
    res.on('close', () => this.cleanUp());
    req.socket.once('close', () => this.cleanUp());
  }

  get closed(): boolean {
    return this.writer.isClosed || this.res.destroyed;
  }

  /** Runs when the stream ends, however it ends (unsubscribing). */
  onClose(cleanup: () => void): void {
    this.cleanups.push(cleanup);
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
    this.writer.write(sseRetryFrame(this.host.settings.retryMs));
    const principal = this.auth?.principal;
    // As on TCP, a token that expires does not keep its stream open (contract, tokens).
    if (principal !== undefined) this.expiry.start(principal.expiresAt + this.host.context.clockToleranceMs);
  }

  heartbeat(): void {
    // Not before `open()`: a byte written first would send an implicit 200 without the
    // event-stream headers, and open() would then fail (a resume's first read is in between).
    if (!this.opened) return;
    this.writer.write(HEARTBEAT_FRAME);
    const apiKey = this.auth?.apiKey;
    if (apiKey !== undefined && this.host.apiKeys !== undefined) {
      // A revoked API key does not keep its streams: checked again at each heartbeat.
      void this.host.apiKeys.stillValid(apiKey).then((valid) => {
        if (!valid) this.end('api_key_revoked');
      });
    }
  }

  /** Tells the reader why with an `event: close`, then ends the response. */
  end(reason: 'token_expired' | 'api_key_revoked' | 'shutdown' | 'replay_failed'): void {
    if (this.closed) return;
    if (!this.opened) {
      this.res.destroy();
      return;
    }
    this.writer.write(sseControlFrame('close', { reason }));
    this.writer.endAfterWrites();
  }

  /** Gives up before `open()` (the caller answers with an error status). */
  abandon(): void {
    this.cleanUp();
  }

  private onOverflow(pendingBytes: number): void {
    const context = this.host.context;
    context.stats.slowConsumerDisconnects += 1;
    context.logger.warn(
      {
        transport: 'sse',
        addr: `${this.req.socket.remoteAddress}:${this.req.socket.remotePort}`,
        pendingBytes,
        limit: context.limits.maxOutputBytes,
      },
      'stream output over the limit: disconnected',
    );
    this.res.destroy();
  }

  private cleanUp(): void {
    if (this.cleanedUp) return;
    this.cleanedUp = true;
    this.writer.discard();
    this.expiry.cancel();
    this.host.streams.delete(this);
    for (const cleanup of this.cleanups.splice(0)) cleanup();
  }
}

/**
 * Where a stream resumes: the `Last-Event-ID` header (what EventSource sends when it
 * reconnects) wins over `?lastEventId=` (what a page passes to a new EventSource). `0` means
 * from the oldest retained event, `$` from now, as with RESUME.
 */
function resumePoint(req: IncomingMessage, url: URL): EventId | undefined {
  const header = req.headers['last-event-id'];
  const text = typeof header === 'string' && header.length > 0 ? header : (url.searchParams.get('lastEventId') ?? '');
  if (text === '' || text === '$') return undefined;
  if (text === '0') return { ms: 0, seq: 0 };
  const id = parseEventId(text);
  if (id === undefined)
    throw badRequest('INVALID_EVENT_ID', `invalid event id '${text.slice(0, 64)}': expected <ms>-<seq>`);
  return id;
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
): OpenStream {
  refuseWhileClosing(host);
  if (res.socket === null)
    throw badRequest(
      'BAD_HTTP_REQUEST',
      'a stream cannot be pipelined behind another request; open a connection for it',
    );
  return new OpenStream(host, req, res, kind, auth);
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
): Promise<void> {
  refuseWhileClosing(host);
  const auth = await authenticateRequest(host.context, host.apiKeys, req, url, true);
  const target = resolveChannel(auth.principal, name);
  const from = resumePoint(req, url);
  if (req.socket.destroyed) return;
  const { broker, store } = host.context;
  const stream = startStream(host, req, res, 'channel', auth);
  const subscriber = stream.subscriber;
  if (from === undefined) {
    stream.open();
    broker.subscribe(subscriber, target);
    stream.onClose(() => broker.unsubscribe(subscriber, target.key));
    return;
  }

  subscriber.beginReplay();
  broker.subscribe(subscriber, target);
  stream.onClose(() => broker.unsubscribe(subscriber, target.key));
  let page: ReplayResult;
  try {
    page = await store.replayAfter(target, from, REPLAY_PAGE);
  } catch (error) {
    stream.abandon();
    throw error;
  }
  if (stream.closed) return;
  stream.open();
  if (!page.complete) {
    stream.writer.write(
      sseControlFrame('gap', {
        sandboxId: name,
        lastEventId: formatEventId(from),
        status: page.gap ?? 'unknown',
        earliestId: page.earliestId === undefined ? null : formatEventId(page.earliestId),
        lastId: page.lastId === undefined ? null : formatEventId(page.lastId),
      }),
    );
  }
  // What the reader has now, up to: the replay's last event, or with nothing to replay the
  // point it resumed from (a late live copy of that event is dropped too). Not for a `future`
  // id, which the reader can't have: live events below it are new to it.
  let coveredThrough: EventId | undefined = page.complete ? from : undefined;
  try {
    const threshold = host.context.limits.maxOutputBytes / 4;
    await sendReplay(
      store,
      target,
      page,
      {
        send(event) {
          stream.writer.write(sseEventFrame(event));
          coveredThrough = event.id;
        },
        pendingBytes: () => stream.writer.pendingBytes,
        below: (bytes) => stream.writer.whenBelow(bytes),
        open: () => !stream.closed,
      },
      threshold,
    );
  } catch (error) {
    // The status line is gone: end the stream; the reader resumes from what it got.
    host.context.logger.error({ err: error }, 'stream replay failed');
    stream.end('replay_failed');
    return;
  } finally {
    subscriber.endReplay(coveredThrough);
  }
}

/**
 * GET /events/stream?pattern=<glob> (default `*`): every sandbox of the token's workspace
 * whose id matches. Ids are per sandbox, so one Last-Event-ID can't say where a stream over
 * many sandboxes stopped: a reconnect gets `event: gap` with status `not_resumable` and goes
 * on live (resume per sandbox with /events/<id>/stream).
 */
export async function patternStream(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<void> {
  refuseWhileClosing(host);
  const auth = await authenticateRequest(host.context, host.apiKeys, req, url, true);
  const pattern = url.searchParams.get('pattern') ?? '*';
  const scope = resolvePatternScope(auth.principal, pattern);
  const header = req.headers['last-event-id'];
  const lastEventId = typeof header === 'string' && header.length > 0 ? header : url.searchParams.get('lastEventId');
  if (req.socket.destroyed) return;
  const broker = host.context.broker;
  const stream = startStream(host, req, res, 'pattern', auth);
  stream.open();
  if (lastEventId !== null && lastEventId !== '' && lastEventId !== '$') {
    stream.writer.write(
      sseControlFrame('gap', {
        pattern,
        lastEventId: lastEventId.slice(0, 64),
        status: 'not_resumable',
        earliestId: null,
        lastId: null,
      }),
    );
  }
  broker.psubscribe(stream.subscriber, pattern, scope);
  stream.onClose(() => broker.punsubscribe(stream.subscriber, pattern, scope));
}

/**
 * GET /metrics/stream: a JSON snapshot each period (the host broadcasts them). It needs no
 * credential; one given (as on the other streams) adds the figures of the workspaces it sees.
 */
export async function metricsStream(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<OpenStream | undefined> {
  const hasCredential =
    req.headers.authorization !== undefined || req.headers['x-api-key'] !== undefined || url.searchParams.has('token');
  const auth = hasCredential ? await authenticateRequest(host.context, host.apiKeys, req, url, true) : undefined;
  if (req.socket.destroyed) return undefined;
  const stream = startStream(host, req, res, 'metrics', auth);
  stream.open();
  return stream;
}
