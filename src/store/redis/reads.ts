/**
 * The engine's reads: a resume's replay (one script, so the stream and its bookkeeping are read
 * at one instant), history (XRANGE / XREVRANGE, or a paged reply) and the sandbox listing.
 */
import { Cluster } from 'ioredis';
import {
  compareEventIds,
  formatEventId,
  parseEventId,
  setEventOrder,
  type EventId,
  type StoredEvent,
} from '../../event/event.js';
import { buildReplayResult, historyFloor, matchesHistoryFilters, pagesOfIds, type ReplayState } from '../semantics.js';
import type {
  HistoryPages,
  HistoryQuery,
  ReplayResult,
  RetentionPolicy,
  SandboxListing,
  SandboxRef,
  WorkspaceReplay,
} from '../types.js';
import { type ScriptedRedis, unavailable } from './connection.js';
import {
  eventFromEntry,
  metaKey,
  ORDERS_KEY,
  refFromStreamKey,
  sandboxIndexKey,
  streamKey,
  streamKeyPattern,
  WORKSPACES_KEY,
  workspaceOrderKey,
} from './keys.js';

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
  unstoredIds: boolean,
): Promise<ReplayResult> {
  const { events, state } = await readStreamAfter(commands, retention, ref, afterId, limit);
  return buildReplayResult(events, afterId, { ...state, unstoredIds });
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

/**
 * The smallest id a history query reads: the query's floor, raised to the age limit (the
 * scripts trim only when a sandbox is written or replayed), judged by this node's clock, which
 * may differ from Redis's by the skew.
 */
function historyFloorWithAge(query: HistoryQuery, retention: RetentionPolicy): EventId {
  const floor = historyFloor(query);
  if (Number.isFinite(retention.maxAgeMs)) {
    const cutoff = Math.ceil(Date.now() - retention.maxAgeMs);
    if (compareEventIds(floor, { ms: cutoff, seq: 0 }) < 0) return { ms: cutoff, seq: 0 };
  }
  return floor;
}

/**
 * A history query as a paged reply (docs/protocol.md, "HISTORY"): a script counts the reply's
 * ids inside Redis (the events stay there), then each page's events are read when the writer
 * asks for them: one XRANGE over the page's ids, or with a type filter one XRANGE per id in a
 * pipeline (the ids between them are of other types). An event trimmed meanwhile is a hole.
 */
export async function readHistoryPages(
  commands: ScriptedRedis,
  retention: RetentionPolicy,
  query: HistoryQuery,
  limit: number,
): Promise<HistoryPages> {
  const key = streamKey(query);
  let idTexts: string[];
  try {
    idTexts = await commands.seHistoryIds(
      key,
      formatEventId(historyFloorWithAge(query, retention)),
      query.type ?? '',
      String(Number.isFinite(limit) ? limit : Number.MAX_SAFE_INTEGER),
      query.newest === true ? '1' : '0',
    );
  } catch (error) {
    throw unavailable(error);
  }
  if (query.newest === true) idTexts.reverse();
  const ids = idTexts.map((text) => parseEventId(text)).filter((id): id is EventId => id !== undefined);
  return pagesOfIds(ids, async (page) => {
    let entries: StreamEntry[];
    try {
      if (query.type === undefined) {
        const first = formatEventId(page[0]!);
        const last = formatEventId(page[page.length - 1]!);
        entries = (await commands.xrange(key, first, last, 'COUNT', page.length)) as StreamEntry[];
      } else {
        const batch = commands.pipeline();
        for (const id of page) batch.xrange(key, formatEventId(id), formatEventId(id));
        entries = [];
        for (const [error, reply] of (await batch.exec()) ?? []) {
          if (error !== null) throw error;
          entries.push(...(reply as StreamEntry[]));
        }
      }
    } catch (error) {
      throw unavailable(error);
    }
    const byId = new Map<string, StoredEvent>();
    for (const entry of entries) {
      const event = eventFromEntry(query, entry);
      if (event !== undefined) byId.set(entry[0], event);
    }
    return page.map((id) => byId.get(formatEventId(id)));
  });
}

/**
 * A workspace's retained events after `after` in its order, at most `limit` (docs/protocol.md,
 * "Pattern resume"), and whether that is exactly what a reader at `after` missed: not when
 * `after` is beyond the last order issued (`future`), nor when an event after it is no longer
 * retained (`trimmed`): the order stream is trimmed through what sandboxes dropped, so its first
 * entry is then not `after + 1`; or an event it names is gone or past the age limit.
 */
export async function readWorkspaceAfter(
  commands: ScriptedRedis,
  retention: RetentionPolicy,
  workspaceId: number,
  after: number,
  limit: number,
): Promise<WorkspaceReplay> {
  let reply: [string, string, string, unknown[]];
  try {
    reply = await commands.seWorkspaceReplay(
      workspaceOrderKey(workspaceId),
      ORDERS_KEY,
      String(workspaceId),
      String(after),
      String(Number.isFinite(limit) ? limit : Number.MAX_SAFE_INTEGER),
      Number.isFinite(retention.maxAgeMs) ? String(Math.ceil(Date.now() - retention.maxAgeMs)) : '0',
    );
  } catch (error) {
    throw unavailable(error);
  }
  const [lastText, firstText, missing, rows] = reply;
  const lastOrder = Number(lastText);
  const events: StoredEvent[] = [];
  for (let i = 0; i + 2 < rows.length; i += 3) {
    const event = eventFromEntry({ workspaceId, sandboxId: rows[i + 1] as string }, rows[i + 2] as StreamEntry);
    if (event === undefined) continue;
    setEventOrder(event, Number(rows[i]));
    events.push(event);
  }
  if (after > lastOrder) return { events, complete: false, gap: 'future', lastOrder };
  const next = firstText === '' ? lastOrder + 1 : Number(firstText);
  if (after < lastOrder && (next !== after + 1 || missing === '1')) {
    return { events, complete: false, gap: 'trimmed', lastOrder };
  }
  return { events, complete: true, lastOrder };
}

/**
 * Sandboxes read from a sandbox index per script call: `XINFO STREAM` copies a stream's first and
 * last entries into the script (up to 64 KiB each), so a page holds at most about 13 MB there.
 */
const LIST_PAGE = 100;

/**
 * The sandboxes of one workspace (or every workspace) that hold events, with their last ids,
 * read from the sandbox indexes (keys.ts) a bounded page per call, in workspace then sandbox
 * id order.
 */
export async function listIndexedSandboxes(commands: ScriptedRedis, scope: number | 'all'): Promise<SandboxListing[]> {
  const out: SandboxListing[] = [];
  try {
    const workspaces = scope === 'all' ? (await commands.zrange(WORKSPACES_KEY, 0, -1)).map(Number) : [scope];
    for (const workspaceId of workspaces) {
      if (!Number.isSafeInteger(workspaceId)) continue;
      const index = sandboxIndexKey(workspaceId);
      let start = '-';
      for (;;) {
        const [more, lastMember, listed] = await commands.seList(index, String(workspaceId), start, String(LIST_PAGE));
        for (let i = 0; i + 1 < listed.length; i += 2) {
          const lastId = parseEventId(listed[i + 1]!);
          if (lastId !== undefined) out.push({ workspaceId, sandboxId: listed[i]!, lastId });
        }
        if (more !== '1') break;
        start = `(${lastMember}`;
      }
    }
  } catch (error) {
    throw unavailable(error);
  }
  return out;
}

/**
 * The same listing without the sandbox indexes (a Redis Cluster): SCAN over the stream keys of
 * the scope on every master, a page of keys at a time, then each stream's length and last id. SCAN walks the
 * whole keyspace, so this costs in proportion to every key in Redis, not the scope's.
 */
export async function listScannedSandboxes(commands: ScriptedRedis, scope: number | 'all'): Promise<SandboxListing[]> {
  const seen = new Set<string>();
  const out: SandboxListing[] = [];
  // A Cluster's SCAN walks one node: every master is scanned, each for the keys of its slots.
  const nodes = commands instanceof Cluster ? commands.nodes('master') : [commands];
  try {
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', streamKeyPattern(scope), 'COUNT', 1000);
        cursor = next;
        const fresh = keys.filter((key) => !seen.has(key));
        for (const key of fresh) seen.add(key);
        const lasts = await Promise.all(fresh.map((key) => commands.seStreamLast(key)));
        for (const [i, key] of fresh.entries()) {
          const ref = refFromStreamKey(key);
          const [length, lastText] = lasts[i]!;
          const lastId = parseEventId(lastText);
          if (ref !== undefined && length > 0 && lastId !== undefined) out.push({ ...ref, lastId });
        }
      } while (cursor !== '0');
    }
  } catch (error) {
    throw unavailable(error);
  }
  return out.sort(
    (a, b) => a.workspaceId - b.workspaceId || (a.sandboxId < b.sandboxId ? -1 : a.sandboxId > b.sandboxId ? 1 : 0),
  );
}

/** A history query, read in pages of the stream. */
export async function readHistory(
  commands: ScriptedRedis,
  retention: RetentionPolicy,
  query: HistoryQuery,
  limit: number,
): Promise<StoredEvent[]> {
  const floor = historyFloorWithAge(query, retention);
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
