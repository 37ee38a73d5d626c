import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BIN, killDaemons, spawnDaemon } from '../support/daemon.js';
import { cliToken, collectingClient, freePort } from '../support/e2e.js';
import { resp } from '../support/raw-client.js';

/**
 * `--retention` rules (docs/operations.md, "Per-type retention") through the real daemon, memory
 * and SQLite: 1 execution.completed then 60 sandbox.metrics under `--retention-count 20
 * --retention sandbox.metrics=5` leaves the lifecycle event in HISTORY and 5 metrics; a RESUME
 * across the pruned metrics says `trimmed`, one filtered to the lifecycle type `complete`; the
 * same after a restart (SQLite); bad rules and the Redis engine are refused at start.
 */

let dataDir: string;
const RULES = ['--retention-count', '20', '--retention', 'sandbox.metrics=5'];

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-typeretention-'));
});
afterEach(() => killDaemons());
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

const token = (...args: string[]): Promise<string> => cliToken(dataDir, ...args);
const typesOf = (lines: string[]): string[] => lines.map((line) => (JSON.parse(line) as { type: string }).type);
const idOf = (line: string): string => (JSON.parse(line) as { id: string }).id;

/** HISTORY once retention has run: the SQLite store prunes in the background (every 5 s). */
async function historyWhen(client: Redis, args: string[], done: (lines: string[]) => boolean): Promise<string[]> {
  for (;;) {
    const lines = (await client.call('HISTORY', ...args)) as string[];
    if (done(lines)) return lines;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The status of a RESUME (or PRESUME) confirmation, from a fresh connection. */
async function resumeStatus(port: number, workspace: string, args: string[]): Promise<string> {
  const client = await collectingClient(port, workspace);
  try {
    client.socket.write(resp(...args));
    const status = /\r\n(complete|trimmed|unknown|future|not_resumable)\r\n/;
    await client.until((text) => status.test(text));
    return status.exec(client.text())![1]!;
  } finally {
    client.socket.destroy();
  }
}

/**
 * Opens the SSE stream of one sandbox with Last-Event-ID (and `?type=` when given), runs
 * `whenOpen`, and returns what arrived until `until` is in it; then closes the stream.
 */
async function readStream(
  httpPort: number,
  workspace: string,
  sandboxId: string,
  lastEventId: string,
  query: string,
  whenOpen: () => Promise<unknown>,
  until: string,
): Promise<string> {
  const controller = new AbortController();
  const response = await fetch(`http://127.0.0.1:${httpPort}/events/${sandboxId}/stream${query}`, {
    headers: { authorization: `Bearer ${workspace}`, accept: 'text/event-stream', 'last-event-id': lastEventId },
    signal: controller.signal,
  });
  expect(response.status).toBe(200);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  try {
    await whenOpen();
    while (!text.includes(until)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
  } finally {
    controller.abort();
  }
  return text;
}

describe.each(['memory', 'sqlite'])('per-type retention, %s store', (store) => {
  it('keeps the lifecycle event beside 60 metrics, metrics to 5, and tells resumes what was pruned', async () => {
    const file = path.join(dataDir, `${store}.db`);
    const storeArg = store === 'memory' ? 'memory' : `sqlite:${file}`;
    const args = async (): Promise<string[]> => [
      ...['--port', '0', '--http-port', String(await freePort())],
      ...['--data-dir', dataDir, '--store', storeArg, ...RULES],
    ];
    let daemon = await spawnDaemon(await args());
    const channel = `sb-${store}`;
    const [sandbox, workspace] = await Promise.all([
      token('--workspace', '1', '--sandbox', channel),
      token('--workspace', '1'),
    ]);
    let client = new Redis({ port: daemon.port, host: '127.0.0.1', password: sandbox });
    try {
      await client.publish(channel, JSON.stringify({ type: 'execution.completed', data: { exit_code: 0 } }));
      for (let i = 0; i < 60; i += 1) {
        await client.publish(channel, JSON.stringify({ type: 'sandbox.metrics', data: { uptime_seconds: i } }));
      }
      const all = await historyWhen(client, [channel, 'LIMIT', '1000'], (lines) => lines.length === 6);
      expect(typesOf(all)).toEqual(['execution.completed', ...Array(5).fill('sandbox.metrics')]);
      const completed = (await client.call('HISTORY', channel, 'TYPE', 'execution.completed')) as string[];
      expect(completed).toHaveLength(1);
      expect(JSON.parse(completed[0]!)).toMatchObject({ data: { exit_code: 0 } });
      expect(await client.call('HISTORY', channel, 'TYPE', 'sandbox.metrics')).toHaveLength(5);
      expect(JSON.parse(all[5]!)).toMatchObject({ data: { uptime_seconds: 59 } });

      const after = idOf(completed[0]!);
      // Across the pruned metrics: the gap signal, then what is held.
      expect(await resumeStatus(daemon.port, workspace, ['RESUME', channel, after])).toBe('trimmed');
      expect(await resumeStatus(daemon.port, workspace, ['PRESUME', 'sb-*', 'w0'])).toBe('trimmed');
      // A subscription that takes only lifecycle events lost none of them.
      expect(await resumeStatus(daemon.port, workspace, ['RESUME', channel, after, 'TYPE', 'execution.*'])).toBe(
        'complete',
      );
      expect(await resumeStatus(daemon.port, workspace, ['PRESUME', 'sb-*', 'w0', 'TYPE', 'execution.completed'])).toBe(
        'complete',
      );
      // From before the lifecycle event the metrics-only reader is exact too, the full one not.
      expect(await resumeStatus(daemon.port, workspace, ['RESUME', channel, '0', 'TYPE', 'execution.*'])).toBe(
        'complete',
      );
      expect(await resumeStatus(daemon.port, workspace, ['RESUME', channel, '0'])).toBe('trimmed');

      // SSE Last-Event-ID alike: a gap event for every type, none for the lifecycle type only.
      const publishMarker = (n: number) => () =>
        client.publish(channel, JSON.stringify({ type: 'execution.completed', data: { marker: n } }));
      const everything = await readStream(
        daemon.httpPort as number,
        workspace,
        channel,
        after,
        '',
        publishMarker(1),
        '"marker":1',
      );
      expect(everything).toContain('event: gap');
      expect(everything).toContain('"status":"trimmed"');
      const lifecycle = await readStream(
        daemon.httpPort as number,
        workspace,
        channel,
        after,
        '?type=execution.completed',
        publishMarker(2),
        '"marker":2',
      );
      expect(lifecycle).not.toContain('event: gap');
      expect(lifecycle).not.toContain('sandbox.metrics');
      expect(lifecycle).toContain('"marker":1');

      if (store === 'sqlite') {
        client.disconnect();
        daemon.child.kill('SIGTERM');
        await daemon.exited;
        daemon = await spawnDaemon(await args());
        client = new Redis({ port: daemon.port, host: '127.0.0.1', password: sandbox });
        // The lifecycle event, and the two the SSE checks published.
        const kept = (await client.call('HISTORY', channel, 'TYPE', 'execution.completed')) as string[];
        expect(kept).toHaveLength(3);
        expect(kept[0]).toEqual(completed[0]);
        expect(await client.call('HISTORY', channel, 'TYPE', 'sandbox.metrics')).toHaveLength(5);
        expect(await resumeStatus(daemon.port, workspace, ['RESUME', channel, after])).toBe('trimmed');
        expect(await resumeStatus(daemon.port, workspace, ['RESUME', channel, after, 'TYPE', 'execution.*'])).toBe(
          'complete',
        );
      }
    } finally {
      client.disconnect();
    }
  });
});

describe('--retention at start', () => {
  it('refuses a malformed rule, naming it, before anything starts', async () => {
    for (const [rules, message] of [
      ['sandbox.metrics', '"sandbox.metrics" is not <type glob>=<count>'],
      ['sandbox.metrics=0', 'the count of "sandbox.metrics" must be an integer >= 1'],
      ['a=1,a=2', '"a" has two rules'],
      ['=5', 'a rule has an empty type glob'],
    ] as const) {
      const failure = await spawnDaemon(['--port', '0', '--data-dir', dataDir, '--retention', rules]).catch(
        (error: Error) => error,
      );
      expect(String(failure)).toContain(`--retention: ${message}`);
    }
  });

  it('is refused with the Redis engine, rather than pruning all types together', async () => {
    const failure = await spawnDaemon([
      ...['--port', '0', '--data-dir', dataDir, '--engine', 'redis://127.0.0.1:1'],
      ...['--retention', 'sandbox.metrics=100'],
    ]).catch((error: Error) => error);
    expect(String(failure)).toContain('--retention rules are not supported with --engine redis');
    expect(String(failure)).toContain('INVALID_ARGUMENT');
  });

  it('reads rules from a config file as a table, and shows them as the flag writes them', async () => {
    const file = path.join(dataDir, 'rules.toml');
    await writeFile(file, '[retention]\n"sandbox.metrics" = 100\n"terminal.*" = 1000\n');
    const run = spawnSync(process.execPath, [BIN, 'config', 'check', '--config', file], { encoding: 'utf8' });
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/retention\s.*sandbox\.metrics=100,terminal\.\*=1000/);
    await writeFile(file, '[retention]\n"sandbox.metrics" = "many"\n');
    const bad = spawnSync(process.execPath, [BIN, 'config', 'check', '--config', file], { encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('retention');
  });
});
