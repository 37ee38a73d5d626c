import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { perTest, startWithConfig, writeJson } from '../config/support.js';
import { freePort } from '../scale/support.js';

/**
 * A browser page on an origin --http-cors-origin does not allow gets no answer it can read and
 * no reason (docs/http.md, "Browsers on another origin"), so the daemon says it: one warning
 * per origin with the setting that fixes it, and a count. Allowed origins, the daemon's own
 * origin and requests without Origin (curl, servers) are not warned about.
 */

const BASE = { port: 0, store: 'memory', 'jwt-secret': 'cors-secret-0123456789-0123456789-0123', 'log-level': 'info' };
const harness = perTest();
const configFile = (): string => path.join(harness.dir, 'sandbox-events.json');

async function get(httpPort: number, route: string, origin?: string): Promise<Response> {
  const response = await fetch(`http://127.0.0.1:${httpPort}${route}`, {
    headers: origin === undefined ? {} : { origin },
  });
  await response.text();
  return response;
}

const REFUSED = 'cross-origin request refused: the browser hides the answer from the page';

describe('cross-origin requests refused for lack of --http-cors-origin', () => {
  it('are warned about once per origin, with the fix, and counted; allowed and same-origin ones are not', async () => {
    writeJson(configFile(), { ...BASE, 'http-cors-origin': 'https://ok.example' });
    const httpPort = await freePort();
    const daemon = await startWithConfig(harness.dir, configFile(), ['--http-port', String(httpPort)]);
    const refusals = () => daemon.records.filter((record) => record.msg === REFUSED);

    const allowed = await get(httpPort, '/healthz', 'https://ok.example');
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://ok.example');
    await get(httpPort, '/healthz', `http://127.0.0.1:${httpPort}`); // the console's own origin
    await get(httpPort, '/healthz'); // no Origin: not a browser page
    for (let i = 0; i < 3; i += 1) {
      const refused = await get(httpPort, '/events/sb-1/stream?token=secret-looking', 'https://app.example');
      expect(refused.headers.get('access-control-allow-origin')).toBeNull();
    }
    await get(httpPort, '/healthz', 'null'); // a sandboxed frame or a file: another origin too

    // The records come in order: the metrics line below is written after every refusal above.
    const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    expect(metrics).toMatch(/^sandbox_events_http_cors_refused_total 4$/m);
    await daemon.record((record) => record.msg === REFUSED && record.origin === 'null');
    expect(refusals().map((record) => record.origin)).toEqual(['https://app.example', 'null']);
    expect(refusals()[0]).toMatchObject({
      level: 40,
      transport: 'http',
      method: 'GET',
      path: '/events/sb-1/stream',
      fix: 'start the daemon with --http-cors-origin https://app.example (or add it to http-cors-origin) to let pages there read the API',
    });
    expect(JSON.stringify(daemon.records)).not.toContain('secret-looking');

    // A reload that still refuses the origin says so again, once; one that allows it is quiet.
    writeJson(configFile(), { ...BASE, 'http-cors-origin': 'https://ok.example, https://other.example' });
    expect((await daemon.reload()).msg).toBe('config reloaded');
    await get(httpPort, '/healthz', 'https://app.example');
    await get(httpPort, '/healthz', 'https://app.example');
    await get(httpPort, '/healthz', 'https://other.example');
    await daemon.record((record) => record.msg === REFUSED, daemon.records.indexOf(refusals()[1]!) + 1);
    const stream = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    expect(stream).toMatch(/^sandbox_events_http_cors_refused_total 6$/m);
    expect(refusals().map((record) => record.origin)).toEqual(['https://app.example', 'null', 'https://app.example']);

    // At most 100 origins are named (app.example is one): the rest are counted only.
    for (let i = 0; i < 120; i += 1) await get(httpPort, '/healthz', `https://site-${i}.example`);
    const before = (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    expect(await before).toMatch(/^sandbox_events_http_cors_refused_total 126$/m);
    const reloaded = await daemon.reload(); // a record written after every warning above
    const named = daemon.records
      .slice(0, daemon.records.indexOf(reloaded))
      .filter((record) => record.msg === REFUSED && String(record.origin).startsWith('https://site-'));
    expect(named.map((record) => record.origin)).toEqual(
      Array.from({ length: 99 }, (_, i) => `https://site-${i}.example`),
    );
  });
});
