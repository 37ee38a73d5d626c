import Parser from 'redis-parser';

/**
 * Reads the broker's replies from raw socket bytes: pure, no sockets.
 *
 * The client speaks RESP3 (after `HELLO 3`), because RESP3 is what lets one connection stay
 * subscribed and still send AUTH (token refresh), PUBLISH and HISTORY, and because it tells
 * out-of-band pushes (`>`) from command replies. redis-parser decodes RESP2 only, so a small
 * header pass goes first: it walks the frame headers (never the payloads), rewrites the RESP3
 * types to their RESP2 shape (`>`/`~` → `*`, `%n` → `*2n`, `_` → `$-1`, `#t` → `:1`, `,`/`(` →
 * a bulk string, `!` → `-`), records for each top-level frame whether it was a push, and hands
 * the bytes to redis-parser. Bulk payloads pass through as slices of the socket's Buffers;
 * redis-parser joins them before decoding UTF-8, so a character split across TCP chunks stays
 * whole. Sizes are capped and nesting is tracked with an explicit stack, never recursion.
 */

/** A decoded RESP value (maps arrive flattened as `[key, value, key, value, ...]`). */
export type RespValue = string | number | null | RespValue[];

export type Frame =
  /** Out-of-band data: pub/sub messages and (un)subscribe/resume confirmations. */
  | { kind: 'push'; value: RespValue[] }
  /** The reply to a command. */
  | { kind: 'reply'; value: RespValue }
  /** An error reply, without `-` and CRLF. */
  | { kind: 'error'; message: string };

export interface ReplyReaderLimits {
  /** Largest bulk string (default 64 MiB: HISTORY returns up to 1,000 events of 64 KiB). */
  maxBulkBytes: number;
  /** Longest header, simple string or error line (default 64 KiB). */
  maxLineBytes: number;
  /** Most elements in one aggregate (default 1,048,576). */
  maxElements: number;
  /** Deepest nesting (default 16; the broker nests at most 2). */
  maxDepth: number;
}

export const DEFAULT_READER_LIMITS: Readonly<ReplyReaderLimits> = Object.freeze({
  maxBulkBytes: 64 * 1024 * 1024,
  maxLineBytes: 64 * 1024,
  maxElements: 1024 * 1024,
  maxDepth: 16,
});

/** The bytes are not RESP, or exceed a limit. The connection cannot be trusted past this. */
export class RespProtocolError extends Error {
  override readonly name = 'RespProtocolError';
}

const CR = 13;
const LF = 10;
const NULL_BULK = Buffer.from('$-1\r\n', 'latin1');
const TRUE = Buffer.from(':1\r\n', 'latin1');
const FALSE = Buffer.from(':0\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');

type Mode = 'header' | 'body' | 'blobError';

export class ReplyReader {
  private readonly limits: ReplyReaderLimits;
  private readonly parser: Parser;
  private mode: Mode = 'header';
  /** Pieces of a header line that spans chunks. */
  private linePieces: Buffer[] = [];
  private lineLength = 0;
  /** Bytes of the current bulk (or blob error) still to come, CRLF included. */
  private bodyLeft = 0;
  private blobPieces: Buffer[] = [];
  /** Elements still missing in each open aggregate, innermost last. */
  private readonly open: number[] = [];
  /** For each top-level frame seen but not yet returned by the parser: was it a push? */
  private kinds: boolean[] = [];
  private kindsHead = 0;
  private fatal: Error | undefined;
  private closed = false;

  constructor(
    private readonly onFrame: (frame: Frame) => void,
    limits: Partial<ReplyReaderLimits> = {},
  ) {
    this.limits = { ...DEFAULT_READER_LIMITS, ...limits };
    this.parser = new Parser({
      returnBuffers: false,
      returnReply: (reply: unknown) => this.emit(normalize(reply), false),
      returnError: (error: Error) => this.emit(error.message, true),
      returnFatalError: (error: Error) => {
        this.fatal = error;
      },
    });
  }

  /** Stops delivering frames (the connection is being torn down mid-chunk). */
  close(): void {
    this.closed = true;
  }

  /** Feeds received bytes; frames are delivered synchronously. Throws RespProtocolError. */
  feed(chunk: Buffer): void {
    if (this.closed || chunk.length === 0) return;
    const out: Buffer[] = [];
    this.scan(chunk, out);
    if (out.length === 0) return;
    this.parser.execute(out.length === 1 ? out[0]! : Buffer.concat(out));
    if (this.fatal !== undefined && !this.closed) {
      throw new RespProtocolError(`unparseable reply: ${this.fatal.message}`);
    }
  }

  private emit(value: RespValue, isError: boolean): void {
    const push = this.kinds[this.kindsHead] === true;
    this.kindsHead += 1;
    if (this.kindsHead > 1024 && this.kindsHead * 2 > this.kinds.length) {
      this.kinds = this.kinds.slice(this.kindsHead);
      this.kindsHead = 0;
    }
    if (this.closed) return;
    if (isError) this.onFrame({ kind: 'error', message: value as string });
    else if (push && Array.isArray(value)) this.onFrame({ kind: 'push', value });
    else this.onFrame({ kind: 'reply', value });
  }

  /** Walks `chunk`, appending the RESP2 bytes for redis-parser to `out`. */
  private scan(chunk: Buffer, out: Buffer[]): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.mode === 'body') {
        const take = Math.min(this.bodyLeft, chunk.length - at);
        out.push(chunk.subarray(at, at + take));
        this.bodyLeft -= take;
        at += take;
        if (this.bodyLeft === 0) this.mode = 'header';
        continue;
      }
      if (this.mode === 'blobError') {
        const take = Math.min(this.bodyLeft, chunk.length - at);
        this.blobPieces.push(chunk.subarray(at, at + take));
        this.bodyLeft -= take;
        at += take;
        if (this.bodyLeft === 0) {
          const blob = Buffer.concat(this.blobPieces);
          this.blobPieces = [];
          this.mode = 'header';
          const text = blob
            .subarray(0, blob.length - 2)
            .toString('utf8')
            .replace(/[\r\n]/g, ' ');
          out.push(Buffer.from(`-${text}\r\n`));
        }
        continue;
      }
      const lf = chunk.indexOf(LF, at);
      const end = lf === -1 ? chunk.length : lf + 1;
      this.lineLength += end - at;
      if (this.lineLength > this.limits.maxLineBytes) throw new RespProtocolError('reply line too long');
      if (lf === -1) {
        this.linePieces.push(chunk.subarray(at));
        return;
      }
      let line = chunk.subarray(at, end);
      if (this.linePieces.length > 0) {
        this.linePieces.push(line);
        line = Buffer.concat(this.linePieces);
        this.linePieces = [];
      }
      this.lineLength = 0;
      at = end;
      this.header(line, out);
    }
  }

  private header(line: Buffer, out: Buffer[]): void {
    if (line.length < 3 || line[line.length - 2] !== CR) throw new RespProtocolError('reply line without CRLF');
    const type = line[0]!;
    const topLevel = this.open.length === 0;
    if (topLevel) this.kinds.push(type === 0x3e /* > */);
    switch (type) {
      case 0x2b: // + simple string
      case 0x2d: // - error
      case 0x3a: // : integer
        out.push(line);
        this.completeElement();
        return;
      case 0x24: // $ bulk string
      case 0x3d: {
        // = verbatim string (`txt:...`): a bulk string for RESP2
        const length = this.count(line, this.limits.maxBulkBytes);
        out.push(type === 0x24 ? line : Buffer.from(`$${length}\r\n`, 'latin1'));
        if (length >= 0) {
          this.mode = 'body';
          this.bodyLeft = length + 2;
        }
        this.completeElement();
        return;
      }
      case 0x21: {
        // ! blob error: gathered and sent on as a simple error line
        const length = this.count(line, this.limits.maxLineBytes);
        if (length < 0) throw new RespProtocolError('negative blob error length');
        this.mode = 'blobError';
        this.bodyLeft = length + 2;
        this.completeElement();
        return;
      }
      case 0x2a: // * array
      case 0x3e: // > push
      case 0x7e: {
        // ~ set
        const length = this.count(line, this.limits.maxElements);
        out.push(type === 0x2a ? line : Buffer.from(`*${length}\r\n`, 'latin1'));
        this.aggregate(length);
        return;
      }
      case 0x25: {
        // % map: a flat array of keys and values
        const pairs = this.count(line, this.limits.maxElements / 2);
        if (pairs < 0) throw new RespProtocolError('negative map length');
        out.push(Buffer.from(`*${pairs * 2}\r\n`, 'latin1'));
        this.aggregate(pairs * 2);
        return;
      }
      case 0x5f: // _ null
        out.push(NULL_BULK);
        this.completeElement();
        return;
      case 0x23: {
        // # boolean
        const value = line.toString('latin1', 1, line.length - 2);
        if (value !== 't' && value !== 'f') throw new RespProtocolError('invalid boolean');
        out.push(value === 't' ? TRUE : FALSE);
        this.completeElement();
        return;
      }
      case 0x2c: // , double
      case 0x28: {
        // ( big number: both as text
        const text = line.subarray(1, line.length - 2);
        out.push(Buffer.from(`$${text.length}\r\n`, 'latin1'), text, CRLF);
        this.completeElement();
        return;
      }
      default:
        // `|` attributes and anything unknown: the broker never sends them.
        throw new RespProtocolError(`unexpected reply type ${JSON.stringify(String.fromCharCode(type))}`);
    }
  }

  /** The `<n>` of a header: -1 (null) up to `max`. */
  private count(line: Buffer, max: number): number {
    const text = line.toString('latin1', 1, line.length - 2);
    if (!/^(?:-1|\d{1,10})$/.test(text))
      throw new RespProtocolError(`invalid length ${JSON.stringify(text.slice(0, 16))}`);
    const value = Number(text);
    if (value > max) throw new RespProtocolError(`length ${value} over the limit ${max}`);
    return value;
  }

  private aggregate(length: number): void {
    if (length <= 0) {
      this.completeElement(); // null or empty: complete at once
      return;
    }
    if (this.open.length >= this.limits.maxDepth) throw new RespProtocolError('reply nested too deep');
    this.open.push(length);
  }

  /** One element finished: count it against the innermost aggregate, closing finished ones. */
  private completeElement(): void {
    while (this.open.length > 0) {
      const last = this.open.length - 1;
      const left = this.open[last]! - 1;
      if (left > 0) {
        this.open[last] = left;
        return;
      }
      this.open.pop(); // this aggregate is complete, which completes an element of its parent
    }
  }
}

/**
 * redis-parser returns an error nested in an array as an Error object; the broker never nests
 * errors, but a value must stay a RespValue. Depth is bounded by `maxDepth`.
 */
function normalize(value: unknown): RespValue {
  if (Array.isArray(value)) return value.map(normalize);
  if (value instanceof Error) return value.message;
  return value as string | number | null;
}

/** A command as a RESP array of bulk strings (lengths in bytes). */
export function encodeCommand(args: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`, 'latin1')];
  for (const arg of args) {
    const body = Buffer.from(arg, 'utf8');
    parts.push(Buffer.from(`$${body.length}\r\n`, 'latin1'), body, CRLF);
  }
  return Buffer.concat(parts);
}
