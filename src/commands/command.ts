import { type ErrorCode, SandboxEventsError } from '../errors.js';
import type { DecodedCommand } from '../protocol/request-decoder.js';
import type { RespClient } from './client.js';

/** One command (or subcommand) the broker answers, in the shape Redis's command table has. */
export interface CommandSpec {
  /** Lower-case full name; `container|sub` for subcommands, as Redis names them in errors. */
  name: string;
  /** Redis convention: n > 0 exactly n words (name included); n < 0 at least -n. */
  arity: number;
  /** Runs before AUTH (Redis's CMD_NO_AUTH: AUTH, HELLO, QUIT, RESET). */
  noAuth?: boolean;
  /** Runs while subscribed in RESP2 (Redis lets only (P)(UN)SUBSCRIBE, PING, QUIT, RESET). */
  whileSubscribed?: boolean;
  /** For COMMAND DOCS (so interactive redis-cli shows hints) and COMMAND INFO. */
  summary: string;
  group: 'connection' | 'pubsub' | 'server' | 'stream';
  since: string;
  /**
   * Takes its last argument as the bytes received, undecoded (`command.lastBytes`; its entry in
   * `args` is then empty): PUBLISH, which passes its event's bytes through (docs/performance.md,
   * "Seventh round: the payload's bytes").
   */
  lastArgumentAsBytes?: boolean;
  /** Absent on a container that has only subcommands. `command` is what `args` came from. */
  run?: (
    connection: RespClient,
    args: string[],
    byteLengths: number[],
    command: DecodedCommand,
  ) => void | Promise<void>;
  subcommands?: ReadonlyMap<string, CommandSpec>;
}

/** An error reply: `text` is the whole line after `-`, e.g. `ERR syntax error`. */
export class ReplyError extends SandboxEventsError {
  constructor(
    code: ErrorCode,
    readonly text: string,
  ) {
    super(code, text);
  }
}

export const syntaxError = (): ReplyError => new ReplyError('SYNTAX_ERROR', 'ERR syntax error');

export const notAnInteger = (): ReplyError =>
  new ReplyError('NOT_AN_INTEGER', 'ERR value is not an integer or out of range');

export function wrongArity(name: string): ReplyError {
  return new ReplyError('WRONG_ARITY', `ERR wrong number of arguments for '${name}' command`);
}

/** Redis's string2ll: a strict decimal integer, else undefined. */
export function parseInteger(text: string): number | undefined {
  if (!/^-?\d{1,16}$/.test(text) || (text.length > 1 && /^-?0/.test(text))) return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : undefined;
}

export function table(specs: CommandSpec[]): ReadonlyMap<string, CommandSpec> {
  return new Map(specs.map((spec) => [spec.name.slice(spec.name.indexOf('|') + 1), spec]));
}
