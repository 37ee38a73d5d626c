import type { IncomingMessage } from 'node:http';
import type { Principal } from '../auth/principal.js';
import { AuthError } from '../auth/verifier.js';
import type { ServerContext } from '../runtime/context.js';
import { ApiKeyError, type ApiKeyRegistry, looksLikeApiKey } from '../auth/api-keys.js';
import { unauthorized } from './errors.js';

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
