import { AuthError } from '../auth/verifier.js';
import { InvalidChannelError, PermissionError } from '../broker/scope.js';
import { RateLimitedError } from '../broker/rate-limit.js';
import { SandboxEventsError } from '../errors.js';
import { EventTooLargeError, InvalidEventError } from '../event/event.js';

/**
 * An HTTP refusal: the status, a stable `code` for programs and a message for people. Every
 * error response is `{"error": "<message>", "code": "<CODE>"}` (issue 5), plus `extra` fields
 * where a client can act on them (`retryAfterMs`).
 */
export class HttpError extends SandboxEventsError {
  constructor(
    readonly status: number,
    code: string,
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

export function badRequest(code: string, message: string): HttpError {
  return new HttpError(400, code, message);
}

/** Credentials missing or refused; `WWW-Authenticate` as RFC 6750 asks of a 401. */
export function unauthorized(code: string, message: string): HttpError {
  return new HttpError(401, code, message, { 'www-authenticate': 'Bearer realm="sandbox-events"' });
}

export function forbidden(message: string): HttpError {
  return new HttpError(403, 'NO_PERMISSION', message);
}

/** Codes of store failures that a retry may cure: answered 503 rather than 500. */
const UNAVAILABLE_CODES = new Set(['STORE_CLOSED', 'STORE_UNAVAILABLE', 'STORE_LOADING', 'ENGINE_REFUSED']);

/** Maps what the broker's shared code throws to the HTTP answer; undefined for a bug. */
export function toHttpError(error: unknown): HttpError | undefined {
  if (error instanceof HttpError) return error;
  if (error instanceof AuthError) return unauthorized('AUTH_FAILED', error.message);
  if (error instanceof PermissionError) return forbidden('this credential may not access this sandbox');
  if (error instanceof InvalidChannelError) return badRequest('INVALID_SANDBOX_ID', error.message);
  if (error instanceof EventTooLargeError) return new HttpError(413, error.code, error.message);
  if (error instanceof InvalidEventError) return badRequest(error.code, error.message);
  if (error instanceof RateLimitedError) {
    // Retry-After is whole seconds (RFC 9110 §10.2.3); the exact figure is in the body.
    const seconds = Math.max(1, Math.ceil(error.retryAfterMs / 1000));
    return new HttpError(
      429,
      error.code,
      error.message,
      { 'retry-after': String(seconds) },
      { retryAfterMs: error.retryAfterMs },
    );
  }
  if (error instanceof SandboxEventsError && UNAVAILABLE_CODES.has(error.code)) {
    return new HttpError(503, error.code, 'the event store is unavailable', { 'retry-after': '1' });
  }
  if (error instanceof SandboxEventsError && error.code === 'INVALID_PATTERN')
    return badRequest(error.code, error.message);
  return undefined;
}
