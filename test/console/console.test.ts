import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import { createServer } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';

/**
 * The browser console (docs/console.md) in Debian's real Chromium, against the real daemon:
 * events published over TCP (ioredis) must show on the page, with no script error and no
 * failed request. One screenshot per view goes to a temporary directory (printed).
 */

const CHROMIUM = '/usr/bin/chromium';
const present = existsSync(CHROMIUM);
if (!present) {
  const message = `${CHROMIUM} is not installed (apt-get install chromium)`;
  if (process.env.SANDBOX_EVENTS_REQUIRE_ALL_TESTS === '1') throw new Error(message);
  console.warn(`\n*** SKIPPING the console tests: ${message} ***\n`);
}

const secret = randomBytes(32).toString('base64url');
const dataDir = mkdtempSync(path.join(tmpdir(), 'console-data-'));
const shots = mkdtempSync(path.join(tmpdir(), 'console-shots-'));
let daemon: Daemon;
let browser: Browser;
let page: Page;
let workspaceToken: string;
/** Problems the page ran into: script errors, console errors, failed or refused requests. */
const problems: string[] = [];
/** While the daemon restarts, refused connections are expected (the page retries). */
let restarting = false;

const serveArgs = (httpPort: number): string[] => [
  '--port',
  '0',
  '--http-port',
  String(httpPort),
  '--data-dir',
  dataDir,
  '--jwt-secret',
  secret,
];

/** `--http-port 0` turns HTTP off, so the test asks the OS for a free port first. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

const sandboxToken = (sandboxId: string): Promise<string> =>
  mintToken({ secret, workspaceId: 1, sandboxId, role: 'sandbox', ttlSeconds: 3600 });

/** Publishes over TCP, the Redis protocol, as a sandbox would (ioredis). */
async function publishOverTcp(sandboxId: string, events: { type: string; data?: object }[]): Promise<void> {
  const redis = new Redis({
    port: daemon.port,
    host: '127.0.0.1',
    password: await sandboxToken(sandboxId),
    lazyConnect: true,
  });
  try {
    await redis.connect();
    for (const event of events) await redis.publish(sandboxId, JSON.stringify(event));
  } finally {
    redis.disconnect();
  }
}

const base = (): string => `http://127.0.0.1:${daemon.httpPort}`;

async function shoot(name: string): Promise<void> {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
}

async function openView(id: string): Promise<void> {
  await page.getByRole('link', { name: new RegExp(`^${id}$`, 'i') }).click();
}

describe.skipIf(!present)('the browser console', () => {
  beforeAll(async () => {
    daemon = await spawnDaemon(serveArgs(await freePort()));
    workspaceToken = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--headless',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 }, timezoneId: 'Asia/Tokyo' });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      // Chromium logs each refused reconnect while the daemon is down; the page retries.
      if (restarting && message.text().includes('net::ERR_CONNECTION_REFUSED')) return;
      problems.push(`console error: ${message.text()}`);
    });
    page.on('requestfailed', (request) => {
      const failure = request.failure()?.errorText ?? '';
      // The page aborts its own streams when it switches source; a restart refuses connections.
      if (failure === 'net::ERR_ABORTED') return;
      if (restarting && /ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET/.test(failure)) return;
      problems.push(`request failed: ${request.url()} ${failure}`);
    });
    page.on('response', (response) => {
      if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
    });
  });

  afterAll(async () => {
    await browser?.close();
    killDaemons();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('serves the page with strict headers', async () => {
    const response = await fetch(`${base()}/console`);
    expect(response.status).toBe(200);
    const csp = response.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('referrer-policy')).toBe('no-referrer');
    const html = await response.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/https?:\/\//);
  });

  it('signs in with #token= and shows an event published over TCP afterwards', async () => {
    await page.goto(`${base()}/console#token=${workspaceToken}`);
    await page.getByTestId('credential').filter({ hasText: 'workspace 1' }).waitFor({ timeout: 10_000 });
    // The fragment is dropped from the address bar; the credential stays in this tab only.
    expect(page.url()).not.toContain(workspaceToken);
    expect(await page.evaluate('Object.values(sessionStorage)')).toContain(workspaceToken);
    await page.getByText(/Live: open/).waitFor({ timeout: 10_000 });
    const chart = page.locator('figure.chart').first();
    await publishOverTcp('sb-console-1', [{ type: 'execution.completed', data: { exitCode: 0 } }]);
    const row = page.locator('section[aria-labelledby="overview-title"] li.event[data-sandbox="sb-console-1"]');
    await expect.poll(() => row.locator('.type').textContent(), { timeout: 10_000 }).toBe('execution.completed');
    await expect(row.locator('.sandbox').textContent()).resolves.toBe('sb-console-1');
    // The chart takes the published rate from /metrics/stream: it rises above zero.
    await expect
      .poll(async () => Number(await chart.getAttribute('data-peak')), { timeout: 10_000 })
      .toBeGreaterThan(0);
    await shoot('overview');
    expect(problems).toEqual([]);
  });

  it('lists the active sandboxes, searchable', async () => {
    await publishOverTcp('sb-other', [{ type: 'build.started' }]);
    await openView('sandboxes');
    const table = page.locator('table tbody');
    await expect.poll(() => table.locator('tr').count(), { timeout: 10_000 }).toBe(2);
    await page.getByLabel('Search').fill('other');
    await expect.poll(() => table.locator('tr').count()).toBe(1);
    await expect(table.locator('th').textContent()).resolves.toBe('sb-other');
    await shoot('sandboxes');
    expect(problems).toEqual([]);
  });

  it('tails every sandbox with a type filter, and pretty-prints an event on click', async () => {
    await openView('live tail');
    await page.getByTestId('tail-status').filter({ hasText: 'open' }).waitFor({ timeout: 10_000 });
    await publishOverTcp('sb-tail', [
      { type: 'alpha.one', data: { n: 1 } },
      { type: 'beta.two', data: { n: 2 } },
      { type: 'alpha.three', data: { n: 3 } },
    ]);
    const rows = page.locator('section[aria-labelledby="tail-title"] li.event[data-sandbox="sb-tail"]');
    await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(3);
    await page.getByLabel('Type filter').fill('alpha');
    await expect.poll(() => rows.locator('.type').allTextContents()).toEqual(['alpha.three', 'alpha.one']);
    await rows.first().getByRole('button').click();
    const json = JSON.parse((await rows.first().locator('pre.json').textContent()) ?? '');
    expect(json).toMatchObject({ sandboxId: 'sb-tail', type: 'alpha.three', data: { n: 3 } });
    await shoot('tail');
    await page.getByLabel('Type filter').fill('');
    expect(problems).toEqual([]);
  });

  it('browses history with TYPE, AFTER and NEWEST', async () => {
    await openView('history');
    await page.getByLabel('Sandbox id').fill('sb-tail');
    await page.getByLabel('Type', { exact: true }).fill('alpha.one');
    await page.getByRole('button', { name: 'Load' }).click();
    const rows = page.locator('section[aria-labelledby="history-title"] li.event');
    await expect.poll(() => rows.locator('.type').allTextContents(), { timeout: 10_000 }).toEqual(['alpha.one']);
    await page.getByLabel('Type', { exact: true }).fill('');
    await page.getByLabel('Limit').fill('1');
    await page.getByRole('button', { name: 'Load' }).click();
    await expect.poll(() => rows.locator('.type').allTextContents()).toEqual(['alpha.one']);
    await page.getByRole('button', { name: 'Next page' }).click();
    await expect.poll(() => rows.locator('.type').allTextContents()).toEqual(['beta.two']);
    await page.getByLabel('After id').fill('');
    await page.getByLabel('Newest').check();
    await page.getByLabel('Limit').fill('2');
    await page.getByRole('button', { name: 'Load' }).click();
    await expect.poll(() => rows.locator('.type').allTextContents()).toEqual(['alpha.three', 'beta.two']);
    await shoot('history');
    expect(problems).toEqual([]);
  });

  it('publishes with a sandbox token from the form', async () => {
    await openView('publish');
    await page.getByLabel('Sandbox token').fill(await sandboxToken('sb-form'));
    await page.getByLabel('Type', { exact: true }).fill('form.sent');
    await page.getByLabel('Data (a JSON object)').fill('{"from": "the console"}');
    await page.getByRole('button', { name: 'Publish' }).click();
    await page.getByText(/Published form.sent to sb-form as \d+-\d+/).waitFor({ timeout: 10_000 });
    await shoot('publish');
    expect(problems).toEqual([]);
  });

  it('shows connections by transport', async () => {
    const redis = new Redis({ port: daemon.port, host: '127.0.0.1', password: workspaceToken });
    try {
      await redis.subscribe('sb-console-1');
      await openView('connections');
      await expect
        .poll(async () => Number(await page.getByTestId('tcp').textContent()), { timeout: 10_000 })
        .toBeGreaterThan(0);
      await shoot('connections');
    } finally {
      redis.disconnect();
    }
    expect(problems).toEqual([]);
  });

  it('a page on another origin without --http-cors-origin: the daemon warns once, the console says what to do', async () => {
    const records: { msg?: string; origin?: string; fix?: string }[] = [];
    createInterface({ input: daemon.child.stdout! }).on('line', (line) => {
      try {
        records.push(JSON.parse(line) as (typeof records)[number]);
      } catch {}
    });
    // A page of the reader's own, served from another origin (another port), that streams events.
    const apiKeyless = `${base()}/events/sb-cors/stream?token=${workspaceToken}`;
    const other = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(
        `<!doctype html><title>other origin</title><p id="state">connecting</p><script>` +
          `const source = new EventSource(${JSON.stringify(apiKeyless)});` +
          `source.onerror = () => { document.getElementById('state').textContent = 'error, readyState ' + source.readyState; };` +
          `</script>`,
      );
    });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const otherOrigin = `http://127.0.0.1:${(other.address() as { port: number }).port}`;
    const foreign = await browser.newPage();
    try {
      await foreign.goto(`${otherOrigin}/`);
      // The browser gives the page nothing but `error`, and closes the stream for good
      // (readyState 2, CLOSED): a refused CORS check is not retried.
      await foreign.getByText(/^error, readyState/).waitFor({ timeout: 20_000 });
      expect(await foreign.locator('#state').textContent()).toBe('error, readyState 2');
    } finally {
      await foreign.close();
      await new Promise<void>((resolve) => other.close(() => resolve()));
    }
    const refusalsSoFar = () => records.filter((record) => record.msg?.startsWith('cross-origin request refused'));
    // The log line travels through the daemon's stdout pipe: the page's error can come first.
    await expect.poll(() => refusalsSoFar().length, { timeout: 10_000 }).toBeGreaterThan(0);
    const refusals = refusalsSoFar();
    expect(refusals).toHaveLength(1); // once per origin, however often the page retried
    expect(refusals[0]).toMatchObject({ origin: otherOrigin });
    expect(refusals[0]!.fix).toContain(`--http-cors-origin ${otherOrigin}`);
    expect(JSON.stringify(refusals)).not.toContain(workspaceToken);

    await openView('connections');
    const notice = page.getByTestId('cors-refused');
    await notice.waitFor({ timeout: 10_000 });
    expect(await notice.textContent()).toContain('--http-cors-origin');
    await shoot('connections-cors-refused');
    expect(problems).toEqual([]);
  });

  it('resumes a tail after a daemon restart with no lost or repeated rows', async () => {
    await openView('live tail');
    await page.getByLabel('Source').selectOption('sandbox');
    await page.getByLabel('Sandbox id').fill('sb-restart');
    await page.getByRole('button', { name: 'Watch' }).click();
    await page
      .getByTestId('tail-status')
      .filter({ hasText: '/events/sb-restart/stream: open' })
      .waitFor({ timeout: 10_000 });
    await publishOverTcp('sb-restart', [{ type: 'before.restart' }]);
    const rows = page.locator('section[aria-labelledby="tail-title"] li.event');
    await expect.poll(() => rows.locator('.type').allTextContents(), { timeout: 10_000 }).toEqual(['before.restart']);

    const httpPort = daemon.httpPort!;
    restarting = true;
    daemon.child.kill('SIGTERM');
    await daemon.exited;
    // Published while the page is away: the resumed stream must replay them.
    daemon = await spawnDaemon(serveArgs(httpPort));
    await publishOverTcp('sb-restart', [{ type: 'after.one' }, { type: 'after.two' }]);
    await expect
      .poll(() => rows.locator('.type').allTextContents(), { timeout: 15_000 })
      .toEqual(['after.two', 'after.one', 'before.restart']);
    await page.getByTestId('tail-status').filter({ hasText: ': open' }).waitFor({ timeout: 10_000 });
    restarting = false;
    await publishOverTcp('sb-restart', [{ type: 'after.three' }]);
    await expect
      .poll(() => rows.locator('.type').allTextContents(), { timeout: 10_000 })
      .toEqual(['after.three', 'after.two', 'after.one', 'before.restart']);
    expect(problems).toEqual([]);
  });

  it('works at phone width', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await openView('overview');
    await page.locator('section[aria-labelledby="overview-title"] li.event').first().waitFor();
    await shoot('overview-phone');
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
    expect(overflow).toBeLessThanOrEqual(0);
    expect(problems).toEqual([]);
  });
});
