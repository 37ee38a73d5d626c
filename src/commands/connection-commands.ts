import type { Principal } from '../auth/principal.js';
import { AuthError } from '../auth/verifier.js';
import { COMPATIBLE_REDIS_VERSION } from '../config.js';
import type { RespClient } from './client.js';
import {
  array,
  bulk,
  bulkOrNull,
  integer,
  map,
  OK,
  PONG,
  type Protocol,
  RESET,
  simpleString,
} from '../protocol/encode.js';
import { type CommandSpec, notAnInteger, parseInteger, ReplyError, syntaxError, table, wrongArity } from './command.js';

/**
 * Verifies a token and makes it the connection's identity. Failures are counted and logged
 * with the client's address and the reason, never the token. The principal comes at once when
 * the verifier decides at once (a cached or an HS256 token: TokenVerifier.verifyEarly), so the
 * command completes in the turn that read it; otherwise a promise, which resolves to undefined
 * when the connection closed while the signature check ran (it must not act on a dead connection).
 */
export function authenticate(
  connection: RespClient,
  token: string,
): Principal | undefined | Promise<Principal | undefined> {
  const verified = connection.context.verifier.verifyEarly(token);
  if (!(verified instanceof Promise)) return adopt(connection, verified);
  // Read now: a refusal is logged with it, and the client may be gone by then.
  const addr = connection.remoteAddress;
  return verified.then(
    (principal) => (connection.closed ? undefined : adopt(connection, principal)),
    (error: unknown) => {
      if (error instanceof AuthError) {
        const { stats, logger } = connection.context;
        stats.authFailures[error.reason] = (stats.authFailures[error.reason] ?? 0) + 1;
        logger.info({ conn: connection.id, addr, reason: error.reason }, 'authentication failed');
      }
      throw error;
    },
  );
}

/** Runs `next` with what `authenticate` gave: at once when it decided at once, else once it settles. */
export function afterAuthentication(
  authenticated: Principal | undefined | Promise<Principal | undefined>,
  next: (principal: Principal | undefined) => void,
): void | Promise<void> {
  return authenticated instanceof Promise ? authenticated.then(next) : next(authenticated);
}

function adopt(connection: RespClient, principal: Principal): Principal {
  const current = connection.principal;
  if (current !== undefined && connection.subscriptionCount > 0 && !sameIdentity(current, principal)) {
    // Subscriptions were checked against the old identity; a token for another identity
    // may not inherit them. Refresh tokens (same identity, later exp) pass.
    throw new ReplyError(
      'IDENTITY_CHANGED',
      'NOPERM a token for another workspace, role or sandbox cannot replace this one while subscribed',
    );
  }
  connection.setPrincipal(principal);
  return principal;
}

function sameIdentity(a: Principal, b: Principal): boolean {
  return a.workspaceId === b.workspaceId && a.role === b.role && a.sandboxId === b.sandboxId;
}

function auth(connection: RespClient, args: string[]): void | Promise<void> {
  // AUTH <token> or AUTH <username> <token>; the username is accepted and ignored.
  if (args.length > 3) throw syntaxError();
  return afterAuthentication(authenticate(connection, args[args.length - 1]!), (principal) => {
    if (principal !== undefined) connection.reply(OK);
  });
}

function hello(connection: RespClient, args: string[]): void | Promise<void> {
  let protocol = connection.protocol;
  let token: string | undefined;
  let name: string | undefined;
  if (args.length >= 2) {
    const version = parseInteger(args[1]!);
    if (version === undefined) {
      throw new ReplyError('BAD_PROTOCOL', 'ERR Protocol version is not an integer or out of range');
    }
    if (version !== 2 && version !== 3) throw new ReplyError('NOPROTO', 'NOPROTO unsupported protocol version');
    protocol = version;
    for (let i = 2; i < args.length; i += 1) {
      const option = args[i]!.toLowerCase();
      const remaining = args.length - i - 1;
      if (option === 'auth' && remaining >= 2) {
        token = args[i + 2];
        i += 2;
      } else if (option === 'setname' && remaining >= 1) {
        name = args[i + 1];
        i += 1;
      } else {
        throw new ReplyError('SYNTAX_ERROR', `ERR Syntax error in HELLO option '${args[i]}'`);
      }
    }
  }
  if (token === undefined) {
    helloReply(connection, protocol, name);
    return undefined;
  }
  return afterAuthentication(authenticate(connection, token), (principal) => {
    if (principal !== undefined) helloReply(connection, protocol, name);
  });
}

/** HELLO's reply, once authenticated (by its AUTH option or before). */
function helloReply(connection: RespClient, protocol: Protocol, name: string | undefined): void {
  if (!connection.authenticated) {
    throw new ReplyError(
      'NOAUTH',
      'NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time',
    );
  }
  if (name !== undefined) connection.name = validClientName(name);
  connection.protocol = protocol;
  connection.reply(
    map(protocol, [
      [bulk('server'), bulk('redis')],
      [bulk('version'), bulk(COMPATIBLE_REDIS_VERSION)],
      [bulk('proto'), integer(protocol)],
      [bulk('id'), integer(connection.id)],
      [bulk('mode'), bulk('standalone')],
      [bulk('role'), bulk('master')],
      [bulk('modules'), array([])],
    ]),
  );
}

const PONG_BULK = bulk('pong');

function ping(connection: RespClient, args: string[]): void {
  if (args.length > 2) throw wrongArity('ping');
  const message = args[1];
  if (connection.protocol === 2 && connection.subscriptionCount > 0 && !(connection.compat && message === undefined)) {
    // Redis in RESP2 subscribed mode answers a two-element array. The ComputeSDK client's
    // plain PING gets +PONG (docs/protocol.md, "The ComputeSDK events client").
    connection.reply(array([PONG_BULK, bulk(message ?? '')]));
    return;
  }
  connection.reply(message === undefined ? PONG : bulk(message));
}

function quit(connection: RespClient): void {
  connection.reply(OK);
  connection.closeAfterReplies();
}

function reset(connection: RespClient): void {
  // Redis's RESET: unsubscribe from everything, back to RESP2, forget the name and the
  // authentication. The reply is +RESET.
  connection.session.unsubscribeAll();
  connection.protocol = 2;
  connection.name = undefined;
  connection.clearPrincipal();
  connection.reply(RESET);
}

function select(connection: RespClient, args: string[]): void {
  const index = parseInteger(args[1]!);
  if (index === undefined) throw notAnInteger();
  // There is one database; Redis replies this text for an index past `databases`.
  if (index !== 0) throw new ReplyError('DB_OUT_OF_RANGE', 'ERR DB index is out of range');
  connection.reply(OK);
}

/** Redis's clientSetName rule: printable ASCII without spaces; empty clears the name. */
function validClientName(name: string): string | undefined {
  if (!/^[!-~]*$/.test(name)) {
    throw new ReplyError('BAD_CLIENT_NAME', 'ERR Client names cannot contain spaces, newlines or special characters.');
  }
  return name === '' ? undefined : name;
}

function clientSetName(connection: RespClient, args: string[]): void {
  connection.name = validClientName(args[2]!);
  connection.reply(OK);
}

function clientGetName(connection: RespClient): void {
  connection.reply(bulkOrNull(connection.name, connection.protocol));
}

function clientId(connection: RespClient): void {
  connection.reply(integer(connection.id));
}

function clientSetInfo(connection: RespClient, args: string[]): void {
  // Redis 7.2 stores these for CLIENT LIST; 7.0 does not know them. node-redis sends them.
  const attribute = args[2]!.toLowerCase();
  const value = args[3]!;
  if (!/^[!-~]*$/.test(value)) {
    throw new ReplyError('BAD_CLIENT_INFO', `ERR ${attribute} cannot contain spaces, newlines or special characters.`);
  }
  if (attribute === 'lib-name') connection.libName = value;
  else if (attribute === 'lib-ver') connection.libVersion = value;
  else throw new ReplyError('SYNTAX_ERROR', `ERR Unrecognized option '${args[2]}'`);
  connection.reply(OK);
}

/** One line in CLIENT LIST format, for this connection only (others belong to other tenants). */
function clientInfoLine(connection: RespClient): string {
  const principal = connection.principal;
  const fields = [
    `id=${connection.id}`,
    `addr=${connection.remoteAddress}`,
    `name=${connection.name ?? ''}`,
    `age=${Math.floor((Date.now() - connection.createdAt) / 1000)}`,
    `sub=${connection.session.channels.size}`,
    `psub=${connection.session.patterns.size}`,
    `omem=${connection.session.pendingBytes}`,
    `resp=${connection.protocol}`,
    `lib-name=${connection.libName ?? ''}`,
    `lib-ver=${connection.libVersion ?? ''}`,
    `workspace=${principal?.workspaceId ?? ''}`,
    `role=${principal?.role ?? ''}`,
  ];
  return `${fields.join(' ')}\n`;
}

function clientInfo(connection: RespClient): void {
  connection.reply(bulk(clientInfoLine(connection)));
}

function helpReply(lines: string[]): Buffer {
  return array(lines.map((line) => simpleString(line)));
}

function clientHelp(connection: RespClient): void {
  connection.reply(
    helpReply([
      'CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:',
      'GETNAME',
      '    Return the name of the current connection.',
      'ID',
      '    Return the ID of the current connection.',
      'INFO',
      '    Return information about the current client connection.',
      'SETINFO <LIB-NAME|LIB-VER> <value>',
      '    Set client library name or version.',
      'SETNAME <name>',
      '    Assign the name <name> to the current connection.',
      'HELP',
      '    Print this help.',
    ]),
  );
}

const connectionGroup = { group: 'connection', since: '1.0.0' } as const;

export const connectionCommands: CommandSpec[] = [
  // AUTH runs in RESP2 subscribed mode too, unlike Redis: docs/protocol.md lets a subscriber
  // refresh its token before exp, and a RESP2 subscriber has no other way to send one.
  {
    ...connectionGroup,
    name: 'auth',
    arity: -2,
    noAuth: true,
    whileSubscribed: true,
    summary: 'Authenticate with a JWT: AUTH <token> or AUTH <username> <token>',
    run: auth,
  },
  {
    ...connectionGroup,
    name: 'hello',
    arity: -1,
    noAuth: true,
    since: '6.0.0',
    summary: 'Handshake: HELLO [2|3] [AUTH <user> <token>] [SETNAME <name>]',
    run: hello,
  },
  { ...connectionGroup, name: 'ping', arity: -1, whileSubscribed: true, summary: 'Ping the broker', run: ping },
  {
    ...connectionGroup,
    name: 'quit',
    arity: -1,
    noAuth: true,
    whileSubscribed: true,
    summary: 'Close the connection',
    run: quit,
  },
  {
    ...connectionGroup,
    name: 'reset',
    arity: 1,
    noAuth: true,
    whileSubscribed: true,
    since: '6.2.0',
    summary: 'Reset the connection: unsubscribe, RESP2, unauthenticated',
    run: reset,
  },
  { ...connectionGroup, name: 'select', arity: 2, summary: 'Select database 0 (the only one)', run: select },
  {
    ...connectionGroup,
    name: 'client',
    arity: -2,
    since: '2.4.0',
    summary: 'Connection name, id and info',
    subcommands: table([
      { ...connectionGroup, name: 'client|setname', arity: 3, summary: 'Set the connection name', run: clientSetName },
      { ...connectionGroup, name: 'client|getname', arity: 2, summary: 'Get the connection name', run: clientGetName },
      { ...connectionGroup, name: 'client|id', arity: 2, summary: 'Get the connection id', run: clientId },
      {
        ...connectionGroup,
        name: 'client|setinfo',
        arity: 4,
        since: '7.2.0',
        summary: 'Set the client library name or version',
        run: clientSetInfo,
      },
      {
        ...connectionGroup,
        name: 'client|info',
        arity: 2,
        since: '6.2.0',
        summary: 'Information about this connection',
        run: clientInfo,
      },
      { ...connectionGroup, name: 'client|help', arity: 2, summary: 'Show help', run: clientHelp },
    ]),
  },
];
