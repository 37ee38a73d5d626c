import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import {
  createLocalJWKSet,
  errors,
  jwtVerify,
  type CompactJWSHeaderParameters,
  type CryptoKey,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyOptions,
} from 'jose';
import { SandboxEventsError } from '../errors.js';
import { type Hs256Checks, verifyHs256 } from './hs256.js';
import { isRole, isValidSandboxId, type Principal } from './principal.js';

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

export interface VerifierConfig {
  /** HS256/HS384/HS512 shared secret (utf-8 bytes of the string) */
  secret?: string;
  /** SPKI PEM public key (RS256, ES256 or EdDSA — whichever the key type is) */
  publicKeyPem?: string;
  /** remote JWKS (http:// allowed: tests serve one on 127.0.0.1) */
  jwksUrl?: string;
  /** allow-list; default: ['HS256'] with a secret, ['RS256','ES256','EdDSA'] with public keys */
  algorithms?: string[];
  /** checked when set */
  issuer?: string;
  /** checked when set */
  audience?: string;
  /** default 5 */
  clockToleranceSeconds?: number;
  /** default 30_000: an unknown `kid` refetches the JWKS at most once per cooldown */
  jwksCooldownMs?: number;
  /** successful verifications remembered until their exp; default 10_000, 0 disables */
  cacheSize?: number;
}

export const MAX_TOKEN_LENGTH = 16 * 1024;
const DEFAULT_CACHE_SIZE = 10_000;
const JWKS_TIMEOUT_MS = 5_000;
const JWKS_MAX_AGE_MS = 10 * 60_000;
/** With no keys at all, a failed JWKS fetch is retried at most this often. */
const JWKS_FIRST_FETCH_RETRY_MS = 1_000;

const HMAC_ALGS = ['HS256', 'HS384', 'HS512'];
const RSA_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
const EC_ALGS = ['ES256', 'ES384', 'ES512'];
const EDDSA_ALGS = ['EdDSA', 'Ed25519'];
const ASYMMETRIC_ALGS = [...RSA_ALGS, ...EC_ALGS, ...EDDSA_ALGS];
const DEFAULT_ASYMMETRIC_ALGS = ['RS256', 'ES256', 'EdDSA'];

function configError(message: string, cause?: unknown): SandboxEventsError {
  return new SandboxEventsError('AUTH_CONFIG', message, cause === undefined ? undefined : { cause });
}

/** The algorithms that a public key can verify; a key never serves another family. */
function algorithmsForKey(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return RSA_ALGS;
    case 'rsa-pss':
      return ['PS256', 'PS384', 'PS512'];
    case 'ec':
      switch (key.asymmetricKeyDetails?.namedCurve) {
        case 'prime256v1':
          return ['ES256'];
        case 'secp384r1':
          return ['ES384'];
        case 'secp521r1':
          return ['ES512'];
        default:
          return [];
      }
    case 'ed25519':
      return EDDSA_ALGS;
    default:
      return [];
  }
}

function parsePublicKey(pem: string): KeyObject {
  // A private key would be accepted by createPublicKey; refuse it so it does not end up in configs.
  if (/PRIVATE KEY-----/.test(pem)) throw configError('publicKeyPem must hold a public key, not a private key');
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (cause) {
    throw configError('publicKeyPem is not a valid PEM public key', cause);
  }
  if (algorithmsForKey(key).length === 0) {
    throw configError(`publicKeyPem has an unsupported key type (${key.asymmetricKeyType ?? 'unknown'})`);
  }
  return key;
}

/** Raised from the key lookup, carrying the reason it will be reported with. */
class KeySourceError extends Error {
  constructor(
    readonly reason: AuthFailureReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

type LocalKeySet = ReturnType<typeof createLocalJWKSet>;

/**
 * A JWKS fetched over HTTP. Written over createLocalJWKSet rather than jose's createRemoteJWKSet
 * because that one fails every verification once its cache is stale and the refetch fails, and
 * retries a failing server on every call: here stale keys stay in use during an outage of the
 * key server, and every kind of fetch is rate limited.
 */
class RemoteKeySet {
  private keys: LocalKeySet | undefined;
  private fetchedAt = -Infinity;
  private attemptedAt = -Infinity;
  private pending: Promise<void> | undefined;

  /** The key set's text as last fetched: a change means keys may have been withdrawn. */
  private lastText: string | undefined;

  constructor(
    private readonly url: URL,
    private readonly cooldownMs: number,
    /** Called when a fetch brings a key set other than the one in use. */
    private readonly onChange: () => void,
  ) {}

  async getKey(header: CompactJWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey> {
    if (this.keys === undefined) {
      const fetching = this.refresh(Math.min(this.cooldownMs, JWKS_FIRST_FETCH_RETRY_MS));
      if (fetching === undefined) {
        throw new KeySourceError('key_fetch_failed', 'the key set is unavailable; retrying shortly');
      }
      await fetching;
    } else if (Date.now() - this.fetchedAt >= JWKS_MAX_AGE_MS) {
      this.refresh(this.cooldownMs)?.catch(() => {});
    }
    try {
      return await this.keys!(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      // Perhaps a key rotated in since the last fetch: look again, at most once per cooldown.
      const fetching = this.refresh(this.cooldownMs);
      if (fetching === undefined) throw err;
      await fetching;
      return await this.keys!(header, token);
    }
  }

  /** Joins the fetch under way, or starts one unless the last attempt is too recent. */
  private refresh(minIntervalMs: number): Promise<void> | undefined {
    if (this.pending !== undefined) return this.pending;
    const now = Date.now();
    if (now - this.attemptedAt < minIntervalMs) return undefined;
    this.attemptedAt = now;
    const pending = this.fetchKeys().finally(() => {
      if (this.pending === pending) this.pending = undefined;
    });
    this.pending = pending;
    return pending;
  }

  private async fetchKeys(): Promise<void> {
    const where = this.url.origin;
    let response: Response;
    try {
      response = await fetch(this.url, {
        redirect: 'manual',
        signal: AbortSignal.timeout(JWKS_TIMEOUT_MS),
        headers: { accept: 'application/jwk-set+json, application/json' },
      });
    } catch (cause) {
      throw new KeySourceError('key_fetch_failed', `could not fetch the key set from ${where}`, { cause });
    }
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => {});
      throw new KeySourceError('key_fetch_failed', `the key set server ${where} answered HTTP ${response.status}`);
    }
    let keys: LocalKeySet;
    let text: string;
    try {
      text = await response.text();
      keys = createLocalJWKSet(JSON.parse(text) as JSONWebKeySet);
    } catch (cause) {
      throw new KeySourceError('key_fetch_failed', `the key set from ${where} is not a valid JWKS`, { cause });
    }
    const changed = this.lastText !== undefined && text !== this.lastText;
    this.keys = keys;
    this.lastText = text;
    this.fetchedAt = Date.now();
    if (changed) this.onChange();
  }
}

export class TokenVerifier {
  /** The algorithms that tokens may use, after defaults. */
  readonly algorithms: readonly string[];
  private readonly secretKey: Uint8Array | undefined;
  private readonly publicKey: KeyObject | undefined;
  private readonly keySet: RemoteKeySet | undefined;
  private readonly options: JWTVerifyOptions;
  /** The synchronous HS256 path's secrets and checks (src/auth/hs256.ts); jose decides the rest. */
  private readonly hs256Secrets: readonly Uint8Array[];
  private readonly hs256Checks: Hs256Checks;
  private readonly cacheSize: number;
  private readonly cache = new Map<string, Principal>();
  private readonly inflight = new Map<string, Promise<Principal>>();
  private cacheHits = 0;
  private cacheMisses = 0;

  constructor(config: VerifierConfig) {
    const { secret, publicKeyPem, jwksUrl } = config;
    if (secret === undefined && publicKeyPem === undefined && jwksUrl === undefined) {
      throw configError('no key source configured: set a secret, a public key or a JWKS URL');
    }
    // With both, which one a kid-less token belongs to would be a guess.
    if (publicKeyPem !== undefined && jwksUrl !== undefined) {
      throw configError('configure either publicKeyPem or jwksUrl, not both');
    }

    const usable: string[] = [];
    const defaults: string[] = [];
    if (secret !== undefined) {
      if (typeof secret !== 'string' || secret.length === 0) throw configError('secret must be a non-empty string');
      this.secretKey = new TextEncoder().encode(secret);
      usable.push(...HMAC_ALGS);
      defaults.push('HS256');
    }
    if (publicKeyPem !== undefined) {
      if (typeof publicKeyPem !== 'string') throw configError('publicKeyPem must be a string');
      this.publicKey = parsePublicKey(publicKeyPem);
      const forKey = algorithmsForKey(this.publicKey);
      usable.push(...forKey);
      const preferred = DEFAULT_ASYMMETRIC_ALGS.filter((alg) => forKey.includes(alg));
      defaults.push(...(preferred.length > 0 ? preferred : forKey));
    }
    if (jwksUrl !== undefined) {
      let url: URL;
      try {
        url = new URL(jwksUrl);
      } catch (cause) {
        throw configError('jwksUrl is not a valid URL', cause);
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw configError('jwksUrl must be http(s)');
      const cooldownMs = config.jwksCooldownMs ?? 30_000;
      if (!Number.isFinite(cooldownMs) || cooldownMs < 0) throw configError('jwksCooldownMs must be >= 0');
      // A key withdrawn from the set must stop its tokens: verified tokens are cached, so the
      // cache goes whenever the set changes (connections already open keep their principal).
      this.keySet = new RemoteKeySet(url, cooldownMs, () => this.cache.clear());
      usable.push(...ASYMMETRIC_ALGS);
      defaults.push(...DEFAULT_ASYMMETRIC_ALGS);
    }

    if (config.algorithms !== undefined) {
      if (!Array.isArray(config.algorithms) || config.algorithms.length === 0) {
        throw configError('algorithms must be a non-empty list');
      }
      for (const alg of config.algorithms) {
        if (![...HMAC_ALGS, ...ASYMMETRIC_ALGS].includes(alg)) throw configError(`unsupported JWT algorithm "${alg}"`);
        // Refusing here is what keeps key confusion (an HMAC over a public key) unconfigurable.
        if (!usable.includes(alg)) throw configError(`no configured key can verify algorithm "${alg}"`);
      }
    }
    this.algorithms = Object.freeze([...new Set(config.algorithms ?? defaults)]);

    const tolerance = config.clockToleranceSeconds ?? 5;
    if (!Number.isFinite(tolerance) || tolerance < 0) throw configError('clockToleranceSeconds must be >= 0');
    this.cacheSize = config.cacheSize ?? DEFAULT_CACHE_SIZE;
    if (!Number.isSafeInteger(this.cacheSize) || this.cacheSize < 0)
      throw configError('cacheSize must be an integer >= 0');

    this.options = {
      algorithms: [...this.algorithms],
      clockTolerance: tolerance,
      requiredClaims: ['exp'],
      ...(config.issuer !== undefined ? { issuer: config.issuer } : {}),
      ...(config.audience !== undefined ? { audience: config.audience } : {}),
    };
    this.hs256Secrets = this.secretKey === undefined ? [] : [this.secretKey];
    this.hs256Checks = {
      algorithms: this.algorithms,
      issuer: config.issuer,
      audience: config.audience,
      clockToleranceSeconds: tolerance,
    };
  }

  async verify(token: string): Promise<Principal> {
    if (typeof token !== 'string' || token.length === 0) throw new AuthError('malformed', 'token is empty');
    if (token.length > MAX_TOKEN_LENGTH) {
      throw new AuthError('malformed', `token is longer than ${MAX_TOKEN_LENGTH} bytes`);
    }
    if (this.cacheSize === 0) return this.verifyUncached(token);

    // Keyed by digest so that 10,000 entries of up to 16 KiB tokens stay small.
    const key = createHash('sha256').update(token).digest('base64url');
    const hit = this.cache.get(key);
    if (hit !== undefined) {
      if (Date.now() < hit.expiresAt) {
        this.cacheHits++;
        return hit;
      }
      this.cache.delete(key);
    }
    // Many clients reconnecting with one token at once share one check.
    const pending = this.inflight.get(key);
    if (pending !== undefined) return pending;
    this.cacheMisses++;
    const verifying = this.verifyUncached(token).then(
      (principal) => {
        this.inflight.delete(key);
        this.remember(key, principal);
        return principal;
      },
      (error: unknown) => {
        this.inflight.delete(key);
        throw error;
      },
    );
    this.inflight.set(key, verifying);
    return verifying;
  }

  /** For metrics. */
  stats(): { cacheEntries: number; cacheHits: number; cacheMisses: number } {
    return { cacheEntries: this.cache.size, cacheHits: this.cacheHits, cacheMisses: this.cacheMisses };
  }

  private remember(key: string, principal: Principal): void {
    if (Date.now() >= principal.expiresAt) return;
    if (this.cache.size >= this.cacheSize) {
      const oldest = this.cache.keys().next();
      if (!oldest.done) this.cache.delete(oldest.value);
    }
    this.cache.set(key, principal);
  }

  /**
   * The secret as a WebCrypto key, imported once per HMAC algorithm. Handing jose the raw bytes
   * makes it import a key on every verification: a third of a 5,000-client connection storm's
   * CPU went there (docs/performance.md). jose still checks the key against `alg`.
   */
  private readonly hmacKeys = new Map<string, Promise<CryptoKey>>();

  private hmacKey(alg: string, secret: Uint8Array): Promise<CryptoKey> {
    let key = this.hmacKeys.get(alg);
    if (key === undefined) {
      key = globalThis.crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: `SHA-${alg.slice(2)}` }, false, [
        'verify',
      ]);
      this.hmacKeys.set(alg, key);
    }
    return key;
  }

  private readonly getKey = async (
    header: CompactJWSHeaderParameters,
    token: FlattenedJWSInput,
  ): Promise<CryptoKey | KeyObject | Uint8Array> => {
    // The key follows the algorithm family, so a secret never verifies an RS token and a public
    // key never serves as an HMAC secret (jose checks the key type against alg as well).
    const alg = header.alg;
    if (HMAC_ALGS.includes(alg)) {
      if (this.secretKey !== undefined) return this.hmacKey(alg, this.secretKey);
    } else if (this.publicKey !== undefined) {
      return this.publicKey;
    } else if (this.keySet !== undefined) {
      try {
        return await this.keySet.getKey(header, token);
      } catch (err) {
        if (
          err instanceof KeySourceError ||
          err instanceof errors.JWKSNoMatchingKey ||
          err instanceof errors.JWKSMultipleMatchingKeys
        ) {
          throw err;
        }
        throw new KeySourceError('unknown_key', 'the key for this token cannot be used', { cause: err });
      }
    }
    throw new errors.JOSEAlgNotAllowed('"alg" (Algorithm) Header Parameter value not allowed');
  };

  private async verifyUncached(token: string): Promise<Principal> {
    const hs256 = verifyHs256(token, this.hs256Secrets, this.hs256Checks);
    if (hs256 !== undefined) return principalFromClaims(hs256);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.getKey, this.options));
    } catch (err) {
      if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw toAuthError(err);
      payload = await this.verifyWithEachKey(token, err);
    }
    return principalFromClaims(payload);
  }

  /** A kid-less token and a JWKS with several keys of its type: try each, as jose's docs suggest. */
  private async verifyWithEachKey(token: string, candidates: errors.JWKSMultipleMatchingKeys): Promise<JWTPayload> {
    for await (const key of candidates) {
      try {
        return (await jwtVerify(token, key, this.options)).payload;
      } catch (err) {
        if (!(err instanceof errors.JWSSignatureVerificationFailed)) throw toAuthError(err);
      }
    }
    throw new AuthError('bad_signature', 'token signature does not match any key');
  }
}

function toAuthError(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (err instanceof KeySourceError) return new AuthError(err.reason, err.message, { cause: err.cause });
  if (err instanceof errors.JOSEAlgNotAllowed) {
    return new AuthError('algorithm_not_allowed', 'token algorithm is not allowed');
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return new AuthError('bad_signature', 'token signature is invalid');
  }
  if (err instanceof errors.JWTExpired) return new AuthError('expired', 'token has expired');
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'exp':
        return err.reason === 'missing'
          ? new AuthError('missing_exp', 'token has no expiry (exp)')
          : new AuthError('bad_claims', 'token claim exp must be a number');
      case 'nbf':
        return err.reason === 'check_failed'
          ? new AuthError('not_yet_valid', 'token is not valid yet (nbf)')
          : new AuthError('bad_claims', 'token claim nbf must be a number');
      case 'iss':
        return new AuthError('bad_issuer', 'token issuer is not accepted');
      case 'aud':
        return new AuthError('bad_audience', 'token audience is not accepted');
      default:
        return new AuthError('bad_claims', `token claim ${err.claim} is invalid`);
    }
  }
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) {
    return new AuthError('unknown_key', 'token is signed with an unknown key');
  }
  if (err instanceof errors.JOSENotSupported) return new AuthError('malformed', 'token uses an unsupported feature');
  // JWSInvalid, JWTInvalid and anything jose did not classify: a token we cannot read.
  return new AuthError('malformed', 'token is not a well-formed JWT');
}

function badClaims(message: string): AuthError {
  return new AuthError('bad_claims', message);
}

function principalFromClaims(payload: JWTPayload): Principal {
  const { workspace_id: workspaceId, sandbox_id: sandboxId, role = 'sandbox', exp, sub } = payload;
  if (typeof workspaceId !== 'number' || !Number.isSafeInteger(workspaceId) || workspaceId <= 0) {
    throw badClaims('token claim workspace_id must be a positive integer');
  }
  if (!isRole(role)) throw badClaims('token claim role must be sandbox, workspace or admin');
  if (sandboxId !== undefined && (typeof sandboxId !== 'string' || !isValidSandboxId(sandboxId))) {
    throw badClaims('token claim sandbox_id is not a valid sandbox id');
  }
  if (role === 'sandbox' && sandboxId === undefined) throw badClaims('a sandbox token needs a sandbox_id claim');
  if (sub !== undefined && typeof sub !== 'string') throw badClaims('token claim sub must be a string');
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new AuthError('missing_exp', 'token has no expiry (exp)');

  const principal: Principal = { workspaceId, role, expiresAt: exp * 1000 };
  if (sandboxId !== undefined) principal.sandboxId = sandboxId;
  if (sub !== undefined) principal.subject = sub;
  // Shared between callers through the cache.
  return Object.freeze(principal);
}

// The signature may be empty so that an unsigned token is recognised, and refused, as a token.
const JWT_SHAPE = /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export function looksLikeJwt(text: string): boolean {
  return typeof text === 'string' && text.length <= MAX_TOKEN_LENGTH && JWT_SHAPE.test(text);
}
