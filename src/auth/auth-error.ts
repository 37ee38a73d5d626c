import { SandboxEventsError } from '../errors.js';

/** Why a token was refused (the WRONGPASS reason, the auth-failure metrics' label). */
export type AuthFailureReason =
  | 'malformed'
  | 'bad_signature'
  | 'algorithm_not_allowed'
  | 'expired'
  | 'not_yet_valid'
  | 'missing_exp'
  | 'bad_issuer'
  | 'bad_audience'
  | 'bad_claims'
  | 'unknown_key'
  | 'key_fetch_failed';

/** A token was refused. The message is for people and never contains the token. */
export class AuthError extends SandboxEventsError {
  readonly reason: AuthFailureReason;

  constructor(reason: AuthFailureReason, message: string, options?: { cause?: unknown }) {
    super('AUTH_FAILED', message, options);
    this.reason = reason;
  }
}
