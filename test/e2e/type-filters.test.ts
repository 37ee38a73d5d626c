import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { EventSource } from 'eventsource';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPubSubClient, type SandboxEvent } from '../../src/client/index.js';
import { BIN, type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { collectingClient, freePort } from '../support/e2e.js';
import { resp } from '../support/raw-client.js';
import { requireTool } from '../support/tools.js';

/**
 * Type filters (docs/protocol.md, "Type filters"; docs/http.md, `?type=`) through the real
 * daemon: SSE `?type=` on sandbox and pattern streams, live and replayed; RESUME/PRESUME with
 * `TYPE` from a raw socket and redis-cli; the package client's `types`; `tail --type`.
 */

const run = promisify(execFile);
const hasRedisCli = requireTool('redis-cli', 'redis-tools');
let dataDir: string;
let daemon: Daemon;
let workspaceToken: string;
let sandboxToken: string;
let publisher: Redis;

async function cli(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [BIN, ...args], { env: { ...process.env, NO_COLOR: '1' } });
  return stdout;
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-types-'));
  const httpPort = await freePort();
  daemon = await spawnDaemon([
    ...['--port', '0', '--http-port', String(httpPort)],
    ...['--data-dir', dataDir, '--store', 'memory'],
  ]);
  [workspaceToken, sandboxToken] = (
    await Promise.all([
      cli('token', '--data-dir', dataDir, '--workspace', '1'),
      cli('token', '--data-dir', dataDir, '--workspace', '1', '--sandbox', 'sb-t'),
    ])
  ).map((text) => text.trim()) as [string, string];
  publisher = new Redis({ port: daemon.port, host: '127.0.0.1', password: sandboxToken });
});
afterAll(async () => {
  publisher.disconnect();
  killDaemons();
  await rm(dataDir, { recursive: true, force: true });
});

const TYPES = ['sandbox.metrics', 'terminal.stdout', 'execution.completed', 'process.exited'];

/** Publishes one event of each type, `rounds` times; resolves with the ids in order. */
async function publishMix(rounds: number, tag: string): Promise<void> {
  for (let round = 0; round < rounds; round += 1) {
    for (const type of TYPES) await publisher.publish('sb-t', JSON.stringify({ type, data: { tag, round } }));
  }
}

/** An EventSource that records every event of the four types (and `gap`) it receives. */
function watch(url: string): { source: EventSource; received: SandboxEvent[]; until: (n: number) => Promise<void> } {
  const source = new EventSource(url, {
    fetch: (input, init) =>
      fetch(input, { ...init, headers: { ...init?.headers, authorization: `Bearer ${workspaceToken}` } }),
  });
  const received: SandboxEvent[] = [];
  let wake: () => void = () => {};
  for (const type of [...TYPES, 'gap']) {
    source.addEventListener(type, (event: MessageEvent) => {
      received.push(
        type === 'gap' ? ({ type: 'gap' } as SandboxEvent) : (JSON.parse(String(event.data)) as SandboxEvent),
      );
      wake();
    });
  }
  const opened = new Promise<void>((resolve) => source.addEventListener('open', () => resolve(), { once: true }));
  const until = async (n: number): Promise<void> => {
    await opened;
    while (received.length < n) await new Promise<void>((resolve) => (wake = resolve));
  };
  return { source, received, until };
}

const base = (): string => `http://127.0.0.1:${daemon.httpPort}`;

describe('SSE ?type=', () => {
  it('a sandbox stream carries only the types asked for, live and replayed (globs, repeated and comma-separated)', async () => {
    const exact = watch(`${base()}/events/sb-t/stream?type=execution.completed`);
    const globs = watch(`${base()}/events/sb-t/stream?type=terminal.*,process.exited`);
    await Promise.all([exact.until(0), globs.until(0)]);
    await publishMix(3, 'live');
    await exact.until(3);
    await globs.until(6);
    exact.source.close();
    globs.source.close();
    expect(exact.received.map((event) => event.type)).toEqual(Array(3).fill('execution.completed'));
    expect(globs.received.map((event) => event.type)).toEqual(
      Array(3).fill(['terminal.stdout', 'process.exited']).flat(),
    );
    // Replayed from the oldest retained event: the same filter holds for the replay.
    const replay = watch(`${base()}/events/sb-t/stream?lastEventId=0&type=process.exited&type=sandbox.*`);
    await replay.until(6);
    replay.source.close();
    expect(replay.received.map((event) => event.type)).toEqual(
      Array(3).fill(['sandbox.metrics', 'process.exited']).flat(),
    );
  });

  it('a pattern stream filters too', async () => {
    const pattern = watch(`${base()}/events/stream?pattern=sb-*&type=execution.*`);
    await pattern.until(0);
    await publishMix(2, 'pattern');
    await pattern.until(2);
    pattern.source.close();
    expect(pattern.received.map((event) => [event.type, (event.data as { tag: string }).tag])).toEqual([
      ['execution.completed', 'pattern'],
      ['execution.completed', 'pattern'],
    ]);
  });

  it('refuses more than 32 globs with a 400', async () => {
    const many = Array.from({ length: 33 }, (_, i) => `t${i}`).join(',');
    const response = await fetch(`${base()}/events/sb-t/stream?type=${many}`, {
      headers: { authorization: `Bearer ${workspaceToken}` },
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { code: string }).code).toBe('INVALID_TYPE');
  });
});

const rawClient = (): ReturnType<typeof collectingClient> => collectingClient(daemon.port, workspaceToken);

describe('RESP TYPE filters', () => {
  it('RESUME <id> $ TYPE <glob> sends only matching message frames; plain SUBSCRIBE is unchanged', async () => {
    const filtered = await rawClient();
    const plain = await rawClient();
    filtered.socket.write(resp('RESUME', 'sb-t', '$', 'TYPE', 'process.*'));
    plain.socket.write(resp('SUBSCRIBE', 'sb-t'));
    await filtered.until('complete');
    await plain.until(':1\r\n');
    expect(filtered.text()).toBe('+OK\r\n*6\r\n$6\r\nresume\r\n$4\r\nsb-t\r\n:1\r\n$8\r\ncomplete\r\n$-1\r\n$-1\r\n');
    expect(plain.text()).toBe('+OK\r\n*3\r\n$9\r\nsubscribe\r\n$4\r\nsb-t\r\n:1\r\n');
    await publishMix(1, 'resp');
    await plain.until('process.exited');
    await filtered.until('process.exited');
    const frames = (text: string): string[] => [...text.matchAll(/"type":"([^"]+)"/g)].map((match) => match[1]!);
    expect(frames(filtered.text())).toEqual(['process.exited']);
    expect(frames(plain.text())).toEqual(TYPES);
    filtered.socket.destroy();
    plain.socket.destroy();
  });

  it('a sandbox named TYPE is still a RESUME pair; bad options are refused', async () => {
    const client = await rawClient();
    client.socket.write(resp('RESUME', 'TYPE', '$'));
    await client.until('complete');
    expect(client.text()).toContain('$6\r\nresume\r\n$4\r\nTYPE\r\n:1\r\n');
    client.socket.write(resp('PRESUME', 'sb-*', '$', 'KIND', 'x'));
    await client.until('-ERR');
    expect(client.text()).toMatch(/-ERR syntax error\r\n$/);
    client.socket.destroy();
  });

  it.skipIf(!hasRedisCli)('redis-cli -3 --show-pushes y PRESUME prints only matching pmessages', async () => {
    // stdbuf: redis-cli's stdout is a pipe here, which C buffers until exit.
    const child = spawn('stdbuf', [
      '-o0',
      'redis-cli',
      '-3',
      '--show-pushes',
      'y',
      '-p',
      String(daemon.port),
      '--no-auth-warning',
      '-a',
      workspaceToken,
      'PRESUME',
      'sb-*',
      '$',
      'TYPE',
      'execution.completed',
    ]);
    let out = '';
    let wake: () => void = () => {};
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      wake();
    });
    const until = async (s: string): Promise<void> => {
      while (!out.includes(s)) await new Promise<void>((resolve) => (wake = resolve));
    };
    try {
      await until('complete');
      await publishMix(1, 'cli');
      await until('"type":"execution.completed"');
      await publisher.publish('sb-t', JSON.stringify({ type: 'execution.completed', data: { tag: 'last' } }));
      await until('"tag":"last"');
      expect(out).toContain('presume\nsb-*\n1\ncomplete\n');
      expect(out).not.toContain('terminal.stdout');
      expect(out).not.toContain('sandbox.metrics');
    } finally {
      child.kill();
    }
  });
});

describe('the package client and tail', () => {
  it('subscribe (config or call) and psubscribe take `types`', async () => {
    const first = async (client: ReturnType<typeof createPubSubClient>, count: number): Promise<string[]> => {
      const seen: string[] = [];
      for await (const event of client.events()) {
        seen.push(event.type);
        if (seen.length === count) break;
      }
      return seen;
    };
    const config = { host: '127.0.0.1', port: daemon.port, accessToken: workspaceToken };
    const channel = createPubSubClient({ ...config, sandboxId: 'sb-t', types: ['terminal.*'] });
    const pattern = createPubSubClient(config);
    for (const client of [channel, pattern]) client.on('error', () => {});
    await pattern.psubscribe('sb-*', { types: ['process.exited', 'sandbox.*'] });
    const channelSeen = first(channel, 2);
    const patternSeen = first(pattern, 4);
    await Promise.all([channel.connect(), pattern.connect()]);
    await publishMix(2, 'client');
    expect(await channelSeen).toEqual(['terminal.stdout', 'terminal.stdout']);
    expect(await patternSeen).toEqual(['sandbox.metrics', 'process.exited', 'sandbox.metrics', 'process.exited']);
    await Promise.all([channel.disconnect(), pattern.disconnect()]);
  });

  it('tail --type prints only matching events', async () => {
    const child = spawn(
      process.execPath,
      [
        BIN,
        'tail',
        'sb-t',
        '--json',
        '--type',
        'execution.*',
        '--port',
        String(daemon.port),
        '--token',
        workspaceToken,
      ],
      { env: { ...process.env, NO_COLOR: '1' } },
    );
    let out = '';
    let err = '';
    let wake: () => void = () => {};
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      wake();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
      wake();
    });
    try {
      while (!err.includes('following')) await new Promise<void>((resolve) => (wake = resolve));
      await publishMix(2, 'tail');
      while (out.split('\n').length < 3) await new Promise<void>((resolve) => (wake = resolve));
      const lines = out
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as SandboxEvent);
      expect(lines.map((event) => event.type)).toEqual(['execution.completed', 'execution.completed']);
    } finally {
      child.kill('SIGINT');
    }
  });
});
