/**
 * Compact retained events for the memory store.
 *
 * Retaining each event as JS objects (a StoredEvent, its id object and a ~250-byte JSON string)
 * made the garbage collector copy every event through the young generation and then mark it
 * in the old one, again and again while it is retained. Here a sandbox's events live in three
 * typed arrays whatever their number: ids and timestamps in a Float64Array, byte offsets and the
 * type in a Uint32Array (both circular, one slot per event), and the JSON lines' bytes in a few
 * byte chunks outside the V8 heap. The collector neither traces nor copies any of it.
 * StoredEvent objects are built again only when a history or replay reads them.
 */
import { type EventId, eventLineSize, StoredEventRecord, writeEventLine } from '../event/event.js';

/**
 * Event types interned once per store, with a count of the retained events that use each one,
 * so that a type is one string however many events carry it, a type filter compares numbers,
 * and a type no retained event uses any more is forgotten (the table stays bounded by what is
 * retained).
 */
export class TypeTable {
  private readonly ids = new Map<string, number>();
  private readonly names: (string | undefined)[] = [];
  private readonly uses: number[] = [];
  private readonly free: number[] = [];

  /** Number of the type, counting one more use. */
  acquire(type: string): number {
    let id = this.ids.get(type);
    if (id === undefined) {
      id = this.free.pop() ?? this.names.length;
      this.ids.set(type, id);
      this.names[id] = type;
      this.uses[id] = 1;
    } else {
      this.uses[id] = (this.uses[id] as number) + 1;
    }
    return id;
  }

  /**
   * acquire(type) when `known` is likely its number (the type of the caller's previous event):
   * checked against the name, as a number whose last use went may now be another type's.
   */
  acquireAgain(known: number, type: string): number {
    if (this.names[known] !== type) return this.acquire(type);
    this.uses[known] = (this.uses[known] as number) + 1;
    return known;
  }

  release(id: number): void {
    const left = (this.uses[id] as number) - 1;
    this.uses[id] = left;
    if (left === 0) {
      this.ids.delete(this.names[id] as string);
      this.names[id] = undefined;
      this.free.push(id);
    }
  }

  /** Number of the type if some retained event has it. */
  lookup(type: string): number | undefined {
    return this.ids.get(type);
  }

  name(id: number): string {
    return this.names[id] as string;
  }

  /** Distinct types in use (for tests). */
  get size(): number {
    return this.ids.size;
  }
}

/**
 * What the rings of one store share: the type table, and spare full-size byte chunks, so that
 * a busy ring passing its oldest chunk on to the next ring that needs one costs neither a new
 * allocation nor fresh pages.
 *
 * The spare list holds up to an eighth of the full-size chunks in use (at least
 * MIN_SPARE_CHUNKS): sandboxes written at the same pace (a publisher going round its sandboxes)
 * drop their oldest chunk together and take a new one together, and a fixed 32 let most of
 * 100 such rings' chunks go. Each chunk let go was 64 KiB of old-generation garbage, and each
 * one taken instead 64 KiB of new external memory, which V8 counts toward its next full
 * (mark-compact) collection: 29 MB in 11 s at 20,000 events/s over 100 full rings
 * (docs/performance.md, "Seventh round: latency"). So that a store that shrank (age retention,
 * a burst that ended) does not keep an eighth of its past size idle, `trimSpare` (the store's
 * prune timer) keeps no more spares than rings took since its previous call.
 */
export class RingContext {
  readonly types = new TypeTable();
  private readonly spare: Buffer[] = [];
  /** Full-size chunks taken and not given back (approximately: see give). */
  private chunksInUse = 0;
  /** Full-size chunks taken since the last trimSpare. */
  private takenSinceTrim = 0;

  /** A chunk of at least `size` bytes. */
  take(size: number): Buffer {
    if (size === CHUNK_BYTES) {
      this.chunksInUse++;
      this.takenSinceTrim++;
      const chunk = this.spare.pop();
      if (chunk !== undefined) return chunk;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  give(chunk: Buffer): void {
    if (chunk.length !== CHUNK_BYTES) return;
    // A repacked chunk may be full-size without having been taken: never below zero.
    if (this.chunksInUse > 0) this.chunksInUse--;
    if (this.spare.length < Math.max(MIN_SPARE_CHUNKS, this.chunksInUse >>> 3)) this.spare.push(chunk);
  }

  /** Lets go of the spares beyond what rings took since the previous call (at least MIN_SPARE_CHUNKS stay). */
  trimSpare(): void {
    const keep = Math.max(MIN_SPARE_CHUNKS, this.takenSinceTrim);
    if (this.spare.length > keep) this.spare.length = keep;
    this.takenSinceTrim = 0;
  }

  /** Spare chunks held (for tests). */
  get spareChunks(): number {
    return this.spare.length;
  }
}

const MIN_SLOTS = 4;
/** Smallest and largest byte chunk (a larger event gets a chunk of its own size). */
const MIN_CHUNK_BYTES = 256;
const CHUNK_BYTES = 64 * 1024;
const MIN_SPARE_CHUNKS = 32;
/** A ring whose events all fit in one chunk below this size grows that chunk (see addChunk). */
const GROW_IN_PLACE_BYTES = 4 * 1024;
/** Bytes per slot: three float64 (id ms, id seq, timestamp) and four uint32. */
const SLOT_BYTES = 3 * 8 + 4 * 4;
const EMPTY_NUMS = new Float64Array(0);
const EMPTY_WORDS = new Uint32Array(0);

/** Smallest power of two >= size, within the chunk bounds. */
function chunkSize(size: number): number {
  let chunk = MIN_CHUNK_BYTES;
  while (chunk < size && chunk < CHUNK_BYTES) chunk *= 2;
  return chunk;
}

/**
 * One sandbox's retained events, oldest first: a FIFO with O(1) push/shift and indexed access.
 *
 * Slot `s` holds `nums[3s..3s+2]` = id ms, id seq, timestamp and `words[4s..4s+3]` = chunk
 * number, byte offset in that chunk, byte length, type number. Slots are a
 * circular buffer that grows by doubling up to `maxSlots` (the retention count).
 *
 * JSON lines are written one after the other into byte chunks, a new chunk when the line does
 * not fit the rest of the current one. A chunk is about half the bytes retained (256 bytes to
 * 64 KiB), so a ring holds at most about twice what it retains, never copies bytes to grow,
 * and gives a chunk back as soon as its last event is dropped. `compact()` releases what a ring
 * that shrank (age retention) no longer needs.
 */
export class EventRing {
  length = 0;
  private nums: Float64Array = EMPTY_NUMS;
  private words: Uint32Array = EMPTY_WORDS;
  private slots = 0;
  private head = 0;
  /** Byte chunks in use, oldest first; `chunks[0]` is chunk number `firstChunk`. */
  private chunks: Buffer[] = [];
  private firstChunk = 0;
  /** Offset just past the newest event in the last chunk. */
  private tailAt = 0;
  /** Bytes of the retained events' JSON lines. */
  private liveBytes = 0;
  private readonly types: TypeTable;
  /** The type number of the last event pushed (a sandbox mostly repeats a type): see acquireAgain. */
  private lastType = 0;

  constructor(
    readonly workspaceId: number,
    readonly sandboxId: string,
    private readonly context: RingContext,
    private maxSlots: number,
  ) {
    this.types = context.types;
  }

  /**
   * A new retention count. A raised one lets the ring grow further; a lowered one takes effect
   * as the store trims to it (the ring never holds more events than the count when it grows).
   */
  setMaxSlots(maxSlots: number): void {
    this.maxSlots = maxSlots;
  }

  /**
   * Appends an event, its line written as bytes from `head` (eventLineHead of its sandbox and
   * type) and `data[dataStart, dataEnd)` (its UTF-8, as the publisher sent it) by writeEventLine, nothing encoded or
   * decoded (docs/performance.md, "Seventh round: the payload's bytes", "Eighth round: the
   * event's line as bytes"). Returns the line's size; it ends at `newestLineEnd` in
   * `newestChunk` (until the ring changes).
   */
  push(
    id: EventId,
    timestamp: number,
    type: string,
    head: Uint8Array,
    data: Uint8Array,
    dataStart: number,
    dataEnd: number,
  ): number {
    if (this.length === this.slots) this.resizeSlots(Math.min(Math.max(MIN_SLOTS, this.slots * 2), this.maxSlots));
    const size = eventLineSize(id, head, dataEnd - dataStart, timestamp);
    let chunk = this.chunks[this.chunks.length - 1];
    if (chunk === undefined || chunk.length - this.tailAt < size) chunk = this.addChunk(size);
    writeEventLine(chunk, this.tailAt, id, head, data, dataStart, dataEnd, timestamp);
    // Nothing above changed what the ring holds when it threw; from here on nothing throws.
    let slot = this.head + this.length;
    if (slot >= this.slots) slot -= this.slots;
    const n = slot * 3;
    this.nums[n] = id.ms;
    this.nums[n + 1] = id.seq;
    this.nums[n + 2] = timestamp;
    const w = slot * 4;
    this.words[w] = this.firstChunk + this.chunks.length - 1;
    this.words[w + 1] = this.tailAt;
    this.words[w + 2] = size;
    this.words[w + 3] = this.lastType = this.types.acquireAgain(this.lastType, type);
    this.tailAt += size;
    this.liveBytes += size;
    this.length++;
    return size;
  }

  /** The chunk the newest event's line is in (see push). */
  get newestChunk(): Buffer {
    return this.chunks[this.chunks.length - 1] as Buffer;
  }

  /** Where the newest event's line ends in newestChunk. */
  get newestLineEnd(): number {
    return this.tailAt;
  }

  /** Drops the oldest event, and the chunks no retained event is in any more. */
  shift(): void {
    const w = this.head * 4;
    this.types.release(this.words[w + 3] as number);
    this.liveBytes -= this.words[w + 2] as number;
    this.head = this.head + 1 === this.slots ? 0 : this.head + 1;
    this.length--;
    if (this.length === 0) {
      // Keep the newest chunk for the next event, from its start.
      this.head = 0;
      this.tailAt = 0;
      this.dropChunksBefore(this.firstChunk + this.chunks.length - 1);
    } else {
      this.dropChunksBefore(this.words[this.head * 4] as number);
    }
  }

  /** Releases storage the ring no longer needs: all of it when empty, most of it when mostly unused. */
  compact(): void {
    if (this.length === 0) {
      this.nums = EMPTY_NUMS;
      this.words = EMPTY_WORDS;
      this.slots = 0;
      this.dropChunksBefore(this.firstChunk + this.chunks.length);
      this.tailAt = 0;
      return;
    }
    if (this.slots > MIN_SLOTS && this.length * 4 <= this.slots) {
      this.resizeSlots(Math.max(MIN_SLOTS, this.length * 2));
    }
    if (this.byteCapacity > MIN_CHUNK_BYTES && this.liveBytes * 4 <= this.byteCapacity) this.repack();
  }

  msAt(index: number): number {
    return this.nums[this.slot(index) * 3] as number;
  }

  seqAt(index: number): number {
    return this.nums[this.slot(index) * 3 + 1] as number;
  }

  timestampAt(index: number): number {
    return this.nums[this.slot(index) * 3 + 2] as number;
  }

  /** The interned type number of the event (compare with `TypeTable.lookup`). */
  typeAt(index: number): number {
    return this.words[this.slot(index) * 4 + 3] as number;
  }

  idAt(index: number): EventId {
    const n = this.slot(index) * 3;
    return { ms: this.nums[n] as number, seq: this.nums[n + 1] as number };
  }

  /** Whether the event's id is exactly `id`. */
  idEquals(index: number, id: EventId): boolean {
    const n = this.slot(index) * 3;
    return this.nums[n] === id.ms && this.nums[n + 1] === id.seq;
  }

  /** The event as append returned it (a new object, equal field by field). */
  eventAt(index: number): StoredEventRecord {
    const slot = this.slot(index);
    const n = slot * 3;
    const w = slot * 4;
    const { nums, words } = this;
    const chunk = this.chunks[((words[w] as number) - this.firstChunk) >>> 0] as Buffer;
    const at = words[w + 1] as number;
    const end = at + (words[w + 2] as number);
    return new StoredEventRecord(
      { ms: nums[n] as number, seq: nums[n + 1] as number },
      this.workspaceId,
      this.sandboxId,
      this.types.name(words[w + 3] as number),
      nums[n + 2] as number,
      chunk.toString('utf8', at, end),
    );
  }

  /** Index of the first event whose id is >= `ms-seq` (length when none). */
  lowerBound(ms: number, seq: number): number {
    const { nums } = this;
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const n = this.slot(mid) * 3;
      const m = nums[n] as number;
      if (m < ms || (m === ms && (nums[n + 1] as number) < seq)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Slots allocated (for tests and stats). */
  get slotCapacity(): number {
    return this.slots;
  }

  /** Bytes of the retained events' JSON lines: what byte retention counts. */
  get retainedBytes(): number {
    return this.liveBytes;
  }

  /** Bytes allocated for slots and JSON lines (for tests and stats). */
  get allocatedBytes(): number {
    return this.slots * SLOT_BYTES + this.byteCapacity;
  }

  /** Byte chunks in use (for tests). */
  get chunkCount(): number {
    return this.chunks.length;
  }

  /** Bytes allocated for JSON lines (for tests and stats). */
  get byteCapacity(): number {
    let total = 0;
    for (const chunk of this.chunks) total += chunk.length;
    return total;
  }

  private slot(index: number): number {
    const slot = this.head + index;
    return slot >= this.slots ? slot - this.slots : slot;
  }

  /**
   * Makes room for `size` more bytes: a new chunk, or, for a ring whose events all sit in one
   * small chunk, a chunk twice as large with those bytes copied in (same chunk number, same
   * offsets), so that a sandbox with a few events holds one buffer, not one per event or two.
   * Drops the current chunk if it holds no event.
   */
  private addChunk(size: number): Buffer {
    if (this.length === 0) this.dropChunksBefore(this.firstChunk + this.chunks.length);
    const last = this.chunks.length - 1;
    const lone = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : undefined;
    if (lone !== undefined && lone.length < GROW_IN_PLACE_BYTES && this.tailAt + size <= GROW_IN_PLACE_BYTES) {
      let grown = lone.length * 2;
      while (grown < this.tailAt + size) grown *= 2;
      const chunk = Buffer.allocUnsafeSlow(grown);
      lone.copy(chunk, 0, 0, this.tailAt);
      this.chunks[last] = chunk;
      return chunk;
    }
    const chunk = this.context.take(
      size > CHUNK_BYTES ? size : chunkSize(Math.max(size * 2, (this.liveBytes + size) / 2)),
    );
    this.chunks.push(chunk);
    this.tailAt = 0;
    return chunk;
  }

  /**
   * Drops the chunks numbered below `chunkNumber`. Chunk numbers are kept modulo 2^32 in the
   * slots (a Uint32Array), so distances between them are taken modulo 2^32 too.
   */
  private dropChunksBefore(chunkNumber: number): void {
    for (let count = (chunkNumber - this.firstChunk) >>> 0; count > 0; count--) {
      this.context.give(this.chunks.shift() as Buffer);
      this.firstChunk++;
    }
  }

  /** Copies the retained lines into one new chunk of about twice their size. */
  private repack(): void {
    const next = Buffer.allocUnsafeSlow(Math.max(MIN_CHUNK_BYTES, Math.ceil((this.liveBytes * 2) / 64) * 64));
    const number = this.firstChunk + this.chunks.length;
    const { words } = this;
    let at = 0;
    for (let index = 0; index < this.length; index++) {
      const w = this.slot(index) * 4;
      const from = words[w + 1] as number;
      const size = words[w + 2] as number;
      (this.chunks[((words[w] as number) - this.firstChunk) >>> 0] as Buffer).copy(next, at, from, from + size);
      words[w] = number;
      words[w + 1] = at;
      at += size;
    }
    this.dropChunksBefore(number);
    this.chunks.push(next);
    this.tailAt = at;
  }

  /**
   * Moves the slots, oldest first, to new arrays of `slots` slots. Both arrays are views of one
   * buffer: one allocation (and one backing store for the collector to track) per ring, not two.
   */
  private resizeSlots(slots: number): void {
    const buffer = new ArrayBuffer(slots * SLOT_BYTES);
    const nums = new Float64Array(buffer, 0, slots * 3);
    const words = new Uint32Array(buffer, slots * 24, slots * 4);
    // Two runs: from the head to the end of the old arrays, then from their start.
    const first = Math.min(this.length, this.slots - this.head);
    nums.set(this.nums.subarray(this.head * 3, (this.head + first) * 3), 0);
    words.set(this.words.subarray(this.head * 4, (this.head + first) * 4), 0);
    if (first < this.length) {
      nums.set(this.nums.subarray(0, (this.length - first) * 3), first * 3);
      words.set(this.words.subarray(0, (this.length - first) * 4), first * 4);
    }
    this.nums = nums;
    this.words = words;
    this.slots = slots;
    this.head = 0;
  }
}
