import type { IncomingMessage } from 'node:http';
import { HttpError } from './errors.js';

function tooLarge(limit: number): HttpError {
  // `connection: close`: the rest of the body is never read, so this connection can't carry
  // another request.
  return new HttpError(413, 'EVENT_TOO_LARGE', `request body too large (limit ${limit} bytes)`, {
    connection: 'close',
  });
}

/** Refuses a declared Content-Length over `limit` before a byte of the body is read. */
export function checkDeclaredLength(req: IncomingMessage, limit: number): void {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw tooLarge(limit);
}

/**
 * Reads a request body of at most `limit` bytes. A declared Content-Length over the limit is
 * refused before a byte of the body is read; a chunked body is refused as soon as it passes
 * the limit. Either way the rest is never read (docs/http.md, "POST /events"): the connection is closed after the
 * 413 instead.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const encoding = req.headers['content-encoding'];
  if (encoding !== undefined && encoding !== 'identity') {
    return Promise.reject(
      new HttpError(415, 'UNSUPPORTED_ENCODING', 'compressed request bodies are not accepted', { connection: 'close' }),
    );
  }
  try {
    checkDeclaredLength(req, limit);
  } catch (error) {
    return Promise.reject(error);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        cleanUp();
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanUp();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onAborted = (): void => {
      cleanUp();
      reject(new HttpError(400, 'BODY_INCOMPLETE', 'the request body ended early'));
    };
    const cleanUp = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onAborted);
      req.off('aborted', onAborted);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onAborted);
    req.on('aborted', onAborted);
  });
}
