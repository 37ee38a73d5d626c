import { SignJWT } from 'jose';
import { SandboxEventsError } from '../errors.js';
import { isRole, isValidSandboxId, type Role } from './principal.js';

export interface MintOptions {
  secret: string;
  workspaceId: number;
  sandboxId?: string;
  role?: Role;
  ttlSeconds: number;
  issuer?: string;
  audience?: string;
  /** ms, for tests */
  now?: number;
}

function invalid(message: string): SandboxEventsError {
  return new SandboxEventsError('INVALID_ARGUMENT', message);
}

/** Signs an HS256 token that the broker's own verifier accepts (same claim rules). */
export async function mintToken(options: MintOptions): Promise<string> {
  const { secret, workspaceId, sandboxId, role = 'sandbox', ttlSeconds, issuer, audience } = options;
  const now = options.now ?? Date.now();
  if (typeof secret !== 'string' || secret.length === 0) throw invalid('secret must be a non-empty string');
  if (!Number.isSafeInteger(workspaceId) || workspaceId <= 0) throw invalid('workspaceId must be a positive integer');
  if (!isRole(role)) throw invalid('role must be sandbox, workspace or admin');
  if (sandboxId !== undefined && !isValidSandboxId(sandboxId)) {
    throw invalid('sandboxId must be 1 to 256 characters, without control characters, not starting with "{"');
  }
  if (role === 'sandbox' && sandboxId === undefined) throw invalid('a sandbox token needs a sandboxId');
  if (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
    throw invalid('ttlSeconds must be a positive number');
  }
  if (!Number.isFinite(now)) throw invalid('now must be a finite number');
  if (issuer !== undefined && (typeof issuer !== 'string' || issuer.length === 0))
    throw invalid('issuer must be a non-empty string');
  if (audience !== undefined && (typeof audience !== 'string' || audience.length === 0)) {
    throw invalid('audience must be a non-empty string');
  }

  const iat = Math.floor(now / 1000);
  // Rounded up so that a sub-second ttl still yields a token that is valid for a moment.
  const exp = Math.ceil((now + ttlSeconds * 1000) / 1000);
  const claims: Record<string, unknown> = { workspace_id: workspaceId, role };
  if (sandboxId !== undefined) claims.sandbox_id = sandboxId;
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt(iat)
    .setExpirationTime(exp);
  if (issuer !== undefined) jwt.setIssuer(issuer);
  if (audience !== undefined) jwt.setAudience(audience);
  return jwt.sign(new TextEncoder().encode(secret));
}
