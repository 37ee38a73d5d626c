import { SandboxEventsError } from '../errors.js';
import { REFUSED, scanPublishPayload, UNUSUAL_LAYOUT } from './payload-scan.js';
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
  /** `data` already serialised to JSON text (one line, validated as an object). */
  dataJson: string;
}

/**
 * An event together with its wire form. The JSON line is built once, when the event is
 * created, and every transport (RESP frame, SSE, HTTP history) reuses that same text.
 */
export interface StoredEvent {
  id: EventId;
  workspaceId: number;
  sandboxId: string;
  type: string;
  timestamp: number;
  /** The whole event as one line of JSON, in the key order docs/protocol.md gives. */
  json: string;
}

/**
 * A StoredEvent as the stores make it, with room for its place in its store's order over every
 * sandbox (docs/protocol.md, "Pattern resume"), set by the stores that keep one on the stored
 * events they hand out (memory and SQLite over every workspace, the Redis engine per workspace);
 * ephemeral events have none. The order is a private field: enumeration and equality do not see
 * it, so an event read back equals the one appended whichever store holds it. It used to live in
 * a WeakMap beside the event: that set was 7.6 % of the publish path's CPU (case 2 of
 * `npm run bench`), and every entry is an ephemeron more for the garbage collector.
 */
export class StoredEventRecord implements StoredEvent {
  #order: number | undefined = undefined;

  constructor(
    public id: EventId,
    public workspaceId: number,
    public sandboxId: string,
    public type: string,
    public timestamp: number,
    public json: string,
  ) {}

  static setOrder(event: StoredEventRecord, order: number): void {
    event.#order = order;
  }

  /** Undefined for an event without one, and for a StoredEvent a store did not make. */
  static orderOf(event: StoredEvent): number | undefined {
    return #order in event ? (event as StoredEventRecord).#order : undefined;
  }
}

export function setEventOrder(event: StoredEventRecord, order: number): void {
  StoredEventRecord.setOrder(event, order);
}

export function eventOrder(event: StoredEvent): number | undefined {
  return StoredEventRecord.orderOf(event);
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

/** An event line from its parts; `typeJson` is the type as a JSON string (quoted). */
export function eventLine(id: EventId, middle: string, typeJson: string, dataJson: string, timestamp: number): string {
  return `{"id":"${id.ms}-${id.seq}${middle}${typeJson},"data":${dataJson},"timestamp":${timestamp}}`;
}

/**
 * `lineMiddle` is `eventLineMiddle` of the input's sandbox and `typeJson` its type quoted, for a
 * store that keeps them per sandbox instead of quoting them for every event (JSON.stringify of a
 * 10-character type is about 80 ns, a third of building the whole line).
 */
export function createStoredEvent(
  input: NewEvent,
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
    eventLine(id, lineMiddle, typeJson, input.dataJson, timestamp),
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

/**
 * Validates what a publisher sent: exactly `{"type": "...", "data": {...}}`, `data` optional.
 * Returns the type and `data` as compact JSON text (no raw newline, whatever the publisher's
 * formatting). `byteLength` is the payload's size as sent, checked against the limit first
 * so that an oversized payload is never parsed.
 *
 * The payload is scanned once without building objects (payload-scan.ts), and the event reuses
 * its text of `data`. Only a payload the scan refuses (for its error message) or whose `data`
 * can't be reused as is goes through JSON.parse (parsePublishPayloadWithJsonParse), whose
 * verdict the scan matches exactly.
 */
export function parsePublishPayload(
  payload: string,
  byteLength: number,
  maxEventBytes: number,
): { type: string; dataJson: string } {
  if (byteLength > maxEventBytes) throw new EventTooLargeError(byteLength, maxEventBytes);
  const scanned = scanPublishPayload(payload);
  if (scanned === REFUSED || scanned === UNUSUAL_LAYOUT) {
    return parsePublishPayloadWithJsonParse(payload, byteLength, maxEventBytes);
  }
  const typeText = payload.slice(scanned.typeStart, scanned.typeEnd);
  const type = validateEventType(scanned.typeEscaped ? (JSON.parse(typeText) as string) : typeText.slice(1, -1));
  return { type, dataJson: scanned.dataStart < 0 ? '{}' : payload.slice(scanned.dataStart, scanned.dataEnd) };
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
