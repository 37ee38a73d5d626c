import { compareEventIds, type EventId, type StoredEvent } from '../event/event.js';
import type { EventStore, ReplayResult, SandboxRef } from './types.js';

/** Events read from the store per step of a resume replay. */
export const REPLAY_PAGE = 500;

/** Where a resume replay goes: a TCP connection or an SSE stream. */
export interface ReplayReader {
  send(event: StoredEvent): void;
  /** Unsent output, in bytes. */
  pendingBytes(): number;
  /** Resolves once unsent output is at most `bytes`, or the reader is gone. */
  below(bytes: number): Promise<void>;
  /** False once the reader is gone. */
  open(): boolean;
}

/**
 * Sends a resume replay, page by page, paced by the reader: `first` is the page already read
 * (its status was told before any event). Whenever the reader's unsent output passes
 * `threshold` it waits for it to drain back below, so a long replay never meets the output
 * limit, even with 500 events of 64 KiB to a page; and it stops as soon as the reader is gone.
 * TCP RESUME and SSE resume both replay this way.
 */
export async function sendReplay(
  store: EventStore,
  target: SandboxRef,
  first: ReplayResult,
  reader: ReplayReader,
  threshold: number,
): Promise<void> {
  let page = first;
  for (;;) {
    for (const event of page.events) {
      reader.send(event);
      if (reader.pendingBytes() > threshold) {
        await reader.below(threshold);
        if (!reader.open()) return;
      }
    }
    const last = page.events[page.events.length - 1];
    if (page.events.length < REPLAY_PAGE || last === undefined) return;
    page = await store.replayAfter(target, last.id, REPLAY_PAGE);
    if (!reader.open()) return;
  }
}

/** What a seam does with one live event. */
export type SeamAction = 'write' | 'hold' | 'drop';

/**
 * The seam between a resume's replay and the live events of its channel: nothing missing,
 * nothing twice. The channel is subscribed and the seam begun before the store is read, so
 * every event after the read arrives live; until `end`, live events are held. `end` hands back
 * the held events the replay did not cover.
 *
 * Live events the replay covered can also arrive after `end`: with the Redis engine an event
 * comes live on the subscriber connection, which the node may read after the replay's reply
 * on the command connection (seen in CI as one id delivered twice after a failover). Live
 * events of a channel come in id order, so the replay's last id stays as a floor, and what is
 * not above it is dropped, until the first live event passes it; then the seam is `finished`.
 * TCP RESUME and SSE resume both use this.
 */
export class ReplaySeam<T> {
  private held: { item: T; id: EventId }[] | undefined = [];
  private floor: EventId | undefined;
  /** Bytes of the held items, as their owner counted them in `admit`. */
  heldBytes = 0;

  admit(item: T, id: EventId, bytes: number): SeamAction {
    if (this.held !== undefined) {
      this.held.push({ item, id });
      this.heldBytes += bytes;
      return 'hold';
    }
    if (this.floor !== undefined) {
      if (compareEventIds(id, this.floor) <= 0) return 'drop';
      this.floor = undefined;
    }
    return 'write';
  }

  /** Ends holding: returns the held items to write now, in order. */
  end(lastReplayedId: EventId | undefined): T[] {
    const held = this.held ?? [];
    this.held = undefined;
    this.heldBytes = 0;
    this.floor = lastReplayedId;
    const out: T[] = [];
    for (const { item, id } of held) if (this.admit(item, id, 0) === 'write') out.push(item);
    return out;
  }

  /** Neither holding nor filtering: every later live event is written as it comes. */
  get finished(): boolean {
    return this.held === undefined && this.floor === undefined;
  }
}
