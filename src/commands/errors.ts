import type { Logger } from 'pino';
import { AuthError } from '../auth/verifier.js';
import { PermissionError } from '../broker/scope.js';
import { respPrefixOf, SandboxEventsError } from '../errors.js';
import { InvalidEventError } from '../event/event.js';
import { ReplyError } from './command.js';

/** Redis's reply to a failed AUTH, byte for byte; the broker adds ` reason: <why>` after it. */
export const WRONGPASS = 'WRONGPASS invalid username-password pair or user is disabled.';

/**
 * `WRONGPASS` with the verifier's reason after Redis's text (`expired`, `malformed`, `bad
 * signature`, ...: AuthFailureReason in words), so a client we don't control says why in its
 * error (docs/protocol.md, "Authentication"). Clients match the `WRONGPASS` prefix only.
 */
export function wrongpassText(error: AuthError): string {
  return `${WRONGPASS} reason: ${error.reason.replaceAll('_', ' ')}`;
}

/** What errorText needs of the connection the error is for. */
export interface ErrorReplyTarget {
  readonly id: number;
  /** Came in through the ComputeSDK client's path: error lines start with `ERR `. */
  readonly compat: boolean;
  readonly context: { readonly logger: Logger };
}

/**
 * The error line (without `-` and CRLF) for an error a command raised: the RESP prefix the
 * code's entry in ERROR_CODES (src/errors.ts) gives, then the message. Connections that came
 * in through the ComputeSDK client's path get `ERR ...` only: that client treats a line
 * starting with `-ERR ` as the error and knows no other prefix (docs/protocol.md).
 */
export function errorText(error: unknown, connection: ErrorReplyTarget): string {
  if (error instanceof ReplyError) return error.text;
  if (!(error instanceof SandboxEventsError)) {
    connection.context.logger.error({ conn: connection.id, err: error }, 'unexpected error in command');
    return 'ERR internal error';
  }
  const prefix = respPrefixOf(error.code);
  if (error instanceof PermissionError) {
    return connection.compat ? `ERR permission denied: ${error.message}` : `${prefix} ${error.message}`;
  }
  // Redis's fixed text, then the reason (never the token: that stays out of the log too).
  if (error instanceof AuthError) {
    return connection.compat ? `ERR authentication failed: ${error.message}` : wrongpassText(error);
  }
  if (error instanceof InvalidEventError) return `${prefix} invalid event: ${error.message}`;
  if (error.code === 'STORE_UNAVAILABLE' || error.code === 'STORE_CLOSED') {
    // Not acknowledged. The embedded stores stored nothing; the Redis engine may have stored
    // the event if only Redis's reply was lost (docs/scaling.md), so a retry can duplicate it.
    return `${prefix} store unavailable: ${error.message}`;
  }
  // The ComputeSDK client knows `-ERR ` only (docs/protocol.md): `LOADING ...` reaches it as `ERR ...`.
  return `${connection.compat ? 'ERR' : prefix} ${error.message}`;
}
