import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, spawnDaemon } from '../support/daemon.js';
import { perTest, redisClient, startWithConfig, tokenFor } from './support.js';

const SECRET = 'file-secret-0123456789-0123456789-0123456';

const harness = perTest();

function write(name: string, text: string): string {
  const file = path.join(harness.dir, name);
  writeFileSync(file, text);
  return file;
}

/** `sandbox-events config check <args>`: its exit status, stdout and stderr. */
function configCheck(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [BIN, 'config', 'check', ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** `maxclients` from INFO, as an admin sees it. */
async function maxClients(port: number): Promise<string> {
  const admin = redisClient(port, await tokenFor(SECRET, { role: 'admin' }));
  harness.track({ close: () => admin.disconnect() });
  return /maxclients:(\d+)/.exec((await admin.call('INFO', 'clients')) as string)![1]!;
}

describe('config file formats', () => {
  const formats: [string, string][] = [
    [
      'sandbox-events.toml',
      'port = 0\nhttp_port = 0\nstore = "memory"\njwt-secret = ["other-secret-other-secret-other", "%SECRET%"]\nmax-clients = 42\nmax_event_size = "2kb"\n',
    ],
    [
      'sandbox-events.yaml',
      'port: 0\nhttp_port: 0\nstore: memory\njwt-secret:\n  - other-secret-other-secret-other\n  - "%SECRET%"\nmax-clients: 42\nmax_event_size: 2kb\n',
    ],
    [
      'sandbox-events.yml',
      'port: 0\nhttp-port: 0\nstore: memory\njwt_secret: "%SECRET%"\nmax_clients: 42\nmax-event-size: 2048\n',
    ],
    [
      'sandbox-events.json',
      '{"port": 0, "http-port": 0, "store": "memory", "jwt-secret": "%SECRET%", "max-clients": 42, "max-event-size": "2kb"}',
    ],
  ];
  it.each(formats)('%s: keys kebab-case or snake_case, values as the flags take them', async (name, text) => {
    const file = write(name, text.replace('%SECRET%', SECRET));
    const daemon = await startWithConfig(harness.dir, file);
    await harness.authed(daemon.port, await tokenFor(SECRET));
    expect(await maxClients(daemon.port)).toBe('42');
    const admin = redisClient(daemon.port, await tokenFor(SECRET, { role: 'admin' }));
    harness.track({ close: () => admin.disconnect() });
    expect(await admin.call('CONFIG', 'GET', 'max-event-size')).toEqual(['max-event-size', '2048']);
  });
});

describe('precedence: flags, then environment, then the file, then defaults', () => {
  it.each([
    [['--max-clients', '30'], { SANDBOX_EVENTS_MAX_CLIENTS: '40' }, '30'],
    [[], { SANDBOX_EVENTS_MAX_CLIENTS: '40' }, '40'],
    [[], {}, '50'],
  ])('flags %j, env %j: max-clients %s', async (args, env, expected) => {
    const file = write(
      'c.toml',
      `port = 0\nhttp-port = 0\nstore = "memory"\njwt-secret = "${SECRET}"\nmax-clients = 50\n`,
    );
    const daemon = await startWithConfig(harness.dir, file, args, env);
    expect(await maxClients(daemon.port)).toBe(expected);
  });

  it('defaults when nothing sets a value', async () => {
    const file = write('c.toml', `port = 0\nhttp-port = 0\nstore = "memory"\njwt-secret = "${SECRET}"\n`);
    const daemon = await startWithConfig(harness.dir, file);
    expect(await maxClients(daemon.port)).toBe('10000');
  });

  it('takes the file from SANDBOX_EVENTS_CONFIG too', async () => {
    const file = write(
      'c.json',
      JSON.stringify({ port: 0, 'http-port': 0, store: 'memory', 'jwt-secret': SECRET, 'max-clients': 43 }),
    );
    const daemon = await spawnDaemon(['--data-dir', path.join(harness.dir, 'data')], { SANDBOX_EVENTS_CONFIG: file });
    expect(await maxClients(daemon.port)).toBe('43');
  });
});

describe('a file the daemon refuses at start', () => {
  it.each([
    ['an unknown key, with the nearest known one', 'max-client = 5\n', '"max-client" (did you mean "max-clients"?)'],
    ['an unknown snake_case key', 'retention_cont = 5\n', '"retention_cont" (did you mean "retention-count"?)'],
    ['a string where a number goes', 'max-clients = "many"\n', '"max-clients": expected an integer from 1'],
    ['a boolean', 'port = true\n', '"port": expected a number or a string, got a boolean'],
    ['a table', '[store]\nkind = "memory"\n', '"store": expected a string, got a table'],
    [
      'a list of numbers for the secrets',
      'jwt-secret = [1, 2]\n',
      '"jwt-secret": expected a string or a list of strings, got a list',
    ],
    ['a value out of range', 'port = 70000\n', '"port": expected an integer from 0 to 65535'],
    [
      'an output budget that is not a size',
      'max-output-total = "lots"\n',
      '"max-output-total": expected a size such as 65536, 64kb or 8mb',
    ],
    ['a level that does not exist', 'log-level = "loud"\n', '"log-level": expected one of fatal, error, warn'],
    [
      'the same setting twice',
      'max-clients = 5\nmax_clients = 6\n',
      '"max_clients" and "max-clients" are the same setting',
    ],
    ['broken TOML', 'port = \n', 'not valid TOML'],
  ])('%s', async (_, text, message) => {
    const file = write('bad.toml', text);
    await expect(startWithConfig(harness.dir, file, ['--port', '0'])).rejects.toThrow(message);
  });

  it('an unknown format', async () => {
    const file = write('sandbox-events.ini', 'port=0\n');
    await expect(startWithConfig(harness.dir, file)).rejects.toThrow(
      'unknown config format (use .toml, .yaml, .yml or .json)',
    );
  });
});

describe('config check', () => {
  it('prints the effective configuration, where each value came from, secrets redacted', () => {
    const file = write(
      'c.yaml',
      `jwt-secret: [${SECRET}, second-secret-second-secret]\nmax-clients: 50\nstore: memory\n`,
    );
    const { status, stdout } = configCheck(['--config', file, '--port', '7000'], { SANDBOX_EVENTS_PUBLISH_RATE: '10' });
    expect(status).toBe(0);
    expect(stdout).not.toContain(SECRET);
    expect(stdout).not.toContain('second-secret');
    const lines = stdout.split('\n');
    const line = (key: string): string | undefined => lines.find((text) => text.startsWith(`${key} `));
    expect(line('port')).toMatch(/^port += {1,2}7000 +# flag, restart only$/);
    expect(line('publish-rate')).toMatch(/= 10 +# env, reloadable$/);
    expect(line('max-clients')).toMatch(/= 50 +# file, reloadable$/);
    expect(line('jwt-secret')).toMatch(/= <redacted>,<redacted> +# file, reloadable$/);
    expect(line('retention-count')).toMatch(/= 10000 +# default, reloadable$/);
    expect(line('engine')).toMatch(/= \(not set\) +# unset, restart only$/);
    expect(lines[0]).toBe(`# sandbox-events configuration from ${file}`);
  });

  it('says when the development secret would be used', () => {
    const { status, stdout } = configCheck(['--data-dir', path.join(harness.dir, 'data')]);
    expect(status).toBe(0);
    expect(stdout).toContain(
      `# no key source: serve would use the development secret in ${path.join(harness.dir, 'data', 'jwt-secret')}`,
    );
  });

  it.each([
    [
      'an unknown key',
      ['--config', 'FILE'],
      'max-client = 5\n',
      'unknown key "max-client" (did you mean "max-clients"?)',
    ],
    ['a missing file', ['--config', 'MISSING'], '', 'cannot read it'],
    [
      'a public key file that is not there',
      ['--jwt-public-key', '/nonexistent.pem'],
      '',
      'cannot read the public key /nonexistent.pem',
    ],
    ['a bad flag value', ['--max-clients', 'lots'], '', "option '--max-clients <n>' argument 'lots' is invalid"],
  ])('exits 1 on %s, saying why', (_, args, text, message) => {
    const file = write('c.toml', text);
    const resolved = args.map((arg) =>
      arg === 'FILE' ? file : arg === 'MISSING' ? path.join(harness.dir, 'nope.toml') : arg,
    );
    const { status, stdout, stderr } = configCheck(resolved);
    expect(status).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toContain(message);
  });
});
