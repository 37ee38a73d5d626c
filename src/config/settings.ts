import { InvalidArgumentError } from 'commander';
import { DEFAULT_HOST, DEFAULT_LIMITS, DEFAULT_PORT } from '../config.js';
import { DEFAULT_HTTP_PORT } from '../http/host.js';
import { DEFAULT_BACKLOG } from '../server/server.js';
import {
  booleanArgument,
  byteSizeArgument,
  durationArgument,
  envName,
  integerArgument,
  optionalByteSizeArgument,
} from '../cli/options.js';
import { DEFAULT_RETENTION_BYTES, defaultMemoryStoreMax } from '../store/open-store.js';
import { formatRetentionRules, parseRetentionRules } from '../store/semantics.js';
import type { RetentionRule } from '../store/types.js';

/**
 * Every setting of `sandbox-events serve`, in one table: the flags, the environment variables,
 * the config file's keys, `config check` and `CONFIG GET` are all read from it
 * (docs/operations.md, "Config file").
 */

/** When a changed value takes effect: at a reload (SIGHUP, CONFIG RELOAD), or only at a restart. */
export type Applies = 'live' | 'restart';

/**
 * What a config file may hold for a setting, besides a string in the flag's syntax. `table`: a
 * list of strings too, or a table of `<key> = <number>` read as the items `<key>=<number>`.
 */
type FileShape = 'string' | 'number' | 'boolean' | 'list' | 'table';

export interface SettingSpec<T> {
  /** The flag's argument placeholder, e.g. `<n>`. */
  readonly arg: string;
  readonly help: string;
  /** Parses the flag's (or environment variable's) text; throws InvalidArgumentError. */
  readonly parse: (text: string) => T;
  /** Besides a string: a number (sizes, durations, counts) or a list (repeatable settings). */
  readonly fileShape: FileShape;
  readonly defaultValue: T | undefined;
  /** How the default reads in `--help` and `config check`, when not the value itself. */
  readonly defaultText?: string;
  readonly applies: Applies;
  /** Never printed: `config check`, `CONFIG GET` and logs show `<redacted>`. */
  readonly secret?: boolean;
  /** Given several times on the command line (`--jwt-secret a --jwt-secret b`), a list in a file. */
  readonly repeatable?: boolean;
  readonly choices?: readonly string[];
  /** How `config check`, `CONFIG GET` and logs show a value, when not as text or a comma list. */
  display?(value: T): string;
}

function text<D extends string | undefined = undefined>(
  arg: string,
  help: string,
  applies: Applies,
  defaultValue?: D,
): SettingSpec<string> & { readonly defaultValue: D } {
  return { arg, help, parse: (value) => value, fileShape: 'string', defaultValue: defaultValue as D, applies };
}

function choice<T extends string>(
  arg: string,
  help: string,
  applies: Applies,
  choices: readonly T[],
  defaultValue: T,
): SettingSpec<T> {
  return {
    arg,
    help,
    parse: (value) => {
      if (!(choices as readonly string[]).includes(value)) {
        throw new InvalidArgumentError(`expected one of ${choices.join(', ')}`);
      }
      return value as T;
    },
    fileShape: 'string',
    defaultValue,
    applies,
    choices,
  };
}

function numeric(
  arg: string,
  help: string,
  applies: Applies,
  parse: (text: string) => number,
  defaultValue: number,
  defaultText?: string,
): SettingSpec<number> {
  return { arg, help, parse, fileShape: 'number', defaultValue, defaultText, applies };
}

function flag(arg: string, help: string, applies: Applies, defaultValue: boolean): SettingSpec<boolean> {
  return { arg, help, parse: booleanArgument, fileShape: 'boolean', defaultValue, applies };
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Keyed by the camelCase name; the flag is its kebab-case form (`maxClients`: `--max-clients`). */
export const SETTINGS = {
  host: text('<address>', 'address to listen on; 0.0.0.0 exposes it', 'restart', DEFAULT_HOST),
  port: numeric('<port>', 'TCP port (0 picks a free one)', 'restart', integerArgument(0, 65535), DEFAULT_PORT),
  httpPort: numeric(
    '<port>',
    'HTTP port: REST, event streams, /metrics (0 turns HTTP off)',
    'restart',
    integerArgument(0, 65535),
    DEFAULT_HTTP_PORT,
  ),
  httpCorsOrigin: text('<origins>', 'origins (comma-separated, or *) that browsers may call the HTTP API from', 'live'),
  metricsToken: {
    ...text(
      '<secret>',
      'Bearer token /metrics and the broker-wide /metrics/stream figures require (or an admin JWT)',
      'live',
    ),
    secret: true,
  },
  jwtSecret: {
    arg: '<secret>',
    help: 'HS256 secret that tokens are signed with; repeat it to accept several (the first signs)',
    parse: (value: string): string[] => {
      if (value.length === 0) throw new InvalidArgumentError('a secret must not be empty');
      return [value];
    },
    fileShape: 'list',
    defaultValue: undefined,
    applies: 'live',
    secret: true,
    repeatable: true,
  } satisfies SettingSpec<string[]>,
  jwtPublicKey: text(
    '<file>',
    'PEM public key (RS256, ES256 or EdDSA); with --jwt-secret too, both kinds of token',
    'live',
  ),
  jwksUrl: text(
    '<url>',
    'JWKS endpoint with the public keys (not with --jwt-public-key); with --jwt-secret too, both kinds',
    'live',
  ),
  jwtIssuer: text('<iss>', 'required `iss` claim', 'live'),
  jwtAudience: text('<aud>', 'required `aud` claim', 'live'),
  logLevel: choice('<level>', 'fatal, error, warn, info, debug, trace or silent', 'live', LOG_LEVELS, 'info'),
  dataDir: text('<dir>', 'where the dev secret and the event store live', 'restart', './data'),
  store: text('<spec>', 'sqlite (<data-dir>/events.db), sqlite:<path> or memory', 'restart', 'sqlite'),
  sqliteSynchronous: choice(
    '<mode>',
    'normal: an acknowledged event survives the process dying; full: power loss too (an fsync per commit)',
    'restart',
    ['normal', 'full'] as const,
    'normal',
  ),
  engine: text(
    '<url>',
    'share events with other nodes through Redis: redis://host:port, or a Redis Cluster by any node or several seeds redis://a:7000,b:7001 (replaces --store)',
    'restart',
  ),
  retentionCount: numeric('<n>', 'events kept per sandbox', 'live', integerArgument(1), 10_000),
  retentionAge: numeric(
    '<duration>',
    'events older than this are pruned (e.g. 24h)',
    'live',
    durationArgument,
    24 * 3600 * 1000,
    '24h',
  ),
  retentionBytes: numeric(
    '<size>',
    'bytes of events kept per sandbox; the oldest go first (e.g. 64mb)',
    'live',
    byteSizeArgument,
    DEFAULT_RETENTION_BYTES,
    '64mb',
  ),
  memoryStoreMax: numeric(
    '<size>',
    'bytes of events the memory store keeps in all; the least recently active sandboxes lose their oldest first',
    'restart',
    byteSizeArgument,
    defaultMemoryStoreMax(),
    'a quarter of the RAM',
  ),
  ephemeralTypes: {
    arg: '<globs>',
    help: 'event types delivered live but never stored, comma-separated globs (e.g. sandbox.metrics,terminal.*)',
    parse: (value: string): string[] => value.split(',').filter((glob) => glob !== ''),
    fileShape: 'list',
    defaultValue: [],
    applies: 'restart',
    repeatable: true,
  } satisfies SettingSpec<string[]>,
  retention: {
    arg: '<rules>',
    help: "per-type count rules, first match wins (e.g. 'sandbox.metrics=100,terminal.*=1000'); other types keep --retention-count",
    parse: (value: string): RetentionRule[] => {
      try {
        return parseRetentionRules(value);
      } catch (error) {
        throw new InvalidArgumentError((error as Error).message);
      }
    },
    fileShape: 'table',
    defaultValue: [],
    applies: 'restart',
    repeatable: true,
    display: formatRetentionRules,
  } satisfies SettingSpec<RetentionRule[]>,
  hopxMetricsType: text(
    '<type>',
    'the event type GET /v1/sandboxes/<id>/metrics/stream carries',
    'restart',
    'sandbox.metrics',
  ),
  console: flag('<bool>', 'serve the browser console at /console on the HTTP port (docs/console.md)', 'restart', true),
  maxClients: numeric('<n>', 'open connections at most', 'live', integerArgument(1), DEFAULT_LIMITS.maxClients),
  maxOutputBuffer: numeric(
    '<size>',
    "one client's unsent output before it is disconnected",
    'live',
    byteSizeArgument,
    DEFAULT_LIMITS.maxOutputBytes,
    '8mb',
  ),
  maxOutputTotal: numeric(
    '<size>',
    "all clients' unsent output together; past it the clients holding the most are disconnected first (0: no budget)",
    'live',
    optionalByteSizeArgument,
    DEFAULT_LIMITS.maxOutputTotalBytes,
    'an eighth of the RAM',
  ),
  maxEventSize: numeric(
    '<size>',
    'largest event a publisher may send',
    'live',
    byteSizeArgument,
    DEFAULT_LIMITS.maxEventBytes,
    '64kb',
  ),
  publishRate: numeric(
    '<n>',
    'publishes per second of one sandbox token',
    'live',
    integerArgument(1),
    DEFAULT_LIMITS.publishRatePerSecond,
  ),
  publishBurst: numeric(
    '<n>',
    'publishes one sandbox token may make at once',
    'live',
    integerArgument(1),
    DEFAULT_LIMITS.publishBurst,
  ),
  tcpKeepalive: numeric(
    '<seconds>',
    'idle time before probing a silent client (0 turns it off); new connections get a changed value',
    'live',
    integerArgument(0, 7200),
    DEFAULT_LIMITS.tcpKeepAliveMs / 1000,
  ),
  earlyTierUp: flag(
    '<bool>',
    'optimize hot code after a quarter of V8\'s default interrupt budgets: a fresh daemon\'s first connection storm costs less (docs/operations.md, "V8 flags")',
    'restart',
    true,
  ),
  warmUp: numeric(
    '<clients>',
    'before listening, run this many clients (AUTH, SUBSCRIBE, PING, QUIT) through a throwaway listener on 127.0.0.1, so the first connection storm meets compiled code; 0 turns it off (docs/operations.md, "Warm start")',
    'restart',
    integerArgument(0, 100_000),
    0,
  ),
  tcpBacklog: numeric(
    '<n>',
    'queue of connections the kernel holds until they are accepted (Linux caps it at net.core.somaxconn)',
    'restart',
    integerArgument(1, 65535),
    DEFAULT_BACKLOG,
  ),
} as const satisfies Record<string, SettingSpec<unknown>>;

export type SettingName = keyof typeof SETTINGS;

type ValueOf<S> = S extends SettingSpec<infer T> ? T : never;

/** The effective value of every setting; those without a default may be absent. */
export type Settings = { -readonly [K in SettingName]: ValueOf<(typeof SETTINGS)[K]> | undefined } & {
  -readonly [K in SettingName as (typeof SETTINGS)[K]['defaultValue'] extends undefined ? never : K]: ValueOf<
    (typeof SETTINGS)[K]
  >;
};

export const SETTING_NAMES = Object.keys(SETTINGS) as SettingName[];

export function settingSpec(name: SettingName): SettingSpec<unknown> {
  return SETTINGS[name] as SettingSpec<unknown>;
}

/** `maxClients` to `max-clients`: the flag without its dashes, and the config file's key. */
export function kebabName(name: SettingName): string {
  return name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`);
}

/** `SANDBOX_EVENTS_MAX_CLIENTS`. */
export function envVariable(name: SettingName): string {
  return envName(kebabName(name));
}

/** What `config check`, `CONFIG GET` and the reload log show for a value: secrets redacted. */
export function displayValue(name: SettingName, value: unknown): string {
  if (value === undefined) return '';
  const spec = settingSpec(name);
  if (spec.secret) return Array.isArray(value) ? value.map(() => '<redacted>').join(',') : '<redacted>';
  if (spec.display !== undefined) return spec.display(value);
  if (Array.isArray(value)) return value.join(',');
  return String(value);
}
