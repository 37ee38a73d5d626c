import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/*
 * Small files that hold secrets (the development JWT secret, the API key hashes): no reader may
 * ever see one half-written, and once written it must stay written. The content goes to a
 * temporary file beside the target, mode 0600, fsynced; that file then takes the target's name
 * (a hard link when the target must not exist yet, a rename when it replaces it), and the
 * directory is fsynced so that the new name survives power loss too (see fsync(2): syncing a file
 * does not sync the directory entry that names it).
 */

/** Whether `error` is a Node.js system error with this errno code (ENOENT, EEXIST, ...). */
export function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}

/**
 * Creates `path` with `content`, unless it exists. Two processes racing agree on one file: false
 * tells this one that another created it first (read it, then; on a file system without hard
 * links the other's content may land a moment after its name, see createExclusive).
 */
export function createFileDurably(path: string, content: string): boolean {
  const temp = temporaryPath(path);
  let created: boolean;
  try {
    writeNewFile(temp, content);
    try {
      linkSync(temp, path); // fails if `path` exists, so no one's file is ever replaced
      created = true;
    } catch (error) {
      if (isErrno(error, 'EEXIST')) created = false;
      else if (isErrno(error, 'EPERM') || isErrno(error, 'ENOTSUP') || isErrno(error, 'ENOSYS'))
        created = createExclusive(path, content);
      else throw error;
    }
  } finally {
    removeIfThere(temp);
  }
  if (created) syncDirectory(dirname(path));
  return created;
}

/** Writes `path` whole: `content` replaces what it held (if anything) in one rename. */
export function replaceFileDurably(path: string, content: string): void {
  const temp = temporaryPath(path);
  try {
    writeNewFile(temp, content);
    renameSync(temp, path);
  } catch (error) {
    removeIfThere(temp);
    throw error;
  }
  syncDirectory(dirname(path));
}

/** `.<name>.<pid>.<random>.tmp` beside `path`: on the same file system, so link and rename work. */
function temporaryPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/** Creates `path` (it must not exist), mode 0600, writes `content` and fsyncs it. */
function writeNewFile(path: string, content: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Fallback for file systems without hard links: 'wx' creates the name atomically, but its
 * content follows, so a process that lost the race waits (up to a second) until it is there.
 */
function createExclusive(path: string, content: string): boolean {
  try {
    writeNewFile(path, content);
    return true;
  } catch (error) {
    if (!isErrno(error, 'EEXIST')) throw error;
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    if (readFileSync(path, 'utf8').trim().length > 0) return false;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
  return false;
}

function syncDirectory(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not possible everywhere (Windows); the file is in place either way.
  }
}

function removeIfThere(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
