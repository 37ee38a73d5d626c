/**
 * Streaming decoder of client requests (RESP arrays of bulk strings, or inline lines), with the
 * framing and limits of Redis 7's networking.c (processMultibulkBuffer, processInlineBuffer).
 * Pure: bytes in, commands out; no sockets.
 *
 * A multibulk is validated here header by header, jumping over bulk bodies as Redis does; that
 * one scan also notes where each body starts and how long it is, so a complete frame's
 * arguments are sliced straight out of its bytes. There is no second parser of the same frame:
 * handing it to redis-parser (a reply parser, which would accept any type, nesting or size, and
 * so could only run after this scan) read every header a second time: a fifth of the
 * decoding's CPU per PUBLISH (docs/performance.md, "Sixth round"). Nothing nests, nothing
 * recurses.
 */
import { constants } from 'node:buffer';
import { SandboxEventsError } from '../errors.js';
import { splitInlineArgs } from './inline.js';
import { RepeatedText } from './repeated-text.js';

export interface DecoderLimits {
  /** Most arguments in one command (multibulk count, and inline word count). */
  maxArgs: number;
  /** Largest single bulk string. */
  maxBulkBytes: number;
  /** Longest inline line, and longest `*<n>` / `$<n>` header line. */
  maxInlineBytes: number;
  /** Largest whole request (a whole multibulk frame, or one inline line). */
  maxRequestBytes: number;
}

/** `message` is the text that follows `-ERR ` in the reply, e.g. "Protocol error: invalid bulk length". */
export class ProtocolError extends SandboxEventsError {
  constructor(message: string) {
    super('PROTOCOL_ERROR', message);
  }
}

/**
 * One decoded command. A decoder made with `reuseCommands` hands out the same object, with the
 * same `args` and `byteLengths` arrays, for the multibulk commands of one burst of input: each
 * is valid only until the next call to `next()`.
 */
export interface DecodedCommand {
  /** UTF-8 decoded arguments, args.length >= 1. */
  args: string[];
  /** True when it came as an inline command. */
  inline: boolean;
  /** Byte length of each argument as received. */
  byteLengths: number[];
  /**
   * For a command the decoder was told takes its last argument as bytes (its
   * `lastArgumentAsBytes`: PUBLISH's event), the bytes received that hold it, not decoded: it
   * is `lastBytes[lastStart, lastStart + byteLengths[last])` (no view is made of it alone), and
   * its entry in `args` is the empty string. Undefined for every other command.
   */
  lastBytes: Buffer | undefined;
  lastStart: number | undefined;
}

/** Whether the command of this name (its first argument, as sent) takes its last argument as bytes. */
export type LastArgumentAsBytes = (name: string) => boolean;

const NEVER: LastArgumentAsBytes = () => false;

const CR = 0x0d;
const LF = 0x0a;
const STAR = 0x2a;
const DOLLAR = 0x24;
const MINUS = 0x2d;
const ZERO = 0x30;
const NINE = 0x39;

const MAX_STRING_LENGTH = constants.MAX_STRING_LENGTH;
const NON_ASCII = /[^\x00-\x7f]/;

/** Reads up to this size are coalesced while a request is pending (see push). */
const COALESCE_MAX_BYTES = 1024;
const SLAB_BYTES = 16 * 1024;

/**
 * Longest first or second argument whose text is remembered (a command's name, a channel: most
 * sandbox ids are far shorter than the 256 characters allowed). Every connection holds two such
 * copies, and V8 keeps a typed array of up to 64 bytes in its heap: a larger one is a backing
 * store of its own, about 1.2 KiB more per idle connection for two of 300 bytes
 * (`npm run bench`, case 5). A longer argument is decoded every time, as it was before.
 */
const REPEATED_ARG_BYTES = 64;

/** What `lengths` is before the first multibulk: never written to (frozen, so a write would throw). */
const NO_LENGTHS: number[] = Object.freeze([]) as unknown as number[];

/** Smallest possible bulk, `$0\r\n\r\n`: lets the request limit fail before bodies arrive. */
const MIN_BULK_BYTES = 6;

// Scanner states for the request at the front of the buffer.
const ST_START = 0; // first byte decides multibulk or inline
const ST_MB_LINE = 1; // in `*<n>` before its CR
const ST_MB_LF = 2; // the byte after that CR (skipped unchecked, as Redis does)
const ST_BULK_START = 3; // expecting `$`
const ST_BULK_LINE = 4; // in `$<len>` before its CR
const ST_BULK_SKIP = 5; // the byte after CR, the body and its CRLF (skipped unchecked)
const ST_INLINE = 6; // looking for LF

const MSG_MBULK_COUNT_TOO_BIG = 'Protocol error: too big mbulk count string';
const MSG_INVALID_MBULK = 'Protocol error: invalid multibulk length';
const MSG_BULK_COUNT_TOO_BIG = 'Protocol error: too big bulk count string';
const MSG_INVALID_BULK = 'Protocol error: invalid bulk length';
const MSG_TOO_LARGE = 'Protocol error: request too large';
const MSG_INLINE_TOO_BIG = 'Protocol error: too big inline request';
const MSG_UNBALANCED = 'Protocol error: unbalanced quotes in request';
const MSG_TOO_MANY_INLINE = 'Protocol error: too many arguments in inline request';

/** Buffer to string, refusing (rather than throwing RangeError) past V8's string length. */
function latin1(bytes: Buffer): string {
  if (bytes.length > MAX_STRING_LENGTH) throw new ProtocolError(MSG_TOO_LARGE);
  return bytes.toString('latin1');
}

function utf8(bytes: Buffer, start = 0, end = bytes.length): string {
  if (end - start > MAX_STRING_LENGTH) throw new ProtocolError(MSG_TOO_LARGE);
  return bytes.toString('utf8', start, end);
}

/** Where the digits read by the last readLength end: their CR. */
let lengthEnd = 0;

/**
 * The length written at `buf[start..]` up to its CR (wholeFrame's fast path): a plain decimal
 * of 1 to 9 digits without a leading zero, `lengthEnd` then being the CR's index; or -1 for
 * anything else (a longer number among them), or when no CR is buffered, for scanLine to decide.
 */
function readLength(buf: Buffer, start: number, end: number): number {
  let i = start;
  let value = 0;
  for (; i < end; i++) {
    const b = buf[i]!;
    if (b === CR) break;
    if (b < ZERO || b > NINE || i - start === 9 || (value === 0 && i > start)) return -1;
    value = value * 10 + (b - ZERO);
  }
  if (i === end || i === start) return -1;
  lengthEnd = i;
  return value;
}

export interface RequestDecoderOptions {
  /**
   * Hand out one DecodedCommand (and its `args` and `byteLengths`) again for the next multibulk
   * command of the same burst of input, rather than three new objects per command: for a caller
   * that is done with a command before it asks for the next one and keeps none of the three
   * (the Connection; docs/performance.md, "Eleventh round: the PUBLISH's command objects").
   * Once the input runs out (`next()` answers undefined) nothing is kept, so an idle connection
   * holds none of them and no received bytes.
   */
  reuseCommands?: boolean;
}

export class RequestDecoder {
  private readonly reuseCommands: boolean;
  /** The multibulk command handed out last, to fill again (reuseCommands), until the input runs out. */
  private reusable: DecodedCommand | undefined = undefined;

  /**
   * `lastArgumentAsBytes`: the commands whose last argument is handed over as the bytes
   * received (DecodedCommand.lastBytes) instead of decoded, because they only pass it through:
   * PUBLISH's event goes to the store as bytes (docs/performance.md, "Seventh round").
   */
  constructor(
    private readonly lastArgumentAsBytes: LastArgumentAsBytes = NEVER,
    options: RequestDecoderOptions = {},
  ) {
    this.reuseCommands = options.reuseCommands === true;
  }

  /**
   * The first two arguments of the last multibulks (a command's name, its channel or key). Two
   * fields, not a pair in an array literal: one object less per connection, and no allocation
   * site for V8 to move to the old generation in a connection storm, which discards the
   * optimized code allocating there (docs/performance.md, "Tenth round: the first storm").
   */
  private readonly repeatedName = new RepeatedText(REPEATED_ARG_BYTES);
  private readonly repeatedSecond = new RepeatedText(REPEATED_ARG_BYTES);
  /** The name of the last multibulk command, and whether it takes its last argument as bytes. */
  private lastName = '';
  private lastNameTakesBytes = false;

  /** Received chunks; the unconsumed bytes start at `head` in chunks[0]. */
  private chunks: Buffer[] = [];
  private head = 0;
  private total = 0;

  /**
   * Small reads that arrive while a request is pending are copied into a slab, so a peer that
   * trickles bytes one by one costs bytes, not one Buffer object per byte.
   */
  private slab: Buffer | undefined;
  private slabUsed = 0;
  private slabStart = 0;
  private tailInSlab = false;

  // Scan position of the front request: chunks[ci][co] is the next byte not yet looked at. It
  // may rest at the end of the last chunk, which can still grow (see push).
  private ci = 0;
  private co = 0;
  private state = ST_START;
  /** Bytes of the front request before the current header line (or all scanned, in bodies). */
  private reqBytes = 0;

  // Current `*<n>` / `$<len>` header line, parsed as it streams past (string2ll rules).
  private lineLen = 0;
  private num = 0;
  private digits = 0;
  private negative = false;
  private leadingZero = false;
  private badNumber = false;

  private count = 0; // the multibulk's `<n>`
  private bulksLeft = 0;
  private skip = 0;
  /**
   * The body length of each bulk of the front multibulk, a new array per multibulk
   * (DecodedCommand.byteLengths); a shared empty one until the first.
   */
  private lengths: number[] = NO_LENGTHS;
  /**
   * Where each bulk's body starts, from the start of the frame: entry i is the body of
   * `lengths[i]` (written over from one request to the next, never cleared).
   */
  private readonly bodyStarts: number[] = [];

  // Inline line being searched for its LF.
  private lastWasCR = false;

  private failure: ProtocolError | undefined;

  /** Bytes received and not yet consumed. */
  get bufferedBytes(): number {
    return this.total;
  }

  /** Append received bytes. */
  push(chunk: Buffer): void {
    const n = chunk.length;
    if (n === 0) return;
    this.total += n;
    if (n > COALESCE_MAX_BYTES || this.chunks.length === 0) {
      this.chunks.push(chunk); // the common case: no copy
      this.tailInSlab = false;
      return;
    }
    let slab = this.slab;
    if (this.tailInSlab && slab && this.slabUsed + n <= slab.length) {
      // Grow the last chunk in place; the scan position stays valid.
      chunk.copy(slab, this.slabUsed);
      this.slabUsed += n;
      this.chunks[this.chunks.length - 1] = slab.subarray(this.slabStart, this.slabUsed);
      return;
    }
    if (!slab || this.slabUsed + n > slab.length) {
      slab = this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.slabUsed = 0;
    }
    this.slabStart = this.slabUsed;
    chunk.copy(slab, this.slabUsed);
    this.slabUsed += n;
    this.chunks.push(slab.subarray(this.slabStart, this.slabUsed));
    this.tailInSlab = true;
  }

  /** Drop everything buffered. */
  reset(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
    this.releaseSlab();
    this.reusable = undefined;
    this.failure = undefined;
    this.startRequest();
  }

  /**
   * The next complete command, or undefined when more bytes are needed. Decodes one command per
   * call, with the limits in force for it. Throws ProtocolError; the decoder is then unusable.
   */
  next(limits: DecoderLimits): DecodedCommand | undefined {
    if (this.failure) throw this.failure;
    try {
      for (;;) {
        if (!this.hasByte()) return this.inputRanOut();
        if (this.state === ST_START) {
          const first = this.chunks[this.ci]![this.co];
          if (first === STAR) {
            const frameLength = this.ci === 0 ? this.wholeFrame(limits) : 0;
            if (frameLength > 0) return this.multibulkCommand(frameLength);
            this.state = ST_MB_LINE;
            this.beginLine();
            this.advance(1);
            this.checkLine(limits, MSG_MBULK_COUNT_TOO_BIG);
          } else {
            this.state = ST_INLINE;
            this.lastWasCR = false;
          }
          continue;
        }
        if (this.state === ST_INLINE) {
          const line = this.scanInline(limits);
          if (line === undefined) return this.inputRanOut();
          const command = this.inlineCommand(line, limits);
          if (command) return command;
          continue; // networking.c: an empty line is no command
        }
        const frameLength = this.scanMultibulk(limits);
        if (frameLength === undefined) return this.inputRanOut();
        if (this.count <= 0) {
          // networking.c: `*0` and `*-10` are consumed and ignored, as Redis does.
          this.consume(frameLength);
          continue;
        }
        return this.multibulkCommand(frameLength);
      }
    } catch (err) {
      if (err instanceof ProtocolError) this.failure = err;
      throw err;
    }
  }

  /** No whole command is buffered: the reused command goes (reuseCommands), with the bytes it points into. */
  private inputRanOut(): undefined {
    this.reusable = undefined;
    return undefined;
  }

  private startRequest(): void {
    this.ci = 0;
    this.co = this.head;
    this.state = ST_START;
    this.reqBytes = 0;
  }

  private beginLine(): void {
    this.lineLen = 1; // the `*` or `$`
    this.num = 0;
    this.digits = 0;
    this.negative = false;
    this.leadingZero = false;
    this.badNumber = false;
  }

  /** True when chunks[ci][co] is buffered, stepping over chunk ends. */
  private hasByte(): boolean {
    const chunks = this.chunks;
    while (this.ci < chunks.length) {
      if (this.co < chunks[this.ci]!.length) return true;
      if (this.ci + 1 === chunks.length) return false;
      this.ci++;
      this.co = 0;
    }
    return false;
  }

  /** Move the scan position forward by `n` bytes that are known to be buffered. */
  private advance(n: number): void {
    let co = this.co + n;
    let len = this.chunks[this.ci]!.length;
    while (co > len) {
      co -= len;
      len = this.chunks[++this.ci]!.length;
    }
    this.co = co;
  }

  /**
   * A header line may not pass maxInlineBytes (Redis's PROTO_INLINE_MAX_SIZE check) nor take the
   * request past maxRequestBytes. The message is the one for whichever bound is smaller, so the
   * outcome does not depend on how the bytes were split into chunks.
   */
  private checkLine(limits: DecoderLimits, tooBig: string): void {
    const requestRoom = limits.maxRequestBytes - this.reqBytes;
    if (this.lineLen > limits.maxInlineBytes || this.lineLen > requestRoom) {
      throw new ProtocolError(limits.maxInlineBytes <= requestRoom ? tooBig : MSG_TOO_LARGE);
    }
  }

  /**
   * Scan the header line in the current chunk up to its CR, parsing the number on the way.
   * Returns true once the CR has been passed.
   */
  private scanLine(limits: DecoderLimits, tooBig: string): boolean {
    const buf = this.chunks[this.ci]!;
    const end = buf.length;
    let i = this.co;
    for (; i < end; i++) {
      const b = buf[i]!;
      if (b === CR) break;
      this.lineLen++;
      this.checkLine(limits, tooBig);
      if (b === MINUS && this.lineLen === 2) {
        this.negative = true;
      } else if (b < ZERO || b > NINE || this.leadingZero) {
        // util.c string2ll: digits only, no sign but a leading '-', no leading zero, no spaces.
        this.badNumber = true;
      } else {
        if (this.digits === 0 && b === ZERO) this.leadingZero = true;
        this.digits++;
        if (!this.badNumber) {
          this.num = this.num * 10 + (b - ZERO);
          if (this.num > Number.MAX_SAFE_INTEGER) this.badNumber = true;
        }
      }
    }
    if (i === end) {
      this.co = end;
      return false;
    }
    this.advance(i - this.co + 1);
    return true;
  }

  /** The value of the header line just scanned, or undefined when it is not a strict integer. */
  private lineNumber(): number | undefined {
    if (this.badNumber || this.digits === 0) return undefined;
    if (this.negative) return this.leadingZero ? undefined : -this.num; // "-0" is refused too
    return this.num;
  }

  /** Returns the frame length once the whole multibulk is buffered and valid. */
  private scanMultibulk(limits: DecoderLimits): number | undefined {
    while (this.hasByte()) {
      switch (this.state) {
        case ST_MB_LINE: {
          if (!this.scanLine(limits, MSG_MBULK_COUNT_TOO_BIG)) break;
          const n = this.lineNumber();
          if (n === undefined || n > limits.maxArgs) throw new ProtocolError(MSG_INVALID_MBULK);
          this.count = n;
          this.reqBytes = this.lineLen + 2;
          if (n > 0 && this.reqBytes + n * MIN_BULK_BYTES > limits.maxRequestBytes) {
            throw new ProtocolError(MSG_TOO_LARGE);
          }
          this.bulksLeft = n;
          if (n > 0) this.lengths = new Array<number>(n);
          this.state = ST_MB_LF;
          break;
        }
        case ST_MB_LF:
          this.advance(1);
          if (this.count <= 0) return this.reqBytes;
          this.state = ST_BULK_START;
          break;
        case ST_BULK_START: {
          const b = this.chunks[this.ci]![this.co]!;
          // Checked on the first byte, so a nested `*1\r\n*1\r\n...` fails at once.
          if (b !== DOLLAR) {
            throw new ProtocolError(`Protocol error: expected '$', got '${String.fromCharCode(b)}'`);
          }
          this.beginLine();
          this.advance(1);
          this.checkLine(limits, MSG_BULK_COUNT_TOO_BIG);
          this.state = ST_BULK_LINE;
          break;
        }
        case ST_BULK_LINE: {
          if (!this.scanLine(limits, MSG_BULK_COUNT_TOO_BIG)) break;
          const len = this.lineNumber();
          if (len === undefined || len < 0 || len > limits.maxBulkBytes) {
            throw new ProtocolError(MSG_INVALID_BULK);
          }
          this.reqBytes += this.lineLen + 1;
          const index = this.count - this.bulksLeft;
          this.bodyStarts[index] = this.reqBytes + 1; // past the LF after the CR
          this.skip = 1 + len + 2;
          const known = this.reqBytes + this.skip + (this.bulksLeft - 1) * MIN_BULK_BYTES;
          if (known > limits.maxRequestBytes) throw new ProtocolError(MSG_TOO_LARGE);
          this.lengths[index] = len;
          this.state = ST_BULK_SKIP;
          break;
        }
        case ST_BULK_SKIP: {
          // Jump over LF, body and trailing CRLF without looking at them, as Redis does.
          const room = this.chunks[this.ci]!.length - this.co;
          const step = Math.min(room, this.skip);
          this.advance(step);
          this.skip -= step;
          this.reqBytes += step;
          if (this.skip > 0) break;
          if (--this.bulksLeft === 0) return this.reqBytes;
          this.state = ST_BULK_START;
          break;
        }
      }
    }
    return undefined;
  }

  /**
   * scanMultibulk's work for the frame nearly every request is, read in one pass with the scan
   * state in locals: a multibulk of at least one argument, whole in the chunk at the scan
   * position, with plain lengths, inside every limit. Returns its length, with `lengths` and
   * `bodyStarts` filled as scanMultibulk fills them; or 0, the scan state untouched, for any other
   * frame (incomplete, empty, to refuse, or with a length of 10 digits or more), which
   * scanMultibulk then reads from the same position by the same rules. What this accepts, it
   * accepts exactly as scanMultibulk would: the checks are the same, made once per line rather
   * than per byte (a line's length only grows), and the bytes after each CR and after each body
   * are skipped unchecked as Redis does.
   */
  private wholeFrame(limits: DecoderLimits): number {
    const buf = this.chunks[this.ci]!;
    const origin = this.co;
    const end = buf.length;
    const { maxInlineBytes, maxRequestBytes } = limits;
    let i = origin + 1; // past the `*`
    const count = readLength(buf, i, end);
    if (count <= 0) return 0;
    i = lengthEnd;
    // `*<n>` with its CR and the byte after it; header lines are checked as checkLine does.
    let lineLen = i - origin;
    if (lineLen > maxInlineBytes || lineLen > maxRequestBytes || count > limits.maxArgs) return 0;
    let reqBytes = lineLen + 2;
    if (reqBytes + count * MIN_BULK_BYTES > maxRequestBytes) return 0;
    i = origin + reqBytes;
    // The last command's lengths again while it is reused (it is done with: see reuseCommands).
    const last = this.reusable;
    const lengths =
      last !== undefined && last.byteLengths.length === count ? last.byteLengths : new Array<number>(count);
    const starts = this.bodyStarts;
    for (let k = 0; k < count; k++) {
      if (i >= end || buf[i] !== DOLLAR) return 0;
      const len = readLength(buf, i + 1, end);
      if (len < 0 || len > limits.maxBulkBytes) return 0;
      lineLen = lengthEnd - i;
      if (lineLen > maxInlineBytes || lineLen > maxRequestBytes - reqBytes) return 0;
      reqBytes += lineLen + 1;
      const skip = 1 + len + 2;
      if (reqBytes + skip + (count - k - 1) * MIN_BULK_BYTES > maxRequestBytes) return 0;
      starts[k] = reqBytes + 1;
      lengths[k] = len;
      reqBytes += skip;
      i = origin + reqBytes;
    }
    if (i > end) return 0;
    this.lengths = lengths;
    return reqBytes;
  }

  /**
   * Find the LF that ends the inline line. Returns the line without its LF and one trailing CR,
   * or undefined when more bytes are needed.
   */
  private scanInline(limits: DecoderLimits): Buffer | undefined {
    // The message is chosen by the smaller bound so it does not depend on chunking.
    const cap = Math.min(limits.maxInlineBytes, limits.maxRequestBytes);
    const tooBig = limits.maxInlineBytes <= limits.maxRequestBytes ? MSG_INLINE_TOO_BIG : MSG_TOO_LARGE;
    while (this.hasByte()) {
      const buf = this.chunks[this.ci]!;
      const at = buf.indexOf(LF, this.co);
      if (at < 0) {
        this.reqBytes += buf.length - this.co;
        this.lastWasCR = buf[buf.length - 1] === CR;
        this.co = buf.length;
        // networking.c: no newline and more than PROTO_INLINE_MAX_SIZE buffered. A final CR may
        // still be stripped, so it does not count yet.
        if (this.reqBytes - (this.lastWasCR ? 1 : 0) > cap) throw new ProtocolError(tooBig);
        continue;
      }
      const lineBytes = this.reqBytes + (at - this.co);
      const endsWithCR = at > this.co ? buf[at - 1] === CR : this.lastWasCR;
      const contentBytes = endsWithCR && lineBytes > 0 ? lineBytes - 1 : lineBytes;
      if (contentBytes > cap) throw new ProtocolError(tooBig);
      const line = this.take(contentBytes);
      this.consume(lineBytes + 1);
      return line;
    }
    return undefined;
  }

  private inlineCommand(line: Buffer, limits: DecoderLimits): DecodedCommand | undefined {
    if (line.length === 0) return undefined;
    // latin1 gives one code unit per byte, so `\xHH` escapes produce bytes (see inline.ts).
    const words = splitInlineArgs(latin1(line));
    if (words === null) throw new ProtocolError(MSG_UNBALANCED);
    if (words.length === 0) return undefined;
    if (words.length > limits.maxArgs) throw new ProtocolError(MSG_TOO_MANY_INLINE);
    const byteLengths = new Array<number>(words.length);
    const last = words.length > 1 && this.lastArgumentAsBytes(words[0]!) ? words.length - 1 : words.length;
    for (let i = 0; i < last; i++) {
      const word = words[i]!;
      byteLengths[i] = word.length;
      if (NON_ASCII.test(word)) words[i] = utf8(Buffer.from(word, 'latin1'));
    }
    if (last === words.length)
      return { args: words, inline: true, byteLengths, lastBytes: undefined, lastStart: undefined };
    byteLengths[last] = words[last]!.length;
    const lastBytes = Buffer.from(words[last]!, 'latin1'); // one code unit per byte (see above)
    words[last] = '';
    return { args: words, inline: true, byteLengths, lastBytes, lastStart: 0 };
  }

  /**
   * The arguments of a scanned frame: each body as UTF-8, where the scan found it (the last one
   * as bytes for a command named by `lastArgumentAsBytes`). Like Redis
   * (and redis-parser), the bytes after each header's CR and after each body are not looked at.
   */
  private multibulkCommand(frameLength: number): DecodedCommand {
    const byteLengths = this.lengths;
    const starts = this.bodyStarts;
    // A frame within the first chunk (nearly all) is read where it lies, without a view of it.
    const first = this.chunks[0]!;
    const inFirst = first.length - this.head >= frameLength;
    const frame = inFirst ? first : this.take(frameLength);
    const base = inFirst ? this.head : 0;
    const count = byteLengths.length;
    const reusable = this.reusable;
    const args = reusable !== undefined && reusable.args.length === count ? reusable.args : new Array<string>(count);
    const name = this.repeated(0, frame, base + starts[0]!, byteLengths[0]!);
    args[0] = name;
    if (name !== this.lastName) {
      this.lastName = name;
      this.lastNameTakesBytes = this.lastArgumentAsBytes(name);
    }
    const decoded = count > 1 && this.lastNameTakesBytes ? count - 1 : count;
    if (decoded > 1) args[1] = this.repeated(1, frame, base + starts[1]!, byteLengths[1]!);
    for (let i = 2; i < decoded; i++) {
      const start = base + starts[i]!;
      args[i] = utf8(frame, start, start + byteLengths[i]!);
    }
    let lastBytes: Buffer | undefined;
    let lastStart: number | undefined;
    if (decoded < count) {
      // A received chunk is never written to again (push copies small reads past what the slab
      // already holds), so it keeps the bytes received.
      lastBytes = frame;
      lastStart = base + starts[decoded]!;
      args[decoded] = '';
    }
    this.consume(frameLength);
    if (reusable === undefined) {
      const command: DecodedCommand = { args, inline: false, byteLengths, lastBytes, lastStart };
      if (this.reuseCommands) this.reusable = command;
      return command;
    }
    reusable.args = args;
    reusable.byteLengths = byteLengths;
    reusable.lastBytes = lastBytes;
    reusable.lastStart = lastStart;
    return reusable;
  }

  /**
   * Argument `index` (0 or 1) of a multibulk, `length` bytes at `start`: the string of the same
   * argument of an earlier command when the bytes are the same (RepeatedText). A pipeline repeats
   * its command's name and, for PUBLISH, its channel.
   */
  private repeated(index: 0 | 1, frame: Buffer, start: number, length: number): string {
    const known = index === 0 ? this.repeatedName : this.repeatedSecond;
    return length <= known.maxBytes ? known.of(frame, start, start + length) : utf8(frame, start, start + length);
  }

  /** The first `n` unconsumed bytes, without copying when they lie in one chunk. */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = Buffer.allocUnsafe(n);
    let written = 0;
    let offset = this.head;
    for (let k = 0; written < n; k++) {
      const chunk = this.chunks[k]!;
      const part = Math.min(chunk.length - offset, n - written);
      chunk.copy(out, written, offset, offset + part);
      written += part;
      offset = 0;
    }
    return out;
  }

  /** Release the first `n` unconsumed bytes and start scanning the next request. */
  private consume(n: number): void {
    this.total -= n;
    let head = this.head + n;
    let drop = 0;
    while (drop < this.chunks.length && head >= this.chunks[drop]!.length) {
      head -= this.chunks[drop]!.length;
      drop++;
    }
    if (drop > 0) this.chunks.splice(0, drop);
    if (this.chunks.length === 0) {
      this.head = 0;
      this.releaseSlab(); // an idle connection holds no buffer
    } else {
      this.head = head;
    }
    this.startRequest();
  }

  private releaseSlab(): void {
    this.slab = undefined;
    this.slabUsed = 0;
    this.slabStart = 0;
    this.tailInSlab = false;
  }
}
