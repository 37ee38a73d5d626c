import type { ServerResponse } from 'node:http';
import { EVENTS_ONLY, type Subscriber } from '../broker/broker.js';
import { compareEventIds, type EventId, formatEventId, type StoredEvent } from '../event/event.js';

/**
 * Server-Sent Events (WHATWG HTML, "Server-sent events"): the frame format, one write path per
 * stream with the same output limit as a TCP subscriber, and the subscriber that the broker
 * delivers events to.
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
 * The one way bytes reach a stream's socket, as WritePath is for TCP: frames queue and go out
 * once per event-loop turn in one write; `write()` returning false is honoured until 'drain';
 * unsent output (the queue plus what the response and socket hold) past the limit cuts the
 * reader off through `onOverflow`, and nobody else waits for it.
 */
export class SseWriter {
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private waitingForDrain = false;
  private scheduled = false;
  private closed = false;
  private lowWaters: { threshold: number; resolve: () => void }[] = [];

  constructor(
    private readonly res: ServerResponse,
    private readonly limit: number,
    private readonly onOverflow: (pendingBytes: number) => void,
  ) {
    res.on('drain', () => {
      this.waitingForDrain = false;
      this.flush();
    });
    res.on('close', () => this.discard());
  }

  get pendingBytes(): number {
    return this.queuedBytes + this.res.writableLength;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  write(frame: Buffer): void {
    if (this.closed) return;
    this.queue.push(frame);
    this.queuedBytes += frame.length;
    this.checkLimit(0);
    if (!this.closed && !this.scheduled && !this.waitingForDrain) {
      this.scheduled = true;
      scheduleFlush(this);
    }
  }

  /** Cuts the reader off if `extra` bytes held elsewhere plus what waits here pass the limit. */
  checkLimit(extra: number): void {
    const pending = extra + this.pendingBytes;
    if (this.closed || pending <= this.limit) return;
    this.discard();
    this.onOverflow(pending);
  }

  /** Resolves once unsent output is at most `threshold` bytes, or the stream closed. */
  whenBelow(threshold: number): Promise<void> {
    if (this.closed || this.pendingBytes <= threshold) return Promise.resolve();
    return new Promise((resolve) => this.lowWaters.push({ threshold, resolve }));
  }

  /** Writes what is queued and ends the response (shutdown, expiry). */
  end(): void {
    if (this.closed) return;
    if (this.queuedBytes > 0 && !this.res.destroyed) this.res.write(Buffer.concat(this.queue, this.queuedBytes));
    this.discard();
    this.res.end();
  }

  discard(): void {
    this.closed = true;
    this.queue = [];
    this.queuedBytes = 0;
    this.releaseLowWaters();
  }

  /** @internal the flush scheduler and 'drain' call this. */
  flush(): void {
    this.scheduled = false;
    if (this.closed || this.res.destroyed) return;
    if (this.queuedBytes > 0 && !this.waitingForDrain) {
      const data = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue, this.queuedBytes);
      this.queue = [];
      this.queuedBytes = 0;
      if (!this.res.write(data)) this.waitingForDrain = true;
    }
    this.releaseLowWaters();
  }

  private releaseLowWaters(): void {
    if (this.lowWaters.length === 0) return;
    const pending = this.pendingBytes;
    const waiting = this.lowWaters;
    this.lowWaters = [];
    for (const waiter of waiting) {
      if (this.closed || pending <= waiter.threshold) waiter.resolve();
      else this.lowWaters.push(waiter);
    }
  }
}

let dirty: SseWriter[] = [];
let flushScheduled = false;

function scheduleFlush(writer: SseWriter): void {
  dirty.push(writer);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flushDirty);
  }
}

function flushDirty(): void {
  flushScheduled = false;
  const writers = dirty;
  dirty = [];
  for (const writer of writers) writer.flush();
}

/**
 * A stream as the broker sees it: it takes events, not RESP frames (EVENTS_ONLY). While a
 * resume replays history, live events wait here and count against the output limit; then
 * those the replay already covered are dropped (the same seam as TCP RESUME: nothing missing,
 * nothing twice).
 */
export class EventStreamSubscriber implements Subscriber {
  readonly protocol = EVENTS_ONLY;
  private held: StoredEvent[] | undefined;
  private heldBytes = 0;

  constructor(readonly writer: SseWriter) {}

  deliver(_frame: Buffer, event: StoredEvent): void {
    if (this.writer.isClosed) return;
    if (this.held === undefined) {
      this.writer.write(sseEventFrame(event));
      return;
    }
    this.held.push(event);
    this.heldBytes += sseEventFrame(event).length;
    this.writer.checkLimit(this.heldBytes);
  }

  /** From now until `endReplay`, live events are held back. */
  beginReplay(): void {
    this.held = [];
    this.heldBytes = 0;
  }

  /** Writes the held events that come after the replay's last one, and goes live. */
  endReplay(lastReplayedId: EventId | undefined): void {
    const held = this.held ?? [];
    this.held = undefined;
    this.heldBytes = 0;
    for (const event of held) {
      if (lastReplayedId === undefined || compareEventIds(event.id, lastReplayedId) > 0) this.writer.write(sseEventFrame(event));
    }
  }
}
