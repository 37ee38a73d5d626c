import type { RespClient } from './client.js';
import { errorText } from './errors.js';

/**
 * The error line for an error a command raised (errors.ts, errorText), for any RESP client.
 * errorText is still typed against the connection class; it reads only members RespClient has.
 */
export function errorLine(error: unknown, client: RespClient): string {
  return errorText(error, client as unknown as Parameters<typeof errorText>[1]);
}
