import { eventOrder, formatEventId, formatOrderCursor, type StoredEvent } from '../event/event.js';
/**
 * Server-Sent Events (WHATWG HTML, "Server-sent events"): the frame format. A stream is a
 * transport of a session (src/session/session.ts), as a TCP client is, with the same output
 * limit; these are the frames it hands the session.
 */

export const SSE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  // nginx buffers responses by default; this header turns that off for this one.
  'x-accel-buffering': 'no',
  'x-content-type-options': 'nosniff',
});

/** A field value ends at CR or LF (the spec's line terminators): such a value can't be sent. */
const LINE_BREAK = /[\r\n]/;

/**
 * `id:` the event id, `event:` its type, `data:` the event's JSON line. The JSON has no raw CR
 * or LF (docs/protocol.md), so it is one `data:` line. A type holding a line break would
 * let a publisher forge fields in every reader's stream: such an event goes out as the
 * default `message` event instead (its type is still in the data).
 */
function formatEvent(event: StoredEvent): Buffer {
  return sseFrameOf(event, event.json);
}

/** `id:` the event id, `event:` its type (as above), `data:` the given one-line text. */
export function sseFrameOf(event: StoredEvent, data: string): Buffer {
  const name = LINE_BREAK.test(event.type) ? 'message' : event.type;
  return Buffer.from(`id: ${formatEventId(event.id)}\nevent: ${name}\ndata: ${data}\n\n`);
}

/**
 * The text of the event's `data` object, cut from its JSON line: the line is built in one key
 * order (docs/protocol.md), `"data":` first appears there (any quote before it, in the sandbox
 * id or type, is escaped), and `,"timestamp":` ends it.
 */
export function eventDataText(event: StoredEvent): string {
  const json = event.json;
  const start = json.indexOf(',"data":') + ',"data":'.length;
  return json.slice(start, json.lastIndexOf(',"timestamp":'));
}

/** Encode once, write many: every SSE reader of one event gets the same frame. */
const frames = new WeakMap<StoredEvent, Buffer>();

export function sseEventFrame(event: StoredEvent): Buffer {
  let frame = frames.get(event);
  if (frame === undefined) {
    frame = formatEvent(event);
    frames.set(event, frame);
  }
  return frame;
}

const patternFrames = new WeakMap<StoredEvent, Buffer>();

/**
 * An event of a pattern stream (docs/http.md, "Pattern streams"): `id:` is the store-order
 * cursor (`w<n>`), one value that resumes the whole stream by Last-Event-ID. An event with no
 * order (ephemeral, or from a store that keeps none) has no `id:` line, so the reader's
 * Last-Event-ID stays at the last cursor (WHATWG HTML, "Server-sent events": an event without
 * an id field leaves the last event ID buffer as it was).
 */
export function ssePatternEventFrame(event: StoredEvent): Buffer {
  let frame = patternFrames.get(event);
  if (frame === undefined) {
    const name = LINE_BREAK.test(event.type) ? 'message' : event.type;
    const order = eventOrder(event);
    const id = order === undefined ? '' : `id: ${formatOrderCursor(order)}\n`;
    frame = Buffer.from(`${id}event: ${name}\ndata: ${event.json}\n\n`);
    patternFrames.set(event, frame);
  }
  return frame;
}

/** A control event of this server (`gap`, `expired`, ...): no id, so Last-Event-ID stays put. */
export function sseControlFrame(name: string, data: unknown): Buffer {
  return Buffer.from(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
}

export function sseRetryFrame(retryMs: number): Buffer {
  return Buffer.from(`retry: ${retryMs}\n\n`);
}

export const HEARTBEAT_FRAME = Buffer.from(': heartbeat\n\n');
