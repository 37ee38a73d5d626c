import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFileDurably, replaceFileDurably } from '../../src/auth/durable-file.js';

const posix = process.platform !== 'win32';
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'se-durable-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('createFileDurably', () => {
  it('creates a 0600 file with the content and leaves no temporary file', () => {
    const path = join(dir, 'secret');
    expect(createFileDurably(path, 'one\n')).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe('one\n');
    if (posix) expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['secret']);
  });

  it('leaves an existing file as it is and says so', () => {
    const path = join(dir, 'secret');
    writeFileSync(path, 'theirs\n');
    expect(createFileDurably(path, 'mine\n')).toBe(false);
    expect(readFileSync(path, 'utf8')).toBe('theirs\n');
    expect(readdirSync(dir)).toEqual(['secret']);
  });
});

describe('replaceFileDurably', () => {
  it('writes a new file and replaces it whole, mode 0600, without temporary files left', () => {
    const path = join(dir, 'keys.json');
    replaceFileDurably(path, 'first\n');
    replaceFileDurably(path, 'second\n');
    expect(readFileSync(path, 'utf8')).toBe('second\n');
    if (posix) expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['keys.json']);
  });

  it('fails with the system error when the directory is missing, and writes nothing', () => {
    const path = join(dir, 'missing', 'keys.json');
    expect(() => replaceFileDurably(path, 'x')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(readdirSync(dir)).toEqual([]);
  });
});
