import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { afterEach, expect, it, vi } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { registerPublish } from '../../src/cli/publish.js';
import { type ClientCliIo, formatEvent, registerTail } from '../../src/cli/tail.js';
import { type RunningServer, startServer } from '../../src/daemon.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import { tempDir, until } from './support/helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  vi.unstubAllEnvs();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A stream that keeps what is written and says so. */
class Sink extends Writable {
  text = '';
  readonly written = new EventEmitter();
  isTTY = false;

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.text += chunk.toString('utf8');
    this.written.emit('text');
    callback();
  }

  lines(): string[] {
    return this.text.split('\n').filter((line) => line !== '');
  }

  waitForLines(count: number, filter: (line: string) => boolean = () => true): Promise<void> {
    return until(
      this.written,
      'text',
      () => this.lines().filter(filter).length >= count,
      `${count} lines in:\n${this.text}`,
    );
  }
}

function io(signal?: AbortSignal): ClientCliIo & { stdout: Sink; stderr: Sink } {
  return { stdout: new Sink(), stderr: new Sink(), env: {}, ...(signal === undefined ? {} : { signal }) };
}

function cli(streams: ClientCliIo): Command {
  const program = new Command().exitOverride();
  registerTail(program, streams);
  registerPublish(program, streams);
  return program;
}

function run(streams: ClientCliIo, args: string[]): Promise<Command> {
  return cli(streams).parseAsync(['node', 'sandbox-events', ...args]);
}

async function sqliteBroker(): Promise<{ start: (port: number) => Promise<RunningServer>; secret: string }> {
  const { dir, remove } = await tempDir('sandbox-events-cli-client-');
  cleanups.push(remove);
  const secret = randomBytes(32).toString('base64url');
  const start = (port: number): Promise<RunningServer> =>
    startServer({
      host: '127.0.0.1',
      port,
      auth: { secret },
      store: SqliteStore.open({
        path: path.join(dir, 'events.db'),
        retention: { maxCount: 10_000, maxAgeMs: 3_600_000 },
      }),
    });
  return { start, secret };
}

it('tail --json prints every event once, in order, across a broker restart; publish prints receivers', async () => {
  const { start, secret } = await sqliteBroker();
  let broker = await start(0);
  cleanups.push(() => broker.close());
  const port = String(broker.port);
  const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
  const sandboxToken = await mintToken({
    secret,
    workspaceId: 1,
    role: 'sandbox',
    sandboxId: 'sb-cli',
    ttlSeconds: 3600,
  });

  const stop = new AbortController();
  const tail = io(stop.signal);
  const tailing = run(tail, ['tail', 'sb-cli', '--json', '--port', port, '--token', token]);
  await tail.stderr.waitForLines(1, (line) => line.includes('following sb-cli'));

  const pub = io();
  await run(pub, ['publish', 'sb-cli', 'execution.started', '{"cmd":"ls"}', '--port', port, '--token', sandboxToken]);
  expect(pub.stdout.text).toBe('1\n');
  vi.stubEnv('SANDBOX_EVENTS_TOKEN', sandboxToken); // the token can come from the environment
  await run(io(), ['publish', 'sb-cli', 'terminal.output', '{"text":"é"}', '--port', port]);
  await tail.stdout.waitForLines(2);

  await broker.close();
  broker = await start(Number(port));
  await tail.stderr.waitForLines(1, (line) => line.includes('reconnected'));
  await run(io(), ['publish', 'sb-cli', 'execution.completed', '--port', port]);
  await tail.stdout.waitForLines(3);

  const events = tail.stdout.lines().map((line) => JSON.parse(line) as { id: string; type: string; data: unknown });
  expect(events.map((event) => event.type)).toEqual(['execution.started', 'terminal.output', 'execution.completed']);
  expect(events[1]!.data).toEqual({ text: 'é' });
  stop.abort();
  await tailing;
  expect(tail.stderr.text).toContain(`stopped after ${events[2]!.id} (continue with --from ${events[2]!.id})`);

  // --from picks up exactly after a given id.
  const again = new AbortController();
  const resumed = io(again.signal);
  const resuming = run(resumed, [
    'tail',
    'sb-cli',
    '--json',
    '--from',
    events[0]!.id,
    '--port',
    port,
    '--token',
    token,
  ]);
  await resumed.stdout.waitForLines(2);
  again.abort();
  await resuming;
  expect(resumed.stdout.lines().map((line) => (JSON.parse(line) as { id: string }).id)).toEqual([
    events[1]!.id,
    events[2]!.id,
  ]);
});

it('tail follows a pattern with readable lines, coloured only on a terminal', async () => {
  const { start, secret } = await sqliteBroker();
  const broker = await start(0);
  cleanups.push(() => broker.close());
  const port = String(broker.port);
  const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
  const stop = new AbortController();
  const tail = io(stop.signal);
  const tailing = run(tail, ['tail', 'job-*', '--port', port, '--token', token]);
  await tail.stderr.waitForLines(1, (line) => line.includes('following pattern job-*'));
  await run(io(), ['publish', 'job-7', 'process.exited', '{"code":0}', '--port', port, '--token', token]);
  await tail.stdout.waitForLines(1);
  stop.abort();
  await tailing;
  expect(tail.stdout.lines()[0]).toMatch(
    /^\d\d:\d\d:\d\d\.\d{3} {2}job-7 {2}process\.exited {2}\{"code":0\} {2}\d+-\d+$/,
  );

  const event = { id: '1-0', sandboxId: 'sb', workspaceId: 1, type: 't', data: {}, timestamp: 0 };
  expect(formatEvent(event, true)).toBe(
    '\x1b[2m00:00:00.000\x1b[22m  \x1b[36msb\x1b[39m  \x1b[1m\x1b[33mt\x1b[39m\x1b[22m  {}  \x1b[2m1-0\x1b[22m\n',
  );
  expect(formatEvent(event, false)).toBe('00:00:00.000  sb  t  {}  1-0\n');
});

it('explains what is wrong', async () => {
  const { start, secret } = await sqliteBroker();
  const broker = await start(0);
  cleanups.push(() => broker.close());
  const port = String(broker.port);
  const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
  await expect(run(io(), ['tail', 'sb', '--port', port])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  await expect(run(io(), ['tail', 'sb-*', '--from', '0', '--port', port, '--token', token])).rejects.toThrow(
    /a pattern's from must be '\$' or a cursor w<n>, got '0'/,
  );
  await expect(run(io(), ['publish', 'sb', 't', '[1]', '--port', port, '--token', token])).rejects.toThrow(
    /JSON object/,
  );
  await expect(run(io(), ['publish', 'sb', 't', '--port', port, '--token', 'not-a-token'])).rejects.toMatchObject({
    name: 'EventsAuthError',
    code: 'AUTH_FAILED',
  });
  await expect(run(io(), ['tail', 'sb', '--port', port, '--token', 'not-a-token'])).rejects.toMatchObject({
    code: 'AUTH_FAILED',
  });
});
