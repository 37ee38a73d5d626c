import {
  createLocalJWKSet,
  errors,
  type CompactJWSHeaderParameters,
  type CryptoKey,
  type FlattenedJWSInput,
  type JSONWebKeySet,
} from 'jose';
import type { AuthFailureReason } from './auth-error.js';

const JWKS_TIMEOUT_MS = 5_000;
const JWKS_MAX_AGE_MS = 10 * 60_000;
/** With no keys at all, a failed JWKS fetch is retried at most this often. */
const JWKS_FIRST_FETCH_RETRY_MS = 1_000;

/** Raised from the key lookup, carrying the reason it will be reported with. */
export class KeySourceError extends Error {
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
export class RemoteKeySet {
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
