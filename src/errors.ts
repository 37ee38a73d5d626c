/**
 * The first word of a RESP error line: Redis's error codes (https://redis.io/docs/latest/develop/reference/protocol-spec/#simple-errors),
 * the ones this broker answers with.
 */
export type RespErrorPrefix = 'ERR' | 'NOAUTH' | 'WRONGPASS' | 'NOPERM' | 'NOPROTO' | 'LOADING';

/** Which transports send a code to clients: in a RESP error line, in an HTTP error body, or none (CLI and startup). */
export type ErrorWire = 'resp' | 'http' | 'both' | 'none';

interface ErrorCodeEntry {
  /** The prefix of the RESP error line for this code (docs/protocol.md). */
  readonly resp: RespErrorPrefix;
  /** The HTTP status answered with this code (docs/http.md, "Errors"). */
  readonly http: number;
  readonly wire: ErrorWire;
  /** Other statuses answered with this code, besides `http`. */
  readonly alsoHttp?: readonly number[];
}

/**
 * Every code the broker's errors carry, with the RESP prefix and the HTTP status each one maps
 * to. commands/errors.ts (RESP) and http/errors.ts (HTTP) read it; docs/http.md lists each code
 * the HTTP API sends under its status, and docs/protocol.md each prefix (a test holds both to
 * this table). The client's own codes are its own (client/errors.ts).
 */
export const ERROR_CODES = {
  // Arguments and requests a transport refuses.
  INVALID_ARGUMENT: { resp: 'ERR', http: 400, wire: 'none' },
  SYNTAX_ERROR: { resp: 'ERR', http: 400, wire: 'resp' },
  NOT_AN_INTEGER: { resp: 'ERR', http: 400, wire: 'resp' },
  WRONG_ARITY: { resp: 'ERR', http: 400, wire: 'resp' },
  UNKNOWN_COMMAND: { resp: 'ERR', http: 400, wire: 'resp' },
  UNKNOWN_SUBCOMMAND: { resp: 'ERR', http: 400, wire: 'resp' },
  SUBSCRIBED_CONTEXT: { resp: 'ERR', http: 400, wire: 'resp' },
  SUBSCRIPTION_LIMIT: { resp: 'ERR', http: 400, wire: 'resp' },
  BAD_PROTOCOL: { resp: 'ERR', http: 400, wire: 'resp' },
  NOPROTO: { resp: 'NOPROTO', http: 400, wire: 'resp' },
  DB_OUT_OF_RANGE: { resp: 'ERR', http: 400, wire: 'resp' },
  BAD_CLIENT_NAME: { resp: 'ERR', http: 400, wire: 'resp' },
  BAD_CLIENT_INFO: { resp: 'ERR', http: 400, wire: 'resp' },
  PROTOCOL_ERROR: { resp: 'ERR', http: 400, wire: 'resp' },
  /** The ComputeSDK client's SUBSCRIBE-with-token path: every error there is `ERR ...`. */
  COMPAT_SUBSCRIBE_FAILED: { resp: 'ERR', http: 400, wire: 'resp' },
  INVALID_CHANNEL: { resp: 'ERR', http: 400, wire: 'resp' },
  INVALID_SANDBOX_ID: { resp: 'ERR', http: 400, wire: 'http' },
  INVALID_PATTERN: { resp: 'ERR', http: 400, wire: 'both' },
  INVALID_EVENT: { resp: 'ERR', http: 400, wire: 'both' },
  INVALID_EVENT_ID: { resp: 'ERR', http: 400, wire: 'both' },
  INVALID_LIMIT: { resp: 'ERR', http: 400, wire: 'both' },
  INVALID_SINCE: { resp: 'ERR', http: 400, wire: 'both' },
  INVALID_TYPE: { resp: 'ERR', http: 400, wire: 'both' },
  BAD_PATH: { resp: 'ERR', http: 400, wire: 'http' },
  /** Also what Node's HTTP parser refuses: 408 for a head or body too slow, 431 for a head too large. */
  BAD_HTTP_REQUEST: { resp: 'ERR', http: 400, wire: 'http', alsoHttp: [408, 431] },
  BODY_INCOMPLETE: { resp: 'ERR', http: 400, wire: 'http' },
  EVENT_TOO_LARGE: { resp: 'ERR', http: 413, wire: 'both' },
  UNSUPPORTED_ENCODING: { resp: 'ERR', http: 415, wire: 'http' },
  NOT_FOUND: { resp: 'ERR', http: 404, wire: 'http' },
  /** A command the configured store can't answer (SANDBOXES on a store without a listing). */
  NOT_SUPPORTED: { resp: 'ERR', http: 501, wire: 'resp' },
  METHOD_NOT_ALLOWED: { resp: 'ERR', http: 405, wire: 'http' },
  RATE_LIMITED: { resp: 'ERR', http: 429, wire: 'both' },
  // Credentials and permissions.
  NOAUTH: { resp: 'NOAUTH', http: 401, wire: 'resp' },
  UNAUTHENTICATED: { resp: 'NOAUTH', http: 401, wire: 'http' },
  BAD_AUTHORIZATION: { resp: 'ERR', http: 401, wire: 'http' },
  AUTH_FAILED: { resp: 'WRONGPASS', http: 401, wire: 'both' },
  NO_PERMISSION: { resp: 'NOPERM', http: 403, wire: 'both' },
  IDENTITY_CHANGED: { resp: 'NOPERM', http: 403, wire: 'resp' },
  // The store and the daemon.
  STORE_UNAVAILABLE: { resp: 'ERR', http: 503, wire: 'both' },
  STORE_CLOSED: { resp: 'ERR', http: 503, wire: 'both' },
  /** A node whose shared engine has not connected since start; Redis answers `-LOADING` while it loads. */
  STORE_LOADING: { resp: 'LOADING', http: 503, wire: 'both' },
  /** An engine address the node cannot fully serve (a Redis Cluster node): refused at start. */
  ENGINE_REFUSED: { resp: 'ERR', http: 503, wire: 'none' },
  NOT_READY: { resp: 'ERR', http: 503, wire: 'http' },
  SHUTTING_DOWN: { resp: 'ERR', http: 503, wire: 'http' },
  INTERNAL_ERROR: { resp: 'ERR', http: 500, wire: 'http' },
  /** GET /console before `npm run build` made its assets (a checkout run from source). */
  CONSOLE_NOT_BUILT: { resp: 'ERR', http: 503, wire: 'http' },
  // Configuration and files, reported by the CLI at startup or by `apikey`.
  /** A config file (or flag) that does not parse or validate (docs/operations.md, "Config file"). */
  CONFIG_INVALID: { resp: 'ERR', http: 500, wire: 'none' },
  /** CONFIG GET / CONFIG RELOAD on a broker started without settings (startServer in a program). */
  CONFIG_UNAVAILABLE: { resp: 'ERR', http: 503, wire: 'resp' },
  /** CONFIG RELOAD whose file failed: nothing changed, the reason follows. */
  CONFIG_RELOAD_FAILED: { resp: 'ERR', http: 500, wire: 'resp' },
  AUTH_CONFIG: { resp: 'ERR', http: 500, wire: 'none' },
  HTTP_LISTEN_FAILED: { resp: 'ERR', http: 500, wire: 'none' },
  /** The start-up warm-up (`--warm-up`) did not finish: the daemon starts cold and logs why. */
  WARM_UP_FAILED: { resp: 'ERR', http: 500, wire: 'none' },
  API_KEYS_CORRUPT: { resp: 'ERR', http: 500, wire: 'none' },
  API_KEYS_UNREADABLE: { resp: 'ERR', http: 500, wire: 'none' },
  API_KEYS_LOCKED: { resp: 'ERR', http: 500, wire: 'none' },
  API_KEY_NOT_FOUND: { resp: 'ERR', http: 404, wire: 'none' },
} as const satisfies Record<string, ErrorCodeEntry>;

/** A code of the broker's errors: a typo is a type error. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** The HTTP status the table gives `code`. */
export type HttpStatusOf<Code extends ErrorCode> = (typeof ERROR_CODES)[Code]['http'];

/** The codes the table answers with HTTP status `Status`. */
export type CodeWithStatus<Status extends number> = {
  [Code in ErrorCode]: HttpStatusOf<Code> extends Status ? Code : never;
}[ErrorCode];

export function respPrefixOf(code: ErrorCode): RespErrorPrefix {
  return ERROR_CODES[code].resp;
}

export function httpStatusOf<Code extends ErrorCode>(code: Code): HttpStatusOf<Code> {
  return ERROR_CODES[code].http;
}

/**
 * Base class of every error the package raises on purpose. `code` is stable and meant for
 * programs (switch on it, count it, alert on it); `message` is for people and may change.
 * Shaped after undici's lib/core/errors.js: one class per condition, `cause` kept. The broker's
 * codes are ErrorCode; the client names its own (`SandboxEventsError<EventsErrorCode>`).
 */
export class SandboxEventsError<Code extends string = ErrorCode> extends Error {
  readonly code: Code;

  // NoInfer: `new SandboxEventsError(code, ...)` checks `code` against ErrorCode, not a type made up from it.
  constructor(code: NoInfer<Code>, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
