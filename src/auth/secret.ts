import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { SandboxEventsError } from '../errors.js';

export const SECRET_FILE_NAME = 'jwt-secret';

export interface LoadedSecret {
  secret: string;
  /** true when this call generated the secret */
  created: boolean;
  path: string;
  /** the file is readable or writable by group or others; warning about it is the caller's job */
  insecureMode: boolean;
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
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

function writeFile(path: string, flags: string, content: string): void {
  const fd = openSync(path, flags, 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not possible everywhere (Windows); the secret is written either way.
  }
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
  const content = `${secret}\n`;
  const temp = join(dataDir, `.${SECRET_FILE_NAME}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let won: boolean;
  try {
    writeFile(temp, 'wx', content);
    try {
      linkSync(temp, path);
      won = true;
    } catch (err) {
      if (isErrno(err, 'EEXIST')) won = false;
      else if (isErrno(err, 'EPERM') || isErrno(err, 'ENOTSUP') || isErrno(err, 'ENOSYS'))
        won = createExclusive(path, content);
      else throw err;
    }
  } finally {
    try {
      unlinkSync(temp);
    } catch {
      // already gone
    }
  }
  if (!won) {
    const other = readExisting(path);
    if (other === undefined)
      throw new SandboxEventsError('AUTH_CONFIG', `the JWT secret at ${path} vanished while being created`);
    return other;
  }
  syncDir(dataDir);
  return { secret, created: true, path, insecureMode: false };
}

/** Fallback for file systems without hard links: 'wx' is atomic, though a reader may see it empty briefly. */
function createExclusive(path: string, content: string): boolean {
  try {
    writeFile(path, 'wx', content);
    return true;
  } catch (err) {
    if (!isErrno(err, 'EEXIST')) throw err;
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    if (readFileSync(path, 'utf8').trim().length > 0) return false;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
  return false;
}
