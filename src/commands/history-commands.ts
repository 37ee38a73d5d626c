import type { Principal } from '../auth/principal.js';
import { resolveChannel } from '../broker/scope.js';
import type { Connection } from '../connection/connection.js';
import { type EventId, formatEventId, parseEventId, validateEventType } from '../event/event.js';
import { bulk, bulkArray, bulkOrNull, deliveryFrame, integer, push } from '../protocol/encode.js';
import { REPLAY_PAGE, sendReplay } from '../store/replay.js';
import { DEFAULT_HISTORY_LIMIT, type HistoryQuery, MAX_HISTORY_LIMIT } from '../store/types.js';
import { type CommandSpec, parseInteger, ReplyError, syntaxError } from './command.js';
import { addSubscriptions, removeSubscription, resolveForSubscribe } from './pubsub-commands.js';

function invalidEventId(text: string): ReplyError {
  return new ReplyError('INVALID_EVENT_ID', `ERR invalid event id '${text.slice(0, 64)}': expected <ms>-<seq>`);
}

function parseHistoryLimit(text: string): number {
  const limit = parseInteger(text);
  if (limit === undefined || limit < 1 || limit > MAX_HISTORY_LIMIT) {
    throw new ReplyError('INVALID_LIMIT', `ERR limit must be an integer from 1 to ${MAX_HISTORY_LIMIT}`);
  }
  return limit;
}

/**
 * HISTORY <sandboxId> [TYPE <type>] [AFTER <id>] [SINCE <ms>] [LIMIT <n>] [NEWEST]
 * Replies an array of event JSON strings, oldest first.
 */
async function history(connection: Connection, args: string[]): Promise<void> {
  const principal: Principal = connection.principal!;
  const target = resolveChannel(principal, args[1]!);
  const query: HistoryQuery = {
    workspaceId: target.workspaceId,
    sandboxId: target.sandboxId,
    limit: DEFAULT_HISTORY_LIMIT,
  };
  for (let i = 2; i < args.length; i += 1) {
    const option = args[i]!.toUpperCase();
    if (option === 'NEWEST') {
      query.newest = true;
      continue;
    }
    const value = args[i + 1];
    if (value === undefined) throw syntaxError();
    i += 1;
    if (option === 'TYPE') query.type = validateEventType(value);
    else if (option === 'AFTER') query.afterId = parseEventId(value) ?? throwError(invalidEventId(value));
    else if (option === 'SINCE') {
      const since = parseInteger(value);
      if (since === undefined || since < 0)
        throw new ReplyError('INVALID_SINCE', 'ERR since must be Unix milliseconds');
      query.since = since;
    } else if (option === 'LIMIT') query.limit = parseHistoryLimit(value);
    else throw syntaxError();
  }
  const events = await connection.context.store.history(query);
  connection.reply(bulkArray(events.map((event) => event.json)));
}

function throwError(error: Error): never {
  throw error;
}

const RESUME = bulk('resume');

/**
 * RESUME <sandboxId> <lastEventId> [<sandboxId> <lastEventId> ...]
 *
 * Subscribes from a last-seen id. Per channel the client first gets a confirmation
 * `resume <channel> <subscriptions> <status> <earliest id|null> <last id|null>` (status
 * `complete`, or `trimmed` / `unknown` / `future` when the replay cannot be exact: told, never
 * silently partial, like Centrifugo's `recovered: false`), then the replayed events as ordinary
 * message frames, then live ones. `$` resumes from now; `0` from the beginning.
 *
 * The seam: the channel is subscribed with its live frames held back before the store is
 * read, and held frames whose ids the replay covered are dropped, so nothing is missed and
 * nothing repeats even while publishing goes on.
 */
async function resume(connection: Connection, args: string[]): Promise<void> {
  if (args.length % 2 === 0) throw new ReplyError('WRONG_ARITY', "ERR wrong number of arguments for 'resume' command");
  const pairs: { name: string; from: EventId | 'now' }[] = [];
  for (let i = 1; i < args.length; i += 2) {
    const text = args[i + 1]!;
    const from = text === '$' ? 'now' : text === '0' ? { ms: 0, seq: 0 } : parseEventId(text);
    if (from === undefined) throw invalidEventId(text);
    pairs.push({ name: args[i]!, from });
  }
  const targets = resolveForSubscribe(
    connection,
    pairs.map((pair) => pair.name),
  );
  const store = connection.context.store;
  const threshold = connection.context.limits.maxOutputBytes / 4;
  for (const [index, target] of targets.entries()) {
    const from = pairs[index]!.from;
    connection.beginReplay(target.key);
    addSubscriptions(connection, [target]);
    // What the client has now, up to (see the SSE resume in src/http/streams.ts).
    let coveredThrough: EventId | undefined;
    try {
      if (from === 'now') {
        connection.reply(confirmation(connection, target.displayName, 'complete', undefined, undefined));
        continue;
      }
      const page = await store.replayAfter(target, from, REPLAY_PAGE);
      if (connection.closed) return;
      const status = page.complete ? 'complete' : (page.gap ?? 'unknown');
      if (page.complete) coveredThrough = from;
      connection.reply(confirmation(connection, target.displayName, status, page.earliestId, page.lastId));
      await sendReplay(
        store,
        target,
        page,
        {
          send(event) {
            connection.writeFrame(deliveryFrame(connection.protocol, undefined, target.displayName, event.json));
            coveredThrough = event.id;
          },
          pendingBytes: () => connection.pendingOutputBytes,
          below: (bytes) => connection.outputBelow(bytes),
          open: () => !connection.closed,
        },
        threshold,
      );
      if (connection.closed) return;
    } catch (error) {
      // A replay that failed half-way must not leave a subscription that silently lacks events.
      removeSubscription(connection, target.key);
      throw error;
    } finally {
      connection.endReplay(target.key, coveredThrough);
    }
  }
}

function confirmation(
  connection: Connection,
  channel: string,
  status: string,
  earliest: EventId | undefined,
  last: EventId | undefined,
): Buffer {
  const protocol = connection.protocol;
  return push(protocol, [
    RESUME,
    bulk(channel),
    integer(connection.subscriptionCount),
    bulk(status),
    bulkOrNull(earliest === undefined ? undefined : formatEventId(earliest), protocol),
    bulkOrNull(last === undefined ? undefined : formatEventId(last), protocol),
  ]);
}

const stream = { group: 'stream', since: '0.1.0' } as const;

export const historyCommands: CommandSpec[] = [
  {
    ...stream,
    name: 'history',
    arity: -2,
    summary: 'Past events of a sandbox: HISTORY <sandboxId> [TYPE t] [AFTER id] [SINCE ms] [LIMIT n] [NEWEST]',
    run: history,
  },
  {
    ...stream,
    name: 'resume',
    arity: -3,
    whileSubscribed: true,
    summary: 'Subscribe from a last-seen event id: RESUME <sandboxId> <lastId> [...]',
    run: resume,
  },
];
