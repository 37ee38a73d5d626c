import { resolveChannel } from '../broker/scope.js';
import { type EventId, formatEventId, type StoredEvent, validateEventType } from '../event/event.js';
import { arrayHeader, bulk, bulkOrNull, bulkRun, errorReply, integer, push } from '../protocol/encode.js';
import { historyPages } from '../store/semantics.js';
import {
  eventIdArgument,
  historyLimit,
  historyQuery,
  historySince,
  type ResumeFrom,
  resumePoint,
} from '../session/query.js';
import type { ResumeStatus } from '../session/session.js';
import type { RespClient } from './client.js';
import { type CommandSpec, parseInteger, ReplyError, syntaxError } from './command.js';
import { resolveForSubscribe } from './pubsub-commands.js';

/**
 * HISTORY <sandboxId> [TYPE <type>] [AFTER <id>] [SINCE <ms>] [LIMIT <n>] [NEWEST]
 * Replies an array of event JSON strings, oldest first. Options are checked in the order given.
 */
async function history(connection: RespClient, args: string[]): Promise<void> {
  const target = resolveChannel(connection.principal!, args[1]!);
  const query = historyQuery(target);
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
    else if (option === 'AFTER') query.afterId = eventIdArgument(value);
    else if (option === 'SINCE') query.since = historySince(parseInteger(value));
    else if (option === 'LIMIT') query.limit = historyLimit(parseInteger(value));
    else throw syntaxError();
  }
  // The count first (the array's header), then the events as the client reads them: a reply
  // of 1000 events of 64 KiB never sits whole in memory nor meets the output limit.
  const reply = await historyPages(connection.context.store, query);
  if (connection.closed) return;
  connection.reply(arrayHeader(reply.count));
  await connection.session.writeReply(reply.pages(), historyPage);
}

/**
 * One page of a HISTORY reply. An event that retention pruned after the reply was counted
 * takes its place as an error element (as EXEC replies carry errors among their items): the
 * array keeps the length its header promised.
 */
function historyPage(page: readonly (StoredEvent | undefined)[]): Buffer {
  if (!page.includes(undefined)) return bulkRun(page.map((event) => event!.json));
  return Buffer.concat(page.map((event) => (event === undefined ? PRUNED : bulk(event.json))));
}

const PRUNED = errorReply('ERR event pruned by retention while the reply was sent');

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
 * The seam (nothing missed, nothing twice, even while publishing goes on) is the session's:
 * Session.resume, which the SSE resume calls too.
 */
async function resume(connection: RespClient, args: string[]): Promise<void> {
  if (args.length % 2 === 0) throw new ReplyError('WRONG_ARITY', "ERR wrong number of arguments for 'resume' command");
  const names: string[] = [];
  const points: ResumeFrom[] = [];
  for (let i = 1; i < args.length; i += 2) {
    names.push(args[i]!);
    points.push(resumePoint(args[i + 1]!));
  }
  const targets = resolveForSubscribe(connection, names);
  for (const [index, target] of targets.entries()) {
    const tell = (status: ResumeStatus): void => connection.reply(confirmation(connection, target.displayName, status));
    if (!(await connection.session.resume(target, points[index]!, tell))) return;
  }
}

/** `resume <channel> <subscriptions> <status> <earliest id|null> <last id|null>`, a push in RESP3. */
function confirmation(connection: RespClient, channel: string, { status, earliestId, lastId }: ResumeStatus): Buffer {
  const protocol = connection.protocol;
  return push(protocol, [
    RESUME,
    bulk(channel),
    integer(connection.subscriptionCount),
    bulk(status),
    bulkOrNull(optionalId(earliestId), protocol),
    bulkOrNull(optionalId(lastId), protocol),
  ]);
}

function optionalId(id: EventId | undefined): string | undefined {
  return id === undefined ? undefined : formatEventId(id);
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
