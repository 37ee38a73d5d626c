import { createHmac, type KeyObject, timingSafeEqual } from 'node:crypto';
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
function base64urlBytes(part: string): Buffer | undefined {
  if (BASE64URL.test(part) && canonicalBase64url(part)) return Buffer.from(part, 'base64url');
  try {
    const bytes = base64url.decode(part);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  } catch {
    return undefined;
  }
}

/**
 * Whether a part of base64url characters is the one encoding of its bytes (what re-encoding
 * them would give back, without doing it): no lone last character, and the bits the last
 * character holds beyond the last byte are zero (RFC 4648 section 3.5).
 */
function canonicalBase64url(part: string): boolean {
  const rest = part.length % 4;
  if (rest === 0) return true;
  if (rest === 1) return false;
  const last = part.charCodeAt(part.length - 1);
  const value =
    last >= 0x61
      ? last - 0x61 + 26
      : last >= 0x41
        ? last - 0x41
        : last >= 0x30
          ? last - 0x30 + 52
          : last === 0x2d
            ? 62
            : 63;
  return (value & (rest === 2 ? 0x0f : 0x03)) === 0;
}

/**
 * The text of UTF-8 bytes as the fatal TextDecoder gives it (a leading BOM dropped), or a throw
 * for bytes that are not UTF-8. Buffer's decoder is that text for nearly every JWT part: it
 * turns each ill-formed sequence into U+FFFD (as the WHATWG decoder does) and keeps a BOM, so
 * a text with neither is the same, and only one with either goes to the TextDecoder. The
 * TextDecoder's JavaScript wrapper is most of a cold AUTH's decoding, where Buffer's `toString`
 * calls the binding at once (docs/performance.md, "Tenth round: the first storm").
 */
function strictUtf8(bytes: Buffer): string {
  const text = bytes.toString();
  return text.includes('\uFFFD') || text.charCodeAt(0) === 0xfeff ? strictText.decode(bytes) : text;
}

function jsonObject(bytes: Buffer): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(strictUtf8(bytes));
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
  secrets: readonly (Uint8Array | KeyObject)[],
  checks: Hs256Checks,
  nowSeconds = Math.floor(Date.now() / 1000),
): JWTPayload | undefined {
  if (secrets.length === 0 || !checks.algorithms.includes('HS256')) return undefined;
  const firstDot = token.indexOf('.');
  const secondDot = token.indexOf('.', firstDot + 1);
  if (firstDot < 0 || secondDot < 0 || token.indexOf('.', secondDot + 1) >= 0) return undefined;
  const header = token.slice(0, firstDot);
  const knownHeader = signedHeaders.has(header);
  if (!knownHeader && !hs256Header(header)) return undefined;
  const signature = base64urlBytes(token.slice(secondDot + 1));
  if (signature === undefined || signature.length !== SIGNATURE_BYTES) return undefined;
  if (!signedWithOneOf(secrets, token.slice(0, secondDot), signature)) return undefined;
  if (!knownHeader && signedHeaders.size < SIGNED_HEADERS_KEPT) signedHeaders.add(header);
  const payloadBytes = base64urlBytes(token.slice(firstDot + 1, secondDot));
  if (payloadBytes === undefined) return undefined;
  const claims = jsonObject(payloadBytes) as JWTPayload | undefined;
  if (claims === undefined) return undefined;
  return claimsAccepted(claims, checks, nowSeconds) ? claims : undefined;
}

/** Whether `signature` is the HMAC-SHA256 of `signingInput` under one of `secrets` (a loop: no closure per token). */
function signedWithOneOf(
  secrets: readonly (Uint8Array | KeyObject)[],
  signingInput: string,
  signature: Buffer,
): boolean {
  for (const secret of secrets) {
    if (timingSafeEqual(createHmac('sha256', secret).update(signingInput).digest(), signature)) return true;
  }
  return false;
}

/**
 * Encoded headers that passed hs256Header on a token whose signature then matched. A signer
 * writes the same header on every token (`{"alg":"HS256","typ":"JWT"}`), so a storm of distinct
 * tokens decodes and parses it once. Only headers a key holder signed get in, and only a few.
 */
const signedHeaders = new Set<string>();
const SIGNED_HEADERS_KEPT = 16;

/** Whether an encoded header is HS256's, with no `crit` extension this check does not know. */
function hs256Header(encoded: string): boolean {
  const bytes = base64urlBytes(encoded);
  const header = bytes === undefined ? undefined : jsonObject(bytes);
  return header !== undefined && header.alg === 'HS256' && criticalHeadersUnderstood(header);
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
