import { AuthError } from '../auth/verifier.js';
import { PermissionError } from '../broker/scope.js';
import type { Connection } from '../connection/connection.js';
import { SandboxEventsError } from '../errors.js';
import { InvalidEventError } from '../event/event.js';
import { STORE_LOADING, STORE_LOADING_MESSAGE } from '../store/types.js';
import { ReplyError } from './command.js';

/** A shared engine not connected yet since start (docs/scaling.md, "Readiness"). */
export function storeLoadingError(): SandboxEventsError {
  return new SandboxEventsError(STORE_LOADING, STORE_LOADING_MESSAGE);
}

/** Redis's reply to a failed AUTH, byte for byte. */
export const WRONGPASS = 'WRONGPASS invalid username-password pair or user is disabled.';

/**
 * The error line (without `-` and CRLF) for an error a command raised. Connections that came
 * in through the ComputeSDK client's path get `ERR ...` only: that client treats a line
 * starting with `-ERR ` as the error and knows no other prefix (contract, "Compatibility").
 */
export function errorText(error: unknown, connection: Connection): string {
  if (error instanceof ReplyError) return error.text;
  if (error instanceof PermissionError) {
    return connection.compat ? `ERR permission denied: ${error.message}` : `NOPERM ${error.message}`;
  }
  if (error instanceof AuthError) {
    return connection.compat ? `ERR authentication failed: ${error.message}` : WRONGPASS;
  }
  if (error instanceof InvalidEventError) return `ERR invalid event: ${error.message}`;
  if (error instanceof SandboxEventsError && error.code === STORE_LOADING) {
    return connection.compat ? `ERR ${error.message}` : `LOADING ${error.message}`;
  }
  if (error instanceof SandboxEventsError && (error.code === 'STORE_UNAVAILABLE' || error.code === 'STORE_CLOSED')) {
    // Not acknowledged. The embedded stores stored nothing; the Redis engine may have stored
    // the event if only Redis's reply was lost (docs/scaling.md), so a retry can duplicate it.
    return `ERR store unavailable: ${error.message}`;
  }
  if (error instanceof SandboxEventsError) return `ERR ${error.message}`;
  connection.context.logger.error({ conn: connection.id, err: error }, 'unexpected error in command');
  return 'ERR internal error';
}
