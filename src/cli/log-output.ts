import { write as fsWrite } from 'node:fs';

/** Most bytes of log lines held while the reader of the output is behind (about 20,000 lines). */
export const LOG_QUEUE_MAX_BYTES = 4 * 1024 * 1024;

/** How long a stopping daemon waits for its last log lines to be written (docs/operations.md). */
export const LOG_SETTLE_MS = 1_000;

/** The wait before writing again to an output that said it would block (EAGAIN). */
const RETRY_MS = 10;

/**
 * The daemon's log output: pino's JSON lines to a file descriptor (standard output), written in
 * order, one asynchronous write at a time, so that a slow reader of the logs never stalls the
 * event loop. pino takes any object with `write(line)` as its destination.
 *
 * pino's own default destination (sonic-boom) is not used because of what it does when the
 * reader is slow or gone (docs/operations.md, "Watching it"):
 * - its queue has no bound: a log reader that stops reading while clients fail AUTH by the
 *   thousand would grow the daemon's memory without limit. Here lines past `maxQueuedBytes`
 *   are dropped, counted, and reported once the output catches up.
 * - at exit it writes what is queued synchronously, and the version pino 10 uses retries a
 *   failed write there forever: a daemon whose stdout reader had gone away (EPIPE) never
 *   exited after SIGTERM, and one whose reader had stopped reading blocked in write(2). Here
 *   an output that fails stops taking lines (as pino does on EPIPE), and a stopping daemon
 *   waits for its queue at most `settle`'s bound.
 */
export class LogOutput {
  private queued: string[] = [];
  private queuedBytes = 0;
  private writing = false;
  private failed = false;
  private dropped = 0;
  private settleWaiters: (() => void)[] = [];

  /**
   * @param onDropped called once the output has caught up after dropping `count` lines; what
   *   it logs is written like any other line.
   */
  constructor(
    private readonly fd: number,
    private readonly onDropped: (count: number) => void,
    private readonly maxQueuedBytes = LOG_QUEUE_MAX_BYTES,
  ) {}

  /** One line, with its newline (pino's destination interface). */
  write(line: string): void {
    if (this.failed) return;
    const bytes = Buffer.byteLength(line);
    if (this.queuedBytes + bytes > this.maxQueuedBytes) {
      this.dropped += 1;
      return;
    }
    this.queued.push(line);
    this.queuedBytes += bytes;
    if (!this.writing) this.writeQueued();
  }

  /**
   * Resolves true once every line taken so far is written, false when the output failed or
   * `timeoutMs` passed first (a reader that does not read). Exiting then loses what is queued,
   * and only that.
   */
  settle(timeoutMs: number): Promise<boolean> {
    if (this.failed) return Promise.resolve(false);
    if (!this.writing) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.settleWaiters = this.settleWaiters.filter((waiter) => waiter !== done);
        resolve(false);
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve(!this.failed);
      };
      this.settleWaiters.push(done);
    });
  }

  private writeQueued(): void {
    const chunk = Buffer.from(this.queued.length === 1 ? this.queued[0]! : this.queued.join(''));
    this.queued = [];
    this.writing = true;
    this.send(chunk, 0);
  }

  private send(chunk: Buffer, offset: number): void {
    fsWrite(this.fd, chunk, offset, chunk.length - offset, null, (error, written) => {
      if (error !== null) {
        // An output opened non-blocking (a pipe some other code set so) says EAGAIN when full.
        if (error.code === 'EAGAIN') setTimeout(() => this.send(chunk, offset), RETRY_MS);
        else this.fail();
        return;
      }
      if (offset + written < chunk.length) {
        this.send(chunk, offset + written);
        return;
      }
      this.queuedBytes -= chunk.length;
      this.writing = false;
      if (this.dropped > 0 && this.queuedBytes === 0) {
        const count = this.dropped;
        this.dropped = 0;
        this.onDropped(count);
      }
      if (this.queued.length > 0) this.writeQueued();
      else if (!this.writing) this.wakeSettlers();
    });
  }

  /** EPIPE (the reader closed its end), EBADF, EIO...: nothing more can be written. */
  private fail(): void {
    this.failed = true;
    this.writing = false;
    this.queued = [];
    this.queuedBytes = 0;
    this.wakeSettlers();
  }

  private wakeSettlers(): void {
    const waiters = this.settleWaiters;
    this.settleWaiters = [];
    for (const waiter of waiters) waiter();
  }
}
