import type { Principal } from '../auth/principal.js';
import { AuthError, looksLikeJwt } from '../auth/verifier.js';
import type { RespClient } from './client.js';
import { OK } from '../protocol/encode.js';
import type { DecodedCommand } from '../protocol/request-decoder.js';
import { type CommandSpec, ReplyError, wrongArity } from './command.js';
import { configCommands } from './config-commands.js';
import { authenticate } from './connection-commands.js';
import { connectionCommands } from './connection-commands.js';
import { storeLoadingError } from '../store/semantics.js';
import { errorText } from './errors.js';
import { historyCommands } from './history-commands.js';
import { addSubscriptions, pubsubCommands, resolveForSubscribe } from './pubsub-commands.js';
import { registerCommandTable, serverCommands } from './server-commands.js';

const commands: ReadonlyMap<string, CommandSpec> = new Map(
  [...connectionCommands, ...pubsubCommands, ...serverCommands, ...historyCommands, ...configCommands].map((spec) => [
    spec.name,
    spec,
  ]),
);
registerCommandTable(commands);
/**
 * The same commands by their upper-case names, the form clients send (`PUBLISH`): found without
 * making a lower-case copy of the name per command. Any other spelling goes through lowercasing.
 */
const commandsByUpperName: ReadonlyMap<string, CommandSpec> = new Map(
  [...commands.values()].map((spec) => [spec.name.toUpperCase(), spec]),
);

/** The last name looked up and what it found: a pipeline repeats its command. */
let lastName = '';
let lastSpec: CommandSpec | undefined;

/**
 * The command named `name` as sent (any case), if the broker has it. The decoder hands out the
 * same string for a name received again (RepeatedText), which compares equal at once.
 */
function specNamed(name: string): CommandSpec | undefined {
  if (name === lastName) return lastSpec;
  lastSpec = commandsByUpperName.get(name) ?? commands.get(name.toLowerCase());
  lastName = name;
  return lastSpec;
}

/** For the RequestDecoder: whether the command named `name` (as sent) takes its last argument as bytes. */
export function lastArgumentAsBytes(name: string): boolean {
  return specNamed(name)?.lastArgumentAsBytes === true;
}

const NOAUTH = 'NOAUTH Authentication required.';

/**
 * Commands that need the store: refused with `-LOADING` while a shared engine has not connected
 * since start (Redis refuses commands the same way while it loads its dataset). A SUBSCRIBE
 * confirmed then would miss what other nodes publish before the node's own subscription exists.
 */
const NEEDS_STORE = new Set(['publish', 'subscribe', 'psubscribe', 'history', 'resume']);

function refuseWhileLoading(connection: RespClient, name: string): void {
  if (NEEDS_STORE.has(name) && connection.context.store.readiness?.() === 'loading') throw storeLoadingError();
}

/** Redis's "unknown command" text: the name and up to 128 characters of quoted arguments. */
function unknownCommand(args: string[]): ReplyError {
  let quoted = '';
  for (let i = 1; i < args.length && quoted.length < 128; i += 1) {
    quoted += `'${args[i]!.slice(0, 128 - quoted.length)}' `;
  }
  return new ReplyError(
    'UNKNOWN_COMMAND',
    `ERR unknown command '${args[0]!.slice(0, 128)}', with args beginning with: ${quoted}`,
  );
}

function cannotExecuteWhileSubscribed(name: string): ReplyError {
  return new ReplyError(
    'SUBSCRIBED_CONTEXT',
    `ERR Can't execute '${name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`,
  );
}

/** Finds the command or subcommand and checks its arity, as Redis's lookupCommand does. */
function lookup(connection: RespClient, args: string[]): CommandSpec {
  const spec = specNamed(args[0]!);
  if (spec === undefined) {
    // Redis knows GET, SET and the rest and refuses them in RESP2 subscribed mode with this
    // text (reply vectors); the broker doesn't know them, and answers what Redis would.
    if (isSubscribedResp2(connection)) throw cannotExecuteWhileSubscribed(args[0]!.toLowerCase());
    throw unknownCommand(args);
  }
  if (spec.subcommands !== undefined && args.length >= 2) {
    const sub = spec.subcommands.get(args[1]!.toLowerCase());
    if (sub === undefined) {
      throw new ReplyError(
        'UNKNOWN_SUBCOMMAND',
        `ERR unknown subcommand '${args[1]!.slice(0, 128)}'. Try ${spec.name.toUpperCase()} HELP.`,
      );
    }
    return checkArity(sub, args);
  }
  return checkArity(spec, args);
}

function checkArity(spec: CommandSpec, args: string[]): CommandSpec {
  if ((spec.arity > 0 && args.length !== spec.arity) || args.length < -spec.arity || spec.run === undefined) {
    throw wrongArity(spec.name);
  }
  return spec;
}

/**
 * Runs one command with Redis 7's processCommand checks, in its order: unknown command and
 * arity, then authentication, then the RESP2 subscribed-mode restriction.
 */
export function runCommand(connection: RespClient, command: DecodedCommand): void | Promise<void> {
  const { args } = command;
  try {
    if (isComputeSdkSubscribe(connection, command)) {
      const subscribing = computeSdkSubscribe(connection, args);
      return subscribing === undefined ? undefined : settle(connection, subscribing);
    }
    const spec = lookup(connection, args);
    if (!connection.authenticated && !spec.noAuth) throw new ReplyError('NOAUTH', NOAUTH);
    if (isSubscribedResp2(connection) && !spec.whileSubscribed) throw cannotExecuteWhileSubscribed(spec.name);
    refuseWhileLoading(connection, spec.name);
    const result = spec.run!(connection, args, command.byteLengths, command);
    return result === undefined ? undefined : settle(connection, result);
  } catch (error) {
    connection.replyError(errorText(error, connection));
    return undefined;
  }
}

function isSubscribedResp2(connection: RespClient): boolean {
  return connection.protocol === 2 && connection.subscriptionCount > 0;
}

async function settle(connection: RespClient, pending: Promise<void>): Promise<void> {
  try {
    await pending;
  } catch (error) {
    if (!connection.closed) connection.replyError(errorText(error, connection));
  }
}

/**
 * The ComputeSDK events client's first and only line: `SUBSCRIBE <sandboxId> <accessToken>`
 * with no AUTH before it (docs/protocol.md, "The ComputeSDK events client"). Recognised only on a connection that has
 * not authenticated, when the last argument has the shape of a JWT.
 */
function isComputeSdkSubscribe(connection: RespClient, command: DecodedCommand): boolean {
  const { args } = command;
  if (connection.authenticated || args.length < 3 || args[0]!.toLowerCase() !== 'subscribe') return false;
  // An inline `SUBSCRIBE <sandboxId> <token>` is that client's whatever the token looks like
  // (Redis clients send arrays): a token that is not a JWT gets its `-ERR`, not `-NOAUTH`.
  return looksLikeJwt(args[args.length - 1]!) || (command.inline && args.length === 3);
}

function computeSdkSubscribe(connection: RespClient, args: string[]): void | Promise<void> {
  // Errors on this path begin with `-ERR ` (errorText maps them once compat is set).
  connection.compat = true;
  const subscribe = (principal: Principal | undefined): void => {
    if (principal === undefined) return;
    try {
      refuseWhileLoading(connection, 'subscribe');
      addSubscriptions(connection, resolveForSubscribe(connection, args.slice(1, -1)));
    } catch (error) {
      computeSdkRefused(connection, error);
      return;
    }
    // That client reads a line starting with +OK as "subscribed", and nothing else.
    connection.reply(OK);
  };
  let authenticated: ReturnType<typeof authenticate>;
  try {
    authenticated = authenticate(connection, args[args.length - 1]!);
  } catch (error) {
    computeSdkRefused(connection, error);
    return undefined;
  }
  return authenticated instanceof Promise
    ? authenticated.then(subscribe, (error: unknown) => computeSdkRefused(connection, error))
    : subscribe(authenticated);
}

/** The ComputeSDK client's SUBSCRIBE line failed: its error line, and for a bad token the end. */
function computeSdkRefused(connection: RespClient, error: unknown): void {
  const text = errorText(error, connection);
  if (error instanceof AuthError) {
    // That client sends nothing after this line and would wait for its own timeout: the
    // connection ends at once, after the error line (docs/protocol.md).
    connection.replyError(text);
    connection.closeAfterReplies();
    return;
  }
  connection.compat = connection.authenticated;
  throw new ReplyError('COMPAT_SUBSCRIBE_FAILED', text);
}
