import type { StoredEvent } from '../event/event.js';
import type { EventStore, ReplayResult, SandboxRef } from './types.js';

/** Events read from the store per step of a resume replay. */
export const REPLAY_PAGE = 500;

/**
 * Sends a resume replay, page by page, paced by the reader: `first` is the page already read
 * (its status was told before any event). After each full page it waits for `room` (the
 * reader's unsent output to drain), so a long replay never meets the output limit, and stops
 * as soon as `open` says the reader is gone. TCP RESUME and SSE resume both replay this way.
 */
export async function sendReplay(
  store: EventStore,
  target: SandboxRef,
  first: ReplayResult,
  send: (event: StoredEvent) => void,
  room: () => Promise<void>,
  open: () => boolean,
): Promise<void> {
  let page = first;
  for (;;) {
    for (const event of page.events) send(event);
    const last = page.events[page.events.length - 1];
    if (page.events.length < REPLAY_PAGE || last === undefined) return;
    await room();
    if (!open()) return;
    page = await store.replayAfter(target, last.id, REPLAY_PAGE);
    if (!open()) return;
  }
}
