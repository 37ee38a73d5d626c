import { createHmac, timingSafeEqual } from 'node:crypto';
import { base64url, type JWTPayload } from 'jose';

/**
 * HS256 JWTs verified synchronously with node:crypto: an HMAC-SHA256 and a constant-time
 * compare cost a few µs of CPU, where jose's WebCrypto path costs tens (docs/performance.md,
 * "Token verification"). It makes jose's checks (RFC 7515 compact form, RFC 7519 section 7.2,
 * the `alg` allow-list, `crit`, exp, nbf, iat's type, iss, aud, clock tolerance) and decides only
 * to accept: a token it would refuse goes to jose, which then refuses it with its own reason. test/auth/hs256.test.ts checks that both accept
 * exactly the same tokens.
 */

export interface Hs256Checks {
  /** The allow-list; tokens are decided here only when it holds HS256. */
  algorithms: readonly string[];
  issuer?: string;
  audience?: string;
  clockToleranceSeconds: number;
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;
const strictText = new TextDecoder('utf-8', { fatal: true });
const SIGNATURE_BYTES = 32;

/**
 * A part's bytes, decoded as jose decodes it (its base64url decoder, RFC 4648 section 5, is as
 * lenient as the runtime's: padding, whitespace, stray low bits), so both paths read the same
 * bytes. Canonical base64url, what every signer writes, takes Buffer's quicker decoder.
 */
function base64urlBytes(part: string): Uint8Array | undefined {
  if (BASE64URL.test(part)) {
    const bytes = Buffer.from(part, 'base64url');
    if (bytes.toString('base64url') === part) return bytes;
  }
  try {
    return base64url.decode(part);
  } catch {
    return undefined;
  }
}

function jsonObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(strictText.decode(bytes));
  } catch {
    return undefined;
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

/**
 * The claims of `token` when it is an HS256 JWT signed with one of `secrets` that passes every
 * check at `nowSeconds`; undefined when it is not (or not decided here): the caller then asks jose.
 */
export function verifyHs256(
  token: string,
  secrets: readonly Uint8Array[],
  checks: Hs256Checks,
  nowSeconds = Math.floor(Date.now() / 1000),
): JWTPayload | undefined {
  if (secrets.length === 0 || !checks.algorithms.includes('HS256')) return undefined;
  const firstDot = token.indexOf('.');
  const secondDot = token.indexOf('.', firstDot + 1);
  if (firstDot < 0 || secondDot < 0 || token.indexOf('.', secondDot + 1) >= 0) return undefined;
  const headerBytes = base64urlBytes(token.slice(0, firstDot));
  if (headerBytes === undefined) return undefined;
  const header = jsonObject(headerBytes);
  if (header === undefined || header.alg !== 'HS256' || !criticalHeadersUnderstood(header)) return undefined;
  const signature = base64urlBytes(token.slice(secondDot + 1));
  if (signature === undefined || signature.length !== SIGNATURE_BYTES) return undefined;
  const signingInput = token.slice(0, secondDot);
  if (!secrets.some((secret) => timingSafeEqual(createHmac('sha256', secret).update(signingInput).digest(), signature)))
    return undefined;
  const payloadBytes = base64urlBytes(token.slice(firstDot + 1, secondDot));
  if (payloadBytes === undefined) return undefined;
  const claims = jsonObject(payloadBytes) as JWTPayload | undefined;
  if (claims === undefined) return undefined;
  return claimsAccepted(claims, checks, nowSeconds) ? claims : undefined;
}

/**
 * `crit` (RFC 7515, section 4.1.11) may name only `b64` (RFC 7797), the one extension jose knows,
 * and a JWT's payload must then still be base64url-encoded (`b64: true`); without `crit`, `b64`
 * means nothing.
 */
function criticalHeadersUnderstood(header: Record<string, unknown>): boolean {
  const { crit } = header;
  if (crit === undefined) return true;
  return Array.isArray(crit) && crit.length > 0 && crit.every((name) => name === 'b64') && header.b64 === true;
}

/** RFC 7519, section 4.1, as jose checks it; exp is required (docs/security.md). */
function claimsAccepted(claims: JWTPayload, checks: Hs256Checks, now: number): boolean {
  const tolerance = checks.clockToleranceSeconds;
  if (!Object.hasOwn(claims, 'exp') || typeof claims.exp !== 'number' || claims.exp <= now - tolerance) return false;
  if (claims.iat !== undefined && typeof claims.iat !== 'number') return false;
  if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf > now + tolerance)) return false;
  if (checks.issuer !== undefined && (!Object.hasOwn(claims, 'iss') || claims.iss !== checks.issuer)) return false;
  if (checks.audience !== undefined) {
    const { aud } = claims;
    if (!Object.hasOwn(claims, 'aud')) return false;
    if (typeof aud === 'string' ? aud !== checks.audience : !Array.isArray(aud) || !aud.includes(checks.audience))
      return false;
  }
  return true;
}
