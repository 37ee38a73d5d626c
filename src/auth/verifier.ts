import { createHash, createPublicKey, createSecretKey, hash, type KeyObject } from 'node:crypto';
import {
  errors,
  jwtVerify,
  type CompactJWSHeaderParameters,
  type CryptoKey,
  type FlattenedJWSInput,
  type JWTPayload,
  type JWTVerifyOptions,
} from 'jose';
import { SandboxEventsError } from '../errors.js';
import { AuthError, type AuthFailureReason } from './auth-error.js';
import { KeySourceError, RemoteKeySet } from './remote-key-set.js';
import { type Hs256Checks, verifyHs256 } from './hs256.js';
import { isRole, isValidSandboxId, newPrincipal, type Principal } from './principal.js';

export { AuthError, type AuthFailureReason };

export interface VerifierConfig {
  /**
   * HS256/HS384/HS512 shared secrets (utf-8 bytes of each string): every one verifies, so a
   * secret can be rotated in before the old one is removed (docs/operations.md).
   */
  secret?: string | readonly string[];
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
  /**
   * successful verifications by jose (every algorithm but HS256, which is checked again each
   * time) remembered until their exp; default 10_000, 0 disables
   */
  cacheSize?: number;
}

export const MAX_TOKEN_LENGTH = 16 * 1024;
const DEFAULT_CACHE_SIZE = 10_000;

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

/** One HS256/384/512 secret, with its WebCrypto keys imported once per algorithm. */
interface SecretKey {
  /** Names the secret without revealing it: `hs:` and the start of its SHA-256. */
  readonly id: string;
  readonly bytes: Uint8Array;
  /** For node:crypto's HMAC (src/auth/hs256.ts): created once, not from the bytes at each token. */
  readonly hmacKey: KeyObject;
  readonly imported: Map<string, Promise<CryptoKey>>;
}

/** Which key a verification used; filled in by the key lookup. */
interface KeyUse {
  id?: string;
  secret?: boolean;
}

function fingerprint(prefix: string, material: Uint8Array | Buffer): string {
  return `${prefix}:${createHash('sha256').update(material).digest('hex').slice(0, 16)}`;
}

/**
 * The keys and claim checks of one configuration, with the tokens verified under it. Never
 * changed once built: `TokenVerifier.reconfigure` replaces it as a whole, so a key removed
 * takes its cached tokens with it.
 */
class KeyRing {
  /** The algorithms that tokens may use, after defaults. */
  readonly algorithms: readonly string[];
  readonly secrets: readonly SecretKey[];
  readonly publicKey: { id: string; key: KeyObject } | undefined;
  readonly keySet: { id: string; set: RemoteKeySet; url: string; cooldownMs: number } | undefined;
  readonly options: JWTVerifyOptions;
  readonly cacheSize: number;
  readonly cache = new Map<string, Principal>();
  readonly inflight = new Map<string, Promise<Principal>>();
  readonly keyIds: ReadonlySet<string>;
  /** The synchronous HS256 path's checks (src/auth/hs256.ts); jose decides everything else. */
  readonly hs256Checks: Hs256Checks;

  constructor(config: VerifierConfig, previous: KeyRing | undefined, onKeySetChange: () => void) {
    const { publicKeyPem, jwksUrl } = config;
    const secrets =
      config.secret === undefined ? [] : typeof config.secret === 'string' ? [config.secret] : config.secret;
    if (config.secret !== undefined && (!Array.isArray(secrets) || secrets.length === 0)) {
      throw configError('secret must be a non-empty string or a non-empty list of them');
    }
    if (secrets.length === 0 && publicKeyPem === undefined && jwksUrl === undefined) {
      throw configError('no key source configured: set a secret, a public key or a JWKS URL');
    }
    // With both, which one a kid-less token belongs to would be a guess.
    if (publicKeyPem !== undefined && jwksUrl !== undefined) {
      throw configError('configure either publicKeyPem or jwksUrl, not both');
    }

    const usable: string[] = [];
    const defaults: string[] = [];
    this.secrets = secrets.map((secret) => {
      if (typeof secret !== 'string' || secret.length === 0) throw configError('secret must be a non-empty string');
      const bytes = new TextEncoder().encode(secret);
      return { id: fingerprint('hs', bytes), bytes, hmacKey: createSecretKey(bytes), imported: new Map() };
    });
    if (this.secrets.length > 0) {
      usable.push(...HMAC_ALGS);
      defaults.push('HS256');
    }
    if (publicKeyPem !== undefined) {
      if (typeof publicKeyPem !== 'string') throw configError('publicKeyPem must be a string');
      const key = parsePublicKey(publicKeyPem);
      this.publicKey = { id: fingerprint('pem', key.export({ type: 'spki', format: 'der' })), key };
      const forKey = algorithmsForKey(key);
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
      // The same endpoint keeps its fetched keys across a reconfiguration.
      const kept = previous?.keySet;
      this.keySet =
        kept !== undefined && kept.url === url.href && kept.cooldownMs === cooldownMs
          ? kept
          : {
              id: `jwks:${url.href}`,
              set: new RemoteKeySet(url, cooldownMs, onKeySetChange),
              url: url.href,
              cooldownMs,
            };
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
    this.hs256Checks = {
      algorithms: this.algorithms,
      issuer: config.issuer,
      audience: config.audience,
      clockToleranceSeconds: tolerance,
    };
    this.keyIds = new Set(
      [...this.secrets.map((secret) => secret.id), this.publicKey?.id, this.keySet?.id].filter(
        (id): id is string => id !== undefined,
      ),
    );
  }

  /**
   * The secret as a WebCrypto key, imported once per HMAC algorithm. Handing jose the raw bytes
   * makes it import a key on every verification: a third of a 5,000-client connection storm's
   * CPU went there (docs/performance.md). jose still checks the key against `alg`.
   */
  private hmacKey(alg: string, secret: SecretKey): Promise<CryptoKey> {
    let key = secret.imported.get(alg);
    if (key === undefined) {
      key = globalThis.crypto.subtle.importKey(
        'raw',
        secret.bytes,
        { name: 'HMAC', hash: `SHA-${alg.slice(2)}` },
        false,
        ['verify'],
      );
      secret.imported.set(alg, key);
    }
    return key;
  }

  /**
   * The key for one attempt: HMAC tokens are tried against each secret in turn (`secretIndex`),
   * the others have one key source. `use` records which key it was.
   */
  async getKey(
    header: CompactJWSHeaderParameters,
    token: FlattenedJWSInput,
    secretIndex: number,
    use: KeyUse,
  ): Promise<CryptoKey | KeyObject | Uint8Array> {
    // The key follows the algorithm family, so a secret never verifies an RS token and a public
    // key never serves as an HMAC secret (jose checks the key type against alg as well).
    const alg = header.alg;
    if (HMAC_ALGS.includes(alg)) {
      const secret = this.secrets[secretIndex];
      if (secret !== undefined) {
        use.id = secret.id;
        use.secret = true;
        return this.hmacKey(alg, secret);
      }
    } else if (this.publicKey !== undefined) {
      use.id = this.publicKey.id;
      return this.publicKey.key;
    } else if (this.keySet !== undefined) {
      use.id = this.keySet.id;
      try {
        return await this.keySet.set.getKey(header, token);
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
  }
}

export class TokenVerifier {
  private ring: KeyRing;
  private cacheHits = 0;
  private cacheMisses = 0;

  constructor(config: VerifierConfig) {
    this.ring = this.build(config);
  }

  /** The algorithms that tokens may use, after defaults. */
  get algorithms(): readonly string[] {
    return this.ring.algorithms;
  }

  /**
   * Replaces the keys and claim checks at runtime (a config reload). A configuration that is
   * not valid throws and changes nothing. Tokens verified before are forgotten, so a removed
   * key stops its tokens at once; connections already open are the caller's to close (see
   * verifiedWithRemovedKey).
   */
  reconfigure(config: VerifierConfig): void {
    this.ring = this.build(config);
  }

  /**
   * Whether `principal` was verified by a key that the current configuration no longer has
   * (a secret removed, the public key replaced, the JWKS URL changed).
   */
  verifiedWithRemovedKey(principal: Principal): boolean {
    return principal.keyId !== undefined && !this.ring.keyIds.has(principal.keyId);
  }

  private build(config: VerifierConfig): KeyRing {
    // A key withdrawn from a JWKS must stop its tokens: verified tokens are cached, so the
    // cache goes whenever the set changes (connections already open keep their principal).
    return new KeyRing(config, this.ring as KeyRing | undefined, () => this.ring.cache.clear());
  }

  /** The principal of `token`, or a rejection with an AuthError saying why not. */
  async verify(token: string): Promise<Principal> {
    for (;;) {
      const ring = this.ring;
      const principal = await this.verifyEarly(token);
      // Keys replaced meanwhile: the answer must come from the keys in force now.
      if (ring === this.ring) return principal;
    }
  }

  /**
   * `verify` without the wait when there is nothing to wait for: the principal itself when the
   * token is an HS256 token that the synchronous check accepts (src/auth/hs256.ts), as every
   * token of a reconnect storm is, or one jose verified before (the cache). A connection then
   * takes it in the turn that read it: no promise, no pause of its input (docs/performance.md,
   * "Sixth round: per-connection cost"). Otherwise, and for every refusal, a promise as
   * `verify`'s: it never throws.
   */
  verifyEarly(token: string): Principal | Promise<Principal> {
    try {
      return this.decide(token);
    } catch (error) {
      // The claims of a token with a good signature refused (principalFromClaims).
      return Promise.reject(error);
    }
  }

  private decide(token: string): Principal | Promise<Principal> {
    if (typeof token !== 'string' || token.length === 0) {
      return Promise.reject(new AuthError('malformed', 'token is empty'));
    }
    if (token.length > MAX_TOKEN_LENGTH) {
      return Promise.reject(new AuthError('malformed', `token is longer than ${MAX_TOKEN_LENGTH} bytes`));
    }
    const ring = this.ring;
    // An HS256 token is checked again each time, not remembered: the check (src/auth/hs256.ts)
    // costs about what the cache's digest and lookup did, and in a reconnect storm, where each
    // client has its own token, every entry would only be stored, kept and never asked for
    // (docs/performance.md, "Eighth round: per-connection cost").
    const principal = this.verifyHs256(ring, token);
    if (principal !== undefined) return principal;
    if (ring.cacheSize === 0) return this.inForce(ring, token, this.verifyWithJose(ring, token));

    // Keyed by digest so that 10,000 entries of up to 16 KiB tokens stay small.
    const key = hash('sha256', token, 'base64url');
    const hit = ring.cache.get(key);
    if (hit !== undefined) {
      if (Date.now() < hit.expiresAt) {
        this.cacheHits++;
        return hit;
      }
      ring.cache.delete(key);
    }
    // Many clients reconnecting with one token at once share one check.
    const pending = ring.inflight.get(key);
    if (pending !== undefined) return this.inForce(ring, token, pending);
    this.cacheMisses++;
    const verifying = this.verifyWithJose(ring, token).then(
      (verified) => {
        ring.inflight.delete(key);
        remember(ring, key, verified);
        return verified;
      },
      (error: unknown) => {
        ring.inflight.delete(key);
        throw error;
      },
    );
    ring.inflight.set(key, verifying);
    return this.inForce(ring, token, verifying);
  }

  /** Keys replaced while `verifying` ran: the answer must come from the keys in force now. */
  private inForce(ring: KeyRing, token: string, verifying: Promise<Principal>): Promise<Principal> {
    return verifying.then((principal) => (ring === this.ring ? principal : this.verify(token)));
  }

  /** For metrics. */
  stats(): { cacheEntries: number; cacheHits: number; cacheMisses: number } {
    return { cacheEntries: this.ring.cache.size, cacheHits: this.cacheHits, cacheMisses: this.cacheMisses };
  }

  /**
   * HS256 with node:crypto (src/auth/hs256.ts): it only ever accepts, with jose's checks, so
   * every refusal (and every other algorithm) still goes to jose for its reason.
   */
  private verifyHs256(ring: KeyRing, token: string): Principal | undefined {
    for (const secret of ring.secrets) {
      const claims = verifyHs256(token, [secret.hmacKey], ring.hs256Checks);
      if (claims === undefined) continue;
      return principalFromClaims(claims, secret.id);
    }
    return undefined;
  }

  /** jose decides: every algorithm, and the reason of every refusal. */
  private async verifyWithJose(ring: KeyRing, token: string): Promise<Principal> {
    // Several secrets: each is tried in turn, and only a signature mismatch moves to the next.
    for (let secretIndex = 0; ; secretIndex += 1) {
      const use: KeyUse = {};
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(
          token,
          (header, input) => ring.getKey(header, input, secretIndex, use),
          ring.options,
        ));
      } catch (err) {
        if (
          err instanceof errors.JWSSignatureVerificationFailed &&
          use.secret === true &&
          secretIndex + 1 < ring.secrets.length
        ) {
          continue;
        }
        if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw toAuthError(err);
        payload = await verifyWithEachKey(ring, token, err);
      }
      return principalFromClaims(payload, use.id);
    }
  }
}

function remember(ring: KeyRing, key: string, principal: Principal): void {
  if (Date.now() >= principal.expiresAt) return;
  if (ring.cache.size >= ring.cacheSize) {
    const oldest = ring.cache.keys().next();
    if (!oldest.done) ring.cache.delete(oldest.value);
  }
  ring.cache.set(key, principal);
}

/** A kid-less token and a JWKS with several keys of its type: try each, as jose's docs suggest. */
async function verifyWithEachKey(
  ring: KeyRing,
  token: string,
  candidates: errors.JWKSMultipleMatchingKeys,
): Promise<JWTPayload> {
  for await (const key of candidates) {
    try {
      return (await jwtVerify(token, key, ring.options)).payload;
    } catch (err) {
      if (!(err instanceof errors.JWSSignatureVerificationFailed)) throw toAuthError(err);
    }
  }
  throw new AuthError('bad_signature', 'token signature does not match any key');
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

/** The principal of checked claims; `keyId` names the key that verified them. */
function principalFromClaims(payload: JWTPayload, keyId: string | undefined): Principal {
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

  // keyId on the principal, not in a WeakMap beside it: a map entry per connection costs the
  // collector more than a field (docs/performance.md, "Eighth round: per-connection cost").
  return newPrincipal(workspaceId, role, exp * 1000, sandboxId, sub, keyId);
}

// The signature may be empty so that an unsigned token is recognised, and refused, as a token.
const JWT_SHAPE = /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export function looksLikeJwt(text: string): boolean {
  return typeof text === 'string' && text.length <= MAX_TOKEN_LENGTH && JWT_SHAPE.test(text);
}
