/**
 * Redis names of the engine (docs/scaling.md). A sandbox's stream, its bookkeeping hash and its live
 * channel share the hash tag `{<workspaceId>:<sandboxId>}`, so in Redis Cluster they live in one
 * slot: the append script may touch all three (Cluster refuses scripts that cross slots, and
 * counts shard channels as keys), and sandboxes spread over all 16,384 slots.
 *
 * A sandbox id may contain `}`: then the tag ends early, but it ends at the same place for the
 * three names, so they still share a slot. The suffixes differ, so names never collide.
 */
import { parseEventId, setEventOrder, StoredEventRecord } from '../../event/event.js';
import type { SandboxRef } from '../types.js';

const PREFIX = 'se:';

function tag(ref: SandboxRef): string {
  return `${PREFIX}{${ref.workspaceId}:${ref.sandboxId}}`;
}

/** The event stream (XADD/XRANGE); entry fields `t` (type) and `m` (the JSON between id and timestamp). */
export function streamKey(ref: SandboxRef): string {
  return `${tag(ref)}:events`;
}

/** The sandbox of a stream key (as SCAN returns them); undefined for other names. */
export function refFromStreamKey(key: string): SandboxRef | undefined {
  const open = `${PREFIX}{`;
  const close = '}:events';
  if (!key.startsWith(open) || !key.endsWith(close)) return undefined;
  const inner = key.slice(open.length, key.length - close.length);
  const colon = inner.indexOf(':');
  const workspaceId = Number(inner.slice(0, colon));
  if (colon <= 0 || !Number.isSafeInteger(workspaceId)) return undefined;
  return { workspaceId, sandboxId: inner.slice(colon + 1) };
}

/** SCAN MATCH pattern for the streams of one workspace, or of every workspace. */
export function streamKeyPattern(scope: number | 'all'): string {
  return scope === 'all' ? `${PREFIX}{*}:events` : `${PREFIX}{${scope}:*}:events`;
}

/** Small hash: `tt` = the highest id trimmed from the stream (Redis 7.0 does not record it on trim). */
export function metaKey(ref: SandboxRef): string {
  return `${tag(ref)}:meta`;
}

/**
 * A workspace's sandbox index: a sorted set of the ids of its sandboxes that hold events (all
 * scores 0, so in id order), added by the append script when a stream gets its first retained
 * event; a member whose stream expired is dropped when listed, or sampled by an append.
 * Standalone Redis only: it is not in the sandboxes' slots (docs/scaling.md, "Listing").
 */
export function sandboxIndexKey(workspaceId: number): string {
  return `${PREFIX}ws:${workspaceId}:sandboxes`;
}

/** The workspaces that have a sandbox index, by id (score and member: the workspace id). */
export const WORKSPACES_KEY = `${PREFIX}workspaces`;

/**
 * A workspace's order stream (docs/protocol.md, "Pattern resume"): entry `0-<order>` per
 * retained event, fields `s` (sandbox id) and `i` (event id). Never expires, so its orders never
 * start again; trimmed with what its sandboxes drop. Standalone Redis only, as the index.
 */
export function workspaceOrderKey(workspaceId: number): string {
  return `${PREFIX}ws:${workspaceId}:order`;
}

/** Hash of the last order issued per workspace (field: the workspace id). */
export const ORDERS_KEY = `${PREFIX}orders`;

/** The sandbox's live channel (SPUBLISH/SSUBSCRIBE: sharded, in the stream's slot). */
export function sandboxChannel(ref: SandboxRef): string {
  return `${tag(ref)}:live`;
}

/** A workspace's live channel (plain PUBLISH), read only by nodes holding patterns in it. */
export function workspaceChannel(workspaceId: number): string {
  return `${PREFIX}ws:${workspaceId}:live`;
}

/** What a node holding admins' qualified patterns (`{...}`, every workspace) PSUBSCRIBEs to. */
export const ALL_WORKSPACES_PATTERN = `${PREFIX}ws:*:live`;

/**
 * Channels nobody publishes to, which a node's subscriber connection holds for its whole life,
 * one of each kind it uses. Redis 7.0 answers SUNSUBSCRIBE with the count of shard channels
 * left and UNSUBSCRIBE / PUNSUBSCRIBE with the count of plain channels and patterns left, and
 * ioredis leaves subscriber mode on a count of 0, after which it takes pushed messages for
 * command replies: a node holding sandbox and workspace routes stopped receiving events when
 * the last route of one kind went. With these held, neither count reaches 0.
 */
export function anchorChannels(nodeId: string): { shard: string; plain: string } {
  return { shard: `${PREFIX}{node:${nodeId}}:anchor`, plain: `${PREFIX}node:${nodeId}:anchor` };
}

/**
 * The parts of an event's JSON line around its id and timestamp, which only Redis knows when it
 * runs XADD: `{"id":"` + id + middle + ms + `}` is exactly `eventJson(...)`.
 */
export const JSON_HEAD = '{"id":"';

export function jsonFromParts(id: string, middle: string): string {
  return `${JSON_HEAD}${id}${middle}${id.slice(0, id.indexOf('-'))}}`;
}

/**
 * A published message: `<workspaceId>:<sandboxId length>:<sandboxId><type length>:<type><json>`.
 * The header lets a node build the StoredEvent without parsing the JSON; lengths are in UTF-16
 * units of the strings (they round-trip through UTF-8 unchanged).
 */
export function messageHeader(ref: SandboxRef, type: string): string {
  return `${ref.workspaceId}:${ref.sandboxId.length}:${ref.sandboxId}${type.length}:${type}`;
}

/**
 * Parses a published message; undefined when it is not one of ours. A stored event of an engine
 * that keeps the workspace order comes as `o<order>:` + the message, and the event carries
 * that order (setEventOrder).
 */
export function decodeMessage(published: string): StoredEventRecord | undefined {
  let message = published;
  let order: number | undefined;
  if (message.startsWith('o')) {
    const end = message.indexOf(':');
    order = Number(message.slice(1, end));
    if (end < 0 || !Number.isSafeInteger(order)) return undefined;
    message = message.slice(end + 1);
  }
  const event = decodePlainMessage(message);
  if (event !== undefined && order !== undefined) setEventOrder(event, order);
  return event;
}

function decodePlainMessage(message: string): StoredEventRecord | undefined {
  const wsEnd = message.indexOf(':');
  const sbLenEnd = message.indexOf(':', wsEnd + 1);
  if (wsEnd <= 0 || sbLenEnd < 0) return undefined;
  const workspaceId = Number(message.slice(0, wsEnd));
  const sbLen = Number(message.slice(wsEnd + 1, sbLenEnd));
  const sandboxId = message.slice(sbLenEnd + 1, sbLenEnd + 1 + sbLen);
  const typeLenStart = sbLenEnd + 1 + sbLen;
  const typeLenEnd = message.indexOf(':', typeLenStart);
  if (typeLenEnd < 0) return undefined;
  const typeLen = Number(message.slice(typeLenStart, typeLenEnd));
  const type = message.slice(typeLenEnd + 1, typeLenEnd + 1 + typeLen);
  const json = message.slice(typeLenEnd + 1 + typeLen);
  if (!json.startsWith(JSON_HEAD)) return undefined;
  const idText = json.slice(JSON_HEAD.length, json.indexOf('"', JSON_HEAD.length));
  const id = parseEventId(idText);
  if (id === undefined || !Number.isSafeInteger(workspaceId)) return undefined;
  return new StoredEventRecord(id, workspaceId, sandboxId, type, id.ms, json);
}

/** Builds the event from a stream entry `[id, [field, value, ...]]`. */
export function eventFromEntry(ref: SandboxRef, entry: [string, string[]]): StoredEventRecord | undefined {
  const [idText, fields] = entry;
  const id = parseEventId(idText);
  if (id === undefined) return undefined;
  let type = '';
  let middle = '';
  let order: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === 't') type = fields[i + 1]!;
    else if (fields[i] === 'm') middle = fields[i + 1]!;
    else if (fields[i] === 'o') order = fields[i + 1]!;
  }
  const event = new StoredEventRecord(id, ref.workspaceId, ref.sandboxId, type, id.ms, jsonFromParts(idText, middle));
  // Its place in the workspace order (the append script's `o`), for pattern streams' cursors.
  if (order !== undefined) setEventOrder(event, Number(order));
  return event;
}
