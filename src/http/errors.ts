import { AuthError } from '../auth/verifier.js';
import { InvalidChannelError, PermissionError } from '../broker/scope.js';
import { RateLimitedError } from '../broker/rate-limit.js';
import { type CodeWithStatus, type ErrorCode, type HttpStatusOf, httpStatusOf, SandboxEventsError } from '../errors.js';
import { EventTooLargeError, InvalidEventError } from '../event/event.js';

/**
 * An HTTP refusal: the status, a stable `code` for programs and a message for people. Every
 * error response is `{"error": "<message>", "code": "<CODE>"}` (docs/http.md, "Errors"), plus
 * `extra` fields where a client can act on them (`retryAfterMs`). The status is the one the
 * table in src/errors.ts gives the code: another one is a type error.
 */
export class HttpError<Code extends ErrorCode = ErrorCode> extends SandboxEventsError {
  constructor(
    readonly status: HttpStatusOf<Code>,
    code: Code,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly extra: Record<string, unknown> = {},
  ) {
    super(code, message);
  }
}

export const notFound = (): HttpError => new HttpError(404, 'NOT_FOUND', 'no such endpoint');

export function methodNotAllowed(allowed: readonly string[]): HttpError {
  return new HttpError(405, 'METHOD_NOT_ALLOWED', `method not allowed; use ${allowed.join(', ')}`, {
    allow: allowed.join(', '),
  });
}

export function badRequest(code: CodeWithStatus<400>, message: string): HttpError {
  return new HttpError(400, code, message);
}

/** Credentials missing or refused; `WWW-Authenticate` as RFC 6750 asks of a 401. */
export function unauthorized(code: CodeWithStatus<401>, message: string): HttpError {
  return new HttpError(401, code, message, { 'www-authenticate': 'Bearer realm="sandbox-events"' });
}

export function forbidden(message: string): HttpError {
  return new HttpError(403, 'NO_PERMISSION', message);
}

/** Maps what the broker's shared code throws to the HTTP answer; undefined for a bug. */
export function toHttpError(error: unknown): HttpError | undefined {
  if (error instanceof HttpError) return error;
  if (error instanceof AuthError) return unauthorized('AUTH_FAILED', error.message);
  if (error instanceof PermissionError) return forbidden('this credential may not access this sandbox');
  if (error instanceof InvalidChannelError) return badRequest('INVALID_SANDBOX_ID', error.message);
  if (error instanceof EventTooLargeError) return new HttpError(413, 'EVENT_TOO_LARGE', error.message);
  if (error instanceof InvalidEventError) return badRequest('INVALID_EVENT', error.message);
  if (error instanceof RateLimitedError) {
    // Retry-After is whole seconds (RFC 9110 §10.2.3); the exact figure is in the body.
    const seconds = Math.max(1, Math.ceil(error.retryAfterMs / 1000));
    return new HttpError(
      429,
      'RATE_LIMITED',
      error.message,
      { 'retry-after': String(seconds) },
      { retryAfterMs: error.retryAfterMs },
    );
  }
  if (!(error instanceof SandboxEventsError)) return undefined;
  if (
    error.code === 'STORE_CLOSED' ||
    error.code === 'STORE_UNAVAILABLE' ||
    error.code === 'STORE_LOADING' ||
    error.code === 'ENGINE_REFUSED'
  ) {
    // A retry may cure it: the message stays inside (it names files and hosts).
    return new HttpError(httpStatusOf(error.code), error.code, 'the event store is unavailable', {
      'retry-after': '1',
    });
  }
  if (error.code === 'INVALID_PATTERN') return badRequest(error.code, error.message);
  return undefined;
}
