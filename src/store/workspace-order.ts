import { type StoredEvent, type StoredEventRecord, setEventOrder } from '../event/event.js';
import type { WorkspaceReplay } from './types.js';

/**
 * The orders of one sandbox's retained events, oldest first, kept in step with its event ring
 * (pushed and shifted together), so that the memory store's order over a workspace is bounded
 * by exactly what it retains (docs/protocol.md, "Pattern resume").
 *
 * A circular buffer over one array that only grows (by doubling) while the ring does, so a full
 * ring's append and drop allocate nothing. An array shifted by slicing off its dropped half made
 * a new 40-90 KB array every few thousand events of each full sandbox: live when the young
 * generation was collected, so copied there and promoted, and old-generation garbage after
 * (docs/performance.md, "Seventh round: latency").
 */
export class OrderColumn {
  /** Slots in use run from `head`, wrapping at the end; the others hold 0. */
  private values: number[] = [];
  private head = 0;
  private count = 0;

  get length(): number {
    return this.count;
  }

  /** Slots allocated (for tests). */
  get capacity(): number {
    return this.values.length;
  }

  at(index: number): number {
    const slot = this.head + index;
    const values = this.values;
    return values[slot < values.length ? slot : slot - values.length]!;
  }

  push(order: number): void {
    const values = this.values;
    if (this.count === values.length) {
      this.resize(Math.max(MIN_ORDER_SLOTS, values.length * 2));
      this.push(order);
      return;
    }
    const slot = this.head + this.count;
    values[slot < values.length ? slot : slot - values.length] = order;
    this.count += 1;
  }

  /** Drops the oldest order and returns it. */
  shift(): number {
    const values = this.values;
    const order = values[this.head]!;
    this.head = this.head + 1 === values.length ? 0 : this.head + 1;
    this.count -= 1;
    return order;
  }

  /** Gives back most of the array once at most a quarter of it is used (the ring shrank: age retention). */
  compact(): void {
    if (this.values.length > MIN_ORDER_SLOTS && this.count * 4 <= this.values.length) {
      this.resize(Math.max(MIN_ORDER_SLOTS, this.count * 2));
    }
  }

  /** Index of the first order greater than `order`. */
  upperBound(order: number): number {
    let low = 0;
    let high = this.count;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (this.at(mid) <= order) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  /** Moves the orders, oldest first, to a new array of `slots` slots. */
  private resize(slots: number): void {
    // Filled at once: an array of small integers (or of doubles, once orders pass 2^31) is one
    // unboxed block for V8, with nothing allocated per element.
    const next: number[] = new Array<number>(slots).fill(0);
    for (let i = 0; i < this.count; i++) next[i] = this.at(i);
    this.values = next;
    this.head = 0;
  }
}

const MIN_ORDER_SLOTS = 4;

/** One sandbox as a workspace replay reads it: its orders and a way to build its event at an index. */
export interface OrderedStream {
  readonly orders: OrderColumn;
  eventAt(index: number): StoredEventRecord;
}

/**
 * Merges the retained events of `streams` after `after`, in order, at most `limit`: each
 * stream's orders are increasing, so each gives at most `limit` candidates.
 */
export function mergeByOrder(streams: Iterable<OrderedStream>, after: number, limit: number): StoredEvent[] {
  const candidates: { order: number; stream: OrderedStream; index: number }[] = [];
  for (const stream of streams) {
    const { orders } = stream;
    if (orders.length === 0 || orders.at(orders.length - 1) <= after) continue;
    const from = orders.upperBound(after);
    const to = Math.min(orders.length, from + limit);
    for (let i = from; i < to; i++) candidates.push({ order: orders.at(i), stream, index: i });
  }
  candidates.sort((a, b) => a.order - b.order);
  return candidates.slice(0, limit).map(({ order, stream, index }) => {
    const event = stream.eventAt(index);
    setEventOrder(event, order);
    return event;
  });
}

/**
 * Whether a replay from `after` is exact: no event after it was pruned (`prunedThrough`: the
 * highest order pruned in the scope), and it is not beyond what was issued (`lastOrder`; a
 * memory store restarts its order at 0, so an older process's cursor is `future`).
 */
export function classifyWorkspaceReplay(
  after: number,
  prunedThrough: number,
  lastOrder: number,
): Pick<WorkspaceReplay, 'complete' | 'gap'> {
  if (after > lastOrder) return { complete: false, gap: 'future' };
  if (after < prunedThrough) return { complete: false, gap: 'trimmed' };
  return { complete: true };
}
