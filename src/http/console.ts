import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HttpError, notFound } from './errors.js';
import type { HttpHost } from './host.js';

/**
 * GET /console: the browser console (docs/console.md), a page and its two assets, built by
 * `npm run build` (scripts/build-console.mjs) into dist/console/ beside this module's
 * compiled form. It is served from the API's own origin, so it needs no CORS, and under a
 * Content-Security-Policy that allows scripts, styles and connections to this origin only
 * and nothing inline (W3C CSP Level 3): a published event's text can't run as script here.
 */

const ASSET_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../console');

const ASSETS: Readonly<Record<string, string>> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

export const CONSOLE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
  'x-content-type-options': 'nosniff',
  // The page's URL never leaves it: no Referer to anywhere (the token is in the fragment,
  // which browsers never send, but no other part of the URL needs to travel either).
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cache-control': 'no-cache',
});

const cache = new Map<string, Buffer>();

async function loadAsset(name: string): Promise<Buffer> {
  let body = cache.get(name);
  if (body === undefined) {
    try {
      body = await readFile(path.join(ASSET_DIR, name));
    } catch {
      throw new HttpError(
        503,
        'CONSOLE_NOT_BUILT',
        'the console assets are missing: run `npm run build` (scripts/build-console.mjs)',
      );
    }
    cache.set(name, body);
  }
  return body;
}

/** `/console` and `/console/` are the page; `/console/<asset>` its script and style sheet. */
export async function serveConsole(
  host: HttpHost,
  _req: IncomingMessage,
  res: ServerResponse,
  _url: URL,
  params: string[],
): Promise<void> {
  if (!host.settings.console) throw notFound();
  const name = params[0] === undefined || params[0] === '' ? 'index.html' : params[0];
  const contentType = ASSETS[name];
  if (contentType === undefined) throw notFound();
  const body = await loadAsset(name);
  res.writeHead(200, {
    ...CONSOLE_HEADERS,
    'content-type': contentType,
    'content-length': String(body.length),
  });
  res.end(body);
}
