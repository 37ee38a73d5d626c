import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SandboxEventsError } from '../errors.js';
import { createFileDurably, isErrno } from './durable-file.js';

export const SECRET_FILE_NAME = 'jwt-secret';

export interface LoadedSecret {
  secret: string;
  /** true when this call generated the secret */
  created: boolean;
  path: string;
  /** the file is readable or writable by group or others; warning about it is the caller's job */
  insecureMode: boolean;
}

function readExisting(path: string): LoadedSecret | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw new SandboxEventsError('AUTH_CONFIG', `cannot read the JWT secret at ${path}`, { cause: err });
  }
  const secret = text.trim();
  // An empty HMAC secret would let anyone mint tokens.
  if (secret.length === 0) throw new SandboxEventsError('AUTH_CONFIG', `the JWT secret file ${path} is empty`);
  const mode = statSync(path).mode;
  return { secret, created: false, path, insecureMode: process.platform !== 'win32' && (mode & 0o077) !== 0 };
}

/**
 * Reads `<dataDir>/jwt-secret`, or creates it with 32 random bytes (base64url), mode 0600.
 * The file is written complete under a temporary name and then hard-linked into place, which
 * fails if it exists: two processes starting at once agree on one secret, and no reader ever
 * sees a half-written file.
 */
export function loadOrCreateSecret(dataDir: string): LoadedSecret {
  const path = join(dataDir, SECRET_FILE_NAME);
  const existing = readExisting(path);
  if (existing !== undefined) return existing;

  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const secret = randomBytes(32).toString('base64url');
  const won = createFileDurably(path, `${secret}\n`);
  if (!won) {
    const other = readExisting(path);
    if (other === undefined)
      throw new SandboxEventsError('AUTH_CONFIG', `the JWT secret at ${path} vanished while being created`);
    return other;
  }
  return { secret, created: true, path, insecureMode: false };
}
