/** Who a verified token speaks for. Built only by the verifier, from claims it has checked. */
export type Role = 'sandbox' | 'workspace' | 'admin';

export const ROLES: readonly Role[] = ['sandbox', 'workspace', 'admin'];

export interface Principal {
  /** claim workspace_id: a positive safe integer, required */
  workspaceId: number;
  /** claim sandbox_id: required when role is 'sandbox' (the default role); optional otherwise */
  sandboxId?: string;
  /** claim role, default 'sandbox' */
  role: Role;
  /** exp in Unix milliseconds (exp is required) */
  expiresAt: number;
  /** sub, if present (for logs) */
  subject?: string;
  /**
   * The configured key that verified the token, by its fingerprint (`hs:` and the start of the
   * secret's SHA-256, `pem:` likewise, or `jwks:` and the URL; never the key): a reload closes
   * what a removed key verified (TokenVerifier.verifiedWithRemovedKey).
   */
  keyId?: string;
}

/**
 * Every principal the daemon builds has this one shape, every field present from construction
 * (undefined when the token has no such claim), and is frozen (verified tokens are shared
 * through the verifier's cache). An object literal given the optional fields as they come would
 * take one of several shapes (sandbox tokens, admin tokens, with or without `sub`), so the code
 * that reads principals on every AUTH and SUBSCRIBE would see several maps and be deoptimized as
 * each new one came; and a literal that outlives its turn, as every connection's principal does,
 * has V8 switch its allocation site to the old generation during a connection storm, which
 * discards the optimized code that made it (docs/performance.md, "Ninth round: the first storm").
 */
class VerifiedPrincipal implements Principal {
  constructor(
    readonly workspaceId: number,
    readonly role: Role,
    readonly expiresAt: number,
    readonly sandboxId: string | undefined,
    readonly subject: string | undefined,
    readonly keyId: string | undefined,
  ) {}
}

/** A principal from checked claims (see VerifiedPrincipal). */
export function newPrincipal(
  workspaceId: number,
  role: Role,
  expiresAt: number,
  sandboxId: string | undefined,
  subject: string | undefined,
  keyId: string | undefined,
): Principal {
  return Object.freeze(new VerifiedPrincipal(workspaceId, role, expiresAt, sandboxId, subject, keyId));
}

export const MAX_SANDBOX_ID_LENGTH = 256;

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

// Control characters would break inline commands and log lines; a leading '{' would collide
// with the broker's "{<workspaceId>}<sandboxId>" qualified names.
const CONTROL_CHAR = /[\x00-\x1f\x7f]/;

export function isValidSandboxId(id: string): boolean {
  return (
    typeof id === 'string' &&
    id.length >= 1 &&
    id.length <= MAX_SANDBOX_ID_LENGTH &&
    !id.startsWith('{') &&
    !CONTROL_CHAR.test(id)
  );
}
