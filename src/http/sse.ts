import { EVENTS_ONLY, type Subscriber } from '../broker/broker.js';
import type { WritePath } from '../connection/write-path.js';
import { type EventId, formatEventId, type StoredEvent } from '../event/event.js';
import { ReplaySeam } from '../store/replay.js';

/**
 * Server-Sent Events (WHATWG HTML, "Server-sent events"): the frame format, and the subscriber
 * that the broker delivers events to. Each stream writes through a WritePath, as a TCP client
 * does, with the same output limit.
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
 * or LF (contract, "The event"), so it is one `data:` line. A type holding a line break would
 * let a publisher forge fields in every reader's stream: such an event goes out as the
 * default `message` event instead (its type is still in the data).
 */
function formatEvent(event: StoredEvent): Buffer {
  const name = LINE_BREAK.test(event.type) ? 'message' : event.type;
  return Buffer.from(`id: ${formatEventId(event.id)}\nevent: ${name}\ndata: ${event.json}\n\n`);
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

/** A control event of this server (`gap`, `expired`, ...): no id, so Last-Event-ID stays put. */
export function sseControlFrame(name: string, data: unknown): Buffer {
  return Buffer.from(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
}

export function sseRetryFrame(retryMs: number): Buffer {
  return Buffer.from(`retry: ${retryMs}\n\n`);
}

export const HEARTBEAT_FRAME = Buffer.from(': heartbeat\n\n');

/**
 * A stream as the broker sees it: it takes events, not RESP frames (EVENTS_ONLY). While a
 * resume replays history, live events wait here and count against the output limit; then
 * those the replay already covered are dropped (the same seam as TCP RESUME: nothing missing,
 * nothing twice).
 */
export class EventStreamSubscriber implements Subscriber {
  readonly protocol = EVENTS_ONLY;
  private seam: ReplaySeam<StoredEvent> | undefined;

  constructor(readonly writer: WritePath) {}

  deliver(_frame: Buffer, event: StoredEvent): void {
    if (this.writer.isClosed) return;
    const seam = this.seam;
    if (seam === undefined) {
      this.writer.write(sseEventFrame(event));
      return;
    }
    const frame = sseEventFrame(event);
    const action = seam.admit(event, event.id, frame.length);
    if (action === 'hold') this.writer.checkLimit(seam.heldBytes);
    else if (action === 'write') {
      this.writer.write(frame);
      if (seam.finished) this.seam = undefined;
    }
  }

  /**
   * Events this stream should have had are lost (Subscriber): it ends, and the EventSource
   * reconnects with Last-Event-ID, whose resume reports the gap (`event: gap`).
   */
  interrupt(): void {
    this.writer.endAfterWrites();
  }

  /** From now until `endReplay`, live events are held back. */
  beginReplay(): void {
    this.seam = new ReplaySeam();
  }

  /** Writes the held events that come after the replay's last one, and goes live. */
  endReplay(lastReplayedId: EventId | undefined): void {
    const seam = this.seam;
    if (seam === undefined) return;
    for (const event of seam.end(lastReplayedId)) this.writer.write(sseEventFrame(event));
    if (seam.finished) this.seam = undefined;
  }
}
