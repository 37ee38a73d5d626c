import { compareEventIds, type EventId, eventOrder, type StoredEvent } from '../event/event.js';
import type { EventStore, ReplayResult, SandboxRef, WorkspaceReplay } from '../store/types.js';
import type { OutputBudget, OutputCut } from '../runtime/output-budget.js';
import { type OutputStream, WritePath } from './write-path.js';

/**
 * Events read from the store per step of a resume replay: with 64 KiB events a page is 4 MiB,
 * so a resuming reader holds no more than that and the pace.
 */
export const REPLAY_PAGE = 64;

/**
 * Where paced output goes (a session): bulk output is written no faster than its reader
 * takes it, so a long reply or replay never meets the output limit.
 */
export interface PacedOutput {
  /** Unsent output, in bytes. */
  readonly pendingBytes: number;
  /** Resolves once unsent output is at most `bytes`, or the reader is gone. */
  whenBelow(bytes: number): Promise<void>;
  /** False once the reader is gone. */
  isOpen(): boolean;
}

/**
 * The pages of a resume replay: `first` (already read, its status told before any event),
 * then each next page read only when the writer asks for it.
 */
export async function* replayPages(
  store: EventStore,
  target: SandboxRef,
  first: ReplayResult,
): AsyncGenerator<readonly StoredEvent[]> {
  let page = first.events;
  for (;;) {
    yield page;
    const last = page[page.length - 1];
    if (page.length < REPLAY_PAGE || last === undefined) return;
    page = (await store.replayAfter(target, last.id, REPLAY_PAGE)).events;
  }
}

/** The pages of a pattern resume replay: as replayPages, over a workspace in store order. */
export async function* workspaceReplayPages(
  store: EventStore,
  scope: number | 'all',
  first: WorkspaceReplay,
): AsyncGenerator<readonly StoredEvent[]> {
  let page = first.events;
  for (;;) {
    yield page;
    const last = page[page.length - 1];
    const order = last === undefined ? undefined : eventOrder(last);
    if (page.length < REPLAY_PAGE || order === undefined) return;
    page = (await store.replayWorkspaceAfter!(scope, order, REPLAY_PAGE)).events;
  }
}

/**
 * Sends `pages` item by item through `send`, paced by `output`: whenever its unsent output
 * passes `threshold` it waits for it to drain back below, so even pages of 64 KiB events
 * never meet the output limit; and it stops as soon as the reader is gone. A reply whose
 * length is known up front (a RESP array header) is written first, then its items this way.
 */
export async function writePaced<T>(
  output: PacedOutput,
  pages: AsyncIterable<readonly T[]>,
  send: (item: T) => void,
  threshold: number,
): Promise<void> {
  for await (const page of pages) {
    if (!output.isOpen()) return;
    for (const item of page) {
      send(item);
      if (output.pendingBytes > threshold) {
        await output.whenBelow(threshold);
        if (!output.isOpen()) return;
      }
    }
  }
}

/** The limits of a paced reply that has a write path of its own. */
export interface PacedReplyLimits {
  /** Output allowed to wait, in bytes; past it the reader is cut off through `overflow`. */
  outputLimit: number;
  /** Unsent output at which the writer waits for the reader. */
  paceBytes: number;
  closeGraceMs: number;
  /** The daemon-wide output budget the reply counts in. */
  outputBudget: OutputBudget;
  /** Past the limit or the budget (`cause`): cut the reader off. */
  overflow(pendingBytes: number, cause: OutputCut): void;
}

/**
 * Writes one whole reply that is not a stream (an HTTP response: GET /events/<id>) through a
 * write path of its own, paced by its reader like a session's replies: `head`, each page as
 * `encode` makes it, `tail()`, then the end. Its output counts against `outputLimit` like a
 * TCP client's. Resolves to false when the reader went away first.
 */
export async function writePacedReply<T>(
  output: OutputStream,
  limits: PacedReplyLimits,
  head: Buffer,
  pages: AsyncIterable<readonly T[]>,
  encode: (page: readonly T[]) => Buffer,
  tail: () => Buffer,
): Promise<boolean> {
  const path = new WritePath(
    output,
    () => limits.outputLimit,
    limits.overflow,
    limits.closeGraceMs,
    limits.outputBudget,
  );
  const paced: PacedOutput = {
    get pendingBytes() {
      return path.pendingBytes;
    },
    whenBelow: (bytes) => path.whenBelow(bytes),
    isOpen: () => !path.isClosed && !output.destroyed,
  };
  path.write(head);
  await writePaced(paced, pagesAsItems(pages), (page) => path.write(encode(page)), limits.paceBytes);
  if (!paced.isOpen()) return false;
  path.write(tail());
  path.endAfterWrites();
  return true;
}

/** Each page as a single item: for a writer that encodes a whole page at once. */
export async function* pagesAsItems<T>(pages: AsyncIterable<readonly T[]>): AsyncGenerator<readonly (readonly T[])[]> {
  for await (const page of pages) yield [page];
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
 * on the command connection. Live
 * events of a channel come in id order, so the replay's last id stays as a floor, and what is
 * not above it is dropped, until the first live event passes it; then the seam is `finished`.
 * Session.resume uses it for TCP RESUME and SSE resume alike.
 */
export class ReplaySeam<T, K = EventId> {
  private held: { item: T; id: K | undefined }[] | undefined = [];
  private floor: K | undefined;
  /** Bytes of the held items, as their owner counted them in `admit`. */
  heldBytes = 0;

  /**
   * `compare` orders the keys live items come in: event ids for a channel, store orders for a
   * pattern (docs/protocol.md, "Pattern resume").
   */
  constructor(private readonly compare: (a: K, b: K) => number = compareEventIds as (a: K, b: K) => number) {}

  /** `id` undefined: an item no replay can cover (an ephemeral event of a pattern); written once holding ends. */
  admit(item: T, id: K | undefined, bytes: number): SeamAction {
    if (this.held !== undefined) {
      this.held.push({ item, id });
      this.heldBytes += bytes;
      return 'hold';
    }
    if (id === undefined) return 'write';
    if (this.floor !== undefined) {
      if (this.compare(id, this.floor) <= 0) return 'drop';
      this.floor = undefined;
    }
    return 'write';
  }

  /** Ends holding: returns the held items to write now, in order; `dropped` is told of the others (the replay sent them). */
  end(lastReplayedId: K | undefined, dropped?: (item: T) => void): T[] {
    const held = this.held ?? [];
    this.held = undefined;
    this.heldBytes = 0;
    this.floor = lastReplayedId;
    const out: T[] = [];
    for (const { item, id } of held) {
      if (this.admit(item, id, 0) === 'write') out.push(item);
      else dropped?.(item);
    }
    return out;
  }

  /** Neither holding nor filtering: every later live event is written as it comes. */
  get finished(): boolean {
    return this.held === undefined && this.floor === undefined;
  }
}
