import type { ConfigControl } from '../runtime/context.js';
import type { RespClient } from './client.js';
import { bulk, map, OK } from '../protocol/encode.js';
import { type CommandSpec, ReplyError, table } from './command.js';

/**
 * CONFIG GET and CONFIG RELOAD, for admin tokens (docs/protocol.md, "Configuration"). GET is
 * Redis's (https://redis.io/docs/latest/commands/config-get/): several glob patterns, a map of
 * name to value, with secrets redacted. RELOAD is this broker's: it re-reads the config file as
 * SIGHUP does.
 */

/** Redis 7's text for a command the user's ACL does not allow. */
function noPermission(name: string): ReplyError {
  return new ReplyError('NO_PERMISSION', `NOPERM this token has no permissions to run the '${name}' command`);
}

function controlFor(connection: RespClient, name: string): ConfigControl {
  if (connection.principal?.role !== 'admin') throw noPermission(name);
  const control = connection.context.configControl;
  if (control === undefined) throw new ReplyError('CONFIG_UNAVAILABLE', 'ERR this broker runs without a configuration');
  return control;
}

function configGet(connection: RespClient, args: string[]): void {
  const control = controlFor(connection, 'config|get');
  const entries = new Map<string, string>();
  for (const pattern of args.slice(2)) {
    for (const [name, value] of control.get(pattern)) entries.set(name, value);
  }
  connection.reply(
    map(
      connection.protocol,
      [...entries].map(([name, value]) => [bulk(name), bulk(value)] as const),
    ),
  );
}

function configReload(connection: RespClient): void {
  const outcome = controlFor(connection, 'config|reload').reload();
  if (!outcome.ok) {
    throw new ReplyError(
      'CONFIG_RELOAD_FAILED',
      `ERR config reload failed, nothing changed: ${outcome.error.replace(/\s+/g, ' ')}`,
    );
  }
  connection.reply(OK);
}

const server = { group: 'server', since: '2.0.0' } as const;

export const configCommands: CommandSpec[] = [
  {
    ...server,
    name: 'config',
    arity: -2,
    summary: 'Reads the broker configuration, or reloads its file (admin tokens)',
    subcommands: table([
      {
        ...server,
        name: 'config|get',
        arity: -3,
        summary: 'Settings whose names match the patterns; secrets redacted',
        run: configGet,
      },
      {
        ...server,
        name: 'config|reload',
        arity: 2,
        summary: 'Re-reads the config file, as SIGHUP does',
        run: configReload,
      },
    ]),
  },
];
