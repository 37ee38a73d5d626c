import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EventSource } from 'eventsource';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { cliToken, collectingClient, freePort } from '../support/e2e.js';
import { resp } from '../support/raw-client.js';

/**
 * The scenario of docs/http.md ("Seed systems' streams") and docs/operations.md ("Ephemeral
 * events") on one daemon started with `--retention-count 20 --ephemeral-types sandbox.metrics`,
 * through real clients: a raw RESP subscriber, ioredis, EventSource, and the seed systems' own
 * example code (a Python `requests` loop reading `data:` lines; a browser-style EventSource
 * with addEventListener).
 */

let dataDir: string;
let daemon: Daemon;
let httpPort: number;
let workspace: string;
const sandboxTokens = new Map<string, string>();

const token = (...args: string[]): Promise<string> => cliToken(dataDir, ...args);

async function publish(sandboxId: string, type: string, data: Record<string, unknown>): Promise<void> {
  let sandboxToken = sandboxTokens.get(sandboxId);
  if (sandboxToken === undefined) {
    sandboxToken = await token('--workspace', '1', '--sandbox', sandboxId);
    sandboxTokens.set(sandboxId, sandboxToken);
  }
  const client = new Redis({ port: daemon.port, host: '127.0.0.1', password: sandboxToken });
  try {
    await client.publish(sandboxId, JSON.stringify({ type, data }));
  } finally {
    client.disconnect();
  }
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-done-'));
  httpPort = await freePort();
  daemon = await spawnDaemon([
    ...['--port', '0', '--http-port', String(httpPort), '--data-dir', dataDir, '--store', 'sqlite'],
    ...['--retention-count', '20', '--ephemeral-types', 'sandbox.metrics'],
  ]);
  workspace = await token('--workspace', '1');
});
afterAll(async () => {
  killDaemons();
  await rm(dataDir, { recursive: true, force: true });
});

/** An EventSource with the workspace token that records the events of `types`, parsed. */
function watch(url: string, types: string[]) {
  const source = new EventSource(url, {
    fetch: (input, init) =>
      fetch(input, { ...init, headers: { ...init?.headers, authorization: `Bearer ${workspace}` } }),
  });
  const received: { type: string; id: string; data: Record<string, unknown> }[] = [];
  let wake: () => void = () => {};
  for (const type of types) {
    source.addEventListener(type, (event: MessageEvent) => {
      received.push({ type, id: event.lastEventId, data: JSON.parse(String(event.data)) as Record<string, unknown> });
      wake();
    });
  }
  const opened = new Promise<void>((resolve) => source.addEventListener('open', () => resolve(), { once: true }));
  const until = async (n: number): Promise<void> => {
    while (received.length < n) await new Promise<void>((resolve) => (wake = resolve));
  };
  return { source, received, opened, until };
}

/** The seed systems' Python example: a `requests` loop printing each `data:` line. */
const PYTHON_LOOP = `
import sys, requests
url, token, wanted = sys.argv[1], sys.argv[2], int(sys.argv[3])
with requests.get(url, headers={"Authorization": "Bearer " + token}, stream=True) as r:
    print("status", r.status_code, flush=True)
    seen = 0
    for line in r.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            print(line[len("data:"):].strip(), flush=True)
            seen += 1
            if seen == wanted:
                break
`;

async function pythonLoop(url: string, wanted: number) {
  const script = path.join(dataDir, 'loop.py');
  await writeFile(script, PYTHON_LOOP);
  const child = spawn('python3', [script, url, workspace, String(wanted)]);
  let out = '';
  let wake: () => void = () => {};
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    wake();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const until = async (test: (text: string) => boolean): Promise<void> => {
    while (!test(out)) await new Promise<void>((resolve) => (wake = resolve));
  };
  return { child, exited, until, lines: () => out.trim().split('\n') };
}

describe('done when (--retention-count 20 --ephemeral-types sandbox.metrics)', () => {
  it('60 metrics events are delivered live, and HISTORY TYPE execution.completed still returns the lifecycle event', async () => {
    const subscriber = await collectingClient(daemon.port, workspace);
    subscriber.socket.write(resp('SUBSCRIBE', 'sb'));
    await subscriber.until(':1\r\n');
    await publish('sb', 'execution.completed', { exitCode: 0 });
    for (let i = 0; i < 60; i += 1) await publish('sb', 'sandbox.metrics', { uptime_seconds: i });
    await subscriber.until((text) => text.split('"type":"sandbox.metrics"').length - 1 === 60);
    subscriber.socket.destroy();
    const reader = new Redis({ port: daemon.port, host: '127.0.0.1', password: workspace });
    const history = (await reader.call('HISTORY', 'sb', 'TYPE', 'execution.completed')) as string[];
    reader.disconnect();
    expect(history).toHaveLength(1);
    expect(JSON.parse(history[0]!)).toMatchObject({ type: 'execution.completed', data: { exitCode: 0 } });
  });

  it('an SSE stream with ?type=execution.completed carries only that type', async () => {
    const types = ['execution.completed', 'sandbox.metrics', 'process.exited'];
    const stream = watch(`http://127.0.0.1:${httpPort}/events/sb-t/stream?type=execution.completed`, types);
    await stream.opened;
    await publish('sb-t', 'sandbox.metrics', { uptime_seconds: 1 });
    await publish('sb-t', 'process.exited', { code: 0 });
    await publish('sb-t', 'execution.completed', { exitCode: 0 });
    await stream.until(1);
    // One more of the wanted type: anything unwanted published before it would be seen first.
    await publish('sb-t', 'execution.completed', { exitCode: 1 });
    await stream.until(2);
    stream.source.close();
    expect(stream.received.map((event) => event.type)).toEqual(['execution.completed', 'execution.completed']);
  });

  it('hopx: GET /v1/sandboxes/sb-h/metrics/stream carries the metrics object as data: (requests loop, EventSource)', async () => {
    const url = `http://127.0.0.1:${httpPort}/v1/sandboxes/sb-h/metrics/stream`;
    const python = await pythonLoop(url, 1);
    const browser = watch(url, ['sandbox.metrics']);
    await python.until((out) => out.includes('status 200'));
    await browser.opened;
    await publish('sb-h', 'execution.completed', { exitCode: 0 }); // not a metrics event: not carried
    const metrics = { uptime_seconds: 42, total_executions: 3, active_executions: 1, error_count: 0 };
    await publish('sb-h', 'sandbox.metrics', metrics);
    await python.until((out) => out.includes('uptime_seconds'));
    await browser.until(1);
    browser.source.close();
    await python.exited;
    expect(JSON.parse(python.lines()[1]!)).toEqual(metrics);
    expect(browser.received[0]!.data).toEqual(metrics);
    expect(browser.received[0]!.id).toMatch(/^\d+-\d+$/);
  });

  it('Backend.AI: GET /stream/kernel/_/events?sessionId=*&group=* carries kernel_started as event: kernel_started', async () => {
    const url = `http://127.0.0.1:${httpPort}/stream/kernel/_/events?sessionId=*&group=*`;
    const python = await pythonLoop(url, 1);
    const browser = watch(url, ['kernel_started', 'kernel_terminated', 'sandbox.metrics']);
    await python.until((out) => out.includes('status 200'));
    await browser.opened;
    await publish('sess-1', 'sandbox.metrics', { uptime_seconds: 1 }); // not a kernel event
    await publish('sess-1', 'kernel_started', { ownerAccessKey: 'AKIA1', reason: 'user-requested' });
    await publish('sess-2', 'kernel_terminated', { reason: 'finished', result: 'SUCCESS' });
    await python.until((out) => out.includes('sess-1'));
    await browser.until(2);
    browser.source.close();
    await python.exited;
    const started = { sessionId: 'sess-1', ownerAccessKey: 'AKIA1', reason: 'user-requested', result: null };
    expect(JSON.parse(python.lines()[1]!)).toEqual(started);
    expect(browser.received.map((event) => [event.type, event.data])).toEqual([
      ['kernel_started', started],
      ['kernel_terminated', { sessionId: 'sess-2', ownerAccessKey: null, reason: 'finished', result: 'SUCCESS' }],
    ]);
  });
});
