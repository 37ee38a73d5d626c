import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, mkdirSync, openSync, statSync, unlinkSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { newPrincipal, type Principal } from './principal.js';
import { SandboxEventsError } from '../errors.js';
import { isErrno, replaceFileDurably } from './durable-file.js';

/**
 * Opaque API keys: `sandbox-events apikey create --workspace N` prints a key once;
 * the data dir keeps only its SHA-256. A key reads like `sek_<id>_<secret>`: the 16 hex digit
 * id finds the record, the 256-bit secret is what is hashed and compared. A fast hash is the
 * right one here (as for GitHub's tokens): the secret is random, so there is nothing for a
 * slow hash to protect against guessing.
 *
 * The file is rewritten whole under a temporary name and renamed into place (mode 0600), under
 * a lock file so that two `apikey` commands at once can't lose each other's change. The daemon
 * never writes it: it re-reads it when it changes (ApiKeyRegistry).
 */

export const API_KEYS_FILE_NAME = 'api-keys.json';
const KEY_PATTERN = /^sek_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const ID_PATTERN = /^[0-9a-f]{16}$/;
const FILE_VERSION = 1;
const LOCK_STALE_MS = 10_000;
const LOCK_WAIT_MS = 5_000;

export interface ApiKeyRecord {
  id: string;
  workspaceId: number;
  /** A label for people (`--name`). */
  name?: string;
  /** SHA-256 of the whole key, hex. */
  hash: string;
  /** ISO 8601. */
  createdAt: string;
  /** ISO 8601; a revoked key is kept for `apikey list`, and refused. */
  revokedAt?: string;
}

interface ApiKeyFile {
  version: number;
  keys: ApiKeyRecord[];
}

export function apiKeysPath(dataDir: string): string {
  return join(dataDir, API_KEYS_FILE_NAME);
}

/** The key's id, or undefined when the text is not shaped like an API key. */
export function apiKeyId(text: string): string | undefined {
  return KEY_PATTERN.exec(text)?.[1];
}

export function looksLikeApiKey(text: string): boolean {
  return KEY_PATTERN.test(text);
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

function corrupt(path: string, detail: string): SandboxEventsError {
  return new SandboxEventsError('API_KEYS_CORRUPT', `the API key file ${path} is not valid: ${detail}`);
}

function parseFile(path: string, text: string): ApiKeyRecord[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw corrupt(path, 'not JSON');
  }
  const file = parsed as Partial<ApiKeyFile>;
  if (typeof file !== 'object' || file === null || file.version !== FILE_VERSION || !Array.isArray(file.keys)) {
    throw corrupt(path, `expected {"version": ${FILE_VERSION}, "keys": [...]}`);
  }
  for (const record of file.keys) {
    if (
      typeof record !== 'object' ||
      record === null ||
      typeof record.id !== 'string' ||
      !ID_PATTERN.test(record.id) ||
      !Number.isSafeInteger(record.workspaceId) ||
      record.workspaceId <= 0 ||
      typeof record.hash !== 'string' ||
      !/^[0-9a-f]{64}$/.test(record.hash)
    ) {
      throw corrupt(path, 'a key record is malformed');
    }
  }
  return file.keys;
}

async function readRecords(path: string): Promise<ApiKeyRecord[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return [];
    throw new SandboxEventsError('API_KEYS_UNREADABLE', `cannot read the API key file ${path}`, { cause: error });
  }
  return parseFile(path, text);
}

/** Writes the file complete under a temporary name, then renames it over the old one. */
function writeRecords(path: string, records: ApiKeyRecord[]): void {
  replaceFileDurably(
    path,
    `${JSON.stringify({ version: FILE_VERSION, keys: records } satisfies ApiKeyFile, null, 2)}\n`,
  );
}

/** Runs `change` holding `<file>.lock`, so that concurrent `apikey` commands serialise. */
async function withLock<T>(path: string, change: () => Promise<T>): Promise<T> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const lock = `${path}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx', 0o600));
      break;
    } catch (error) {
      if (!isErrno(error, 'EEXIST')) throw error;
    }
    try {
      // A lock left by a process that died mid-change is taken over after a while.
      if (Date.now() - statSync(lock).mtimeMs > LOCK_STALE_MS) {
        unlinkSync(lock);
        continue;
      }
    } catch {
      continue; // released meanwhile
    }
    if (Date.now() > deadline) {
      throw new SandboxEventsError('API_KEYS_LOCKED', `the API key file is locked by another process (${lock})`);
    }
    await delay(20);
  }
  try {
    return await change();
  } finally {
    try {
      unlinkSync(lock);
    } catch {
      // already gone
    }
  }
}

export interface CreatedApiKey {
  /** The key itself: shown once, never stored. */
  key: string;
  record: ApiKeyRecord;
}

export async function createApiKey(
  path: string,
  options: { workspaceId: number; name?: string },
): Promise<CreatedApiKey> {
  if (!Number.isSafeInteger(options.workspaceId) || options.workspaceId <= 0) {
    throw new SandboxEventsError('INVALID_ARGUMENT', 'workspace must be a positive integer');
  }
  return withLock(path, async () => {
    const records = await readRecords(path);
    let id: string;
    do id = randomBytes(8).toString('hex');
    while (records.some((record) => record.id === id));
    const key = `sek_${id}_${randomBytes(32).toString('base64url')}`;
    const record: ApiKeyRecord = {
      id,
      workspaceId: options.workspaceId,
      ...(options.name !== undefined ? { name: options.name } : {}),
      hash: hashApiKey(key),
      createdAt: new Date().toISOString(),
    };
    writeRecords(path, [...records, record]);
    return { key, record };
  });
}

/** Revokes by id or by the key itself. Returns the record and whether it was already revoked. */
export async function revokeApiKey(
  path: string,
  idOrKey: string,
): Promise<{ record: ApiKeyRecord; alreadyRevoked: boolean }> {
  const id = apiKeyId(idOrKey) ?? idOrKey;
  return withLock(path, async () => {
    const records = await readRecords(path);
    const index = records.findIndex((record) => record.id === id);
    if (index < 0)
      throw new SandboxEventsError('API_KEY_NOT_FOUND', `no API key with id '${id.slice(0, 64)}' in ${path}`);
    const record = records[index]!;
    if (record.revokedAt !== undefined) return { record, alreadyRevoked: true };
    const revoked = { ...record, revokedAt: new Date().toISOString() };
    records[index] = revoked;
    writeRecords(path, records);
    return { record: revoked, alreadyRevoked: false };
  });
}

export function listApiKeys(path: string): Promise<ApiKeyRecord[]> {
  return readRecords(path);
}

/** An API key was refused. Counted as an authentication failure with this reason. */
export class ApiKeyError extends SandboxEventsError {
  constructor(
    readonly reason: 'unknown_api_key' | 'revoked_api_key' | 'api_keys_unavailable',
    message: string,
  ) {
    super('AUTH_FAILED', message);
  }
}

export interface ApiKeyRegistryOptions {
  /**
   * How long a key found in the file is trusted before the file is checked again (default
   * 1000 ms): a revocation takes effect within this. A key not found makes the daemon check
   * the file at once, so a new key works immediately.
   */
  cacheMs?: number;
  logger?: Logger;
}

/**
 * The daemon's view of the API key file. It looks at the file's identity (inode, size,
 * mtime) at most once per `cacheMs`, and on every miss; it reads and parses the file only
 * when that changed. So `apikey create` and `apikey revoke` take effect without a restart.
 */
export class ApiKeyRegistry {
  private records = new Map<string, ApiKeyRecord>();
  private signature: string | undefined;
  private checkedAt = -Infinity;
  private refreshing: Promise<void> | undefined;
  private readonly cacheMs: number;

  constructor(
    readonly path: string,
    private readonly options: ApiKeyRegistryOptions = {},
  ) {
    this.cacheMs = options.cacheMs ?? 1_000;
  }

  /** The principal an API key speaks for: a workspace role that never expires. */
  async verify(key: string): Promise<Principal> {
    const id = apiKeyId(key);
    if (id === undefined) throw new ApiKeyError('unknown_api_key', 'unknown API key');
    let refreshed = false;
    if (Date.now() - this.checkedAt >= this.cacheMs) {
      await this.refresh();
      refreshed = true;
    }
    let record = this.records.get(id);
    if (record === undefined && !refreshed) {
      await this.refresh();
      record = this.records.get(id);
    }
    // Compared in constant time, although the id lookup already says which record it is.
    if (
      record === undefined ||
      !timingSafeEqual(Buffer.from(record.hash, 'hex'), Buffer.from(hashApiKey(key), 'hex'))
    ) {
      throw new ApiKeyError('unknown_api_key', 'unknown API key');
    }
    if (record.revokedAt !== undefined) throw new ApiKeyError('revoked_api_key', 'this API key was revoked');
    return newPrincipal(
      record.workspaceId,
      'workspace',
      Number.POSITIVE_INFINITY,
      undefined,
      `apikey:${record.id}`,
      undefined,
    );
  }

  /** Whether the key still works (checked again on a stream's heartbeat). */
  async stillValid(key: string): Promise<boolean> {
    try {
      await this.verify(key);
      return true;
    } catch {
      return false;
    }
  }

  private refresh(): Promise<void> {
    this.refreshing ??= this.load().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async load(): Promise<void> {
    let signature: string;
    try {
      const info = await stat(this.path);
      signature = `${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
    } catch (error) {
      if (!isErrno(error, 'ENOENT')) {
        this.options.logger?.error({ err: error, path: this.path }, 'cannot stat the API key file');
        this.checkedAt = Date.now();
        return; // keep what is known
      }
      signature = 'missing';
    }
    if (signature !== this.signature) {
      try {
        const records = signature === 'missing' ? [] : await readRecords(this.path);
        this.records = new Map(records.map((record) => [record.id, record]));
        this.signature = signature;
      } catch (error) {
        // A broken file (edited by hand) leaves the last good set in force, loudly.
        this.options.logger?.error(
          { err: error, path: this.path },
          'cannot load the API key file; keeping the last good one',
        );
      }
    }
    this.checkedAt = Date.now();
  }
}
