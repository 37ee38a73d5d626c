import { SandboxEventsError } from '../errors.js';

/**
 * The client's errors. The four class names are the ComputeSDK events package's (an app that
 * catches `EventsAuthError` keeps working after changing its import); each also carries a
 * stable `code` (switch on it, count it) and keeps its `cause`, as undici's errors do.
 * `message` is for people and may change.
 */

/** Codes of `EventsAuthError`. */
export type EventsAuthErrorCode =
  /** The broker refused the token (`-WRONGPASS`). */
  | 'AUTH_FAILED'
  /** The broker closed the connection because the token expired (`-ERR token expired`). */
  | 'TOKEN_EXPIRED'
  /** The token may not reach a channel or pattern (`-NOPERM`). */
  | 'NO_PERMISSION'
  /** The `accessToken` function threw, or returned something that is not a token. */
  | 'TOKEN_PROVIDER_FAILED';

/** Codes of `EventsNetworkError`. */
export type EventsNetworkErrorCode =
  /** The TCP connection could not be opened (refused, unreachable, DNS). */
  | 'CONNECTION_FAILED'
  /** The connection closed or failed while open. */
  | 'CONNECTION_LOST'
  /** No connection and handshake within `connectTimeout`. */
  | 'CONNECT_TIMEOUT'
  /** Nothing came back within `heartbeatTimeout` of a heartbeat PING: a dead or half-open peer. */
  | 'HEARTBEAT_TIMEOUT'
  /** The client is not connected and is not trying to be (never connected, stopped, failed). */
  | 'NOT_CONNECTED'
  /** A command waited longer than `commandTimeout` for the connection to come back. */
  | 'COMMAND_TIMEOUT'
  /** `disconnect()` was called while the operation was pending. */
  | 'CLIENT_CLOSED';

/** Codes of `EventsPubSubError`. */
export type EventsPubSubErrorCode =
  /** The broker answered a command with an error not covered by a more precise code. */
  | 'REPLY_ERROR'
  /** `-ERR rate limit exceeded` on PUBLISH. */
  | 'RATE_LIMITED'
  /** The broker refused the event (bad type, data not an object, too large). */
  | 'INVALID_EVENT'
  /** A message that is not a valid event, or an argument the client refuses before sending. */
  | 'INVALID_ARGUMENT'
  /** The broker sent bytes that are not RESP, or a reply the client cannot match to a command. */
  | 'PROTOCOL_ERROR'
  /** A resume replay failed on the broker after it had started (the client reconnects). */
  | 'REPLAY_FAILED'
  /** `reconnectStrategy` returned `false`: the client stopped trying. */
  | 'RECONNECT_STOPPED'
  /** (HTTP client) a stream resumed with a gap and no `onGap` handler was given. */
  | 'RESUME_GAP';

export type EventsErrorCode = EventsAuthErrorCode | EventsNetworkErrorCode | EventsPubSubErrorCode;

export interface EventsErrorOptions {
  cause?: unknown;
  /** The broker's error line, without `-` and CRLF, when the error came from a reply. */
  reply?: string;
}

/** Base class of every error the client raises. */
export class EventsError extends SandboxEventsError<EventsErrorCode> {
  declare readonly code: EventsErrorCode;
  /** The broker's error line, when there was one (e.g. `WRONGPASS invalid username-password pair ...`). */
  readonly reply: string | undefined;
  /** ComputeSDK's `EventsError.statusCode`: 401 for authentication failures, else undefined. */
  readonly statusCode: number | undefined;

  constructor(code: EventsErrorCode, message: string, options: EventsErrorOptions = {}, statusCode?: number) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.reply = options.reply;
    this.statusCode = statusCode;
  }
}

/** The broker refused the credentials or a permission. Retrying with the same token won't help. */
export class EventsAuthError extends EventsError {
  declare readonly code: EventsAuthErrorCode;

  constructor(code: EventsAuthErrorCode, message: string, options?: EventsErrorOptions) {
    super(code, message, options, code === 'NO_PERMISSION' ? 403 : 401);
  }
}

/** The connection could not be made, was lost, or stopped answering. Usually transient. */
export class EventsNetworkError extends EventsError {
  declare readonly code: EventsNetworkErrorCode;

  constructor(code: EventsNetworkErrorCode, message: string, options?: EventsErrorOptions) {
    super(code, message, options);
  }

  /** ComputeSDK's `EventsNetworkError.originalError`: the socket error, when there was one. */
  get originalError(): Error | undefined {
    return this.cause instanceof Error ? this.cause : undefined;
  }
}

/** A pub/sub command failed, or the broker sent something the client can't use. */
export class EventsPubSubError extends EventsError {
  declare readonly code: EventsPubSubErrorCode;

  constructor(code: EventsPubSubErrorCode, message: string, options?: EventsErrorOptions) {
    super(code, message, options);
  }
}

/**
 * Maps a broker error line (without `-`) to the client's error. The prefixes are the broker's
 * (src/commands/errors.ts): `WRONGPASS` for a refused token, `NOPERM` for a refused channel,
 * and the `ERR ...` texts of the ComputeSDK path and of PUBLISH.
 */
export function errorFromReply(line: string, command: string): EventsError {
  const options = { reply: line };
  const upper = line.slice(0, 16).toUpperCase();
  if (upper.startsWith('WRONGPASS') || upper.startsWith('NOAUTH')) {
    return new EventsAuthError('AUTH_FAILED', `authentication failed: ${line}`, options);
  }
  if (upper.startsWith('NOPERM')) {
    return new EventsAuthError('NO_PERMISSION', `${command}: ${line}`, options);
  }
  if (line.startsWith('ERR token expired')) {
    return new EventsAuthError('TOKEN_EXPIRED', line.slice(4), options);
  }
  if (line.startsWith('ERR rate limit exceeded')) {
    return new EventsPubSubError('RATE_LIMITED', `${command}: ${line.slice(4)}`, options);
  }
  if (line.startsWith('ERR invalid event') || line.startsWith('ERR event too large')) {
    return new EventsPubSubError('INVALID_EVENT', `${command}: ${line.slice(4)}`, options);
  }
  return new EventsPubSubError('REPLY_ERROR', `${command}: ${line}`, options);
}

/** Any failure as an `EventsError`: one that is not becomes PROTOCOL_ERROR, keeping the cause. */
export function toEventsError(error: unknown): EventsError {
  if (error instanceof EventsError) return error;
  return new EventsPubSubError('PROTOCOL_ERROR', describeError(error), { cause: error });
}

/** A thrown value's message (anything may be thrown, not only an Error). */
export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
