import type { Socket } from 'node:net';

/**
 * The one way bytes reach a client's socket.
 *
 * Frames are queued and flushed once per event-loop turn as a single write, so a burst of
 * publishes costs each subscriber one syscall, not one per frame (node-redis client/socket.ts
 * coalesces the same way). `write()` returning false is honoured: nothing more is written until
 * 'drain'. What waits (our queue plus the socket's own buffer) is bounded by the output limit;
 * past it the client is cut off through `onOverflow`, and nobody else waits for it.
 */
export class WritePath {
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private waitingForDrain = false;
  private scheduled = false;
  private closed = false;
  private endAfterFlush = false;
  private lowWaters: { threshold: number; resolve: () => void }[] = [];

  constructor(
    private readonly socket: Socket,
    /** Current limit in bytes; a function because it grows once the client authenticates. */
    private readonly limit: () => number,
    private readonly onOverflow: (pendingBytes: number) => void,
  ) {
    socket.on('drain', () => {
      this.waitingForDrain = false;
      this.flush();
    });
    socket.on('close', () => this.discard());
  }

  /** Bytes accepted but not yet handed to the kernel. */
  get pendingBytes(): number {
    return this.queuedBytes + this.socket.writableLength;
  }

  write(frame: Buffer): void {
    if (this.closed || this.endAfterFlush) return;
    this.queue.push(frame);
    this.queuedBytes += frame.length;
    const pending = this.queuedBytes + this.socket.writableLength;
    if (pending > this.limit()) {
      this.closed = true;
      this.queue = [];
      this.queuedBytes = 0;
      this.onOverflow(pending);
      return;
    }
    if (!this.scheduled && !this.waitingForDrain) {
      this.scheduled = true;
      scheduleFlush(this);
    }
  }

  /** Writes what is queued, then half-closes (QUIT, protocol errors): the reply still arrives. */
  endAfterWrites(): void {
    if (this.closed || this.endAfterFlush) return;
    this.endAfterFlush = true;
    if (!this.scheduled && !this.waitingForDrain) {
      this.scheduled = true;
      scheduleFlush(this);
    }
  }

  /** Stops writing; queued frames are dropped (the socket is being destroyed). */
  discard(): void {
    this.closed = true;
    this.queue = [];
    this.queuedBytes = 0;
    this.releaseLowWaters();
  }

  /**
   * Resolves once unsent output is at most `threshold` bytes (or the path closed): a producer
   * of bulk output (a resume replay) paces itself with it instead of hitting the limit.
   */
  whenBelow(threshold: number): Promise<void> {
    if (this.closed || this.pendingBytes <= threshold) return Promise.resolve();
    return new Promise((resolve) => this.lowWaters.push({ threshold, resolve }));
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

  /** @internal called by the flush scheduler and on 'drain'. */
  flush(): void {
    this.scheduled = false;
    if (this.closed || this.socket.destroyed) return;
    if (this.queuedBytes > 0 && !this.waitingForDrain) {
      const data = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue, this.queuedBytes);
      this.queue = [];
      this.queuedBytes = 0;
      if (!this.socket.write(data)) this.waitingForDrain = true;
    }
    if (this.endAfterFlush && this.queuedBytes === 0) {
      this.closed = true;
      this.socket.end();
    }
    this.releaseLowWaters();
  }
}

/*
 * One setImmediate for all connections with queued output. It runs right after the poll phase,
 * so every frame produced while handling this turn's reads goes out in one write per client.
 */
let dirty: WritePath[] = [];
let flushScheduled = false;

function scheduleFlush(path: WritePath): void {
  dirty.push(path);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flushDirty);
  }
}

function flushDirty(): void {
  flushScheduled = false;
  const paths = dirty;
  dirty = [];
  for (const path of paths) path.flush();
}
