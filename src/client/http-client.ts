import type { SandboxEvent } from '../event/event.js';
import { EventsAuthError, EventsError, type EventsErrorCode, EventsNetworkError, EventsPubSubError } from './errors.js';
import type { GapInfo, GapReason } from './types.js';

/**
 * The package's HTTP client: the surface of ComputeSDK's `createEventsClient` (`storeEvent`,
 * `getEvents`, `setApiKey`, `setAccessToken`, the same config), so code written for it works
 * against this broker, plus `stream()`: an async iterator over the Server-Sent Events stream
 * of one sandbox that reconnects and resumes exactly. Its errors are the package client's
 * (src/client/errors.ts: ComputeSDK's class names, stable codes): as in ComputeSDK, a 401 is
 * an EventsAuthError and any other refusal an EventsError with the HTTP `statusCode`; the
 * broker's own `{"code", "error"}` is kept in `reply`.
 */

export interface EventsClientConfig {
  /** Base URL of the broker's HTTP side (default http://127.0.0.1:8080). */
  gatewayUrl?: string;
  /** An API key (`sandbox-events apikey create`) or workspace token: reading, streaming. */
  apiKey?: string;
  /** A JWT: a sandbox token for storing events; any token for reading when no apiKey is set. */
  accessToken?: string;
  /** Per request, in ms (default 30000). For a stream it bounds connecting, not the stream. */
  timeout?: number;
}

export interface StoreEventOptions {
  /** e.g. "execution.started" */
  type: string;
  data?: Record<string, unknown>;
}

export interface StoreEventResult {
  eventId: string;
  sandboxId: string;
  type: string;
  /** Unix ms, assigned by the broker. */
  timestamp: number;
}

export interface GetEventsOptions {
  /** Only events of this type. */
  type?: string;
  /** Only events with timestamp >= since (Unix ms). */
  since?: number;
  /** 1 to 1000 (default 100); clamped into that range, as ComputeSDK does. */
  limit?: number;
}

export interface StreamOptions {
  /** Resume after this event id (what the last run saw). Default: live events only. */
  lastEventId?: string;
  /** Ends the iteration. */
  signal?: AbortSignal;
  /** Reconnect (and resume) when the connection drops; default true. */
  reconnect?: boolean;
  /**
   * Called when a resume can't be exact (the pub/sub client's `gap` event, same shape).
   * Without it the iterator throws EventsGapError, so a gap is never missed.
   */
  onGap?: (gap: GapInfo) => void;
}

/** A stream resumed with a gap and no `onGap` handler was given. */
export class EventsGapError extends EventsPubSubError {
  constructor(readonly gap: GapInfo) {
    super('RESUME_GAP', `resume after ${gap.requestedId ?? '?'} is not exact (${gap.reason})`);
  }
}

/** What an SSE `event: gap` carries (docs/http.md). */
interface SseGap {
  sandboxId?: string;
  pattern?: string;
  lastEventId: string;
  status: string;
  earliestId: string | null;
  lastId: string | null;
}

function gapInfo(gap: SseGap): GapInfo {
  const reason: GapReason =
    gap.status === 'trimmed' || gap.status === 'future'
      ? gap.status
      : gap.status === 'not_resumable'
        ? 'pattern'
        : 'unknown';
  return {
    reason,
    ...(gap.sandboxId !== undefined ? { channel: gap.sandboxId } : {}),
    ...(gap.pattern !== undefined ? { pattern: gap.pattern } : {}),
    requestedId: gap.lastEventId,
    earliestId: gap.earliestId,
    lastId: gap.lastId,
  };
}

/** The client error code of an HTTP refusal other than 401 and 403. */
function codeForStatus(status: number, brokerCode: string | undefined): EventsErrorCode {
  if (status === 429) return 'RATE_LIMITED';
  if (brokerCode === 'INVALID_EVENT' || brokerCode === 'EVENT_TOO_LARGE') return 'INVALID_EVENT';
  if (status >= 400 && status < 500) return 'INVALID_ARGUMENT';
  return 'REPLY_ERROR';
}

interface StreamState {
  lastEventId: string | undefined;
  retryMs: number;
}

export const DEFAULT_GATEWAY_URL = 'http://127.0.0.1:8080';
export const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_RETRY_MS = 2_000;
/** A server that never ends a line can't grow the client's memory past this. */
const MAX_SSE_LINE = 4 * 1024 * 1024;

export class EventsClient {
  private readonly gatewayUrl: string;
  private apiKey: string | undefined;
  private accessToken: string | undefined;
  private readonly timeout: number;

  constructor(config: EventsClientConfig = {}) {
    this.gatewayUrl = (config.gatewayUrl ?? DEFAULT_GATEWAY_URL).replace(/\/+$/, '');
    this.apiKey = config.apiKey;
    this.accessToken = config.accessToken;
    this.timeout = config.timeout ?? DEFAULT_TIMEOUT_MS;
  }

  /** POST /events with the sandbox token: stored and delivered like a PUBLISH. */
  async storeEvent(options: StoreEventOptions): Promise<StoreEventResult> {
    if (!this.accessToken)
      throw new EventsAuthError('AUTH_FAILED', 'an access token (sandbox token) is required to store events');
    const response = await this.request('/events', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.accessToken}` },
      body: JSON.stringify({ type: options.type, data: options.data ?? {} }),
    });
    return (await this.successData(response)) as StoreEventResult;
  }

  /** GET /events/<sandboxId>: retained events, oldest first. */
  async getEvents(sandboxId: string, options: GetEventsOptions = {}): Promise<SandboxEvent[]> {
    const params = new URLSearchParams();
    if (options.type !== undefined && options.type !== '') params.set('type', options.type);
    if (options.since !== undefined) params.set('since', String(options.since));
    if (options.limit !== undefined)
      params.set('limit', String(Math.min(Math.max(1, Math.trunc(options.limit)), 1000)));
    const query = params.toString();
    const response = await this.request(`/events/${encodeURIComponent(sandboxId)}${query === '' ? '' : `?${query}`}`, {
      method: 'GET',
      headers: this.readHeaders(),
    });
    const data = (await this.successData(response)) as { events?: SandboxEvent[] };
    if (!Array.isArray(data.events))
      throw new EventsError('PROTOCOL_ERROR', 'invalid response from the server', {}, response.status);
    return data.events;
  }

  /**
   * Live events of one sandbox over Server-Sent Events, resumed after `lastEventId` when
   * given. When the connection drops (or the server restarts) it reconnects after the
   * server's `retry:` delay and resumes after the last event it yielded, so nothing is missed
   * and nothing repeats. A refusal (401, 403, 404) ends the iteration with its error.
   */
  async *stream(sandboxId: string, options: StreamOptions = {}): AsyncGenerator<SandboxEvent, void, undefined> {
    const path = `/events/${encodeURIComponent(sandboxId)}/stream`;
    const state: StreamState = { lastEventId: options.lastEventId, retryMs: DEFAULT_RETRY_MS };
    const reconnect = options.reconnect ?? true;
    while (!isAborted(options.signal)) {
      try {
        yield* this.streamOnce(path, state, options);
      } catch (error) {
        if (isAborted(options.signal)) return;
        const passing =
          error instanceof EventsNetworkError || (error instanceof EventsError && (error.statusCode ?? 0) >= 500);
        if (!reconnect || !passing) throw error;
      }
      if (!reconnect || isAborted(options.signal)) return;
      await sleep(state.retryMs, options.signal);
    }
  }

  /** One connection of a stream: yields its events until it ends. */
  private async *streamOnce(
    path: string,
    state: StreamState,
    options: StreamOptions,
  ): AsyncGenerator<SandboxEvent, void, undefined> {
    const controller = new AbortController();
    const onAbort = (): void => controller.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const response = await this.request(path, {
        method: 'GET',
        headers: {
          accept: 'text/event-stream',
          ...this.readHeaders(),
          ...(state.lastEventId !== undefined ? { 'last-event-id': state.lastEventId } : {}),
        },
        signal: controller.signal,
      });
      if (!response.ok) await this.throwFor(response);
      if (response.body === null) return;
      const parser = new SseParser();
      const decoder = new TextDecoder();
      const reader = response.body.getReader();
      try {
        for (;;) {
          let chunk: Awaited<ReturnType<typeof reader.read>>;
          try {
            chunk = await reader.read();
          } catch (error) {
            throw new EventsNetworkError('CONNECTION_LOST', 'the stream was cut', { cause: error });
          }
          if (chunk.done) return;
          for (const message of parser.feed(decoder.decode(chunk.value, { stream: true }))) {
            if (message.retry !== undefined) state.retryMs = message.retry;
            if (message.data === undefined) continue;
            if (message.event === 'gap') {
              const gap = gapInfo(JSON.parse(message.data) as SseGap);
              if (options.onGap === undefined) throw new EventsGapError(gap);
              options.onGap(gap);
            } else if (message.event === 'close') {
              const { reason } = JSON.parse(message.data) as { reason?: string };
              // Reconnecting with the same credential would be refused: say so now.
              if (reason === 'token_expired')
                throw new EventsAuthError('TOKEN_EXPIRED', 'the token expired: the server ended the stream');
              if (reason === 'api_key_revoked')
                throw new EventsAuthError('AUTH_FAILED', 'the API key was revoked: the server ended the stream');
            } else {
              const event = JSON.parse(message.data) as SandboxEvent;
              if (message.id !== undefined) state.lastEventId = message.id;
              yield event;
            }
          }
        }
      } finally {
        reader.releaseLock();
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      controller.abort();
    }
  }

  setApiKey(apiKey: string): void {
    this.apiKey = apiKey;
  }

  setAccessToken(token: string): void {
    this.accessToken = token;
  }

  private readHeaders(): Record<string, string> {
    if (this.apiKey) return { 'x-api-key': this.apiKey };
    if (this.accessToken) return { authorization: `Bearer ${this.accessToken}` };
    throw new EventsAuthError('AUTH_FAILED', 'an API key or access token is required to read events');
  }

  /**
   * fetch, with the timeout running until the response's headers arrive (as ComputeSDK's
   * client does; a stream's body is not bounded by it). Failures become EventsNetworkError.
   */
  private async request(path: string, init: RequestInit & { signal?: AbortSignal }): Promise<Response> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.timeout);
    const outer = init.signal;
    const onAbort = (): void => controller.abort();
    outer?.addEventListener('abort', onAbort, { once: true });
    try {
      return await fetch(`${this.gatewayUrl}${path}`, { ...init, signal: controller.signal });
    } catch (error) {
      if (timedOut)
        throw new EventsNetworkError('CONNECT_TIMEOUT', `request timed out after ${this.timeout} ms`, { cause: error });
      const detail =
        error instanceof Error ? ((error.cause as Error | undefined)?.message ?? error.message) : String(error);
      throw new EventsNetworkError('CONNECTION_FAILED', `network error: ${detail}`, { cause: error });
    } finally {
      // The link to `outer` stays: aborting it later must still end a body being read.
      clearTimeout(timer);
    }
  }

  private async successData(response: Response): Promise<unknown> {
    if (!response.ok) await this.throwFor(response);
    let body: { success?: boolean; data?: unknown };
    try {
      body = (await response.json()) as typeof body;
    } catch (error) {
      throw new EventsError('PROTOCOL_ERROR', 'invalid response from the server', { cause: error }, response.status);
    }
    if (body.success !== true || typeof body.data !== 'object' || body.data === null) {
      throw new EventsError('PROTOCOL_ERROR', 'invalid response from the server', {}, response.status);
    }
    return body.data;
  }

  private async throwFor(response: Response): Promise<never> {
    const text = await response.text().catch(() => response.statusText);
    let message = text || response.statusText || 'request failed';
    let brokerCode: string | undefined;
    try {
      const parsed = JSON.parse(text) as { error?: unknown; code?: unknown };
      if (typeof parsed.error === 'string') message = parsed.error;
      if (typeof parsed.code === 'string') brokerCode = parsed.code;
    } catch {
      // not JSON (a proxy's page): the text is the message
    }
    const options = { reply: brokerCode === undefined ? message : `${brokerCode} ${message}` };
    if (response.status === 401) throw new EventsAuthError('AUTH_FAILED', message, options);
    if (response.status === 403) throw new EventsAuthError('NO_PERMISSION', message, options);
    throw new EventsError(codeForStatus(response.status, brokerCode), message, options, response.status);
  }
}

export function createEventsClient(config: EventsClientConfig = {}): EventsClient {
  return new EventsClient(config);
}

function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

export interface SseMessage {
  event: string;
  data: string | undefined;
  id: string | undefined;
  retry: number | undefined;
}

/**
 * The event stream interpretation of WHATWG HTML §9.2.6: lines end in CRLF, LF or CR; `:`
 * starts a comment; `data` lines join with LF; a blank line dispatches. `id` is the one given
 * in that message (the caller keeps the last one).
 */
export class SseParser {
  private buffer = '';
  private skipLf = false;
  private started = false;
  private eventName = '';
  private data: string[] | undefined;
  private id: string | undefined;
  private retry: number | undefined;

  feed(text: string): SseMessage[] {
    let buffer = this.buffer + text;
    if (this.skipLf && buffer.startsWith('\n')) buffer = buffer.slice(1);
    this.skipLf = false;
    if (!this.started && buffer.length > 0) {
      this.started = true;
      if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
    }
    const messages: SseMessage[] = [];
    let start = 0;
    for (;;) {
      const lf = buffer.indexOf('\n', start);
      const cr = buffer.indexOf('\r', start);
      if (lf < 0 && cr < 0) break;
      let end: number;
      let next: number;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        end = cr;
        next = cr + 1;
        if (next === buffer.length)
          this.skipLf = true; // the LF of a CRLF may open the next chunk
        else if (buffer[next] === '\n') next += 1;
      } else {
        end = lf;
        next = lf + 1;
      }
      const message = this.line(buffer.slice(start, end));
      if (message !== undefined) messages.push(message);
      start = next;
    }
    this.buffer = buffer.slice(start);
    if (this.buffer.length > MAX_SSE_LINE)
      throw new EventsPubSubError('PROTOCOL_ERROR', 'the server sent an over-long line');
    return messages;
  }

  private line(line: string): SseMessage | undefined {
    if (line === '') {
      const message: SseMessage = {
        event: this.eventName || 'message',
        data: this.data?.join('\n'),
        id: this.id,
        retry: this.retry,
      };
      const dispatch = this.data !== undefined || this.retry !== undefined;
      this.eventName = '';
      this.data = undefined;
      this.id = undefined;
      this.retry = undefined;
      return dispatch ? message : undefined;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.eventName = value;
        break;
      case 'data':
        (this.data ??= []).push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
    return undefined;
  }
}
