import { EventEmitter } from 'node:events';
import {
  compareEventIds,
  type EventId,
  formatEventId,
  isPlainObject,
  parseEventId,
  type SandboxEvent,
} from '../event/event.js';
import { exponentialBackoff, type ReconnectStrategy } from './backoff.js';
import { EventsAuthError, EventsError, EventsNetworkError, EventsPubSubError } from './errors.js';
import { EventQueue } from './event-queue.js';
import { Link } from './link.js';
import type { RespValue } from './reply-reader.js';
import { type AccessToken, readTokenTiming, refreshDelay, resolveToken, type TokenTiming } from './token.js';

/**
 * The reconnecting, resuming events client. A drop-in for the ComputeSDK events package's
 * `createPubSubClient` (same config names, methods, events and states: design.md,
 * "Compatibility with the ComputeSDK events client"), speaking the broker's full protocol
 * underneath: RESP3 on one connection, RESUME from the last id seen after every reconnect.
 *
 * The client is an explicit state machine (style.md, point 6):
 *
 *   idle ──connect()──▶ connecting ──handshake + restore──▶ ready
 *                          │  ▲                              │
 *          first attempt   │  │ timer                        │ connection lost
 *          failed, auth    │  │                              ▼
 *          refused, or     │  └────────── reconnecting ◀─────┘   (autoReconnect)
 *          strategy stop   ▼                   │
 *                        failed ◀──────────────┘ strategy returned false / auth refused
 *
 *   disconnect() from any state ──▶ idle.      connect() from idle or failed starts over.
 *
 * Public states (ComputeSDK's `getState()`): idle → 'disconnected', connecting and
 * reconnecting → 'connecting', ready → 'connected', failed → 'error'.
 */

/** ComputeSDK's connection states. */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'error';

/** The state machine's own states (finer than `ConnectionState`). */
export type ClientStatus = 'idle' | 'connecting' | 'ready' | 'reconnecting' | 'failed';

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

/** Where an event came from: the channel (sandbox id as subscribed) and, for a pattern, which one. */
export interface EventMeta {
  channel: string;
  pattern?: string;
}

/**
 * Why the client cannot promise that nothing was missed:
 * - `trimmed`: events after the last id seen were pruned by retention before the client came back;
 * - `unknown`: the broker never issued the id the client resumed from;
 * - `future`: the broker's newest id is older than the client's (it lost its store, or is
 *   another broker); the client starts over from the broker's newest id;
 * - `pattern`: a pattern subscription was restored after a reconnect; patterns resume from now.
 */
export type GapReason = 'trimmed' | 'unknown' | 'future' | 'pattern';

export interface GapInfo {
  reason: GapReason;
  /** The channel (sandbox id) of a resume gap. */
  channel?: string;
  /** The pattern of a `pattern` gap. */
  pattern?: string;
  /** The id the client resumed after (`0-0` for "from the beginning"). */
  requestedId?: string;
  /** The broker's oldest retained id of that sandbox, when it has one. */
  earliestId: string | null;
  /** The broker's newest id of that sandbox, when it has one. */
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

export interface SubscribeOptions {
  /** `$` (default: from now on, or from the last event this client already saw of it), `0`, or an event id. */
  from?: string;
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

/** `$`: from now on; otherwise a start id (`0` is the zero id: every retained event). */
type Start = 'now' | EventId;

interface ChannelSubscription {
  readonly name: string;
  readonly start: Start;
}

interface ReadyWaiter {
  resolve(): void;
  reject(error: EventsError): void;
  timer: NodeJS.Timeout | undefined;
}

const ZERO_ID: EventId = { ms: 0, seq: 0 };
const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_PORT = 6380;
const MAX_TIMER = 2_147_483_647;

export function createPubSubClient(config: PubSubClientConfig): PubSubClient {
  return new PubSubClient(config);
}

export class PubSubClient extends EventEmitter<PubSubClientEvents> {
  /** The broker nodes, in order: `hosts`, or the single `host`/`port`. */
  private readonly addresses: readonly { host: string; port: number }[];
  /** The node in use: the one connected, or the one the current or next attempt goes to. */
  private hostIndex = 0;
  /** Nodes the first `connect()` may still try before it gives up (see afterFailure). */
  private untriedHosts = 0;
  private readonly config: PubSubClientConfig;
  private readonly autoReconnect: boolean;
  private readonly strategy: ReconnectStrategy;
  private readonly stableAfter: number;
  private readonly connectTimeout: number;
  private readonly heartbeatInterval: number;
  private readonly heartbeatTimeout: number;
  private readonly commandTimeout: number;

  private status: ClientStatus = 'idle';
  private link: Link | undefined;
  /** Bumped whenever an attempt's results must be ignored (disconnect, failure, new attempt). */
  private generation = 0;
  private attempt = 0;
  /** Whether a connection was ready since the last `connect()` from idle or failed. */
  private everReady = false;
  private readyAt = 0;
  private lastError: EventsError | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatDeadline: NodeJS.Timeout | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  /** A token the broker refused: offering it again is pointless. */
  private rejectedToken: string | undefined;
  /** A token fetched after a refusal, for the next attempt (so the function isn't called twice). */
  private nextToken: string | undefined;

  private readonly channels = new Map<string, ChannelSubscription>();
  private readonly patterns = new Set<string>();
  /** The last id delivered, per channel (however it arrived: channel or pattern). */
  private readonly cursors = new Map<string, EventId>();
  /** Why a channel or pattern was dropped while restoring it (for the `subscribe()` waiting on it). */
  private readonly dropped = new Map<string, EventsError>();
  private readonly readyWaiters = new Set<ReadyWaiter>();
  private readonly queues = new Set<EventQueue>();
  private readonly pressured = new Set<EventQueue>();
  private readingPaused = false;
  /** UNSUBSCRIBEs waiting for their confirmation, by sandbox id (see subscribe). */
  private readonly unsubscribing = new Map<string, Promise<void>>();
  /** Deliveries held back until the turn after a connection became ready (see holdDeliveries). */
  private held: { event: SandboxEvent; meta: EventMeta }[] | undefined;
  private readonly counters: PubSubClientStats = {
    connects: 0,
    reconnects: 0,
    events: 0,
    duplicatesDropped: 0,
    gaps: 0,
    tokenRefreshes: 0,
  };

  constructor(config: PubSubClientConfig) {
    super();
    this.config = config;
    const envPort = validPort(Number(process.env.COMPUTESDK_PUBSUB_PORT));
    if (config.hosts !== undefined && config.hosts.length > 0) {
      this.addresses = config.hosts.map((address, i) => {
        if (
          address === null ||
          typeof address !== 'object' ||
          typeof address.host !== 'string' ||
          address.host.length === 0
        ) {
          throw new EventsPubSubError('INVALID_ARGUMENT', `hosts[${i}] must be { host: string, port?: number }`);
        }
        if (address.port !== undefined && validPort(address.port) === undefined) {
          throw new EventsPubSubError('INVALID_ARGUMENT', `hosts[${i}].port must be an integer from 1 to 65535`);
        }
        return { host: address.host, port: validPort(address.port) ?? envPort ?? DEFAULT_PORT };
      });
    } else {
      this.addresses = [
        {
          host: config.host || process.env.COMPUTESDK_PUBSUB_HOST || DEFAULT_HOST,
          port: validPort(config.port) ?? envPort ?? DEFAULT_PORT,
        },
      ];
    }
    this.autoReconnect = config.autoReconnect ?? true;
    // ComputeSDK reads `config.reconnectDelay || 1000`: 0 means the default there too.
    const baseDelay = positive(config.reconnectDelay) ?? 1000;
    const maxDelay = Math.max(baseDelay, positive(config.maxReconnectDelay) ?? 30_000);
    this.strategy = config.reconnectStrategy ?? exponentialBackoff({ baseDelay, maxDelay });
    this.stableAfter = config.stableAfter ?? 10_000;
    this.connectTimeout = positive(config.connectTimeout) ?? 10_000;
    this.heartbeatInterval = config.heartbeatInterval ?? 10_000;
    this.heartbeatTimeout = positive(config.heartbeatTimeout) ?? 10_000;
    this.commandTimeout = positive(config.commandTimeout) ?? 10_000;
    if (config.sandboxId !== undefined) {
      const name = checkName(config.sandboxId, 'sandboxId');
      this.channels.set(name, { name, start: parseStart(config.from) });
    }
  }

  /** The broker host in use (connected, or being tried); with `hosts`, it changes on failover. */
  get host(): string {
    return this.addresses[this.hostIndex]!.host;
  }

  /** The broker port in use (see `host`). */
  get port(): number {
    return this.addresses[this.hostIndex]!.port;
  }

  // ── ComputeSDK's API ─────────────────────────────────────────────────────────────────────

  /**
   * Connects, authenticates and subscribes; resolves once every subscription is confirmed
   * (replayed events may still be arriving). Rejects when the first attempt fails: the client
   * reconnects only after it has been connected once (ComputeSDK does the same), except after
   * an auth refusal when the token function hands out a new token.
   */
  connect(): Promise<void> {
    switch (this.status) {
      case 'ready':
        return Promise.resolve();
      case 'connecting':
      case 'reconnecting':
        return this.whenReady(undefined);
      case 'idle':
      case 'failed':
        this.everReady = false;
        this.attempt = 0;
        this.rejectedToken = undefined;
        this.nextToken = undefined;
        this.lastError = undefined;
        this.hostIndex = 0;
        this.untriedHosts = this.addresses.length - 1;
        this.startAttempt();
        return this.whenReady(undefined);
    }
  }

  /** Closes the connection and stops reconnecting; `for await` loops over `events()` end. */
  async disconnect(): Promise<void> {
    this.generation += 1;
    this.clearAttemptTimers();
    this.stopLinkTimers();
    const link = this.link;
    this.link = undefined;
    this.setStatus('idle');
    const closed = new EventsNetworkError('CLIENT_CLOSED', 'the client was disconnected');
    this.rejectWaiters(closed);
    for (const queue of [...this.queues]) queue.end();
    if (link !== undefined) await link.close(closed);
  }

  getState(): ConnectionState {
    switch (this.status) {
      case 'idle':
        return 'disconnected';
      case 'connecting':
      case 'reconnecting':
        return 'connecting';
      case 'ready':
        return 'connected';
      case 'failed':
        return 'error';
    }
  }

  /**
   * A round trip to the broker (PING, +PONG). Waits up to `commandTimeout` while the client
   * reconnects; rejects with NOT_CONNECTED when it is not connected and not trying to be.
   */
  async ping(): Promise<void> {
    await this.command(['PING']);
  }

  // ── Additions ────────────────────────────────────────────────────────────────────────────

  /** The state machine's state (finer than `getState()`). */
  getStatus(): ClientStatus {
    return this.status;
  }

  getStats(): PubSubClientStats {
    return { ...this.counters };
  }

  /** The last event id delivered on a channel (the position a reconnect resumes from). */
  lastEventId(channel: string): string | undefined {
    const cursor = this.cursors.get(channel);
    return cursor === undefined ? undefined : formatEventId(cursor);
  }

  /** The channels and patterns the client keeps subscribed (and restores after reconnects). */
  subscriptions(): { channels: string[]; patterns: string[] } {
    return { channels: [...this.channels.keys()], patterns: [...this.patterns] };
  }

  /**
   * Subscribes to one more sandbox on the same connection. Before `connect()` it is only
   * remembered. Resolves once the broker confirmed (or at once while idle); rejects on a refusal
   * (NO_PERMISSION, an invalid id), after which it is not kept.
   */
  async subscribe(sandboxId: string, options: SubscribeOptions = {}): Promise<void> {
    const name = checkName(sandboxId, 'sandboxId');
    const start = parseStart(options.from);
    // Frames of a subscription still being undone would pass for this one's and move its
    // position past what it asked to replay (found in review).
    await this.unsubscribing.get(name)?.catch(() => {}); // its own caller hears of a failure
    if (this.channels.has(name)) return;
    if (options.from !== undefined && start !== 'now') this.cursors.delete(name);
    const subscription: ChannelSubscription = { name, start };
    this.channels.set(name, subscription);
    this.dropped.delete(name);
    await this.ensure(
      (link) => link.channels.has(name),
      () => this.channels.get(name) === subscription,
      (link) => this.subscribeChannel(link, subscription),
      () => this.channels.delete(name),
      name,
    );
  }

  /**
   * Stops a sandbox subscription. Subscribing to it again later starts from now (its position
   * is forgotten unless a pattern still delivers it).
   */
  async unsubscribe(sandboxId: string): Promise<void> {
    if (!this.channels.delete(sandboxId)) return;
    if (this.patterns.size === 0) this.cursors.delete(sandboxId);
    const link = this.link;
    if (link === undefined || !link.channels.delete(sandboxId)) return;
    const undoing = link.confirm(['UNSUBSCRIBE', sandboxId], 'unsubscribe', 1).then(() => {}, ignoreLinkLoss);
    this.unsubscribing.set(sandboxId, undoing);
    try {
      await undoing;
    } finally {
      if (this.unsubscribing.get(sandboxId) === undoing) this.unsubscribing.delete(sandboxId);
    }
  }

  /**
   * Subscribes to a glob over the sandbox ids the token may see (workspace and admin tokens).
   * Patterns cannot be resumed by id: after a reconnect the client subscribes the pattern again
   * and emits `gap` with reason `pattern` (events in between are not replayed). Subscribe to a
   * sandbox by id for exact resume.
   */
  async psubscribe(pattern: string): Promise<void> {
    checkName(pattern, 'pattern');
    if (this.patterns.has(pattern)) return;
    this.patterns.add(pattern);
    this.dropped.delete(pattern);
    await this.ensure(
      (link) => link.patterns.has(pattern),
      () => this.patterns.has(pattern),
      (link) => this.subscribePatterns(link, [pattern], false),
      () => this.patterns.delete(pattern),
      pattern,
    );
  }

  async punsubscribe(pattern: string): Promise<void> {
    if (!this.patterns.delete(pattern)) return;
    const link = this.link;
    if (link === undefined || !link.patterns.delete(pattern)) return;
    await link.confirm(['PUNSUBSCRIBE', pattern], 'punsubscribe', 1).catch(ignoreLinkLoss);
  }

  /**
   * Publishes `{type, data}` to a sandbox; resolves with the number of subscriptions that got
   * it. A publish in flight when the connection drops rejects with CONNECTION_LOST: it may or
   * may not have been stored (not retried, so never stored twice).
   */
  async publish(sandboxId: string, type: string, data: Record<string, unknown> = {}): Promise<number> {
    if (typeof type !== 'string' || type.length === 0) {
      throw new EventsPubSubError('INVALID_ARGUMENT', 'type must be a non-empty string');
    }
    if (!isPlainObject(data)) throw new EventsPubSubError('INVALID_ARGUMENT', 'data must be a plain object');
    const reply = await this.command(['PUBLISH', checkName(sandboxId, 'sandboxId'), JSON.stringify({ type, data })]);
    if (typeof reply !== 'number') throw new EventsPubSubError('PROTOCOL_ERROR', 'PUBLISH: expected an integer reply');
    return reply;
  }

  /** Past events of a sandbox, oldest first (the broker's HISTORY command). */
  async history(sandboxId: string, options: HistoryOptions = {}): Promise<SandboxEvent[]> {
    const args = ['HISTORY', checkName(sandboxId, 'sandboxId')];
    if (options.type !== undefined) args.push('TYPE', options.type);
    if (options.after !== undefined) args.push('AFTER', options.after);
    if (options.since !== undefined) args.push('SINCE', String(Math.floor(options.since)));
    if (options.limit !== undefined) args.push('LIMIT', String(options.limit));
    if (options.newest === true) args.push('NEWEST');
    const reply = await this.command(args);
    if (!Array.isArray(reply)) throw new EventsPubSubError('PROTOCOL_ERROR', 'HISTORY: expected an array reply');
    return reply.map((item) => {
      const event = typeof item === 'string' ? parseEvent(item) : undefined;
      if (event === undefined) throw new EventsPubSubError('PROTOCOL_ERROR', 'HISTORY: an item is not an event');
      return event;
    });
  }

  /**
   * Events as an async iterator: `for await (const event of client.events({ signal }))`. The loop
   * ends when the signal aborts or `disconnect()` is called, and throws the error when the
   * client fails (an auth refusal, the reconnect strategy giving up).
   */
  events(options: EventsIteratorOptions = {}): AsyncIterableIterator<SandboxEvent> {
    const { signal } = options;
    const onAbort = (): void => void queue.return();
    const queue = new EventQueue(
      Math.max(1, options.highWaterMark ?? 10_000),
      (target, over) => this.onPressure(target, over),
      (target) => {
        this.queues.delete(target);
        signal?.removeEventListener('abort', onAbort);
      },
    );
    if (signal?.aborted === true) {
      void queue.return();
      return queue;
    }
    if (this.status === 'failed' && this.lastError !== undefined) {
      queue.fail(this.lastError);
      return queue;
    }
    this.queues.add(queue);
    signal?.addEventListener('abort', onAbort, { once: true });
    return queue;
  }

  // ── The state machine ────────────────────────────────────────────────────────────────────

  private setStatus(status: ClientStatus): void {
    if (this.status === status) return;
    this.status = status;
    this.safeEmit('status', status);
  }

  private startAttempt(): void {
    const generation = ++this.generation;
    this.setStatus('connecting');
    this.connectTimer = setTimeout(() => {
      this.connectTimer = undefined;
      if (generation !== this.generation) return;
      const timeout = new EventsNetworkError(
        'CONNECT_TIMEOUT',
        `no connection to ${this.host}:${this.port} within ${this.connectTimeout} ms`,
      );
      if (this.link !== undefined) this.link.destroy(timeout);
      else {
        this.generation += 1; // the token function is still running: ignore what it returns
        this.afterFailure(timeout, undefined);
      }
    }, this.connectTimeout);
    void this.runAttempt(generation);
  }

  private async runAttempt(generation: number): Promise<void> {
    let token: string;
    try {
      token = this.nextToken ?? (await resolveToken(this.config.accessToken));
    } catch (error) {
      if (generation === this.generation) {
        this.clearAttemptTimers();
        this.afterFailure(toEventsError(error), undefined);
      }
      return;
    }
    this.nextToken = undefined;
    if (generation !== this.generation) return;
    if (token === this.rejectedToken) {
      this.fail(
        new EventsAuthError(
          'AUTH_FAILED',
          'the broker refused this token before, and the accessToken function returned it again',
        ),
      );
      return;
    }
    const link = new Link(
      { host: this.host, port: this.port, token },
      {
        onPush: (from, push) => this.onPush(from, push),
        onUnsolicitedError: (from, error) => this.onUnsolicitedError(from, error),
        onClose: (from, cause) => this.onLinkClosed(from, cause),
      },
    );
    this.link = link;
    try {
      const hello = ['HELLO', '3', 'AUTH', 'default', token];
      if (this.config.clientName !== undefined) hello.push('SETNAME', this.config.clientName);
      const reply = await link.command(hello);
      if (!Array.isArray(reply)) throw new EventsPubSubError('PROTOCOL_ERROR', 'HELLO: expected a map reply');
      await this.restore(link, () => this.readyIfCurrent(link, generation));
    } catch (error) {
      link.destroy(toEventsError(error)); // onLinkClosed decides what comes next
      return;
    }
    this.readyIfCurrent(link, generation);
  }

  private readyIfCurrent(link: Link, generation: number): void {
    if (link.ready || !link.alive || this.link !== link || generation !== this.generation) return;
    this.onReady(link);
  }

  private onReady(link: Link): void {
    this.clearAttemptTimers();
    link.ready = true;
    this.everReady = true;
    this.readyAt = Date.now();
    this.counters.connects += 1;
    this.setStatus('ready');
    this.releaseHeld();
    if (this.readingPaused) link.pauseReading();
    this.startHeartbeat(link);
    this.scheduleRefresh(link);
    for (const waiter of [...this.readyWaiters]) {
      this.readyWaiters.delete(waiter);
      if (waiter.timer !== undefined) clearTimeout(waiter.timer);
      waiter.resolve();
    }
    this.safeEmit('connect');
  }

  private onLinkClosed(link: Link, cause: EventsError): void {
    if (link !== this.link) return;
    this.link = undefined;
    this.stopLinkTimers();
    if (this.status === 'idle' || this.status === 'failed') return;
    if (link.ready) {
      // A connection that held long enough resets the backoff (issue 4: "reset after a stable connection").
      if (Date.now() - this.readyAt >= this.stableAfter) this.attempt = 0;
      if (cause instanceof EventsNetworkError && cause.cause !== undefined) this.emitError(cause);
      this.safeEmit('disconnect', cause);
    } else {
      this.clearAttemptTimers();
    }
    this.afterFailure(cause, link.token);
  }

  /** After a failed attempt or a lost connection: reconnect, or stop and say why. */
  private afterFailure(cause: EventsError, token: string | undefined): void {
    if (cause instanceof EventsAuthError && cause.code === 'AUTH_FAILED' && token !== undefined) {
      void this.retryWithFreshToken(cause, token);
      return;
    }
    if (cause instanceof EventsAuthError && cause.code === 'NO_PERMISSION') {
      this.fail(cause);
      return;
    }
    if (!this.everReady) {
      // The first connect() tries each node of `hosts` once, in order, before it gives up.
      if (this.untriedHosts > 0 && cause instanceof EventsNetworkError) {
        this.untriedHosts -= 1;
        this.rotateHost();
        this.startAttempt();
        return;
      }
      this.fail(cause);
      return;
    }
    if (!this.autoReconnect) {
      this.generation += 1;
      this.setStatus('idle');
      this.rejectWaiters(cause);
      for (const queue of [...this.queues]) queue.end();
      return;
    }
    this.scheduleReconnect(cause);
  }

  /**
   * The broker refused the token. Retrying with it would loop forever (issue 4: "auth failures
   * do not loop forever"), so the client asks the token function once more: a different token
   * is tried after the usual backoff; the same one (or a plain string token) stops the client.
   */
  private async retryWithFreshToken(cause: EventsAuthError, refused: string): Promise<void> {
    this.rejectedToken = refused;
    const source = this.config.accessToken;
    if (typeof source !== 'function') {
      this.fail(cause);
      return;
    }
    const generation = this.generation;
    let fresh: string;
    try {
      fresh = await resolveToken(source);
    } catch {
      if (generation === this.generation) this.fail(cause);
      return;
    }
    if (generation !== this.generation) return;
    if (fresh === refused) {
      this.fail(cause);
      return;
    }
    this.nextToken = fresh;
    this.scheduleReconnect(cause);
  }

  private scheduleReconnect(cause: EventsError): void {
    this.attempt += 1;
    const attempt = this.attempt;
    let delay: number | false;
    try {
      delay = this.strategy(attempt, cause);
    } catch (error) {
      this.fail(
        new EventsPubSubError('RECONNECT_STOPPED', `reconnectStrategy threw: ${describe(error)}`, { cause: error }),
      );
      return;
    }
    if (delay === false || typeof delay !== 'number' || !Number.isFinite(delay) || delay < 0) {
      this.fail(
        new EventsPubSubError(
          'RECONNECT_STOPPED',
          `gave up reconnecting after ${attempt - 1} attempts: ${cause.message}`,
          { cause },
        ),
      );
      return;
    }
    this.counters.reconnects += 1;
    this.generation += 1;
    this.rotateHost();
    this.setStatus('reconnecting');
    this.safeEmit('reconnecting', { attempt, delay, cause, host: this.host, port: this.port });
    if (this.status !== 'reconnecting') return; // a listener called disconnect()
    this.reconnectTimer = setTimeout(
      () => {
        this.reconnectTimer = undefined;
        this.startAttempt();
      },
      Math.min(delay, MAX_TIMER),
    );
  }

  /**
   * Moves to the next node of `hosts` (round robin, wrapping around); a no-op with one node.
   * Resuming there is exact: nodes sharing an engine issue the same ids (docs/scaling.md).
   */
  private rotateHost(): void {
    this.hostIndex = (this.hostIndex + 1) % this.addresses.length;
  }

  /** Stops for good (until `connect()`): the error goes to connect() callers, iterators and `error`. */
  private fail(error: EventsError): void {
    this.generation += 1;
    this.clearAttemptTimers();
    this.stopLinkTimers();
    const link = this.link;
    this.link = undefined;
    link?.destroy(error);
    this.lastError = error;
    this.setStatus('failed');
    this.rejectWaiters(error);
    for (const queue of [...this.queues]) queue.fail(error);
    this.emitError(error);
  }

  private clearAttemptTimers(): void {
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    this.reconnectTimer = undefined;
    this.connectTimer = undefined;
  }

  private rejectWaiters(error: EventsError): void {
    for (const waiter of [...this.readyWaiters]) {
      this.readyWaiters.delete(waiter);
      if (waiter.timer !== undefined) clearTimeout(waiter.timer);
      waiter.reject(error);
    }
  }

  /** Resolves when the client is ready; `timeoutMs` undefined waits as long as it is trying. */
  private whenReady(timeoutMs: number | undefined): Promise<void> {
    // Ready with no link: the connection just closed, and 'disconnect' listeners run before the
    // state moves on; what they start waits for the next connection (it spun here, found in review).
    if (this.status === 'ready' && this.link !== undefined) return Promise.resolve();
    if (this.status === 'idle' || this.status === 'failed') {
      return Promise.reject(
        new EventsNetworkError('NOT_CONNECTED', 'the client is not connected: call connect() first', {
          cause: this.lastError,
        }),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter: ReadyWaiter = { resolve, reject, timer: undefined };
      if (timeoutMs !== undefined) {
        waiter.timer = setTimeout(() => {
          this.readyWaiters.delete(waiter);
          reject(
            new EventsNetworkError('COMMAND_TIMEOUT', `the broker was not reachable within ${timeoutMs} ms`, {
              cause: this.lastError,
            }),
          );
        }, timeoutMs);
      }
      this.readyWaiters.add(waiter);
    });
  }

  /** A command on the current connection, waiting (bounded) for one while reconnecting. */
  private async command(args: string[]): Promise<RespValue> {
    await this.whenReady(this.commandTimeout);
    const link = this.link;
    if (link === undefined || this.status !== 'ready') {
      throw new EventsNetworkError('NOT_CONNECTED', `${args[0]}: the client is not connected`);
    }
    return link.command(args);
  }

  /**
   * Makes a runtime subscription effective: now if ready, on the next connection otherwise (the
   * restore includes it). A refusal drops it and rejects; a lost connection leaves it to the
   * restore of the next one.
   */
  private async ensure(
    sentOn: (link: Link) => boolean,
    stillWanted: () => boolean,
    send: (link: Link) => Promise<void>,
    forget: () => void,
    name: string,
  ): Promise<void> {
    for (;;) {
      if (this.status === 'idle' || this.status === 'failed') return; // applied by the next connect()
      if (this.status !== 'ready' || this.link === undefined) await this.whenReady(undefined);
      if (!stillWanted()) {
        const reason = this.dropped.get(name);
        if (reason !== undefined) throw reason;
        return; // unsubscribed meanwhile
      }
      const link = this.link;
      if (link === undefined || this.status !== 'ready') continue;
      if (sentOn(link)) return;
      try {
        await send(link);
        return;
      } catch (error) {
        if (error instanceof EventsNetworkError && !link.alive && stillWanted()) continue;
        if (stillWanted()) forget();
        throw error;
      }
    }
  }

  // ── Restoring subscriptions ──────────────────────────────────────────────────────────────

  /**
   * Subscribes every channel (RESUME from its cursor) and pattern on a fresh connection.
   * `allConfirmed` runs synchronously when the last confirmation arrives, before the frames
   * that follow it: the client is ready (and says `connect`) before it hands out replayed
   * events, as an application written for the ComputeSDK client expects.
   */
  private async restore(link: Link, allConfirmed: () => void): Promise<void> {
    const reconnect = this.everReady;
    this.holdDeliveries();
    let outstanding = this.channels.size + (this.patterns.size > 0 ? 1 : 0);
    const confirmed = (): void => {
      outstanding -= 1;
      if (outstanding === 0) allConfirmed();
    };
    const work: Promise<void>[] = [];
    link.cork();
    try {
      if (this.patterns.size > 0) work.push(this.subscribePatterns(link, [...this.patterns], reconnect, confirmed));
      for (const subscription of this.channels.values()) {
        work.push(
          this.subscribeChannel(link, subscription, confirmed).catch((error: unknown) => {
            // After a reconnect, a channel the token may no longer reach is dropped and reported;
            // the others carry on. Anything else fails the attempt (and is retried).
            if (reconnect && error instanceof EventsAuthError && error.code === 'NO_PERMISSION') {
              this.channels.delete(subscription.name);
              this.dropped.set(subscription.name, error);
              this.emitError(error);
              confirmed();
              return;
            }
            throw error;
          }),
        );
      }
    } finally {
      link.uncork();
    }
    if (outstanding === 0) allConfirmed();
    await Promise.all(work);
  }

  /**
   * RESUME from the channel's cursor. A channel that has none yet ("from now on") first asks
   * for the newest retained id (HISTORY ... NEWEST LIMIT 1) and resumes after it, so that the
   * position is known even if the connection drops before the first event: "now" becomes an
   * id, and every later reconnect resumes exactly. With nothing retained the position is the
   * zero id: everything the sandbox publishes from then on is new.
   */
  private async subscribeChannel(link: Link, subscription: ChannelSubscription, confirmed?: () => void): Promise<void> {
    const { name } = subscription;
    link.channels.add(name);
    let from = this.cursors.get(name);
    let fromEmpty = false;
    if (from === undefined && subscription.start === 'now') {
      const reply = await link.command(['HISTORY', name, 'NEWEST', 'LIMIT', '1']);
      if (!Array.isArray(reply)) throw new EventsPubSubError('PROTOCOL_ERROR', 'HISTORY: expected an array reply');
      const newest = typeof reply[0] === 'string' ? parseEvent(reply[0]) : undefined;
      if (this.channels.get(name) !== subscription) {
        confirmed?.();
        return;
      }
      from = this.cursors.get(name) ?? (newest === undefined ? ZERO_ID : parseEventId(newest.id)!);
      fromEmpty = newest === undefined;
      this.cursors.set(name, from);
    } else if (from === undefined) {
      from = subscription.start as EventId;
      this.cursors.set(name, from); // nothing at or before the start is delivered
    }
    const requested = from;
    await link.confirm(['RESUME', name, formatEventId(requested)], 'resume', 1, {
      onConfirmation: (push) => {
        this.onResumeConfirmation(push, requested, fromEmpty);
        confirmed?.();
      },
      onLateError: (error) =>
        link.destroy(
          new EventsPubSubError('REPLAY_FAILED', `resume of ${name} failed during the replay: ${error.message}`, {
            cause: error,
          }),
        ),
    });
  }

  private async subscribePatterns(
    link: Link,
    patterns: string[],
    reconnect: boolean,
    confirmed?: () => void,
  ): Promise<void> {
    for (const pattern of patterns) link.patterns.add(pattern);
    let confirmations = 0;
    try {
      await link.confirm(['PSUBSCRIBE', ...patterns], 'psubscribe', patterns.length, {
        onConfirmation: () => {
          confirmations += 1;
          if (confirmations < patterns.length) return;
          // Patterns are live only: what matched while the client was away is not replayed.
          if (reconnect)
            for (const pattern of patterns)
              this.reportGap({ reason: 'pattern', pattern, earliestId: null, lastId: null });
          confirmed?.();
        },
      });
    } catch (error) {
      if (!(error instanceof EventsNetworkError)) for (const pattern of patterns) link.patterns.delete(pattern);
      throw error;
    }
  }

  /** `resume <channel> <count> <status> <earliest|null> <last|null>` (src/commands/history-commands.ts). */
  private onResumeConfirmation(push: RespValue[], requested: EventId, fromEmpty: boolean): void {
    const [, channel, , status, earliest, last] = push;
    if (typeof channel !== 'string' || status === 'complete') return;
    const earliestId = typeof earliest === 'string' ? earliest : null;
    const lastId = typeof last === 'string' ? last : null;
    if (status === 'future') {
      // The broker's stream is behind the client's cursor: its ids will restart below it, and
      // dropping them as duplicates would lose them. Start over from the broker's newest id.
      this.cursors.set(channel, (lastId === null ? undefined : parseEventId(lastId)) ?? ZERO_ID);
    }
    // Subscribing "from now" to a sandbox with nothing retained resumes from the zero id; a
    // `trimmed` answer then only says that older events were pruned, before this client came.
    if (status === 'trimmed' && fromEmpty) return;
    const reason: GapReason = status === 'trimmed' || status === 'future' ? status : 'unknown';
    this.reportGap({ reason, channel, requestedId: formatEventId(requested), earliestId, lastId });
  }

  private reportGap(gap: GapInfo): void {
    this.counters.gaps += 1;
    this.safeEmit('gap', gap);
  }

  // ── Messages ─────────────────────────────────────────────────────────────────────────────

  private onPush(link: Link, push: RespValue[]): void {
    if (link !== this.link) return;
    const kind = push[0];
    if (kind === 'message' && push.length === 3) this.onMessage(push[1], push[2], undefined);
    else if (kind === 'pmessage' && push.length === 4) this.onMessage(push[2], push[3], push[1]);
    // Other pushes (confirmations nobody waits for, unsubscribe notices) change nothing here.
  }

  private onMessage(
    channel: RespValue | undefined,
    payload: RespValue | undefined,
    pattern: RespValue | undefined,
  ): void {
    if (typeof channel !== 'string' || typeof payload !== 'string') return;
    if (pattern === undefined) {
      if (!this.channels.has(channel)) return; // unsubscribed, frames still in flight
    } else {
      if (typeof pattern !== 'string' || !this.patterns.has(pattern)) return;
      // A sandbox subscribed by id gets its events from that (resumable) subscription; the
      // pattern's copy would arrive outside the replay order.
      if (this.channels.has(channel)) return;
    }
    const event = parseEvent(payload);
    if (event === undefined) {
      this.emitError(new EventsPubSubError('INVALID_ARGUMENT', `a message on ${channel} is not an event`));
      return;
    }
    const id = parseEventId(event.id)!;
    const cursor = this.cursors.get(channel);
    if (cursor !== undefined && compareEventIds(id, cursor) <= 0) {
      // Already delivered (the two subscriptions of one sandbox, or a replay overlapping what
      // arrived live): at most once, in order.
      this.counters.duplicatesDropped += 1;
      return;
    }
    this.cursors.set(channel, id);
    this.counters.events += 1;
    const meta: EventMeta = pattern === undefined ? { channel } : { channel, pattern };
    if (this.held !== undefined) this.held.push({ event, meta });
    else this.deliver(event, meta);
  }

  private deliver(event: SandboxEvent, meta: EventMeta): void {
    for (const queue of this.queues) queue.push(event);
    this.safeEmit('event', event, meta);
  }

  /**
   * Events that arrive while a connection restores its subscriptions (the replays of the first
   * sandboxes come before the last confirmation) are handed out on the turn of the event loop
   * after it became ready, in order, so that code which starts a `for await` loop right after
   * `await connect()` sees them too. Held from the start of the restore (`holdDeliveries`);
   * released once ready (`releaseHeld`). If the client is not ready on that turn (disconnect()
   * came first), they stay held for the next connection: their ids are already the resume
   * position, so dropping them would lose them (both found in review).
   */
  private holdDeliveries(): void {
    this.held ??= [];
  }

  private releaseHeld(): void {
    const held = this.held;
    if (held === undefined) return;
    setImmediate(() => {
      if (this.held !== held || this.status !== 'ready') return;
      this.held = undefined;
      for (const { event, meta } of held) this.deliver(event, meta);
    });
  }

  private onUnsolicitedError(link: Link, error: EventsError): void {
    if (link !== this.link) return;
    this.emitError(error);
  }

  // ── Heartbeats ───────────────────────────────────────────────────────────────────────────

  /**
   * Dead-peer detection (nats.js heartbeats.ts, by bytes rather than PONG count): after
   * `heartbeatInterval` ms without a byte from the broker, send PING; if still nothing has
   * arrived `heartbeatTimeout` ms later, the connection is dead or half-open (no FIN will ever
   * come), so it is torn down and replaced. Any byte counts: a PONG queued behind a long
   * replay is late, but the replay itself proves the peer alive.
   */
  private startHeartbeat(link: Link): void {
    if (this.heartbeatInterval <= 0) return;
    let lastSeen = link.bytesIn;
    let quietSince = Date.now();
    this.heartbeatTimer = setInterval(
      () => {
        if (link.closed || this.heartbeatDeadline !== undefined) return;
        if (link.bytesIn !== lastSeen || this.readingPaused) {
          lastSeen = link.bytesIn;
          quietSince = Date.now();
          return;
        }
        if (Date.now() - quietSince < this.heartbeatInterval) return;
        const mark = link.bytesIn;
        link.command(['PING']).catch(() => {});
        const check = (): void => {
          this.heartbeatDeadline = undefined;
          if (link.closed) return;
          if (link.bytesIn !== mark || this.readingPaused) {
            lastSeen = link.bytesIn;
            quietSince = Date.now();
            return;
          }
          link.destroy(
            new EventsNetworkError(
              'HEARTBEAT_TIMEOUT',
              `no reply from the broker within ${this.heartbeatTimeout} ms of a heartbeat PING`,
            ),
          );
        };
        this.heartbeatDeadline = setTimeout(check, this.heartbeatTimeout);
        this.heartbeatDeadline.unref();
      },
      Math.max(1, Math.min(this.heartbeatInterval, this.heartbeatTimeout) / 2),
    );
    this.heartbeatTimer.unref();
  }

  private stopLinkTimers(): void {
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    if (this.heartbeatDeadline !== undefined) clearTimeout(this.heartbeatDeadline);
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    this.heartbeatTimer = undefined;
    this.heartbeatDeadline = undefined;
    this.refreshTimer = undefined;
  }

  // ── Token refresh ────────────────────────────────────────────────────────────────────────

  /**
   * With a token function, fetches a fresh token shortly before the current one's `exp` and
   * sends it with AUTH on the open connection (RESP3 allows AUTH while subscribed), so the
   * broker never closes the connection for expiry. A plain string token cannot be refreshed:
   * the broker closes the connection at `exp`, and the reconnect fails with AUTH_FAILED.
   */
  private scheduleRefresh(link: Link): void {
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (typeof this.config.accessToken !== 'function') return;
    const timing = readTokenTiming(link.token);
    if (timing === undefined) return;
    this.armRefresh(link, timing, refreshDelay(timing, Date.now()));
  }

  private armRefresh(link: Link, timing: TokenTiming, delay: number): void {
    this.refreshTimer = setTimeout(
      () => {
        this.refreshTimer = undefined;
        void this.refreshToken(link, timing);
      },
      Math.min(delay, MAX_TIMER),
    );
    this.refreshTimer.unref();
  }

  private async refreshToken(link: Link, timing: TokenTiming): Promise<void> {
    const source = this.config.accessToken;
    if (typeof source !== 'function') return;
    const retry = (): void => {
      // Try again every second while the current token still holds; past exp the broker
      // closes the connection and the reconnect asks for a token anyway.
      if (link === this.link && !link.closed && Date.now() + 1_000 < timing.expiresAt)
        this.armRefresh(link, timing, 1_000);
    };
    let token: string;
    try {
      token = await resolveToken(source);
    } catch (error) {
      if (link === this.link) this.emitError(toEventsError(error));
      retry();
      return;
    }
    if (link !== this.link || link.closed) return;
    if (token === link.token) {
      retry();
      return;
    }
    try {
      await link.command(['AUTH', 'default', token]);
    } catch (error) {
      if (link !== this.link || link.closed) return;
      this.emitError(toEventsError(error));
      retry();
      return;
    }
    if (link !== this.link || link.closed) return;
    link.token = token;
    this.counters.tokenRefreshes += 1;
    this.scheduleRefresh(link);
    this.safeEmit('tokenRefresh', readTokenTiming(token)?.expiresAt);
  }

  // ── Back-pressure from `events()` ────────────────────────────────────────────────────────

  private onPressure(queue: EventQueue, over: boolean): void {
    if (over) this.pressured.add(queue);
    else this.pressured.delete(queue);
    const paused = this.pressured.size > 0;
    if (paused === this.readingPaused) return;
    this.readingPaused = paused;
    const link = this.link;
    if (link === undefined || !link.ready) return;
    if (paused) link.pauseReading();
    else link.resumeReading();
  }

  // ── Emitting ─────────────────────────────────────────────────────────────────────────────

  /**
   * Listeners run inside the socket's data handler. One that throws must not leave the reply
   * reader half-way through a chunk: the exception is rethrown on its own tick, where it
   * surfaces as an uncaught exception exactly as a throwing EventEmitter listener would.
   */
  private safeEmit<K extends keyof PubSubClientEvents>(name: K, ...args: PubSubClientEvents[K]): void {
    try {
      (this.emit as (event: K, ...rest: PubSubClientEvents[K]) => boolean)(name, ...args);
    } catch (error) {
      process.nextTick(() => {
        throw error;
      });
    }
  }

  /**
   * `error` is emitted only when someone listens: a reconnecting client meets transient errors
   * as a matter of course, and an unhandled `error` event would crash the application (Node's
   * rule). Failures that matter also reject `connect()` and end `events()` loops.
   */
  private emitError(error: EventsError): void {
    if (this.listenerCount('error') > 0) this.safeEmit('error', error);
  }
}

// ── Helpers ────────────────────────────────────────────────────────────────────────────────

function validPort(port: number | undefined): number | undefined {
  return typeof port === 'number' && Number.isInteger(port) && port > 0 && port <= 65535 ? port : undefined;
}

function positive(value: number | undefined): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : undefined;
}

function checkName(name: string, what: string): string {
  if (typeof name !== 'string' || name.length === 0 || /[\r\n]/.test(name)) {
    throw new EventsPubSubError('INVALID_ARGUMENT', `${what} must be a non-empty string without CR or LF`);
  }
  return name;
}

function parseStart(from: string | undefined): Start {
  if (from === undefined || from === '$') return 'now';
  if (from === '0') return ZERO_ID;
  const id = parseEventId(from);
  if (id === undefined) {
    throw new EventsPubSubError(
      'INVALID_ARGUMENT',
      `from must be '$', '0' or an event id <ms>-<seq>, got '${from.slice(0, 64)}'`,
    );
  }
  return id;
}

/** An event as the broker sends it (contract, "The event"); undefined when it is not one. */
export function parseEvent(payload: string): SandboxEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (!isPlainObject(value)) return undefined;
  const { id, sandboxId, workspaceId, type, data, timestamp } = value;
  if (
    typeof id !== 'string' ||
    parseEventId(id) === undefined ||
    typeof sandboxId !== 'string' ||
    typeof workspaceId !== 'number' ||
    typeof type !== 'string' ||
    !isPlainObject(data) ||
    typeof timestamp !== 'number'
  ) {
    return undefined;
  }
  return { id, sandboxId, workspaceId, type, data, timestamp };
}

function toEventsError(error: unknown): EventsError {
  if (error instanceof EventsError) return error;
  return new EventsPubSubError('PROTOCOL_ERROR', describe(error), { cause: error });
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** UNSUBSCRIBE on a connection that dropped meanwhile: nothing left to undo. */
function ignoreLinkLoss(error: unknown): void {
  if (error instanceof EventsNetworkError) return;
  throw error;
}
