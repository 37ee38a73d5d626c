import { EventEmitter } from 'node:events';
import { parseEventId, type SandboxEvent } from '../event/event.js';
import { parseEvent } from '../event/parse-event.js';
import { MAX_TIMER_DELAY, reconnectDelay } from './backoff.js';
import { EventsAuthError, type EventsError, EventsNetworkError, EventsPubSubError, toEventsError } from './errors.js';
import {
  checkHelloReply,
  helloCommand,
  historyCommand,
  publishCommand,
  readHistoryReply,
  readMessagePush,
  readPublishReply,
} from './commands.js';
import { Deliveries } from './deliveries.js';
import { Heartbeat } from './heartbeat.js';
import { HostRing } from './host-ring.js';
import { Link } from './link.js';
import { type ClientOptions, resolveClientOptions } from './options.js';
import { ReadyWaiters } from './ready-waiters.js';
import type { RespValue } from './reply-reader.js';
import { Restorer } from './restore.js';
import { Subscriptions } from './subscriptions.js';
import { checkName, checkTypes, parseStart, SubscriptionRegistry } from './subscription-registry.js';
import { resolveToken } from './token.js';
import { freshTokenAfterRefusal, TokenRefresh } from './token-refresh.js';
import {
  CONNECTION_STATE,
  type ClientStatus,
  type ConnectionState,
  type EventsIteratorOptions,
  type GapInfo,
  type HistoryOptions,
  type PubSubClientConfig,
  type PubSubClientEvents,
  type PubSubClientStats,
  type PatternSubscribeOptions,
  type SubscribeOptions,
} from './types.js';

export type * from './types.js';
export { parseEvent } from '../event/parse-event.js';

/**
 * The reconnecting, resuming events client. A drop-in for the ComputeSDK events package's
 * `createPubSubClient` (same config names, methods, events and states: docs/client.md,
 * "Differences from the ComputeSDK client"), speaking the broker's full protocol underneath:
 * RESP3 on one connection, RESUME from the last id seen after every reconnect.
 *
 * The class is the state machine (docs/client.md, "Reconnecting"); its parts live beside it:
 * `HostRing` (the nodes and the failover order), `SubscriptionRegistry` (what is subscribed,
 * each channel's cursor) with `Restorer` (sending it on a fresh connection), `Heartbeat` and
 * `TokenRefresh` (per ready connection), `Deliveries` (listeners, iterators, back-pressure).
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

export function createPubSubClient(config: PubSubClientConfig): PubSubClient {
  return new PubSubClient(config);
}

export class PubSubClient extends EventEmitter<PubSubClientEvents> {
  private readonly hosts: HostRing;
  private readonly config: PubSubClientConfig;
  private readonly options: ClientOptions;

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
  /** The ready connection's dead-peer detection and token refresh (each with its own timers). */
  private heartbeat: Heartbeat | undefined;
  private tokenRefresh: TokenRefresh | undefined;
  /** A token the broker refused: offering it again is pointless. */
  private rejectedToken: string | undefined;
  /** A token fetched after a refusal, for the next attempt (so the function isn't called twice). */
  private nextToken: string | undefined;

  private readonly registry = new SubscriptionRegistry();
  private readonly restorer = new Restorer(this.registry, {
    gap: (gap) => this.reportGap(gap),
    dropped: (error) => this.emitError(error),
  });
  private readonly deliveries = new Deliveries({
    emit: (event, meta) => this.safeEmit('event', event, meta),
    pauseChanged: (paused) => this.onPauseChanged(paused),
  });
  private readonly readyWaiters = new ReadyWaiters();
  private readonly subscriptionCalls = new Subscriptions(this.registry, this.restorer, {
    readyLink: () => (this.status === 'ready' ? this.link : undefined),
    currentLink: () => this.link,
    stopped: () => this.status === 'idle' || this.status === 'failed',
    whenReady: () => this.whenReady(undefined),
  });
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
    this.hosts = new HostRing(config);
    this.options = resolveClientOptions(config);
    if (config.sandboxId !== undefined) {
      this.registry.addChannel(
        checkName(config.sandboxId, 'sandboxId'),
        parseStart(config.from),
        checkTypes(config.types),
      );
    }
  }

  /** The broker host in use (connected, or being tried); with `hosts`, it changes on failover. */
  get host(): string {
    return this.hosts.current.host;
  }

  /** The broker port in use (see `host`). */
  get port(): number {
    return this.hosts.current.port;
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
        this.hosts.restart();
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
    this.readyWaiters.rejectAll(closed);
    this.deliveries.endAll();
    if (link !== undefined) await link.close(closed);
  }

  getState(): ConnectionState {
    return CONNECTION_STATE[this.status];
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
    return this.registry.lastEventId(channel);
  }

  /**
   * The cursor of the last event delivered through `pattern` (or its position from the
   * subscription on): what the next reconnect resumes after, and what an application keeps to
   * continue in a later run with `psubscribe(pattern, { from })`. Undefined before the broker
   * told one (or with the Redis engine, which keeps no order over a workspace).
   */
  lastCursor(pattern: string): string | undefined {
    return this.registry.lastCursor(pattern);
  }

  /** The channels and patterns the client keeps subscribed (and restores after reconnects). */
  subscriptions(): { channels: string[]; patterns: string[] } {
    return this.registry.list();
  }

  /**
   * Subscribes to one more sandbox on the same connection. Before `connect()` it is only
   * remembered. Resolves once the broker confirmed (or at once while idle); rejects on a refusal
   * (NO_PERMISSION, an invalid id), after which it is not kept.
   */
  subscribe(sandboxId: string, options: SubscribeOptions = {}): Promise<void> {
    return this.subscriptionCalls.subscribe(sandboxId, options);
  }

  /**
   * Stops a sandbox subscription. Subscribing to it again later starts from now (its position
   * is forgotten unless a pattern still delivers it).
   */
  unsubscribe(sandboxId: string): Promise<void> {
    return this.subscriptionCalls.unsubscribe(sandboxId);
  }

  /**
   * Subscribes to a glob over the sandbox ids the token may see (workspace and admin tokens),
   * from now (`from: '$'`, the default) or after a cursor kept from an earlier run. After every
   * reconnect it resumes from the cursor of the last event delivered (`lastCursor(pattern)`):
   * every missed event of every matching sandbox, once, each sandbox in order; `gap` when the
   * broker cannot replay exactly (docs/client.md, "Exact resume").
   */
  psubscribe(pattern: string, options: PatternSubscribeOptions = {}): Promise<void> {
    return this.subscriptionCalls.psubscribe(pattern, options);
  }

  punsubscribe(pattern: string): Promise<void> {
    return this.subscriptionCalls.punsubscribe(pattern);
  }

  /**
   * Publishes `{type, data}` to a sandbox; resolves with the number of subscriptions that got
   * it. A publish in flight when the connection drops rejects with CONNECTION_LOST: it may or
   * may not have been stored (not retried, so never stored twice).
   */
  async publish(sandboxId: string, type: string, data: Record<string, unknown> = {}): Promise<number> {
    return readPublishReply(await this.command(publishCommand(sandboxId, type, data)));
  }

  /** Past events of a sandbox, oldest first (the broker's HISTORY command). */
  async history(sandboxId: string, options: HistoryOptions = {}): Promise<SandboxEvent[]> {
    return readHistoryReply(await this.command(historyCommand(sandboxId, options)));
  }

  /**
   * Events as an async iterator: `for await (const event of client.events({ signal }))`. The loop
   * ends when the signal aborts or `disconnect()` is called, and throws the error when the
   * client fails (an auth refusal, the reconnect strategy giving up).
   */
  events(options: EventsIteratorOptions = {}): AsyncIterableIterator<SandboxEvent> {
    return this.deliveries.iterator(options, this.status === 'failed' ? this.lastError : undefined);
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
        `no connection to ${this.host}:${this.port} within ${this.options.connectTimeout} ms`,
      );
      if (this.link !== undefined) this.link.destroy(timeout);
      else {
        this.generation += 1; // the token function is still running: ignore what it returns
        this.afterFailure(timeout, undefined);
      }
    }, this.options.connectTimeout);
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
      checkHelloReply(await link.command(helloCommand(token, this.config.clientName)));
      this.deliveries.hold();
      await this.restorer.restoreAll(link, this.everReady, () => this.readyIfCurrent(link, generation));
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
    this.deliveries.release(() => this.status === 'ready');
    if (this.deliveries.readingPaused) link.pauseReading();
    this.startLinkTimers(link);
    this.readyWaiters.resolveAll();
    this.safeEmit('connect');
  }

  private onLinkClosed(link: Link, cause: EventsError): void {
    if (link !== this.link) return;
    this.link = undefined;
    this.stopLinkTimers();
    if (this.status === 'idle' || this.status === 'failed') return;
    if (link.ready) {
      // A connection that held `stableAfter` resets the backoff (docs/client.md, "Reconnecting").
      if (Date.now() - this.readyAt >= this.options.stableAfter) this.attempt = 0;
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
      if (cause instanceof EventsNetworkError && this.hosts.advanceToUntried()) {
        this.startAttempt();
        return;
      }
      this.fail(cause);
      return;
    }
    if (!this.options.autoReconnect) {
      this.generation += 1;
      this.setStatus('idle');
      this.readyWaiters.rejectAll(cause);
      this.deliveries.endAll();
      return;
    }
    this.scheduleReconnect(cause);
  }

  /**
   * The broker refused the token. Retrying with it would loop forever (docs/client.md,
   * "Tokens": authentication failures do not loop), so the client asks the token function once more: a different token
   * is tried after the usual backoff; the same one (or a plain string token) stops the client.
   */
  private async retryWithFreshToken(cause: EventsAuthError, refused: string): Promise<void> {
    this.rejectedToken = refused;
    const source = this.config.accessToken;
    if (typeof source !== 'function') return this.fail(cause);
    const generation = this.generation;
    const fresh = await freshTokenAfterRefusal(source, refused);
    if (generation !== this.generation) return;
    if (fresh === undefined) return this.fail(cause);
    this.nextToken = fresh;
    this.scheduleReconnect(cause);
  }

  private scheduleReconnect(cause: EventsError): void {
    this.attempt += 1;
    const attempt = this.attempt;
    const delay = reconnectDelay(this.options.strategy, attempt, cause);
    if (delay instanceof EventsPubSubError) {
      this.fail(delay);
      return;
    }
    this.counters.reconnects += 1;
    this.generation += 1;
    // Resuming at the next node is exact: nodes sharing an engine issue the same ids.
    this.hosts.advance();
    this.setStatus('reconnecting');
    this.safeEmit('reconnecting', { attempt, delay, cause, host: this.host, port: this.port });
    if (this.status !== 'reconnecting') return; // a listener called disconnect()
    this.reconnectTimer = setTimeout(
      () => {
        this.reconnectTimer = undefined;
        this.startAttempt();
      },
      Math.min(delay, MAX_TIMER_DELAY),
    );
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
    this.readyWaiters.rejectAll(error);
    this.deliveries.failAll(error);
    this.emitError(error);
  }

  private clearAttemptTimers(): void {
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    this.reconnectTimer = undefined;
    this.connectTimer = undefined;
  }

  /** Resolves when the client is ready; `timeoutMs` undefined waits as long as it is trying. */
  private whenReady(timeoutMs: number | undefined): Promise<void> {
    // Ready with no link: the connection just closed, and 'disconnect' listeners run before the
    // state moves on; what they start waits for the next connection (rather than spinning here).
    if (this.status === 'ready' && this.link !== undefined) return Promise.resolve();
    if (this.status === 'idle' || this.status === 'failed') {
      return Promise.reject(
        new EventsNetworkError('NOT_CONNECTED', 'the client is not connected: call connect() first', {
          cause: this.lastError,
        }),
      );
    }
    return this.readyWaiters.wait(
      timeoutMs,
      () =>
        new EventsNetworkError('COMMAND_TIMEOUT', `the broker was not reachable within ${timeoutMs} ms`, {
          cause: this.lastError,
        }),
    );
  }

  /** A command on the current connection, waiting (bounded) for one while reconnecting. */
  private async command(args: string[]): Promise<RespValue> {
    await this.whenReady(this.options.commandTimeout);
    const link = this.link;
    if (link === undefined || this.status !== 'ready') {
      throw new EventsNetworkError('NOT_CONNECTED', `${args[0]}: the client is not connected`);
    }
    return link.command(args);
  }

  // ── Per-connection timers ────────────────────────────────────────────────────────────────

  /** Heartbeats, and with a token function a refresh before the token's `exp`. */
  private startLinkTimers(link: Link): void {
    this.heartbeat = new Heartbeat(link, this.options.heartbeat, {
      sendPing: () => void link.command(['PING']).catch(() => {}),
      readingPaused: () => this.deliveries.readingPaused,
      onDead: (error) => link.destroy(error),
    });
    this.heartbeat.start();
    const source = this.config.accessToken;
    if (typeof source !== 'function') return;
    this.tokenRefresh = new TokenRefresh(source, link, {
      isCurrent: () => link === this.link,
      refreshed: (expiresAt) => {
        this.counters.tokenRefreshes += 1;
        this.safeEmit('tokenRefresh', expiresAt);
      },
      failed: (error) => this.emitError(error),
    });
    this.tokenRefresh.start();
  }

  private stopLinkTimers(): void {
    this.heartbeat?.stop();
    this.tokenRefresh?.stop();
    this.heartbeat = undefined;
    this.tokenRefresh = undefined;
  }

  // ── Messages ─────────────────────────────────────────────────────────────────────────────

  private reportGap(gap: GapInfo): void {
    this.counters.gaps += 1;
    this.safeEmit('gap', gap);
  }

  private onPush(link: Link, push: RespValue[]): void {
    if (link !== this.link) return;
    // Other pushes (confirmations nobody waits for, unsubscribe notices) change nothing here.
    const message = readMessagePush(push);
    if (message === undefined) return;
    const { channel, pattern, cursor } = message;
    // The pattern's position moves with every frame it gets, routed or not (docs/client.md,
    // "Exact resume"): what the next reconnect resumes after.
    if (pattern !== undefined && cursor !== undefined) this.registry.advancePattern(pattern, cursor);
    if (!this.registry.routes(channel, pattern)) return;
    const event = parseEvent(message.payload);
    if (event === undefined) {
      this.emitError(new EventsPubSubError('INVALID_ARGUMENT', `a message on ${channel} is not an event`));
      return;
    }
    if (!this.registry.admit(channel, parseEventId(event.id)!)) {
      this.counters.duplicatesDropped += 1;
      return;
    }
    this.counters.events += 1;
    this.deliveries.deliver(
      event,
      pattern === undefined
        ? { channel }
        : typeof cursor === 'string'
          ? { channel, pattern, cursor }
          : { channel, pattern },
    );
  }

  private onUnsolicitedError(link: Link, error: EventsError): void {
    if (link !== this.link) return;
    this.emitError(error);
  }

  /** Back-pressure from `events()`: an iterator over its high-water mark stops the socket's reads. */
  private onPauseChanged(paused: boolean): void {
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
