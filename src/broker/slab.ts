/**
 * Fan-out slabs that are written again once nothing holds a frame of them (docs/performance.md,
 * "Eighth round: fan-out slabs").
 *
 * The broker writes each form's frames one after the other into a slab and hands the same view
 * to every subscriber that takes that form (broker.ts, FrameWriter). A slab of 4 KiB or more is
 * memory of its own outside the JS heap, which V8 counts toward its next full collection; under
 * load, slabs whose frames wait in slow readers' queues outlive two scavenges, are promoted and
 * stay old-generation garbage until that collection. So such a slab goes back to a pool once its
 * writer moved on and every view of it is gone, and the next slab of its size is taken from there.
 *
 * A view is gone only when the write that carried it completed: Node's socket.write keeps the
 * Buffer it is given (nothing is copied) until it calls the write's callback. So each view
 * handed to a subscriber is counted (`views`), and given back (`releaseViews`) by the write path
 * when that callback ran or when it dropped the frame unwritten (a closed connection, a copy into
 * one buffer), or by the subscriber when it did not take the frame at all. A view that is never
 * given back only keeps its slab out of the pool: it is then freed by the collector, as every
 * slab was before.
 */

/** Sizes that are pooled: powers of two from here up to the largest slab (smaller ones are slices of Node's shared pool). */
const POOLED_MIN_BYTES = 4 * 1024;
const POOLED_MIN_SHIFT = 12;

/** A slab's place in its life. */
const WRITING = 0;
/** Its writer moved on: it goes to the pool once `views` is zero. */
const RETIRED = 1;
const SPARE = 2;

export class Slab {
  /** Views of it handed to subscribers and not yet written or dropped. */
  views = 0;
  /** WRITING, RETIRED or SPARE. */
  state = WRITING;

  constructor(
    readonly bytes: Buffer,
    readonly pool: SlabPool,
  ) {}
}

/**
 * A channel's frames of a run: consecutive frames written one after the other into one slab
 * while every subscriber of the channel takes them as they are (docs/performance.md, "Ninth
 * round: per subscriber"). The channel's fan-out visits its subscribers for the frame that
 * opens the run; each one that appends it to its write path's open run of bytes follows the
 * run (WritePath.writeInRun). For the frames after it the fan-out only moves `end` on and
 * counts their views, once per frame for all `followers`; a follower takes what was added
 * since it joined when it next writes, flushes or is measured, and the run closes then: the
 * next frame visits every subscriber again. So a subscriber's bytes stay in the order they
 * were produced, and each follower's output limit still holds frame by frame: the run closes
 * before a frame would take it past `limitEnd`, the nearest point at which one of its
 * followers would have checked its output.
 */
export class ChannelRun {
  /** Frames are still appended: every follower takes them. */
  open = true;
  /** Write paths that joined at the opening frame. */
  followers = 0;
  /** Frames appended after the opening one. */
  frames = 0;
  /** Where the run's bytes end in `memory`; its next frame must start here. */
  end: number;
  /** The run closes before a frame would end past this. */
  limitEnd = Number.POSITIVE_INFINITY;

  constructor(
    readonly memory: ArrayBufferLike,
    end: number,
    /** The pooled slab `memory` is, if any: each frame appended is one view per follower. */
    readonly slab: Slab | undefined,
  ) {
    this.end = end;
  }
}

/** Pooled slabs by their memory: a frame's slab is found from the frame. */
const slabs = new WeakMap<ArrayBufferLike, Slab>();

/** The pooled slab `frame` is a view of, if any. */
export function slabOf(frame: Buffer): Slab | undefined {
  return slabs.get(frame.buffer);
}

/** `views` views of `slab` were written or dropped. */
export function releaseViews(slab: Slab, views: number): void {
  slab.views -= views;
  if (slab.views === 0 && slab.state === RETIRED) slab.pool.give(slab);
}

/** A subscriber did not take `frame` (or is done with it): its view is given back. */
export function releaseFrame(frame: Buffer): void {
  const slab = slabs.get(frame.buffer);
  if (slab !== undefined) releaseViews(slab, 1);
}

/**
 * Spare slabs, by size. What it keeps follows what is in use, like the memory store's spare ring
 * chunks (RingContext, src/store/event-ring.ts): spares of at most as many bytes as the slabs
 * taken and not back (being written, or retired with views left) came to at their peak since
 * the previous `trim` (the broker's sweep, about a second apart); when that is full, spares of
 * sizes nobody took since then make room for a size writers take now. Writers fill their slabs in
 * step (a publisher goes round its sandboxes), so they all want a new one at about the same
 * time while the frames at the end of their last one are still queued, and after the sweep let
 * them go they all grow again through the same sizes: spares as large as what is in use let each
 * of them find one then. A broker whose load fell holds no spares of its past peak after the
 * next sweep.
 */
export class SlabPool {
  private readonly spare: Slab[][] = [];
  private spareTotal = 0;
  /** Bytes of the slabs taken and not back in the pool (or let go), and their peak since `trim`. */
  private inUseBytes = 0;
  private peakBytes = 0;
  /** By size: slabs taken since `trim` (a size none was taken of is stale: its spares go first). */
  private readonly taken: number[] = [];
  /** Slabs of pooled sizes made new, and their bytes (tests and benches read them). */
  allocated = 0;
  allocatedBytes = 0;
  /** Slabs taken from the spares. */
  reused = 0;

  constructor(maxBytes: number) {
    for (let bytes = POOLED_MIN_BYTES; bytes <= maxBytes; bytes *= 2) {
      this.spare.push([]);
      this.taken.push(0);
    }
  }

  /** A slab of exactly `bytes`, or undefined when that size is not pooled. */
  take(bytes: number): Slab | undefined {
    const size = sizeClass(bytes);
    if (size < 0 || size >= this.spare.length) return undefined;
    this.inUseBytes += bytes;
    if (this.inUseBytes > this.peakBytes) this.peakBytes = this.inUseBytes;
    this.taken[size]! += 1;
    let slab = this.spare[size]!.pop();
    if (slab !== undefined) {
      this.spareTotal -= bytes;
      this.reused += 1;
    } else {
      slab = new Slab(Buffer.allocUnsafeSlow(bytes), this);
      slabs.set(slab.bytes.buffer, slab);
      this.allocated += 1;
      this.allocatedBytes += bytes;
    }
    slab.state = WRITING;
    return slab;
  }

  /** Its writer writes no more into `slab`: it is spare once every view of it is gone. */
  retire(slab: Slab): void {
    slab.state = RETIRED;
    if (slab.views === 0) this.give(slab);
  }

  /** @internal `slab` is retired and no view of it is left. */
  give(slab: Slab): void {
    slab.state = SPARE;
    const bytes = slab.bytes.length;
    this.inUseBytes -= bytes;
    // Full: spares of a size writers take now displace those of sizes they no longer take.
    if (this.spareTotal + bytes > this.peakBytes) this.dropStale(this.peakBytes - bytes);
    if (this.spareTotal + bytes > this.peakBytes) return; // let go: the collector frees it
    this.spare[sizeClass(bytes)]!.push(slab);
    this.spareTotal += bytes;
  }

  /**
   * Lets go of the spares beyond what was in use at the peak since the previous call: first
   * those of sizes none was taken of since then, then the largest.
   */
  trim(): void {
    const keep = Math.max(this.inUseBytes, this.peakBytes);
    this.dropStale(keep);
    for (let size = this.spare.length - 1; size >= 0 && this.spareTotal > keep; size--) {
      const spare = this.spare[size]!;
      while (spare.length > 0 && this.spareTotal > keep) this.spareTotal -= spare.pop()!.bytes.length;
    }
    this.peakBytes = this.inUseBytes;
    this.taken.fill(0);
  }

  /** Lets go of spares of sizes none was taken of since `trim`, largest first, down to `keep` bytes. */
  private dropStale(keep: number): void {
    for (let size = this.spare.length - 1; size >= 0 && this.spareTotal > keep; size--) {
      if (this.taken[size]! > 0) continue;
      const spare = this.spare[size]!;
      while (spare.length > 0 && this.spareTotal > keep) this.spareTotal -= spare.pop()!.bytes.length;
    }
  }

  /** Bytes of the spares held (for tests). */
  get spareBytes(): number {
    return this.spareTotal;
  }
}

/** 0 for 4 KiB, 1 for 8 KiB, ...; -1 for a size that is not a power of two of at least 4 KiB. */
function sizeClass(bytes: number): number {
  if (bytes < POOLED_MIN_BYTES || (bytes & (bytes - 1)) !== 0) return -1;
  return 31 - Math.clz32(bytes) - POOLED_MIN_SHIFT;
}
