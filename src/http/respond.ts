import type { ServerResponse } from 'node:http';
import type { HttpError } from './errors.js';

/** The headers of every JSON answer (a paced one has no content-length: it is chunked). */
export const JSON_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
} as const;

/** Sends a JSON body (already serialised) with the headers every JSON answer carries. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    // Too late for a status line: the client sees the response cut short instead.
    res.destroy();
    return;
  }
  res.writeHead(status, {
    ...JSON_HEADERS,
    'content-length': String(Buffer.byteLength(body)),
    ...headers,
  });
  res.end(body);
}

export function sendError(res: ServerResponse, error: HttpError): void {
  sendJson(
    res,
    error.status,
    JSON.stringify({ error: error.message, code: error.code, ...error.extra }),
    error.headers,
  );
}

export function sendText(res: ServerResponse, status: number, body: string, contentType: string): void {
  res.writeHead(status, {
    'content-type': contentType,
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
}
