import type { SandboxEvent } from '../event/event.js';
import type { ReconnectStrategy } from './backoff.js';
import type { EventsError } from './errors.js';
import type { AccessToken } from './token.js';

/**
 * The public shapes of the events client (src/client/pubsub-client.ts): its configuration, its
 * states, its events and the options of its methods. Names and fields follow the ComputeSDK
 * events client where it has them (docs/client.md, "Differences from the ComputeSDK client").
 */

/** ComputeSDK's connection states. */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'error';

/** The state machine's own states (finer than `ConnectionState`). */
export type ClientStatus = 'idle' | 'connecting' | 'ready' | 'reconnecting' | 'failed';

/** What `getState()` reports for each state of the state machine. */
export const CONNECTION_STATE: Readonly<Record<ClientStatus, ConnectionState>> = {
  idle: 'disconnected',
  connecting: 'connecting',
  reconnecting: 'connecting',
  ready: 'connected',
  failed: 'error',
};

export interface PubSubClientConfig {
  /** Broker host (default: `COMPUTESDK_PUBSUB_HOST`, else 127.0.0.1). */
  host?: string;
  /** Broker port (default: `COMPUTESDK_PUBSUB_PORT`, else 6380). */
  port?: number;
  /**
   * Several broker nodes of one cluster (sharing a Redis engine). When given (non-empty), it
   * takes precedence over `host`/`port`: the client starts at the first, and after a lost
   * connection or a failed attempt moves to the next (round robin), resuming from its last ids.
   * A missing `port` is `COMPUTESDK_PUBSUB_PORT`, else 6380.
   */
  hosts?: BrokerAddress[];
  /** A JWT, or a function returning one (sync or async), called on every (re)connect and before `exp`. */
  accessToken: AccessToken;
  /** The sandbox to subscribe to on `connect()`. Optional here (ComputeSDK requires it): more with `subscribe()`. */
  sandboxId?: string;
  /** Reconnect after a lost connection (default true). */
  autoReconnect?: boolean;
  /** The smallest reconnect delay, in ms, and the unit the backoff doubles from (default 1000). */
  reconnectDelay?: number;

  /** Where `sandboxId` starts: `$` (default: events from now on), `0` (every retained event) or an event id. */
  from?: string;
  /** Only events of `sandboxId` whose type matches one of these globs (see `SubscribeOptions.types`). */
  types?: readonly string[];
  /** The largest reconnect delay in ms (default 30,000). */
  maxReconnectDelay?: number;
  /** Overrides the backoff: return a delay in ms, or false to stop (see `ReconnectStrategy`). */
  reconnectStrategy?: ReconnectStrategy;
  /** A connection that stayed up this long (ms) resets the backoff to its first step (default 10,000). */
  stableAfter?: number;
  /** Time for TCP connect, authentication and restoring subscriptions, in ms (default 10,000). */
  connectTimeout?: number;
  /** Send a PING after this many ms without any bytes from the broker (default 10,000; 0 turns heartbeats off). */
  heartbeatInterval?: number;
  /** Tear the connection down when nothing arrives this many ms after a heartbeat PING (default 10,000). */
  heartbeatTimeout?: number;
  /** How long `publish`, `history` and `ping` wait for a connection that is being re-established (default 10,000 ms). */
  commandTimeout?: number;
  /** Sent as the connection's name (CLIENT GETNAME, logs). Printable ASCII without spaces. */
  clientName?: string;
}

/**
 * Where an event came from: the channel (sandbox id as subscribed) and, for a pattern, which
 * one and the event's cursor in it (what `psubscribe(pattern, { from })` resumes after; absent
 * for an ephemeral event, or with the Redis engine).
 */
export interface EventMeta {
  channel: string;
  pattern?: string;
  cursor?: string;
}

/**
 * Why the client cannot promise that nothing was missed:
 * - `trimmed`: events after the last id seen were pruned by retention before the client came back;
 * - `unknown`: the broker never issued the id the client resumed from;
 * - `future`: the broker's newest id is older than the client's (it lost its store, or is
 *   another broker); the client starts over from the broker's newest id;
 * - `pattern`: a pattern came back live only, without a replay: the broker keeps no order over
 *   a workspace (the Redis engine), so what matched while the client was away is not replayed.
 */
export type GapReason = 'trimmed' | 'unknown' | 'future' | 'pattern';

export interface GapInfo {
  reason: GapReason;
  /** The channel (sandbox id) of a resume gap. */
  channel?: string;
  /** The pattern of a pattern's gap. */
  pattern?: string;
  /** The id the client resumed after (`0-0` for "from the beginning"); a pattern's: its cursor. */
  requestedId?: string;
  /** The broker's oldest retained id of that sandbox, when it has one (null for a pattern). */
  earliestId: string | null;
  /** The broker's newest id of that sandbox, when it has one; a pattern's: the newest cursor. */
  lastId: string | null;
}

/** One broker node of `hosts`. */
export interface BrokerAddress {
  host: string;
  port?: number;
}

export interface ReconnectInfo {
  /** Attempts since the last stable connection, from 1. */
  attempt: number;
  /** The wait before this attempt, in ms. */
  delay: number;
  cause: EventsError;
  /** The node this attempt goes to (the next of `hosts`, or the only one). */
  host: string;
  port: number;
}

/** The client's events (ComputeSDK's four, then the additions). */
export interface PubSubClientEvents {
  event: [event: SandboxEvent, meta: EventMeta];
  connect: [];
  disconnect: [cause: EventsError];
  error: [error: EventsError];
  gap: [gap: GapInfo];
  reconnecting: [info: ReconnectInfo];
  status: [status: ClientStatus];
  /** A fresh token was accepted on the open connection; `expiresAt` in Unix ms when known. */
  tokenRefresh: [expiresAt: number | undefined];
}

export interface SubscribeOptions extends TypeFilterOptions {
  /** `$` (default: from now on, or from the last event this client already saw of it), `0`, or an event id. */
  from?: string;
}

export interface PatternSubscribeOptions extends TypeFilterOptions {
  /**
   * `$` (default: from now on), or a cursor `w<n>` (an event's `meta.cursor`, or
   * `lastCursor(pattern)`, kept from an earlier run): every event of every matching sandbox
   * after it (docs/protocol.md, "Pattern resume").
   */
  from?: string;
}

export interface TypeFilterOptions {
  /**
   * Only events whose type matches one of these globs (PSUBSCRIBE's glob rules), filtered by
   * the broker (docs/protocol.md, "Type filters"). Default: every type.
   */
  types?: readonly string[];
}

export interface HistoryOptions {
  /** Only events of this type. */
  type?: string;
  /** Only events after this id. */
  after?: string;
  /** Only events with `timestamp >= since` (Unix ms). */
  since?: number;
  /** 1 to 1000 (the broker's default is 100). */
  limit?: number;
  /** The newest `limit` events instead of the oldest (still oldest first). */
  newest?: boolean;
}

export interface EventsIteratorOptions {
  /** Ends the iteration (the loop exits normally) when aborted. */
  signal?: AbortSignal;
  /** Buffered events past which the client stops reading the socket (default 10,000). */
  highWaterMark?: number;
}

export interface PubSubClientStats {
  /** Connections that reached the ready state. */
  connects: number;
  /** Reconnect attempts scheduled. */
  reconnects: number;
  /** Events delivered to the application. */
  events: number;
  /** Events dropped because their id was not newer than the last one delivered on that channel. */
  duplicatesDropped: number;
  gaps: number;
  /** Tokens sent with AUTH on an open connection. */
  tokenRefreshes: number;
}
