import { SandboxEventsError } from '../errors.js';
import { RepeatedText } from '../protocol/repeated-text.js';
import { NOT_UTF8, REFUSED, scanPublishPayload, UNUSUAL_LAYOUT } from './payload-scan.js';
import { compactDataText } from './payload-text.js';

/** An event as it leaves the broker (docs/protocol.md, "Pub/sub"). */
export interface SandboxEvent {
  /** `<milliseconds>-<sequence>`, strictly increasing per sandbox. */
  id: string;
  sandboxId: string;
  workspaceId: number;
  type: string;
  data: Record<string, unknown>;
  /** Unix milliseconds, assigned by the broker. */
  timestamp: number;
}

/** What a publisher asks to store: identity comes from its token, never from the payload. */
export interface NewEvent {
  workspaceId: number;
  sandboxId: string;
  type: string;
  /**
   * `data` as compact JSON (one line, validated as an object), in UTF-8, is
   * `dataBytes[dataStart, dataEnd)`: a PUBLISH's own bytes of it where they were received, never
   * decoded on the way to the memory store's ring, and with no view made of them, as the ring and
   * the frames copy them anyway (docs/performance.md, "Seventh round: the payload's bytes",
   * "Tenth round: the PUBLISH's allocations"). Valid UTF-8 (readPublishPayload sees to it). Never
   * written to once appended: the memory store's event keeps them to make its line's text when
   * read (a request's received bytes are never written to again, see RequestDecoder).
   */
  dataBytes: Buffer;
  dataStart: number;
  dataEnd: number;
}

/** `data`'s text (NewEvent), for the stores that keep it as text. */
export function newEventDataText(input: NewEvent): string {
  return input.dataBytes.toString('utf8', input.dataStart, input.dataEnd);
}

/**
 * An event together with its wire form. The JSON line is made at most once per event, and
 * every transport (RESP frame, SSE, HTTP history) reuses it: a RESP frame takes the memory
 * store's bytes of it without its text being made (StoredEventRecord).
 */
export interface StoredEvent {
  id: EventId;
  workspaceId: number;
  sandboxId: string;
  type: string;
  timestamp: number;
  /** The whole event as one line of JSON, in the key order docs/protocol.md gives. */
  readonly json: string;
}

/**
 * A StoredEvent as the stores make it, with room for its place in its store's order over every
 * sandbox (docs/protocol.md, "Pattern resume"), set by the stores that keep one on the stored
 * events they hand out (memory and SQLite over every workspace, the Redis engine per workspace);
 * ephemeral events have none. The order is a private field: enumeration and equality do not see
 * it, so an event read back equals the one appended whichever store holds it. It used to live in
 * a WeakMap beside the event: that set was 7.6 % of the publish path's CPU (case 2 of
 * `npm run bench`), and every entry is an ephemeron more for the garbage collector.
 *
 * `json` is text made on first read for an event the memory store wrote as bytes (`ofLine`, a
 * RingLineRecord): on the publish path only RESP frames take the line, and they copy its bytes, so
 * a decode and a string per event are saved (docs/performance.md, "Eighth round: the event's line
 * as bytes"). Every other event (read back from a store, or made from text) has its text from the
 * start, and none of the fields a line kept as bytes needs: a history page makes a hundred of
 * them, and four fields more each were 4 KiB more to allocate per page.
 */
export class StoredEventRecord implements StoredEvent {
  #order: number | undefined = undefined;
  /** The UTF-8 size of `json`, once known (-1 before): the fan-out frames it by that size. */
  #jsonBytes = -1;
  /** Undefined only in a RingLineRecord whose text was not read yet. */
  #json: string | undefined;

  constructor(
    public id: EventId,
    public workspaceId: number,
    public sandboxId: string,
    public type: string,
    public timestamp: number,
    json: string | undefined,
  ) {
    this.#json = json;
  }

  get json(): string {
    if (this.#json === undefined) this.#json = RingLineRecord.takeText(this as unknown as RingLineRecord);
    return this.#json;
  }

  /** An event the memory store wrote as bytes: see RingLineRecord's constructor. */
  static ofLine(...line: ConstructorParameters<typeof RingLineRecord>): StoredEventRecord {
    return new RingLineRecord(...line);
  }

  /**
   * The store is about to let the line's bytes in its ring change (its append returns): from
   * now on the line is read from what it was written from.
   */
  static releaseRingLine(event: StoredEventRecord): void {
    if (event instanceof RingLineRecord) RingLineRecord.release(event);
  }

  /**
   * Writes the event's line (its UTF-8, Buffer.byteLength(event.json) bytes) at `at`; returns the
   * end. The bytes are copied when its store still holds them, else written from their parts;
   * any other event (made from text by a store's read, SQLite or the Redis engine) has its text encoded.
   */
  static writeLine(event: StoredEvent, target: Buffer, at: number): number {
    if (event instanceof RingLineRecord) {
      const end = RingLineRecord.write(event, target, at, event.#jsonBytes);
      if (end >= 0) return end;
    }
    return at + target.write(event.json, at);
  }

  static setOrder(event: StoredEventRecord, order: number): void {
    event.#order = order;
  }

  /** Undefined for an event without one, and for a StoredEvent a store did not make. */
  static orderOf(event: StoredEvent): number | undefined {
    return #order in event ? (event as StoredEventRecord).#order : undefined;
  }

  /** `bytes` is Buffer.byteLength(event.json), known to the store that wrote the line's bytes. */
  static setJsonBytes(event: StoredEventRecord, bytes: number): void {
    event.#jsonBytes = bytes;
  }

  /** Buffer.byteLength(event.json), counted once per event a store made. */
  static jsonBytesOf(event: StoredEvent): number {
    if (!(#jsonBytes in event)) return Buffer.byteLength(event.json);
    const record = event as StoredEventRecord;
    if (record.#jsonBytes < 0) record.#jsonBytes = Buffer.byteLength(record.json);
    return record.#jsonBytes;
  }
}

/**
 * An event the memory store wrote as bytes (StoredEventRecord.ofLine). It keeps what its line is
 * written from (the sandbox's and type's part, and `data`'s bytes as received, neither of which is
 * ever written to again), so its text is right whenever it is read (and it lets go of them once
 * it is); the ring's copy of the line is read only until the store releases it.
 */
class RingLineRecord extends StoredEventRecord {
  /**
   * eventLineHead of its sandbox and type, and the bytes `data`'s UTF-8 lies in, at
   * `[#dataStart, #dataEnd)` (undefined once its text is made).
   */
  #head: Uint8Array | undefined;
  #data: Uint8Array | undefined;
  readonly #dataStart: number;
  readonly #dataEnd: number;
  /** The line's bytes end at `#lineEnd` in `#ringLine`, while its store holds them unchanged. */
  #ringLine: Buffer | undefined;
  readonly #lineEnd: number;

  /**
   * An event whose line is `writeEventLine(id, head, data, dataStart, dataEnd, timestamp)`,
   * `bytes` long, and lies at `ring[end - bytes, end)` until `StoredEventRecord.releaseRingLine`.
   * `head` and `data` must never be written to again (a request's received bytes are not;
   * docs/architecture.md, the PUBLISH path).
   */
  constructor(
    id: EventId,
    workspaceId: number,
    sandboxId: string,
    type: string,
    timestamp: number,
    head: Uint8Array,
    data: Uint8Array,
    dataStart: number,
    dataEnd: number,
    ring: Buffer,
    end: number,
    bytes: number,
  ) {
    super(id, workspaceId, sandboxId, type, timestamp, undefined);
    this.#head = head;
    this.#data = data;
    this.#dataStart = dataStart;
    this.#dataEnd = dataEnd;
    this.#ringLine = ring;
    this.#lineEnd = end;
    StoredEventRecord.setJsonBytes(this, bytes);
  }

  static release(event: RingLineRecord): void {
    event.#ringLine = undefined;
  }

  /**
   * Writes the line (`bytes` long) at `at` and returns its end, from the ring while it holds the
   * line, else from its parts; -1 once neither is kept (its text was made: encode that).
   */
  static write(event: RingLineRecord, target: Buffer, at: number, bytes: number): number {
    const ring = event.#ringLine;
    if (ring !== undefined) {
      // What Buffer.copy does for a range that fits, without its argument checks (Node 20's
      // `_copy`, `_copyActual`): it too makes a view of the source's range to `set` from.
      target.set(new Uint8Array(ring.buffer, ring.byteOffset + event.#lineEnd - bytes, bytes), at);
      return at + bytes;
    }
    if (event.#head === undefined) return -1;
    return writeEventLine(
      target,
      at,
      event.id,
      event.#head,
      event.#data!,
      event.#dataStart,
      event.#dataEnd,
      event.timestamp,
    );
  }

  /** The line's text (made once, by StoredEventRecord's json); the event then lets go of its parts. */
  static takeText(event: RingLineRecord): string {
    const bytes = StoredEventRecord.jsonBytesOf(event);
    const ring = event.#ringLine;
    let text: string;
    if (ring !== undefined) text = ring.toString('utf8', event.#lineEnd - bytes, event.#lineEnd);
    else {
      const line = Buffer.allocUnsafe(bytes);
      writeEventLine(line, 0, event.id, event.#head!, event.#data!, event.#dataStart, event.#dataEnd, event.timestamp);
      text = line.toString('utf8', 0, bytes);
    }
    // An event kept (an HTTP publish's answer) then holds its text, not the request's bytes.
    event.#head = undefined;
    event.#data = undefined;
    return text;
  }
}

export function setEventOrder(event: StoredEventRecord, order: number): void {
  StoredEventRecord.setOrder(event, order);
}

export function eventOrder(event: StoredEvent): number | undefined {
  return StoredEventRecord.orderOf(event);
}

/** The UTF-8 size of the event's line, `Buffer.byteLength(event.json)`, counted once per event. */
export function eventJsonBytes(event: StoredEvent): number {
  return StoredEventRecord.jsonBytesOf(event);
}

/** A cursor's text form (docs/protocol.md, "Pattern resume"): `w<order>`, e.g. `w1042`. */
export function formatOrderCursor(order: number): string {
  return `w${order}`;
}

/** The order a cursor names, or undefined when it is not one. */
export function parseOrderCursor(text: string): number | undefined {
  if (!/^w(0|[1-9][0-9]{0,15})$/.test(text)) return undefined;
  const order = Number(text.slice(1));
  return Number.isSafeInteger(order) ? order : undefined;
}

/** Event id as two numbers; `<ms>-<seq>` is its text form (the form Redis Streams use). */
export interface EventId {
  ms: number;
  seq: number;
}

export const MAX_TYPE_LENGTH = 128;

export class InvalidEventError extends SandboxEventsError {
  constructor(message: string) {
    super('INVALID_EVENT', message);
  }
}

export class EventTooLargeError extends SandboxEventsError {
  constructor(
    readonly size: number,
    readonly limit: number,
  ) {
    super('EVENT_TOO_LARGE', `event too large (${size} bytes, limit ${limit})`);
  }
}

export function formatEventId(id: EventId): string {
  return `${id.ms}-${id.seq}`;
}

const EVENT_ID_PATTERN = /^(\d{1,15})-(\d{1,15})$/;

/** Parses `<ms>-<seq>`; undefined when the text is not an event id. */
export function parseEventId(text: string): EventId | undefined {
  const match = EVENT_ID_PATTERN.exec(text);
  if (match === null) return undefined;
  const ms = Number(match[1]);
  const seq = Number(match[2]);
  if (!Number.isSafeInteger(ms) || !Number.isSafeInteger(seq)) return undefined;
  return { ms, seq };
}

export function compareEventIds(a: EventId, b: EventId): number {
  return a.ms !== b.ms ? a.ms - b.ms : a.seq - b.seq;
}

/**
 * The id that follows `last` at wall-clock time `now`. When the clock steps back, the id keeps
 * the last millisecond and bumps the sequence, so ids never go backwards (Redis Streams do the
 * same for XADD with `*`).
 */
export function nextEventId(last: EventId | undefined, now: number): EventId {
  if (last === undefined || now > last.ms) return { ms: now, seq: 0 };
  return { ms: last.ms, seq: last.seq + 1 };
}

/**
 * Builds the event's JSON line. Key order is docs/protocol.md's. `dataJson` is trusted to be
 * compact JSON of an object (see parsePublishPayload), so it has no raw CR or LF.
 */
export function eventJson(
  id: EventId,
  workspaceId: number,
  sandboxId: string,
  type: string,
  dataJson: string,
  timestamp: number,
): string {
  return eventLine(id, eventLineMiddle(workspaceId, sandboxId), JSON.stringify(type), dataJson, timestamp);
}

/**
 * The part of an event line that is the same for every event of one sandbox, for callers that
 * build many lines of one sandbox (a history read) and quote the sandbox id once.
 */
export function eventLineMiddle(workspaceId: number, sandboxId: string): string {
  return `","sandboxId":${JSON.stringify(sandboxId)},"workspaceId":${workspaceId},"type":`;
}

/**
 * An event line from its parts; `typeJson` is the type as a JSON string (quoted). The same
 * layout as writeEventLine's bytes.
 */
export function eventLine(id: EventId, middle: string, typeJson: string, dataJson: string, timestamp: number): string {
  return `{"id":"${id.ms}-${id.seq}${middle}${typeJson},"data":${dataJson},"timestamp":${timestamp}}`;
}

/**
 * What comes between the id and `data`'s value in every event line of one sandbox and type
 * (`","sandboxId":…,"type":"…","data":`), in UTF-8, for writing lines as bytes (writeEventLine).
 */
export function eventLineHead(middle: string, typeJson: string): Buffer {
  return Buffer.from(`${middle}${typeJson}${DATA_KEY}`);
}

const LINE_OPEN = Buffer.from('{"id":"');
const DATA_KEY = ',"data":';
const TIMESTAMP_KEY = Buffer.from(',"timestamp":');
const DASH = 0x2d;
const CLOSE_BRACE = 0x7d;

/** Digits of `n`, a safe integer >= 0. */
function decimalDigits(n: number): number {
  if (n >= 1e8) return decimalDigits(Math.floor(n / 1e8)) + 8;
  let digits = 1;
  for (let rest = n | 0; rest >= 10; rest = (rest / 10) | 0) digits++;
  return digits;
}

/**
 * Writes the decimal digits of `n` (a safe integer >= 0) at `at`; returns the end. A number of
 * more than 8 digits (a millisecond timestamp has 13) is written in parts below 1e8, so that
 * every step is small-integer arithmetic rather than a floating-point division.
 */
function writeDecimal(target: Uint8Array, at: number, n: number): number {
  if (n >= 1e8) {
    const high = Math.floor(n / 1e8);
    return writeDigits(target, writeDecimal(target, at, high), n - high * 1e8, 8);
  }
  return writeDigits(target, at, n, decimalDigits(n));
}

/** Writes `n` (below 1e8) as exactly `digits` digits, zero-padded. */
function writeDigits(target: Uint8Array, at: number, n: number, digits: number): number {
  let rest = n | 0;
  for (let i = at + digits - 1; i >= at; i--) {
    const next = (rest / 10) | 0;
    target[i] = 0x30 + rest - next * 10;
    rest = next;
  }
  return at + digits;
}

/** The byte size of the line writeEventLine writes, `dataBytes` being the size of `data`'s UTF-8. */
export function eventLineSize(id: EventId, head: Uint8Array, dataBytes: number, timestamp: number): number {
  // The millisecond's digits are counted once, by its LineEnds, which writeEventLine then uses.
  const ends = lineEndsOf(id.ms);
  return (
    ends.opening.length +
    decimalDigits(id.seq) +
    head.length +
    dataBytes +
    (timestamp === id.ms ? ends.closing.length : TIMESTAMP_KEY.length + decimalDigits(timestamp) + 1)
  );
}

/** Writes `bytes` (a few constant bytes) at `at`; returns the end. */
function writeConstant(target: Uint8Array, at: number, bytes: Uint8Array): number {
  // A loop: TypedArray.prototype.set costs more than it saves for a handful of bytes.
  for (let i = 0; i < bytes.length; i++) target[at++] = bytes[i]!;
  return at;
}

/**
 * The bytes of `eventLine(id, middle, typeJson, data, timestamp)` written at `at`, from
 * `eventLineHead(middle, typeJson)` and the UTF-8 of `data`, `data[dataStart, dataEnd)`, with
 * nothing decoded or encoded (docs/performance.md, "Seventh round: the payload's bytes"); returns
 * the end. `target` must have room for eventLineSize(...) bytes from `at`.
 */
export function writeEventLine(
  target: Uint8Array,
  at: number,
  id: EventId,
  head: Uint8Array,
  data: Uint8Array,
  dataStart: number,
  dataEnd: number,
  timestamp: number,
): number {
  const ends = lineEndsOf(id.ms);
  target.set(ends.opening, at);
  at = writeDecimal(target, at + ends.opening.length, id.seq);
  target.set(head, at);
  at += head.length;
  // What Buffer.copy does for a range (Node 20's `_copyActual`), without its argument checks:
  // the view is of the data's range only, where the caller made none.
  const size = dataEnd - dataStart;
  target.set(new Uint8Array(data.buffer, data.byteOffset + dataStart, size), at);
  at += size;
  // A store stamps an event with the millisecond of its id (unless the clock stepped back,
  // nextEventId).
  if (timestamp === id.ms) {
    target.set(ends.closing, at);
    return at + ends.closing.length;
  }
  at = writeConstant(target, at, TIMESTAMP_KEY);
  at = writeDecimal(target, at, timestamp);
  target[at++] = CLOSE_BRACE;
  return at;
}

/**
 * What a line whose id's millisecond is `ms` starts with, up to the id's sequence
 * (`{"id":"<ms>-`), and, when its timestamp is that millisecond, ends with (`,"timestamp":<ms>}`).
 * The lines of one millisecond share them (hundreds of them at a publisher's full rate): one
 * TypedArray set of each costs less than writing the digits twice and the bytes around them
 * (docs/performance.md, "Ninth round: the append and the frame").
 */
class LineEnds {
  readonly opening: Uint8Array;
  readonly closing: Uint8Array;

  constructor(readonly ms: number) {
    const digits = decimalDigits(ms);
    this.opening = new Uint8Array(LINE_OPEN.length + digits + 1);
    this.opening[writeDecimal(this.opening, writeConstant(this.opening, 0, LINE_OPEN), ms)] = DASH;
    this.closing = new Uint8Array(TIMESTAMP_KEY.length + digits + 1);
    this.closing[writeDecimal(this.closing, writeConstant(this.closing, 0, TIMESTAMP_KEY), ms)] = CLOSE_BRACE;
  }
}

/** The millisecond of the line written last, and its LineEnds. */
let lineEnds = new LineEnds(0);

/** The LineEnds of millisecond `ms`: the last ones again, or new ones. */
function lineEndsOf(ms: number): LineEnds {
  if (ms !== lineEnds.ms) lineEnds = new LineEnds(ms);
  return lineEnds;
}

/**
 * An event made as text, `dataJson` being the input's `data` decoded (the SQLite store keeps it
 * so; the memory store writes bytes instead, see writeEventLine). `lineMiddle` is
 * `eventLineMiddle` of the input's sandbox and `typeJson` its type quoted, for a store that keeps
 * them per sandbox instead of quoting them for every event (JSON.stringify of a 10-character
 * type is about 80 ns, a third of building the whole line).
 */
export function createStoredEvent(
  input: Pick<NewEvent, 'workspaceId' | 'sandboxId' | 'type'>,
  dataJson: string,
  id: EventId,
  timestamp: number,
  lineMiddle = eventLineMiddle(input.workspaceId, input.sandboxId),
  typeJson = JSON.stringify(input.type),
): StoredEventRecord {
  return new StoredEventRecord(
    id,
    input.workspaceId,
    input.sandboxId,
    input.type,
    timestamp,
    eventLine(id, lineMiddle, typeJson, dataJson, timestamp),
  );
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Whether `text` has no UTF-16 surrogate without its pair (`"\ud800"` in JSON parses to one),
 * that is, whether it has a UTF-8 form. String.prototype.isWellFormed is ES2024: in Node 20's
 * V8, not in the ES2023 lib the project compiles against.
 */
export function isWellFormedText(text: string): boolean {
  return (text as unknown as { isWellFormed(): boolean }).isWellFormed();
}

export function validateEventType(type: unknown): string {
  if (typeof type !== 'string' || type.length === 0 || type.length > MAX_TYPE_LENGTH) {
    throw new InvalidEventError(`"type" must be a string of 1 to ${MAX_TYPE_LENGTH} characters`);
  }
  // Such a type has no UTF-8 form: the SQLite store would read back U+FFFD in its place, and
  // HISTORY would return another line than the one delivered (docs/protocol.md: a type is valid Unicode).
  if (!isWellFormedText(type))
    throw new InvalidEventError('"type" must be valid Unicode (it holds an unpaired surrogate)');
  return type;
}

/** A publish payload's fields: the type, and `data` as compact JSON in UTF-8 (NewEvent). */
export interface PublishFields {
  type: string;
  data: Buffer;
}

/** Where readPublishPayload puts a payload's fields: the type, and `data`'s UTF-8 at `dataBytes[dataStart, dataEnd)` (NewEvent). */
export interface PublishPayload {
  type: string;
  dataBytes: Buffer;
  dataStart: number;
  dataEnd: number;
}

const EMPTY_DATA = Buffer.from('{}');

/** The last type read from payload bytes: a publisher mostly repeats its types. */
const typeText = new RepeatedText(MAX_TYPE_LENGTH * 4);

/**
 * Validates what a publisher sent, `payload[start, end)` its bytes as received: exactly
 * `{"type": "...", "data": {...}}`, `data` optional. Sets `into`'s type and where `data` lies as
 * compact JSON in UTF-8 (no raw newline, whatever the publisher's formatting); `into` is the
 * publication itself on PUBLISH's path, so no object is made for the answer. The payload's size
 * is checked against the limit first, so that an oversized payload is never parsed.
 *
 * The bytes are scanned once without building objects or decoding them (payload-scan.ts), and
 * `data` is the payload's own bytes, no view of them made (docs/performance.md, "Tenth round:
 * the PUBLISH's allocations"). Bytes that are not UTF-8 are taken as decoding takes them, each
 * bad sequence a U+FFFD (so the event holds those, as PUBLISH always did). Only such a payload,
 * one the scan refuses (for its error message), or one whose `data` can't be reused as is goes
 * through the text and JSON.parse (parsePublishPayloadWithJsonParse), whose verdict the scan
 * matches exactly.
 */
export function readPublishPayload(
  payload: Buffer,
  maxEventBytes: number,
  start: number,
  end: number,
  into: PublishPayload,
): void {
  const size = end - start;
  if (size > maxEventBytes) throw new EventTooLargeError(size, maxEventBytes);
  const scanned = scanPublishPayload(payload, start, end);
  if (scanned === REFUSED || scanned === UNUSUAL_LAYOUT || scanned === NOT_UTF8) {
    const { type, dataJson } = parsePublishPayloadWithJsonParse(
      payload.toString('utf8', start, end),
      size,
      maxEventBytes,
    );
    const data = Buffer.from(dataJson);
    into.type = type;
    into.dataBytes = data;
    into.dataStart = 0;
    into.dataEnd = data.length;
    return;
  }
  const { typeStart, typeEnd } = scanned;
  into.type = validateEventType(
    scanned.typeEscaped
      ? (JSON.parse(payload.toString('utf8', typeStart, typeEnd)) as string)
      : typeText.of(payload, typeStart + 1, typeEnd - 1),
  );
  if (scanned.dataStart < 0) {
    into.dataBytes = EMPTY_DATA;
    into.dataStart = 0;
    into.dataEnd = EMPTY_DATA.length;
  } else {
    into.dataBytes = payload;
    into.dataStart = scanned.dataStart;
    into.dataEnd = scanned.dataEnd;
  }
}

/** readPublishPayload with `data` as a Buffer of its own (a view of the payload's bytes, or a copy). */
export function parsePublishPayload(
  payload: Buffer,
  maxEventBytes: number,
  start = 0,
  end = payload.length,
): PublishFields {
  const read: PublishPayload = { type: '', dataBytes: payload, dataStart: 0, dataEnd: 0 };
  readPublishPayload(payload, maxEventBytes, start, end, read);
  return { type: read.type, data: read.dataBytes.subarray(read.dataStart, read.dataEnd) };
}

/**
 * parsePublishPayload through JSON.parse: the reference the scan is tested against, and the path
 * for payloads the scan refuses or can't slice.
 */
export function parsePublishPayloadWithJsonParse(
  payload: string,
  byteLength: number,
  maxEventBytes: number,
): { type: string; dataJson: string } {
  if (byteLength > maxEventBytes) throw new EventTooLargeError(byteLength, maxEventBytes);
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload);
  } catch {
    throw new InvalidEventError('payload is not valid JSON');
  }
  const { type, data } = validatePublishFields(parsed);
  if (data === undefined) return { type, dataJson: '{}' };
  // JSON.parse accepted the payload, so when it has the usual layout, the text of `data` as sent
  // is already valid compact JSON for the same object: slicing it out saves serialising it again
  // (a third of this function's cost, and a string per event for the collector).
  return { type, dataJson: compactDataText(payload) ?? JSON.stringify(data) };
}

function validatePublishFields(parsed: unknown): { type: string; data: Record<string, unknown> | undefined } {
  if (!isPlainObject(parsed)) {
    throw new InvalidEventError('payload must be a JSON object {"type": "...", "data": {...}}');
  }
  for (const key in parsed) {
    if (key !== 'type' && key !== 'data') {
      throw new InvalidEventError(`unexpected field "${key}": only "type" and "data" are accepted`);
    }
  }
  const type = validateEventType(parsed.type);
  const data = parsed.data;
  if (data !== undefined && !isPlainObject(data)) {
    throw new InvalidEventError('"data" must be a JSON object');
  }
  return { type, data };
}
