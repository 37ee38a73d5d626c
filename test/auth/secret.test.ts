import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SandboxEventsError } from '../../src/errors.js';
import { loadOrCreateSecret, type LoadedSecret } from '../../src/auth/secret.js';
import { distModule } from '../support/daemon.js';

const posix = process.platform !== 'win32';
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'se-secret-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('loadOrCreateSecret', () => {
  it('creates the data directory and a 0600 secret of 32 random bytes', () => {
    const dataDir = join(dir, 'nested', 'data');
    const loaded = loadOrCreateSecret(dataDir);
    expect(loaded.created).toBe(true);
    expect(loaded.insecureMode).toBe(false);
    expect(loaded.path).toBe(join(dataDir, 'jwt-secret'));
    expect(loaded.secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(loaded.secret, 'base64url')).toHaveLength(32);
    expect(readFileSync(loaded.path, 'utf8').trim()).toBe(loaded.secret);
    if (posix) expect(statSync(loaded.path).mode & 0o777).toBe(0o600);
    // No temporary file left behind.
    expect(readdirSync(dataDir)).toEqual(['jwt-secret']);
  });

  it('reuses the secret on the next call', () => {
    const first = loadOrCreateSecret(dir);
    const second = loadOrCreateSecret(dir);
    expect(second).toEqual({ ...first, created: false });
  });

  it('reads an existing secret trimmed', () => {
    writeFileSync(join(dir, 'jwt-secret'), '  my-own-secret-value \n', { mode: 0o600 });
    expect(loadOrCreateSecret(dir)).toMatchObject({
      secret: 'my-own-secret-value',
      created: false,
      insecureMode: false,
    });
  });

  it.skipIf(!posix)('still uses a secret readable by others, and says so', () => {
    const { secret } = loadOrCreateSecret(dir);
    chmodSync(join(dir, 'jwt-secret'), 0o644);
    expect(loadOrCreateSecret(dir)).toMatchObject({ secret, created: false, insecureMode: true });
  });

  it('refuses an empty secret file', () => {
    writeFileSync(join(dir, 'jwt-secret'), '\n');
    let caught: unknown;
    try {
      loadOrCreateSecret(dir);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(SandboxEventsError);
    expect((caught as SandboxEventsError).code).toBe('AUTH_CONFIG');
  });
});

describe('loadOrCreateSecret across processes', () => {
  let build: string;

  // A child process runs the compiled module (Node 20 runs no TypeScript).
  beforeAll(() => {
    build = mkdtempSync(join(tmpdir(), 'se-secret-race-'));
    writeFileSync(
      join(build, 'race.js'),
      [
        `import { loadOrCreateSecret } from ${JSON.stringify(pathToFileURL(distModule('auth/secret.js')).href)};`,
        'const [dataDir, startAt] = process.argv.slice(2);',
        // Line the processes up on one instant, so that they all find no file.
        'while (Date.now() < Number(startAt)) {}',
        'process.stdout.write(JSON.stringify(loadOrCreateSecret(dataDir)));',
      ].join('\n'),
    );
  });

  afterAll(() => {
    rmSync(build, { recursive: true, force: true });
  });

  function run(dataDir: string, startAt: number): Promise<LoadedSecret> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [join(build, 'race.js'), dataDir, String(startAt)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) => {
        if (code === 0) resolve(JSON.parse(out) as LoadedSecret);
        else reject(new Error(`child exited ${code}: ${err}`));
      });
    });
  }

  it('gives eight processes starting at once one secret', async () => {
    for (let round = 0; round < 3; round++) {
      const dataDir = join(dir, `round-${round}`);
      const startAt = Date.now() + 700;
      const results = await Promise.all(Array.from({ length: 8 }, () => run(dataDir, startAt)));
      const secrets = new Set(results.map((r) => r.secret));
      expect(secrets.size).toBe(1);
      expect(results.filter((r) => r.created)).toHaveLength(1);
      expect(readFileSync(join(dataDir, 'jwt-secret'), 'utf8').trim()).toBe(results[0]!.secret);
      expect(readdirSync(dataDir)).toEqual(['jwt-secret']);
    }
  });
});
