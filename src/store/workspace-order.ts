import { type StoredEvent, type StoredEventRecord, setEventOrder } from '../event/event.js';
import type { WorkspaceReplay } from './types.js';

/**
 * The orders of one sandbox's retained events, oldest first, kept in step with its event ring
 * (pushed and shifted together), so that the memory store's order over a workspace is bounded
 * by exactly what it retains (docs/protocol.md, "Pattern resume").
 */
export class OrderColumn {
  private values: number[] = [];
  private head = 0;

  get length(): number {
    return this.values.length - this.head;
  }

  at(index: number): number {
    return this.values[this.head + index]!;
  }

  push(order: number): void {
    this.values.push(order);
  }

  /** Drops the oldest order and returns it. */
  shift(): number {
    const order = this.values[this.head]!;
    this.head += 1;
    // Gives back the dropped prefix once it is half of the array (amortised O(1)).
    if (this.head > 64 && this.head * 2 > this.values.length) {
      this.values = this.values.slice(this.head);
      this.head = 0;
    }
    return order;
  }

  /** Index of the first order greater than `order`. */
  upperBound(order: number): number {
    let low = 0;
    let high = this.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (this.at(mid) <= order) low = mid + 1;
      else high = mid;
    }
    return low;
  }
}

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
