/**
 * The daemon-wide output budget (docs/operations.md, "Output budget"; Redis's `maxmemory-clients`)
 * through the daemon as a user starts it: non-reading subscribers of a busy sandbox, each far
 * under its own 64 MiB limit, together pass a 24 MiB `--max-output-total`. The ones holding the
 * most are cut first; non-readers of a quiet sandbox, which hold little, a reading subscriber
 * and a fresh client carry on; the total stays within the budget (INFO) and RSS bounded.
 */
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { mintToken } from '../../src/auth/mint.js';
import { defaultMaxOutputTotal } from '../../src/config.js';
import { COUNT_STEP, recheckAfter } from '../../src/runtime/output-budget.js';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';
import { RawClient, resp } from '../support/raw-client.js';

const SECRET = 'output-budget-secret-0123456789-0123456789';
const MIB = 1024 * 1024;
const BUDGET = 24 * MIB;
/**
 * The most the total may pass the budget by (docs/operations.md, "Output budget"): the growth
 * between two checks, and up to a step of each client's output not yet counted (this test has
 * fewer than 20 clients).
 */
const OVERSHOOT = recheckAfter(BUDGET) + 20 * COUNT_STEP;
const EVENT_TEXT = 'b'.repeat(32 * 1024);
const BATCH = 16; // events per pipelined batch: 512 KiB to each busy subscriber
const BUDGET_CUT = 'client output over the daemon output budget: disconnected';
const RSS_RISE_BOUND = 200 * MIB;

type LogRecord = { msg?: string; addr?: string; cause?: string; [field: string]: unknown };

describe('--max-output-total', () => {
  let dataDir: string;
  let daemon: Daemon;
  const records: LogRecord[] = [];
  let wake: (() => void)[] = [];
  const clients: Redis[] = [];
  const raws: RawClient[] = [];

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-output-budget-'));
    daemon = await spawnDaemon([
      ...['--port', '0', '--http-port', '0', '--data-dir', dataDir, '--store', 'memory'],
      ...['--jwt-secret', SECRET, '--publish-rate', '100000', '--publish-burst', '100000'],
      ...['--max-output-buffer', '64mb', '--max-output-total', '24mb', '--retention-bytes', '8mb'],
    ]);
    createInterface({ input: daemon.child.stdout! }).on('line', (line) => {
      try {
        records.push(JSON.parse(line) as LogRecord);
      } catch {
        return;
      }
      const waiting = wake;
      wake = [];
      for (const resolve of waiting) resolve();
    });
  }, 30_000);

  afterAll(async () => {
    for (const client of clients) client.disconnect();
    for (const raw of raws) raw.close();
    killDaemons();
    await rm(dataDir, { recursive: true, force: true });
  });

  function token(extra: { sandboxId?: string; role?: 'admin' | 'workspace' | 'sandbox' } = {}): Promise<string> {
    return mintToken({
      secret: SECRET,
      workspaceId: 1,
      role: extra.sandboxId === undefined ? 'workspace' : 'sandbox',
      ttlSeconds: 3600,
      ...extra,
    });
  }

  async function redis(password: string): Promise<Redis> {
    const client = new Redis({ host: '127.0.0.1', port: daemon.port, password, lazyConnect: true });
    clients.push(client);
    await client.connect();
    return client;
  }

  /** A subscriber of `sandbox` that stops reading once subscribed; its address as the daemon logs it. */
  async function nonReader(sandbox: string): Promise<{ raw: RawClient; addr: string }> {
    const raw = await RawClient.connect(daemon.port);
    raws.push(raw);
    raw.send(resp('AUTH', await token()) + resp('SUBSCRIBE', sandbox));
    expect(await raw.line()).toBe('+OK\r\n');
    await raw.read(`*3\r\n$9\r\nsubscribe\r\n$${sandbox.length}\r\n${sandbox}\r\n:1\r\n`);
    raw.socket.pause();
    return { raw, addr: `127.0.0.1:${raw.socket.localPort}` };
  }

  /** Resolves with the budget-cut log records once there are at least `count`. */
  async function budgetCuts(count: number): Promise<LogRecord[]> {
    for (;;) {
      const cuts = records.filter((record) => record.msg === BUDGET_CUT);
      if (cuts.length >= count) return cuts;
      await new Promise<void>((resolve) => wake.push(resolve));
    }
  }

  function rss(): number {
    const status = readFileSync(`/proc/${daemon.child.pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
  }

  it('cuts the largest consumers first and keeps the total within the budget', async () => {
    const admin = await redis(await token({ role: 'admin' }));
    const figures = async (): Promise<{ total: number; evicted: number; budget: number }> => {
      const info = (await admin.info()) as string;
      const field = (name: string): number => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1]);
      return {
        total: field('client_output_total_bytes'),
        evicted: field('evicted_clients'),
        budget: field('client_output_budget_bytes'),
      };
    };
    expect((await figures()).budget).toBe(BUDGET);

    const publisher = await redis(await token({ sandboxId: 'sb-busy' }));
    let published = 0;
    const publishBatch = async (): Promise<void> => {
      const batch = publisher.pipeline();
      for (let i = 0; i < BATCH; i++) {
        batch.publish(
          'sb-busy',
          JSON.stringify({ type: 'terminal.output', data: { n: published++, text: EVENT_TEXT } }),
        );
      }
      const results = await batch.exec();
      expect(results?.every(([error]) => error === null)).toBe(true);
    };
    /**
     * Publishes `batches` batches, or fewer once `done` holds; after each, the total (measured
     * by INFO) is within the budget. Resolves to whether `done` came to hold.
     */
    const publishBatches = async (
      batches: number,
      done: (figures: { total: number; evicted: number }) => boolean = () => false,
    ): Promise<boolean> => {
      for (let n = 0; n < batches; n++) {
        await publishBatch();
        const now = await figures();
        expect(now.total, 'the total stays within the budget').toBeLessThanOrEqual(BUDGET + OVERSHOOT);
        if (done(now)) return true;
      }
      return false;
    };

    // A subscriber that reads gets every event; it never holds much, so it is never cut.
    const reader = await redis(await token());
    let received = 0;
    let receivedAll: () => void = () => {};
    reader.on('message', () => {
      received += 1;
      if (received === published) receivedAll();
    });
    await reader.subscribe('sb-busy');

    // Non-readers of a quiet sandbox: one small event each, well under 32 KiB.
    const quiet = await Promise.all([1, 2, 3].map(() => nonReader('sb-quiet')));
    const quietPublisher = await redis(await token({ sandboxId: 'sb-quiet' }));
    await quietPublisher.publish('sb-quiet', JSON.stringify({ type: 'note', data: { text: 'quiet' } }));

    const rssBefore = rss();
    // The first four stop reading early: by the time the others join, each holds 4 MiB more.
    const early = await Promise.all([1, 2, 3, 4].map(() => nonReader('sb-busy')));
    expect(await publishBatches(400, (now) => now.total >= 16 * MIB)).toBe(true);
    expect((await figures()).evicted).toBe(0);
    const late = await Promise.all([1, 2, 3, 4].map(() => nonReader('sb-busy')));

    // Past 24 MiB the largest go first: the four early ones, before any late one.
    expect(await publishBatches(400, (now) => now.evicted >= 4)).toBe(true);
    const cuts = await budgetCuts(4);
    expect(cuts.slice(0, 4).map((record) => record.addr)).toEqual(
      expect.arrayContaining(early.map((client) => client.addr)),
    );
    expect(cuts.every((record) => record.cause === 'budget')).toBe(true);

    // 32 MiB more to every busy subscriber: the late ones go in their turn, the total stays bounded.
    await publishBatches(64);
    const rise = rss() - rssBefore;
    expect(rise, `RSS rose by ${Math.round(rise / MIB)} MiB`).toBeLessThan(RSS_RISE_BOUND);
    const cutAddrs = new Set((await budgetCuts(0)).map((record) => record.addr));
    expect(late.some((client) => cutAddrs.has(client.addr))).toBe(true);

    // The reader has every event; the quiet non-readers were never cut and still work.
    if (received < published) await new Promise<void>((resolve) => (receivedAll = resolve));
    expect(received).toBe(published);
    for (const { raw, addr } of quiet) {
      expect(cutAddrs.has(addr)).toBe(false);
      raw.socket.resume();
      await raw.waitFor((bytes) => bytes.includes('"quiet"'));
      raw.send(resp('PING'));
      await raw.waitFor((bytes) => bytes.includes('pong'));
      expect(raw.closed).toBe(false);
    }
    // A fresh client is served.
    expect(await (await redis(await token())).ping()).toBe('PONG');
    // Every cut is a slow-consumer disconnect too.
    const stats = (await admin.info('stats')) as string;
    const slow = Number(/slow_consumer_disconnects:(\d+)/.exec(stats)![1]);
    expect(slow).toBeGreaterThanOrEqual((await figures()).evicted);
  }, 180_000);

  it('CONFIG GET reports the budget in bytes', async () => {
    const admin = await redis(await token({ role: 'admin' }));
    expect(await admin.call('CONFIG', 'GET', 'max-output-total')).toEqual(['max-output-total', String(BUDGET)]);
  });
});

describe('--max-output-total settings', () => {
  it('defaults to an eighth of the memory; 0 turns the budget off', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-output-budget-default-'));
    try {
      for (const [args, expected] of [
        [[], defaultMaxOutputTotal()],
        [['--max-output-total', '0'], 0],
      ] as const) {
        const daemon = await spawnDaemon([
          ...['--port', '0', '--http-port', '0', '--data-dir', dataDir, '--store', 'memory', '--jwt-secret', SECRET],
          ...args,
        ]);
        const admin = new Redis({
          host: '127.0.0.1',
          port: daemon.port,
          password: await mintToken({ secret: SECRET, workspaceId: 1, role: 'admin', ttlSeconds: 60 }),
        });
        try {
          expect(await admin.call('CONFIG', 'GET', 'max-output-total')).toEqual(['max-output-total', String(expected)]);
          expect(await admin.info('clients')).toContain(`client_output_budget_bytes:${expected}\r\n`);
        } finally {
          admin.disconnect();
          killDaemons();
        }
      }
      expect(defaultMaxOutputTotal()).toBeGreaterThan(0);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it.each([
    [['--max-output-total', 'lots'], {}],
    [['--max-output-total', '-1mb'], {}],
    [[], { SANDBOX_EVENTS_MAX_OUTPUT_TOTAL: '2tb' }],
  ] as const)('refuses %j %j at start with a clear message', async (args, env) => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-output-budget-bad-'));
    try {
      await expect(
        spawnDaemon(['--port', '0', '--http-port', '0', '--data-dir', dataDir, '--store', 'memory', ...args], env),
      ).rejects.toThrow(/max-output-total.*expected a size such as 65536, 64kb or 8mb/s);
    } finally {
      killDaemons();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
