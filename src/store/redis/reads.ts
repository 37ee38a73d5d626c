/**
 * The engine's reads: a resume's replay (one script, so the stream and its bookkeeping are read
 * at one instant) and history pages (XRANGE / XREVRANGE).
 */
import { compareEventIds, formatEventId, parseEventId, type EventId, type StoredEvent } from '../../event/event.js';
import { buildReplayResult, historyFloor, matchesHistoryFilters, type ReplayState } from '../semantics.js';
import type { HistoryQuery, ReplayResult, RetentionPolicy, SandboxRef } from '../types.js';
import { type ScriptedRedis, unavailable } from './connection.js';
import { eventFromEntry, metaKey, streamKey } from './keys.js';

const ID_MAX_SEQ = Number.MAX_SAFE_INTEGER;
const HISTORY_PAGE = 200;

type StreamEntry = [string, string[]];

/** Retained events after `afterId` (at most `limit`) and how complete that is (src/store/semantics.ts). */
export async function readReplay(
  commands: ScriptedRedis,
  retention: RetentionPolicy,
  ref: SandboxRef,
  afterId: EventId,
  limit: number,
): Promise<ReplayResult> {
  const { events, state } = await readStreamAfter(commands, retention, ref, afterId, limit);
  return buildReplayResult(events, afterId, state);
}

/** Retained events after `afterId` (at most `limit`), and what the stream's bookkeeping says. */
export async function readStreamAfter(
  commands: ScriptedRedis,
  retention: RetentionPolicy,
  ref: SandboxRef,
  afterId: EventId,
  limit: number,
): Promise<{ events: StoredEvent[]; state: ReplayState }> {
  let reply: unknown[];
  try {
    reply = await commands.seReplay(
      streamKey(ref),
      metaKey(ref),
      formatEventId(afterId),
      // One more than asked: the first entry may be `afterId` itself.
      Number.isFinite(limit) ? String(limit + 1) : '0',
      Number.isFinite(retention.maxAgeMs) ? String(Math.ceil(retention.maxAgeMs)) : '0',
    );
  } catch (error) {
    throw unavailable(error);
  }
  const now = Number(reply[1]);
  // Every id Redis ever issued has a millisecond at most its clock's now.
  const highWater: EventId = { ms: now, seq: ID_MAX_SEQ };
  if (reply[0] === 0) return { events: [], state: { highWater, afterIdRetained: false } };
  const [, , lastText, trimmedText, firstText, entries] = reply as [
    number,
    string,
    string,
    string,
    string,
    StreamEntry[],
  ];
  const events: StoredEvent[] = [];
  let afterIdRetained = false;
  for (const entry of entries) {
    const event = eventFromEntry(ref, entry);
    if (event === undefined) continue;
    const vs = compareEventIds(event.id, afterId);
    if (vs === 0) afterIdRetained = true;
    else if (vs > 0 && events.length < limit) events.push(event);
  }
  const state: ReplayState = {
    lastId: parseEventId(lastText),
    trimmedThrough: trimmedText === '' ? undefined : parseEventId(trimmedText),
    earliestId: firstText === '' ? undefined : parseEventId(firstText),
    highWater,
    afterIdRetained,
  };
  return { events, state };
}

/** A history query, read in pages of the stream. */
export async function readHistory(
  commands: ScriptedRedis,
  retention: RetentionPolicy,
  query: HistoryQuery,
  limit: number,
): Promise<StoredEvent[]> {
  let floor = historyFloor(query);
  // Age retention on read as well (the scripts trim only when a sandbox is written or
  // replayed); judged by this node's clock, which may differ from Redis's by the skew.
  if (Number.isFinite(retention.maxAgeMs)) {
    const cutoff = Math.ceil(Date.now() - retention.maxAgeMs);
    if (compareEventIds(floor, { ms: cutoff, seq: 0 }) < 0) floor = { ms: cutoff, seq: 0 };
  }
  const key = streamKey(query);
  const newest = query.newest === true;
  const out: StoredEvent[] = [];
  const page = Math.min(Number.isFinite(limit) ? Math.max(limit, 16) : HISTORY_PAGE, HISTORY_PAGE * 5);
  // Oldest first from the floor up, or newest first from the top down to the floor.
  let bound = newest ? '+' : formatEventId(floor);
  try {
    for (;;) {
      const entries = (
        newest
          ? await commands.xrevrange(key, bound, formatEventId(floor), 'COUNT', page)
          : await commands.xrange(key, bound, '+', 'COUNT', page)
      ) as StreamEntry[];
      for (const entry of entries) {
        const event = eventFromEntry(query, entry);
        if (event !== undefined && matchesHistoryFilters(event, query)) out.push(event);
        if (out.length >= limit) break;
      }
      if (out.length >= limit || entries.length < page) break;
      bound = `(${entries[entries.length - 1]![0]}`;
    }
  } catch (error) {
    throw unavailable(error);
  }
  if (newest) out.reverse();
  return out;
}
