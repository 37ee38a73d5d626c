/**
 * `serve --metrics-token <secret>` (docs/http.md, "GET /metrics"): /metrics needs that token or
 * an admin credential; /metrics/stream gives the broker-wide figures only to those, and a
 * tenant's credential its own workspaces' figures only. Through the real daemon.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';
import { freePort } from '../scale/support.js';
import { killDaemons, spawnDaemon } from '../support/daemon.js';

const SECRET = 'metrics-token-test-secret-0123456789abcdef';
const METRICS_TOKEN = 'scrape-me-0123456789';
let dataDir: string;
let base: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-metrics-token-'));
  const httpPort = await freePort();
  await spawnDaemon([
    ...['--port', '0', '--http-port', String(httpPort), '--data-dir', dataDir, '--store', 'memory'],
    ...['--jwt-secret', SECRET, '--metrics-token', METRICS_TOKEN],
  ]);
  base = `http://127.0.0.1:${httpPort}`;
});
afterAll(async () => {
  killDaemons();
  await rm(dataDir, { recursive: true, force: true });
});

const token = (role: 'admin' | 'workspace', workspaceId = 3): Promise<string> =>
  mintToken({ secret: SECRET, workspaceId, role, ttlSeconds: 600 });
const bearer = (credential: string) => ({ authorization: `Bearer ${credential}` });

/** The first `event: metrics` of /metrics/stream, parsed; the stream is closed after it. */
async function firstSnapshot(query: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${base}/metrics/stream${query}`);
  expect(response.status).toBe(200);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the stream ended without a snapshot: ${text}`);
      text += decoder.decode(value, { stream: true });
      const match = /event: metrics\ndata: (.*)\n\n/.exec(text);
      if (match !== null) return JSON.parse(match[1]!) as Record<string, unknown>;
    }
  } finally {
    await reader.cancel();
  }
}

it('/metrics answers 401 without a credential, 403 to a tenant, 200 to the metrics token or an admin', async () => {
  const anonymous = await fetch(`${base}/metrics`);
  expect(anonymous.status).toBe(401);
  expect(((await anonymous.json()) as { code: string }).code).toBe('UNAUTHENTICATED');
  expect((await fetch(`${base}/metrics`, { headers: bearer('not-the-token') })).status).toBe(401);
  const tenant = await fetch(`${base}/metrics`, { headers: bearer(await token('workspace')) });
  expect(tenant.status).toBe(403);
  expect(((await tenant.json()) as { code: string }).code).toBe('NO_PERMISSION');
  for (const credential of [METRICS_TOKEN, await token('admin')]) {
    const scraped = await fetch(`${base}/metrics`, { headers: bearer(credential) });
    expect(scraped.status).toBe(200);
    expect(await scraped.text()).toContain('sandbox_events_connections');
  }
});

it("/metrics/stream: a tenant gets its workspace's figures only; the token and an admin the whole broker", async () => {
  expect((await fetch(`${base}/metrics/stream`)).status).toBe(401);
  const tenant = await firstSnapshot(`?token=${await token('workspace')}`);
  expect(Object.keys(tenant).sort()).toEqual(['timestamp', 'workspaces']);
  expect(tenant.workspaces).toEqual([expect.objectContaining({ workspaceId: 3 })]);

  const scraper = await firstSnapshot(`?token=${METRICS_TOKEN}`);
  expect(scraper).toHaveProperty('connections');
  expect(scraper).toHaveProperty('events');
  expect(scraper).not.toHaveProperty('workspaces');
  const admin = await firstSnapshot(`?token=${await token('admin')}`);
  expect(admin).toHaveProperty('connections');
  expect(admin).toHaveProperty('workspaces');
});
