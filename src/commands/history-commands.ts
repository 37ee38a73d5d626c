import { resolveChannel, visibleName } from '../broker/scope.js';
import { SandboxEventsError } from '../errors.js';
import {
  type EventId,
  formatEventId,
  formatOrderCursor,
  parseOrderCursor,
  type StoredEvent,
  validateEventType,
} from '../event/event.js';
import { arrayHeader, bulk, bulkArray, bulkOrNull, bulkRun, errorReply, integer, push } from '../protocol/encode.js';
import { historyPages } from '../store/semantics.js';
import {
  eventIdArgument,
  historyLimit,
  historyQuery,
  historySince,
  isResumePoint,
  type ResumeFrom,
  resumePoint,
} from '../session/query.js';
import type { ResumeStatus } from '../session/session.js';
import { TypeFilter } from '../session/type-filter.js';
import type { RespClient } from './client.js';
import { type CommandSpec, parseInteger, ReplyError, syntaxError } from './command.js';
import { resolveForPsubscribe, resolveForSubscribe } from './pubsub-commands.js';

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
 * Splits RESUME's arguments into `<sandboxId> <lastEventId>` pairs and `TYPE <glob>` options
 * (docs/protocol.md, "Type filters"). `TYPE` followed by a resume point (`$`, `0`, an id) is a
 * pair: the sandbox named TYPE; followed by anything else, it is an option. Every option holds
 * for every channel of the command.
 */
function resumeArguments(args: string[]): { names: string[]; points: ResumeFrom[]; types: TypeFilter | undefined } {
  const names: string[] = [];
  const points: ResumeFrom[] = [];
  const globs: string[] = [];
  for (let i = 1; i < args.length; i += 2) {
    const value = args[i + 1];
    if (value === undefined) throw new ReplyError('WRONG_ARITY', "ERR wrong number of arguments for 'resume' command");
    if (args[i]!.toUpperCase() === 'TYPE' && !isResumePoint(value)) globs.push(value);
    else {
      names.push(args[i]!);
      points.push(resumePoint(value));
    }
  }
  if (names.length === 0) throw new ReplyError('WRONG_ARITY', "ERR wrong number of arguments for 'resume' command");
  return { names, points, types: TypeFilter.from(globs) };
}

/**
 * RESUME <sandboxId> <lastEventId> [<sandboxId> <lastEventId> ...] [TYPE <glob> ...]
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
  const { names, points, types } = resumeArguments(args);
  const targets = resolveForSubscribe(connection, names);
  for (const [index, target] of targets.entries()) {
    const tell = (status: ResumeStatus): void => connection.reply(confirmation(connection, target.displayName, status));
    if (!(await connection.session.resume(target, points[index]!, tell, types))) return;
  }
}

const PRESUME = bulk('presume');

/**
 * PRESUME <pattern> <cursor> [WITHCURSOR] [TYPE <glob> ...]
 *
 * PSUBSCRIBE with a type filter and a resume cursor (docs/protocol.md, "Type filters" and
 * "Pattern resume"). The client gets `presume <pattern> <subscriptions> <status> null <cursor|null>`
 * (the newest cursor issued), then the replayed events of every matching sandbox as `pmessage`
 * frames in store order, then live ones. `$` subscribes from now (`complete`); a cursor `w<n>`
 * replays what followed it (`complete`, or `trimmed` / `future` when that cannot be exact);
 * any other cursor, or any cursor with a store that keeps no order over the pattern's scope (the
 * Redis engine over every workspace, docs/scaling.md), is answered `not_resumable` and the
 * subscription goes on live.
 * WITHCURSOR: each `pmessage` of this subscription carries the event's cursor as a fifth
 * element, so a client knows where to resume from; plain `PSUBSCRIBE` frames stay Redis's.
 */
async function presume(connection: RespClient, args: string[]): Promise<void> {
  const pattern = args[1]!;
  const cursor = args[2]!;
  const globs: string[] = [];
  let withCursor = false;
  for (let i = 3; i < args.length; i += 1) {
    const option = args[i]!.toUpperCase();
    if (option === 'WITHCURSOR') withCursor = true;
    else if (option !== 'TYPE') throw syntaxError();
    else if (i + 1 === args.length) {
      throw new ReplyError('WRONG_ARITY', "ERR wrong number of arguments for 'presume' command");
    } else globs.push(args[++i]!);
  }
  const types = TypeFilter.from(globs);
  const [scope] = resolveForPsubscribe(connection, [pattern]);
  const after = cursor === '$' ? 'now' : parseOrderCursor(cursor);
  const tell = ({ status, lastOrder }: ResumeStatus): void =>
    connection.reply(
      confirmationOf(
        connection,
        PRESUME,
        pattern,
        { status },
        lastOrder === undefined ? undefined : formatOrderCursor(lastOrder),
      ),
    );
  if (after === undefined) {
    connection.session.psubscribe(pattern, scope!, types, withCursor);
    tell({ status: 'not_resumable' });
    return;
  }
  await connection.session.presume(pattern, scope!, after, tell, types, withCursor);
}

/** `resume <channel> <subscriptions> <status> <earliest id|null> <last id|null>`, a push in RESP3. */
function confirmation(connection: RespClient, channel: string, status: ResumeStatus): Buffer {
  return confirmationOf(connection, RESUME, channel, status);
}

function confirmationOf(
  connection: RespClient,
  kind: Buffer,
  channel: string,
  { status, earliestId, lastId }: { status: string; earliestId?: EventId; lastId?: EventId },
  lastCursor = optionalId(lastId),
): Buffer {
  const protocol = connection.protocol;
  return push(protocol, [
    kind,
    bulk(channel),
    integer(connection.subscriptionCount),
    bulk(status),
    bulkOrNull(optionalId(earliestId), protocol),
    bulkOrNull(lastCursor, protocol),
  ]);
}

function optionalId(id: EventId | undefined): string | undefined {
  return id === undefined ? undefined : formatEventId(id);
}

/**
 * SANDBOXES: the sandboxes this credential may see that hold retained events, each with its
 * newest id, as a flat array `<name> <last id> ...` (PUBSUB NUMSUB's shape). Names as the
 * credential writes them: `{<ws>}<id>` for another workspace's (admins).
 */
async function sandboxes(connection: RespClient): Promise<void> {
  const principal = connection.principal!;
  const store = connection.context.store;
  if (store.listSandboxes === undefined) {
    throw new SandboxEventsError('NOT_SUPPORTED', `the ${store.kind} store cannot list sandboxes`);
  }
  const listed = await store.listSandboxes(principal.role === 'admin' ? 'all' : principal.workspaceId);
  const items: string[] = [];
  for (const sandbox of listed) {
    const name = visibleName(principal, sandbox);
    if (name !== undefined) items.push(name, formatEventId(sandbox.lastId));
  }
  connection.reply(bulkArray(items));
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
    summary: 'Subscribe from a last-seen event id: RESUME <sandboxId> <lastId> [...] [TYPE <glob> ...]',
    run: resume,
  },
  {
    ...stream,
    name: 'presume',
    arity: -3,
    whileSubscribed: true,
    summary: 'Subscribe to a pattern from a cursor: PRESUME <pattern> <cursor|$> [WITHCURSOR] [TYPE <glob> ...]',
    run: presume,
  },
  {
    ...stream,
    name: 'sandboxes',
    arity: 1,
    summary: 'The sandboxes holding events, each with its newest id: SANDBOXES',
    run: sandboxes,
  },
];
