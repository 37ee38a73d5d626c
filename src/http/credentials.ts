import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Principal } from '../auth/principal.js';
import { AuthError } from '../auth/verifier.js';
import type { ServerContext } from '../runtime/context.js';
import { ApiKeyError, type ApiKeyRegistry, looksLikeApiKey } from '../auth/api-keys.js';
import { forbidden, unauthorized } from './errors.js';

/** Who a request speaks for, and the API key it used (streams check it again later). */
export interface Authenticated {
  principal: Principal;
  apiKey?: string;
}

/**
 * The credential of a request: `Authorization: Bearer <x>`, else `X-API-Key: <x>`, else (on
 * stream endpoints only, since a browser's EventSource can't set headers) `?token=<x>`. Either
 * kind of credential, a JWT or an API key, may come in any of the three places.
 */
export function credentialOf(req: IncomingMessage, url: URL, allowQueryToken: boolean): string | undefined {
  const authorization = req.headers.authorization;
  if (authorization !== undefined) {
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (match === null) throw unauthorized('BAD_AUTHORIZATION', 'the Authorization header must be "Bearer <token>"');
    return match[1];
  }
  const apiKey = req.headers['x-api-key'];
  if (typeof apiKey === 'string' && apiKey.length > 0) return apiKey.trim();
  if (allowQueryToken) {
    const token = url.searchParams.get('token');
    if (token !== null && token.length > 0) return token;
  }
  return undefined;
}

function countFailure(context: ServerContext, reason: string, req: IncomingMessage): void {
  context.stats.authFailures[reason] = (context.stats.authFailures[reason] ?? 0) + 1;
  // The client's address and the reason, never the credential (nor the URL, which may hold it).
  context.logger.info(
    { transport: 'http', addr: `${req.socket.remoteAddress}:${req.socket.remotePort}`, reason },
    'authentication failed',
  );
}

/** Verifies the request's credential; throws a 401 HttpError (counted by reason) otherwise. */
export async function authenticateRequest(
  context: ServerContext,
  apiKeys: ApiKeyRegistry | undefined,
  req: IncomingMessage,
  url: URL,
  allowQueryToken: boolean,
): Promise<Authenticated> {
  let credential: string | undefined;
  try {
    credential = credentialOf(req, url, allowQueryToken);
  } catch (error) {
    countFailure(context, 'malformed', req);
    throw error;
  }
  if (credential === undefined) {
    countFailure(context, 'missing_credentials', req);
    throw unauthorized(
      'UNAUTHENTICATED',
      allowQueryToken
        ? 'credentials required: Authorization: Bearer <token>, X-API-Key: <key>, or ?token=<token>'
        : 'credentials required: Authorization: Bearer <token> or X-API-Key: <key>',
    );
  }
  if (looksLikeApiKey(credential)) {
    if (apiKeys === undefined) {
      countFailure(context, 'unknown_api_key', req);
      throw unauthorized('AUTH_FAILED', 'API keys are not enabled on this server');
    }
    try {
      return { principal: await apiKeys.verify(credential), apiKey: credential };
    } catch (error) {
      if (!(error instanceof ApiKeyError)) throw error;
      countFailure(context, error.reason, req);
      throw unauthorized('AUTH_FAILED', error.message);
    }
  }
  try {
    return { principal: await context.verifier.verify(credential) };
  } catch (error) {
    if (!(error instanceof AuthError)) throw error;
    countFailure(context, error.reason, req);
    throw unauthorized('AUTH_FAILED', error.message);
  }
}

/**
 * `--metrics-token` (docs/operations.md, "Watching it"): when set, /metrics and the broker-wide
 * figures of /metrics/stream need it (or an admin credential). Compared in constant time, as
 * SHA-256 digests, so that neither the bytes nor the length of the secret show in the timing.
 */
export class MetricsToken {
  private digest: Buffer | undefined;

  /** A new token (a config reload); true when it changed. */
  set(token: string | undefined): boolean {
    const digest = token === undefined || token === '' ? undefined : sha256(token);
    const changed = digest === undefined ? this.digest !== undefined : !this.matchesDigest(digest);
    this.digest = digest;
    return changed;
  }

  get required(): boolean {
    return this.digest !== undefined;
  }

  matches(credential: string): boolean {
    return this.matchesDigest(sha256(credential));
  }

  private matchesDigest(digest: Buffer): boolean {
    return this.digest !== undefined && timingSafeEqual(digest, this.digest);
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/**
 * Who reads the broker's figures (/metrics, /metrics/stream; docs/http.md): `wholeBroker` for
 * the metrics token, an admin, or anyone while no metrics token is set; `auth` when a JWT or API
 * key was given (its workspaces' figures). With a metrics token set, a request without a
 * credential is a 401; /metrics (`wholeBrokerOnly`) refuses any other credential with a 403.
 */
export async function authenticateMetricsReader(
  context: ServerContext,
  apiKeys: ApiKeyRegistry | undefined,
  metricsToken: MetricsToken,
  req: IncomingMessage,
  url: URL,
  wholeBrokerOnly: boolean,
): Promise<{ wholeBroker: boolean; auth: Authenticated | undefined }> {
  const allowQueryToken = !wholeBrokerOnly; // streams take ?token=, as an EventSource can't set headers
  const credential = credentialOf(req, url, allowQueryToken);
  if (!metricsToken.required) {
    if (credential === undefined || wholeBrokerOnly) return { wholeBroker: true, auth: undefined };
    return { wholeBroker: true, auth: await authenticateRequest(context, apiKeys, req, url, allowQueryToken) };
  }
  if (credential !== undefined && metricsToken.matches(credential)) return { wholeBroker: true, auth: undefined };
  const auth = await authenticateRequest(context, apiKeys, req, url, allowQueryToken);
  const admin = auth.principal.role === 'admin';
  if (wholeBrokerOnly && !admin) throw forbidden('/metrics needs the --metrics-token or an admin credential');
  return { wholeBroker: admin, auth };
}
