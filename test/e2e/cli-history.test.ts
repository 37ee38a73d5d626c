import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sinceArgument } from '../../src/cli/history.js';
import { BIN, type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';

const run = promisify(execFile);
let dataDir: string;
let daemon: Daemon;
let workspaceToken: string;

/** Runs the installed command as a user does; resolves with stdout, rejects with the child's error. */
async function cli(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [BIN, ...args], { env: { ...process.env, NO_COLOR: '1' } });
  return stdout;
}

async function token(...args: string[]): Promise<string> {
  return (await cli('token', '--data-dir', dataDir, ...args)).trim();
}

interface PrintedEvent {
  id: string;
  type: string;
  data: { n: number };
  timestamp: number;
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-history-cli-'));
  daemon = await spawnDaemon(['--port', '0', '--http-port', '0', '--data-dir', dataDir, '--store', 'memory']);
  const [sandbox, workspace] = await Promise.all([
    token('--workspace', '1', '--sandbox', 'sb-h'),
    token('--workspace', '1'),
  ]);
  workspaceToken = workspace;
  // One publish through the CLI, the rest through a client (each CLI run is a process start).
  await cli('publish', 'sb-h', 'terminal.output', '{"n":1}', '--port', String(daemon.port), '--token', sandbox);
  const publisher = new Redis({ port: daemon.port, host: '127.0.0.1', password: sandbox });
  for (let n = 2; n <= 6; n++) {
    const type = n % 2 === 0 ? 'execution.completed' : 'terminal.output';
    await publisher.publish('sb-h', JSON.stringify({ type, data: { n } }));
  }
  publisher.disconnect();
});
afterAll(async () => {
  killDaemons();
  await rm(dataDir, { recursive: true, force: true });
});

describe('sandbox-events history', () => {
  const read = async (...flags: string[]): Promise<PrintedEvent[]> => {
    const workspace = await token('--workspace', '1');
    const stdout = await cli(
      'history',
      'sb-h',
      '--json',
      '--port',
      String(daemon.port),
      '--token',
      workspace,
      ...flags,
    );
    return stdout
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as PrintedEvent);
  };

  it('prints every event oldest first, one JSON line each', async () => {
    expect((await read()).map((event) => event.data.n)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('filters by --type', async () => {
    expect((await read('--type', 'execution.completed')).map((event) => event.data.n)).toEqual([2, 4, 6]);
  });

  it('pages with --limit and --newest', async () => {
    expect((await read('--limit', '2')).map((event) => event.data.n)).toEqual([1, 2]);
    expect((await read('--limit', '2', '--newest')).map((event) => event.data.n)).toEqual([5, 6]);
  });

  it('starts after an id with --after, and at a time with --since', async () => {
    const all = await read('--after', '0-0');
    expect((await read('--after', all[3]!.id)).map((event) => event.data.n)).toEqual([5, 6]);
    expect(await read('--since', String(all[5]!.timestamp + 60_000))).toEqual([]);
  });

  it('prints readable lines without --json', async () => {
    const stdout = await cli(
      'history',
      'sb-h',
      '--limit',
      '1',
      '--port',
      String(daemon.port),
      '--token',
      workspaceToken,
    );
    expect(stdout).toMatch(/^\d\d:\d\d:\d\d\.\d{3} {2}sb-h {2}terminal\.output {2}\{"n":1\} {2}\d+-\d+\n$/);
  });

  it('refuses a bad --limit, and reports the broker refusing an id, with a non-zero exit', async () => {
    const base = ['history', 'sb-h', '--port', String(daemon.port), '--token', workspaceToken];
    await expect(cli(...base, '--limit', '1001')).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringContaining('expected an integer from 1 to 1000'),
    });
    await expect(cli(...base, '--after', 'not-an-id')).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/invalid event id/i),
    });
  });
});

describe('--since', () => {
  const parse = sinceArgument(() => 1_000_000_000);
  it('takes Unix ms, an ISO 8601 date, or a duration back from now', () => {
    expect(parse('1732361234567')).toBe(1732361234567);
    expect(parse('2026-12-07T10:00:00Z')).toBe(Date.parse('2026-12-07T10:00:00Z'));
    expect(parse('15m')).toBe(1_000_000_000 - 15 * 60_000);
    expect(parse('1h')).toBe(1_000_000_000 - 3_600_000);
    expect(() => parse('yesterday-ish')).toThrow(/Unix milliseconds, an ISO 8601 date or a duration/);
  });
});
