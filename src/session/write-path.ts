import { type ChannelRun, releaseFrame, releaseViews, type Slab, slabOf } from '../broker/slab.js';
import { type BudgetedOutput, COUNT_STEP, type OutputBudget, type OutputCut } from '../runtime/output-budget.js';

/**
 * What a write path writes to: a TCP socket, or an HTTP response carrying a Server-Sent Events
 * stream. Both are Node writables with these members.
 */
export interface OutputStream {
  /** `done` runs once the stream no longer holds `chunk`: written, or failed, or destroyed. */
  write(chunk: Buffer, done?: (error?: Error | null) => void): boolean;
  cork(): void;
  uncork(): void;
  end(): unknown;
  destroy(): unknown;
  readonly writableLength: number;
  readonly destroyed: boolean;
  on(event: 'drain' | 'close', listener: () => void): unknown;
}

/**
 * Destroys `stream` `ms` after it was told to end, unless it closed first: a peer that neither
 * reads its last bytes nor closes its side would otherwise hold the socket (and the
 * subscriptions hanging on it) for good.
 */
export function destroyAfterGrace(stream: Pick<OutputStream, 'destroy' | 'on'>, ms: number): void {
  const grace = setTimeout(() => stream.destroy(), ms);
  grace.unref();
  stream.on('close', () => clearTimeout(grace));
}

/** A waiter of `whenBelow`. */
interface LowWater {
  threshold: number;
  resolve: () => void;
}

/*
 * What a path holds while it has no closed run and no waiter, as nearly every path does between
 * turns: shared, each replaced by an array of the path's own when needed. A `[]` per path would
 * be one more object per client, and V8 moves an array literal's allocation site to the old
 * generation once most of what it allocates survives (as in a connection storm), discarding the
 * optimized code that allocates there (docs/performance.md, "Tenth round: the first storm").
 * Frozen: a write to one would be a bug, and throws.
 */
const NO_RUNS: Buffer[] = Object.freeze([]) as unknown as Buffer[];
const NO_LOW_WATERS: LowWater[] = Object.freeze([]) as unknown as LowWater[];

/**
 * The one way bytes reach a client: a RESP connection's socket or an SSE stream's response.
 *
 * Frames are queued and flushed once per event-loop turn as a single write, so a burst of
 * publishes costs each subscriber one syscall, not one per frame (node-redis client/socket.ts
 * coalesces the same way). `write()` returning false is honoured: nothing more is written until
 * 'drain'. What waits (our queue plus the socket's own buffer) is bounded by the output limit;
 * past it the client is cut off through `onOverflow`, and nobody else waits for it. The same
 * bytes, and the frames its owner holds back (`hold`), count in the daemon-wide OutputBudget,
 * which may cut this client off too when the whole daemon holds too much. They are counted
 * there as the output grows by COUNT_STEP and whenever it is written, so a frame still costs
 * the one comparison the output limit needs, nothing more.
 *
 * Frames that lie next to each other in memory are joined as they are queued: the broker writes
 * the frames of one channel one after another into a slab (broker.ts, FrameWriter), so a
 * subscriber's frames of a turn usually form one run of bytes that is written as it is, with
 * no Buffer.concat and nothing allocated per frame. That is only correct because a Buffer
 * handed to `write` is not changed while it is held here or by the socket. A slab the broker
 * reuses (broker/slab.ts) counts the views of it handed out: the frames of a run are given back
 * when the socket's callback for the write that carried them ran (Node keeps the Buffer until
 * then), or when they were dropped or copied unwritten.
 *
 * The frames of a channel whose subscribers all take them as they are may even reach the open
 * run with no call per frame: the path follows the channel's run (`writeInRun`, broker/slab.ts
 * ChannelRun), and takes the frames the broker appended to it before anything else touches
 * what is queued (a write, a flush, a measure, a close), so they keep their place among this
 * path's other bytes.
 */
export class WritePath implements BudgetedOutput {
  /**
   * Closed runs of bytes, oldest first; the newest run is still open (the tail fields). An array
   * of its own only while it holds runs: a flush gives it up (NO_RUNS), so an idle client keeps
   * none.
   */
  private queue: Buffer[] = NO_RUNS;
  private queuedBytes = 0;
  /** The open run: bytes [tailStart, tailEnd) of tailMemory, which began with tailFirst. */
  private tailFirst: Buffer | undefined;
  private tailMemory: ArrayBufferLike | undefined;
  private tailStart = 0;
  private tailEnd = 0;
  /** The pooled slab the open run is a view of, and the frames in it (each one view to give back). */
  private tailSlab: Slab | undefined;
  private tailViews = 0;
  /**
   * The channel's run the open run follows (writeInRun): the frames the broker appended to it
   * since this path joined, at `runEndAtJoin` and `runFramesAtJoin`, belong to the open run
   * too and are taken (`takeRun`) before anything reads or changes what is queued.
   */
  private channelRun: ChannelRun | undefined;
  private runEndAtJoin = 0;
  private runFramesAtJoin = 0;
  /**
   * In step with `queue` from the first closed run that was a view of a pooled slab on: each
   * run's slab (or undefined) and its frames. Most paths never need them.
   */
  private queueSlabs: (Slab | undefined)[] | undefined;
  private queueViews: number[] | undefined;
  /** The socket's own buffer as last seen: it only shrinks between our writes. */
  private socketBytes = 0;
  /**
   * Where the per-frame check (queued plus `socketBytes`) next looks closer: the output limit as
   * last seen, or sooner, once the output has grown by COUNT_STEP since it was last counted in
   * the budget. The limit only grows (on AUTH), so the check is conservative; the real figures
   * are read before anything is decided.
   */
  private nextCheck: number;
  /** Frames the owner holds back (a resume's seam): they count like queued ones. */
  private heldBytes = 0;
  /** This path's bytes in the budget's total, as last counted. */
  private counted = 0;
  /** True while this path's bytes are in the budget's total (until it is cut off or closed). */
  private budgeted = true;
  private waitingForDrain = false;
  private drainListened = false;
  private scheduled = false;
  private closed = false;
  private endAfterFlush = false;
  private lowWaters: LowWater[] = NO_LOW_WATERS;
  /** Runs while a paced writer waits; re-armed on every drain (the reader took bytes). */
  private stallTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: OutputStream,
    /** Current limit in bytes; a function because it grows once the client authenticates. */
    private readonly limit: () => number,
    private readonly onOverflow: (pendingBytes: number, cause: OutputCut) => void,
    /** After `endAfterWrites`, how long the reader gets before the stream is destroyed. */
    private readonly closeGraceMs: number,
    /** The daemon-wide output budget, shared by every write path of the daemon. */
    private readonly budget: OutputBudget,
    /**
     * Whether this path listens for the stream's 'close' to `discard` itself. A session's owner
     * discards it when its stream closes (Session.close), and a second 'close' listener would
     * cost every connection a closure and Node's listener array on its socket.
     */
    discardOnClose = true,
  ) {
    this.nextCheck = Math.min(limit(), COUNT_STEP);
    if (socket.destroyed) {
      // Gone before its first byte (an HTTP reader that left while its reply was looked up):
      // 'close' will not come again, so nothing may wait for it.
      this.closed = true;
      this.budgeted = false;
      return;
    }
    budget.add(this);
    if (discardOnClose) socket.on('close', () => this.discard());
  }

  /**
   * Listens for 'drain' from the first time the socket's buffer fills, not from the start: most
   * clients never fill it, and a listener is one more closure per connection (docs/performance.md,
   * "Seventh round: per-connection cost").
   */
  private listenForDrain(): void {
    if (this.drainListened) return;
    this.drainListened = true;
    this.socket.on('drain', () => {
      this.waitingForDrain = false;
      if (this.stallTimer !== undefined) this.stallTimer.refresh();
      this.measure();
      this.flush();
    });
  }

  /** Bytes accepted but not yet handed to the kernel. */
  get pendingBytes(): number {
    this.leaveRun();
    return this.queuedBytes + this.socket.writableLength;
  }

  /** True once it takes no more frames (closed, overflowed, or ending). */
  get isClosed(): boolean {
    return this.closed || this.endAfterFlush;
  }

  /**
   * The owner holds back `bytes` of frames (a resume's seam, while the replay runs): they count
   * against the output limit and the budget like queued ones, until `unhold`. Past the limit
   * the client is cut off.
   */
  hold(bytes: number): void {
    if (this.closed) return;
    this.heldBytes += bytes;
    const pending = this.measure();
    if (pending > this.limit()) {
      this.cutOff(pending, 'limit');
      return;
    }
    const budget = this.budget;
    if (budget.total > budget.trigger) budget.enforce();
  }

  /** Held frames were written or dropped. */
  unhold(bytes: number): void {
    if (this.closed) return;
    this.heldBytes -= bytes;
    this.measure();
  }

  /**
   * @internal BudgetedOutput: what this client holds now (queued, in the socket's buffer, held
   * back), re-read; the budget's total is corrected to it.
   */
  measure(): number {
    this.leaveRun();
    if (!this.budgeted) return 0;
    this.socketBytes = this.socket.writableLength;
    const share = this.queuedBytes + this.socketBytes + this.heldBytes;
    this.budget.total += share - this.counted;
    this.counted = share;
    return share;
  }

  /**
   * @internal BudgetedOutput: the daemon holds too much, and this client among the most. A
   * client being closed whose socket still holds its last bytes is cut off too.
   */
  cutForBudget(): boolean {
    if (!this.budgeted) return false;
    this.cutOff(this.heldBytes + this.pendingBytes, 'budget');
    return true;
  }

  write(frame: Buffer): void {
    this.leaveRun();
    if (this.closed || this.endAfterFlush) {
      releaseFrame(frame);
      return;
    }
    const length = frame.length;
    if (length === 0) return;
    const memory = frame.buffer;
    const offset = frame.byteOffset;
    if (memory === this.tailMemory && offset === this.tailEnd) {
      this.tailEnd += length; // adjacent to the open run: it just grows
      this.tailViews += 1;
    } else {
      if (this.tailFirst !== undefined) this.closeTail();
      this.tailFirst = frame;
      this.tailMemory = memory;
      this.tailStart = offset;
      this.tailEnd = offset + length;
      this.tailSlab = slabOf(frame);
      this.tailViews = 1;
    }
    this.queuedBytes += length;
    if (this.queuedBytes + this.socketBytes > this.nextCheck && this.checkOutput()) return;
    if (!this.scheduled && !this.waitingForDrain) {
      this.scheduled = true;
      scheduleFlush(this);
    }
  }

  /**
   * Writes `frame`, the one that opens `run` (slab.ts, ChannelRun), and follows the run: the
   * frames the broker appends to it are this path's too, until it takes them. False when it
   * does not follow (closed, or the frame did not end up at the end of the open run).
   */
  writeInRun(frame: Buffer, run: ChannelRun): boolean {
    this.write(frame);
    if (this.closed || this.endAfterFlush || this.tailMemory !== run.memory || this.tailEnd !== run.end) return false;
    this.channelRun = run;
    this.runEndAtJoin = run.end;
    this.runFramesAtJoin = run.frames;
    // The run stops before this path's next check of its output would be due (see write).
    const room = run.end + this.nextCheck - (this.queuedBytes + this.socketBytes);
    if (room < run.limitEnd) run.limitEnd = room;
    run.followers += 1;
    return true;
  }

  /**
   * Stops following a run, taking its frames (takeRun): before anything reads or changes what
   * is queued, and when what the owner takes changes (a type filter, a resume, the protocol),
   * so that the broker hands it each frame again.
   */
  leaveRun(): void {
    if (this.channelRun !== undefined) this.takeRun();
  }

  /**
   * Takes the frames appended to the followed run since this path joined into the open run,
   * and closes the run (its next frame visits every subscriber of the channel again). They
   * stay within the output's next check (writeInRun), so nothing else is due for them.
   */
  private takeRun(): void {
    const run = this.channelRun!;
    this.channelRun = undefined;
    run.open = false;
    const bytes = run.end - this.runEndAtJoin;
    if (bytes === 0) return;
    this.tailEnd += bytes;
    this.tailViews += run.frames - this.runFramesAtJoin;
    this.queuedBytes += bytes;
  }

  /** Writes what is queued, then half-closes (QUIT, protocol errors): the reply still arrives. */
  endAfterWrites(): void {
    this.leaveRun();
    if (this.closed || this.endAfterFlush) return;
    this.endAfterFlush = true;
    destroyAfterGrace(this.socket, this.closeGraceMs);
    if (!this.scheduled && !this.waitingForDrain) {
      this.scheduled = true;
      scheduleFlush(this);
    }
  }

  /** Stops writing; queued frames are dropped (the socket is being destroyed). */
  discard(): void {
    this.closed = true;
    this.release();
    this.releaseLowWaters();
  }

  /**
   * Resolves once unsent output is at most `threshold` bytes (or the path closed): a producer
   * of bulk output (a resume replay) paces itself with it instead of hitting the limit.
   */
  whenBelow(threshold: number): Promise<void> {
    if (this.closed || this.pendingBytes <= threshold) return Promise.resolve();
    // A reader that takes nothing for the close grace while a reply waits for it is cut off
    // as if over its limit (docs/operations.md): a paced reply never holds a client forever.
    if (this.stallTimer === undefined) {
      this.stallTimer = setTimeout(() => this.onStalled(), this.closeGraceMs);
      this.stallTimer.unref();
    }
    return new Promise((resolve) => this.waitForLowWater({ threshold, resolve }));
  }

  private waitForLowWater(waiter: LowWater): void {
    if (this.lowWaters === NO_LOW_WATERS) this.lowWaters = [waiter];
    else this.lowWaters.push(waiter);
  }

  private onStalled(): void {
    this.stallTimer = undefined;
    if (this.closed || this.lowWaters.length === 0) return;
    this.cutOff(this.heldBytes + this.pendingBytes, 'limit');
  }

  /** Cuts the client off: nothing more is written, waiters are released, the owner is told. */
  private cutOff(pendingBytes: number, cause: OutputCut): void {
    this.closed = true;
    this.release();
    this.releaseLowWaters();
    this.onOverflow(pendingBytes, cause);
  }

  /**
   * Drops what is queued and takes this path's bytes out of the budget's total, once: the
   * socket is being destroyed, or has closed.
   */
  private release(): void {
    if (this.budgeted) {
      this.budgeted = false;
      this.budget.total -= this.counted;
      this.counted = 0;
      this.budget.remove(this);
    }
    this.socketBytes = 0;
    this.heldBytes = 0;
    this.dropQueue();
  }

  private releaseLowWaters(): void {
    if (this.lowWaters.length === 0) {
      this.clearStallTimer();
      return;
    }
    const pending = this.pendingBytes;
    const waiting = this.lowWaters;
    this.lowWaters = NO_LOW_WATERS;
    for (const waiter of waiting) {
      if (this.closed || pending <= waiter.threshold) waiter.resolve();
      else this.waitForLowWater(waiter);
    }
    if (this.lowWaters.length === 0) this.clearStallTimer();
  }

  private clearStallTimer(): void {
    if (this.stallTimer === undefined) return;
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }

  /**
   * The quick check said "maybe over the limit, or grown enough to be counted again": count it
   * in the budget and decide on the real figures. True when the client was cut off (over its
   * limit, or among the largest of a daemon over its budget).
   */
  private checkOutput(): boolean {
    this.measure();
    const limit = this.limit();
    const pending = this.queuedBytes + this.socketBytes;
    if (pending > limit) {
      this.cutOff(pending, 'limit');
      return true;
    }
    const budget = this.budget;
    if (budget.total > budget.trigger) {
      budget.enforce();
      if (this.closed) return true;
    }
    this.nextCheck = Math.min(limit, pending + COUNT_STEP);
    return false;
  }

  /** Closes the open run: the first frame itself when nothing joined it, else one view. */
  private takeTail(): Buffer {
    const first = this.tailFirst!;
    const length = this.tailEnd - this.tailStart;
    const run = length === first.length ? first : Buffer.from(this.tailMemory as ArrayBuffer, this.tailStart, length);
    this.tailFirst = undefined;
    this.tailMemory = undefined;
    this.tailSlab = undefined;
    return run;
  }

  /** Moves the open run to the queue, with its slab's views. */
  private closeTail(): void {
    const slab = this.tailSlab;
    const views = this.tailViews;
    let queue = this.queue;
    if (queue === NO_RUNS) this.queue = queue = [];
    if (slab !== undefined && this.queueSlabs === undefined) {
      this.queueSlabs = new Array<Slab | undefined>(queue.length).fill(undefined);
      this.queueViews = new Array<number>(queue.length).fill(0);
    }
    queue.push(this.takeTail());
    if (this.queueSlabs !== undefined) {
      this.queueSlabs.push(slab);
      this.queueViews!.push(views);
    }
  }

  /** The callback for writing the queue's run `i`: gives its views back once written. */
  private queuedRunDone(i: number): ((error?: Error | null) => void) | undefined {
    const slab = this.queueSlabs?.[i];
    return slab === undefined ? undefined : viewsWritten(slab, this.queueViews![i]!);
  }

  /** Empties the queue; `release`: its runs were not written, so their views are given back. */
  private clearQueue(release: boolean): void {
    this.queue = NO_RUNS;
    const slabs = this.queueSlabs;
    if (slabs === undefined) return;
    if (release) {
      const views = this.queueViews!;
      for (let i = 0; i < slabs.length; i++) {
        const slab = slabs[i];
        if (slab !== undefined) releaseViews(slab, views[i]!);
      }
    }
    slabs.length = 0;
    this.queueViews!.length = 0;
  }

  private dropQueue(): void {
    this.leaveRun();
    this.clearQueue(true);
    if (this.tailSlab !== undefined) releaseViews(this.tailSlab, this.tailViews);
    this.queuedBytes = 0;
    this.tailFirst = undefined;
    this.tailMemory = undefined;
    this.tailSlab = undefined;
  }

  /** @internal called by the flush scheduler and on 'drain'. */
  flush(): void {
    this.leaveRun();
    this.scheduled = false;
    if (this.closed || this.socket.destroyed) return;
    if (this.queuedBytes > 0 && !this.waitingForDrain) {
      const queue = this.queue;
      let ok: boolean;
      if (queue.length === 0) {
        // The common case: one run, written as it is.
        const slab = this.tailSlab;
        const views = this.tailViews;
        const run = this.takeTail();
        ok = this.socket.write(run, slab === undefined ? undefined : viewsWritten(slab, views));
      } else {
        if (this.tailFirst !== undefined) this.closeTail();
        const runs = queue.length;
        if (runs <= WRITEV_MAX_RUNS && this.queuedBytes >= runs * WRITEV_MIN_RUN_BYTES) {
          // A few large runs (a turn's frames spanning slabs): one writev, nothing copied.
          this.socket.cork();
          ok = true;
          for (let i = 0; i < runs; i++) ok = this.socket.write(queue[i]!, this.queuedRunDone(i));
          this.socket.uncork();
          this.clearQueue(false);
        } else if (runs === 1) {
          ok = this.socket.write(queue[0]!, this.queuedRunDone(0));
          this.clearQueue(false);
        } else {
          // Many small pieces (replies): one copy is cheaper than a writev entry each. The
          // copy holds no view of a slab, so the runs' views are given back now.
          ok = this.socket.write(Buffer.concat(queue, this.queuedBytes));
          this.clearQueue(true);
        }
      }
      this.queuedBytes = 0;
      if (!ok) {
        this.waitingForDrain = true;
        this.listenForDrain();
      }
      // The queue went to the socket: counted again as what the socket still holds.
      this.measure();
      this.nextCheck = Math.min(this.limit(), this.socketBytes + COUNT_STEP);
    }
    if (this.endAfterFlush && this.queuedBytes === 0) {
      this.closed = true;
      this.socket.end();
    }
    this.releaseLowWaters();
    // Counting the socket's buffer may have put the total over (it was last counted up to a step ago).
    const budget = this.budget;
    if (budget.total > budget.trigger) budget.enforce();
  }
}

/** A write's callback that gives back the `views` frames of `slab` it carried. */
function viewsWritten(slab: Slab, views: number): () => void {
  return () => releaseViews(slab, views);
}

/** Up to this many runs of this average size go out as one writev instead of being joined. */
const WRITEV_MAX_RUNS = 8;
const WRITEV_MIN_RUN_BYTES = 4 * 1024;

/*
 * One setImmediate for all connections with queued output. It runs right after the poll phase,
 * so every frame produced while handling this turn's reads goes out in one write per client.
 */
let dirty: WritePath[] = [];
let flushImmediate: NodeJS.Immediate | undefined;

function scheduleFlush(path: WritePath): void {
  dirty.push(path);
  flushImmediate ??= setImmediate(flushDirty);
}

function flushDirty(): void {
  flushImmediate = undefined;
  const paths = dirty;
  dirty = [];
  for (const path of paths) path.flush();
}

/**
 * Writes what is queued now, for work that itself runs in the check phase (a SQLite commit,
 * store/sqlite/writer.ts): an immediate taken there runs only in the next event-loop turn, after
 * that turn's poll phase has read and handled everything that arrived meanwhile, so the
 * commit's deliveries and replies would wait for all of it (docs/performance.md, "Sixth round").
 */
export function flushWrites(): void {
  if (flushImmediate === undefined) return;
  clearImmediate(flushImmediate);
  flushDirty();
}
