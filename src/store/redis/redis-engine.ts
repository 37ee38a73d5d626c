/**
 * The Redis engine (issue 8): several broker nodes share one Redis and behave as one broker.
 *
 * - Events live in one stream per workspace and sandbox; the stream id is the event id.
 *   `append` is one Lua script (XADD, exact retention, SPUBLISH on the sandbox's channel, PUBLISH
 *   on the workspace's), so publish order is stream order across all nodes.
 * - A node subscribes in Redis only to what its own clients watch (the broker's interest
 *   hooks), on a second connection; events from that subscription go to the listener (local
 *   fan-out), in the order Redis pushed them, which is id order per sandbox.
 * - The node that appends an event its own clients watch delivers it from its subscription too,
 *   never from the append path, so its subscribers get it once and in order with the events of
 *   other nodes. `append` waits for that delivery, or for proof that it will not come (see
 *   `fence`), before it resolves.
 * - Loss of Redis: commands fail at once (no offline queue) with STORE_UNAVAILABLE, ioredis
 *   reconnects with backoff, and the subscriptions are made again on the new connection.
 */
import { randomBytes } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import {
  formatEventId,
  parseEventId,
  type EventId,
  type NewEvent,
  type StoredEvent,
  eventJson,
} from '../../event/event.js';
import { SandboxEventsError } from '../../errors.js';
import {
  buildReplayResult,
  checkLimit,
  checkRetention,
  historyFloor,
  matchesHistoryFilters,
  notifyListener,
  sandboxKey,
  storeClosedError,
} from '../semantics.js';
import type {
  DurableEventListener,
  EventStore,
  HistoryQuery,
  ReplayResult,
  RetentionPolicy,
  SandboxRef,
} from '../types.js';
import {
  ALL_WORKSPACES_PATTERN,
  anchorChannels,
  JSON_HEAD,
  decodeMessage,
  eventFromEntry,
  messageHeader,
  metaKey,
  sandboxChannel,
  streamKey,
  workspaceChannel,
} from './keys.js';
import { APPEND_SCRIPT, REPLAY_SCRIPT } from './scripts.js';

export interface RedisEngineOptions {
  /** `redis://host:port[/db]` (ioredis URL syntax, `rediss://` for TLS). */
  url: string;
  retention: RetentionPolicy;
  /**
   * Publish every event on its workspace's channel too, so that nodes holding pattern
   * subscriptions get it (default true). One extra PUBLISH per event, about free on a single
   * Redis when nobody listens; in Redis Cluster a plain PUBLISH is broadcast to every shard over
   * the cluster bus. Off: a node's pattern subscribers get only the events of sandboxes the node
   * also watches by channel; for deployments without patterns. Not a CLI flag yet.
   */
  workspaceChannels?: boolean;
  /** Extra ioredis options (tests: retry timing). */
  redis?: RedisOptions;
  /** Called with connection state changes and errors, for logs. */
  onStatus?: (status: string, error?: unknown) => void;
}

/** A Redis subscription this node wants: a sandbox channel, a workspace channel, or the all-workspaces pattern. */
interface Route {
  kind: 'sandbox' | 'workspace' | 'all';
  name: string;
  /** Whether local clients want it. */
  want: boolean;
  /** Whether Redis confirmed it on the current subscriber connection. */
  have: boolean;
  /** (Un)subscribe commands in flight on the subscriber connection. */
  pending: number;
  /** What the newest of them asks for (meaningful while `pending > 0`). */
  requested: boolean;
  /** Waiting for `want && have` (a resume's replay must not start before). */
  settled: { resolve: () => void; reject: (error: Error) => void }[];
}

interface AppendWaiter {
  /** Fence sequence number at registration. */
  seq: number;
  event: StoredEvent;
  input: NewEvent;
  resolve: (event: StoredEvent) => void;
}

/** Last id delivered per sandbox: one event may arrive on two routes (sandbox and workspace channel). */
interface Delivered {
  id: EventId;
  at: number;
}

const ID_MAX_SEQ = Number.MAX_SAFE_INTEGER;
/** If a watched event's own message has not arrived after this long, a fence settles it. */
const WAITER_FENCE_MS = 500;
const DELIVERED_SWEEP_MS = 30_000;
/** A stream key outlives its last append by the age limit plus this. */
const KEY_TTL_SLACK_MS = 60_000;
const HISTORY_PAGE = 200;

function unavailable(error: unknown): SandboxEventsError {
  if (error instanceof SandboxEventsError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new SandboxEventsError('STORE_UNAVAILABLE', `the Redis engine is unavailable: ${detail}`, { cause: error });
}

interface RedisWithScripts extends Redis {
  seAppend(stream: string, meta: string, ...args: string[]): Promise<string>;
  seReplay(stream: string, meta: string, ...args: string[]): Promise<unknown[]>;
}

export class RedisEngine implements EventStore {
  readonly kind = 'redis';
  private retention: RetentionPolicy;
  private readonly commands: RedisWithScripts;
  private readonly subscriber: Redis;
  private readonly workspaceChannels: boolean;
  private readonly onStatus: (status: string, error?: unknown) => void;
  private listener: DurableEventListener | undefined;
  /** Redis 7 has sharded pub/sub; decided on each connect (INFO server). */
  private sharded = true;
  private versionKnown = false;
  private readonly sandboxRoutes = new Map<string, Route>();
  private readonly workspaceRoutes = new Map<number, Route>();
  private allRoute: Route | undefined;
  /** Bumped on each subscriber (re)connect: replies of an older connection are ignored. */
  private subEpoch = 0;
  private subUp = false;
  private fenceSeq = 0;
  private readonly waiters = new Map<string, AppendWaiter>();
  private fenceTimer: NodeJS.Timeout | undefined;
  private readonly delivered = new Map<string, Delivered>();
  /** Appends of this node waiting for the script's reply, per sandbox. */
  private readonly appending = new Map<string, number>();
  /**
   * Events of a sandbox with appends in flight that arrived by subscription first, in arrival
   * (= id) order, by id text: the id and the subscribers reached. One may be this node's own,
   * whose reply is still on its way; its PUBLISH then reports that count.
   */
  private readonly arrivedFirst = new Map<string, Map<string, { id: EventId; receivers: number }>>();
  private readonly sweepTimer: NodeJS.Timeout;
  private closed = false;
  /** Names this node's anchor channels (see anchorChannels). */
  private readonly nodeId = randomBytes(8).toString('hex');
  readonly stats = { appended: 0, received: 0, duplicatesDropped: 0, fences: 0, resubscribes: 0 };

  constructor(options: RedisEngineOptions) {
    this.retention = checkRetention(options.retention);
    this.workspaceChannels = options.workspaceChannels ?? true;
    this.onStatus = options.onStatus ?? (() => {});
    const common: RedisOptions = {
      // Never queue a command while disconnected: a publish fails at once with a clear error
      // instead of being acknowledged later, or never (issue 8, "Loss of Redis").
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000),
      lazyConnect: false,
      ...options.redis,
    };
    this.commands = new Redis(options.url, {
      ...common,
      connectionName: 'sandbox-events:commands',
    }) as RedisWithScripts;
    this.commands.defineCommand('seAppend', { numberOfKeys: 2, lua: APPEND_SCRIPT });
    this.commands.defineCommand('seReplay', { numberOfKeys: 2, lua: REPLAY_SCRIPT });
    // Subscriptions are made again by the engine itself on each connect, in its own order.
    this.subscriber = new Redis(options.url, {
      ...common,
      autoResubscribe: false,
      connectionName: 'sandbox-events:subscriber',
    });

    this.commands.on('ready', () => {
      this.onStatus('commands ready');
      void this.detectVersion();
    });
    this.commands.on('error', (error) => this.onStatus('commands error', error));
    this.commands.on('close', () => this.onStatus('commands closed'));
    this.subscriber.on('error', (error) => this.onStatus('subscriber error', error));
    this.subscriber.on('ready', () => this.subscriberUp());
    this.subscriber.on('close', () => this.subscriberDown());
    this.subscriber.on('smessage', (_channel: string, message: string) => this.receive(message));
    this.subscriber.on('message', (_channel: string, message: string) => this.receive(message));
    this.subscriber.on('pmessage', (_pattern: string, _channel: string, message: string) => this.receive(message));

    this.sweepTimer = setInterval(() => this.sweepDelivered(), DELIVERED_SWEEP_MS);
    this.sweepTimer.unref();
  }

  /** Connected to Redis on both connections, and every wanted subscription is in place. */
  isReady(): boolean {
    if (this.closed || this.commands.status !== 'ready' || !this.subUp || !this.versionKnown) return false;
    for (const route of this.routes()) if (route.want && !route.have) return false;
    return true;
  }

  /** Resolves once `isReady()` (polling), rejects after `timeoutMs`. */
  async waitReady(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.isReady()) {
      if (Date.now() > deadline) throw unavailable(new Error(`not connected within ${timeoutMs} ms`));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Redis trims a sandbox's stream when it is next written (its append script gets the limits). */
  setRetention(retention: RetentionPolicy): void {
    this.retention = checkRetention(retention);
  }

  setListener(listener: DurableEventListener): void {
    this.listener = listener;
  }

  // ---------------------------------------------------------------- append

  async append(input: NewEvent): Promise<StoredEvent> {
    if (this.closed) throw storeClosedError(this.kind);
    // The JSON line around the id and timestamp, built by the same function as every store's.
    const template = eventJson({ ms: 0, seq: 0 }, input.workspaceId, input.sandboxId, input.type, input.dataJson, 0);
    const middle = template.slice(JSON_HEAD.length + '0-0'.length, template.length - '0}'.length);
    const { maxCount, maxAgeMs } = this.retention;
    const finiteAge = Number.isFinite(maxAgeMs);
    const key = sandboxKey(input);
    this.appending.set(key, (this.appending.get(key) ?? 0) + 1);
    let idText: string;
    try {
      idText = await this.commands.seAppend(
        streamKey(input),
        metaKey(input),
        input.type,
        middle,
        messageHeader(input, input.type),
        Number.isFinite(maxCount) ? String(maxCount) : '0',
        finiteAge ? String(Math.ceil(maxAgeMs)) : '0',
        finiteAge ? String(Math.ceil(maxAgeMs) + KEY_TTL_SLACK_MS) : '0',
        sandboxChannel(input),
        this.sharded ? '1' : '0',
        this.workspaceChannels ? workspaceChannel(input.workspaceId) : '',
      );
    } catch (error) {
      this.appendAnswered(key, undefined);
      throw unavailable(error);
    }
    const arrived = this.appendAnswered(key, idText);
    this.stats.appended += 1;
    const id = parseEventId(idText);
    if (id === undefined) throw unavailable(new Error(`Redis returned an invalid id ${idText}`));
    const event: StoredEvent = {
      id,
      workspaceId: input.workspaceId,
      sandboxId: input.sandboxId,
      type: input.type,
      timestamp: id.ms,
      json: `${JSON_HEAD}${idText}${middle}${id.ms}}`,
    };
    const sandboxRoute = this.sandboxRoutes.get(key);
    const workspaceRoute = this.workspaceRoutes.get(input.workspaceId);
    if (sandboxRoute === undefined && workspaceRoute === undefined && this.allRoute === undefined) {
      // Nobody here watches this sandbox: nothing arrives by subscription; the listener still
      // sees the event (it fans out to no one, and counts).
      notifyListener(this.listener, event, input);
      return event;
    }
    // Someone here watches it: the event comes back through the subscription, in order with
    // other nodes' events, and is delivered from there.
    const active = (route: Route | undefined): boolean =>
      route !== undefined && route.have && route.want && route.pending === 0;
    const fenceNow = !(active(sandboxRoute) || active(workspaceRoute) || active(this.allRoute));
    return new Promise<StoredEvent>((resolve) => {
      const waiterKey = `${key}\n${idText}`;
      const done = this.delivered.get(key);
      if (done !== undefined && compareIds(done.id, id) >= 0) {
        // Already arrived by subscription before the script's reply did, and was delivered
        // then: the listener only learns how widely, for PUBLISH's reply.
        if (arrived !== undefined) notifyListener(this.listener, event, input, arrived);
        resolve(event);
        return;
      }
      this.waiters.set(waiterKey, { seq: this.fenceSeq, event, input, resolve });
      if (fenceNow) this.fence();
      else this.armFenceTimer();
    });
  }

  /**
   * An append's reply came (`idText`, or undefined if it failed): returns the subscriber count
   * if its event arrived by subscription first. Replies of one sandbox come in id order, so the
   * entries up to this id that were not this append's are other nodes' events: dropped.
   */
  private appendAnswered(key: string, idText: string | undefined): number | undefined {
    const inFlight = (this.appending.get(key) ?? 1) - 1;
    const arrived = this.arrivedFirst.get(key);
    let mine: number | undefined;
    if (arrived !== undefined && idText !== undefined) {
      mine = arrived.get(idText)?.receivers;
      const id = parseEventId(idText);
      for (const [text, other] of arrived) {
        if (id === undefined || compareIds(other.id, id) > 0) break;
        arrived.delete(text);
      }
    }
    if (inFlight > 0) {
      this.appending.set(key, inFlight);
    } else {
      this.appending.delete(key);
      this.arrivedFirst.delete(key);
    }
    return mine;
  }

  /**
   * Settles append waiters whose message will not come. A command sent on the subscriber
   * connection after an append's reply arrived is answered after every message Redis pushed for
   * that append, and ioredis emits messages synchronously while it resolves replies through
   * promises, so when the reply's continuation runs, an undelivered waiter's message was never
   * pushed (the subscription began after the event, or ended before it).
   */
  private fence(): void {
    if (this.fenceTimer !== undefined) {
      clearTimeout(this.fenceTimer);
      this.fenceTimer = undefined;
    }
    const seq = ++this.fenceSeq;
    this.stats.fences += 1;
    if (!this.subUp) {
      this.settleWaiters(seq);
      return;
    }
    this.subscriber.ping().then(
      () => this.settleWaiters(seq),
      () => this.settleWaiters(seq),
    );
  }

  private armFenceTimer(): void {
    if (this.fenceTimer !== undefined) return;
    this.fenceTimer = setTimeout(() => {
      this.fenceTimer = undefined;
      if (this.waiters.size > 0) this.fence();
    }, WAITER_FENCE_MS);
    this.fenceTimer.unref();
  }

  /** Resolves waiters registered before fence `seq` was sent: durable, not delivered here. */
  private settleWaiters(seq: number): void {
    for (const [key, waiter] of this.waiters) {
      if (waiter.seq >= seq) continue;
      this.waiters.delete(key);
      waiter.resolve(waiter.event);
    }
    if (this.waiters.size > 0) this.armFenceTimer();
  }

  // ------------------------------------------------------------- receiving

  private receive(message: string): void {
    const event = decodeMessage(message);
    if (event === undefined) {
      this.onStatus('ignored a message that is not an event');
      return;
    }
    this.stats.received += 1;
    const key = sandboxKey(event);
    const last = this.delivered.get(key);
    // The same event arrives twice when this node watches both its sandbox and a pattern of
    // its workspace; both copies come on this one connection in stream order, so the id alone
    // tells the second copy apart.
    if (last !== undefined && compareIds(event.id, last.id) <= 0) {
      this.stats.duplicatesDropped += 1;
      return;
    }
    this.delivered.set(key, { id: event.id, at: Date.now() });
    const idText = formatEventId(event.id);
    const waiterKey = `${key}\n${idText}`;
    const waiter = this.waiters.get(waiterKey);
    if (waiter !== undefined) {
      this.waiters.delete(waiterKey);
      // The publishing node hands the same object to the listener and to its append's caller.
      notifyListener(this.listener, waiter.event, waiter.input);
      waiter.resolve(waiter.event);
      return;
    }
    const receivers = notifyListener(this.listener, event, undefined);
    if (this.appending.has(key)) {
      let arrived = this.arrivedFirst.get(key);
      if (arrived === undefined) this.arrivedFirst.set(key, (arrived = new Map()));
      arrived.set(idText, { id: event.id, receivers: receivers ?? 0 });
    }
  }

  private sweepDelivered(): void {
    const old = Date.now() - DELIVERED_SWEEP_MS;
    for (const [key, entry] of this.delivered) {
      if (entry.at < old && !this.sandboxRoutes.has(key)) this.delivered.delete(key);
    }
  }

  // --------------------------------------------------------- interest hooks

  setInterest(ref: SandboxRef, interested: boolean): void {
    if (this.closed) return;
    const key = sandboxKey(ref);
    let route = this.sandboxRoutes.get(key);
    if (route === undefined) {
      if (!interested) return;
      route = newRoute('sandbox', sandboxChannel(ref));
      this.sandboxRoutes.set(key, route);
    }
    route.want = interested;
    this.sync(route);
  }

  setPatternInterest(scope: number | 'all', interested: boolean): void {
    // Without workspace channels nothing is published where a pattern route would listen; such
    // a route would only make every append in its scope wait for the fence timer.
    if (this.closed || !this.workspaceChannels) return;
    let route = scope === 'all' ? this.allRoute : this.workspaceRoutes.get(scope);
    if (route === undefined) {
      if (!interested) return;
      route =
        scope === 'all' ? newRoute('all', ALL_WORKSPACES_PATTERN) : newRoute('workspace', workspaceChannel(scope));
      if (scope === 'all') this.allRoute = route;
      else this.workspaceRoutes.set(scope, route);
    }
    route.want = interested;
    this.sync(route);
  }

  private *routes(): Iterable<Route> {
    yield* this.sandboxRoutes.values();
    yield* this.workspaceRoutes.values();
    if (this.allRoute !== undefined) yield this.allRoute;
  }

  /**
   * Brings one route's Redis subscription to what is wanted. A change of mind while a command
   * is in flight is sent at once behind it, not after its reply: Redis runs one connection's
   * commands in order, and a SUBSCRIBE confirmed to a client while its SSUBSCRIBE waited for
   * an UNSUBSCRIBE's reply missed events published in that round trip (found in review).
   * Replies come in order too, so the last one leaves `have` as the newest command asked.
   */
  private sync(route: Route): void {
    const current = route.pending > 0 ? route.requested : route.have;
    if (route.want === current) {
      if (route.pending > 0) return;
      if (route.want) settle(route);
      else this.forget(route);
      return;
    }
    if (!this.subUp || !this.versionKnown) return; // made on (re)connect
    route.pending += 1;
    const subscribing = route.want;
    route.requested = subscribing;
    const epoch = this.subEpoch;
    const seq = ++this.fenceSeq; // every reply on this connection is a fence too
    const command = this.subscriptionCommand(route, subscribing);
    command.then(
      () => {
        if (epoch !== this.subEpoch) return;
        route.pending -= 1;
        route.have = subscribing;
        this.settleWaiters(seq);
        if (route.pending === 0) this.sync(route);
      },
      (error: unknown) => {
        if (epoch !== this.subEpoch) return;
        route.pending -= 1;
        this.onStatus('subscription failed', error);
        if (route.want) fail(route, unavailable(error));
        // The route stays wanted; the next connect makes it.
      },
    );
  }

  private subscriptionCommand(route: Route, subscribing: boolean): Promise<unknown> {
    const sub = this.subscriber;
    switch (route.kind) {
      case 'sandbox':
        if (this.sharded) return subscribing ? sub.ssubscribe(route.name) : sub.sunsubscribe(route.name);
        return subscribing ? sub.subscribe(route.name) : sub.unsubscribe(route.name);
      case 'workspace':
        return subscribing ? sub.subscribe(route.name) : sub.unsubscribe(route.name);
      case 'all':
        return subscribing ? sub.psubscribe(route.name) : sub.punsubscribe(route.name);
    }
  }

  private forget(route: Route): void {
    if (route.kind === 'sandbox') {
      for (const [key, value] of this.sandboxRoutes) {
        if (value === route) {
          this.sandboxRoutes.delete(key);
          break;
        }
      }
    } else if (route.kind === 'workspace') {
      for (const [key, value] of this.workspaceRoutes) {
        if (value === route) {
          this.workspaceRoutes.delete(key);
          break;
        }
      }
    } else if (this.allRoute === route) {
      this.allRoute = undefined;
    }
  }

  private subscriberUp(): void {
    this.subUp = true;
    this.subEpoch += 1;
    this.onStatus('subscriber ready');
    if (this.versionKnown) this.resubscribeAll();
  }

  private subscriberDown(): void {
    if (!this.subUp) return;
    this.subUp = false;
    this.subEpoch += 1;
    this.onStatus('subscriber closed');
    for (const route of [...this.routes()]) {
      route.have = false;
      route.pending = 0;
      fail(route, unavailable(new Error('lost the connection to Redis')));
      if (!route.want) this.forget(route);
    }
    // Messages in flight are lost with the connection; the appends waiting for theirs are durable.
    this.settleWaiters(++this.fenceSeq);
  }

  private resubscribeAll(): void {
    this.stats.resubscribes += 1;
    // The anchors first, so that they are in place before any route can be dropped again.
    const epoch = this.subEpoch;
    const anchors = anchorChannels(this.nodeId);
    const anchoring: Promise<unknown>[] = [this.subscriber.subscribe(anchors.plain)];
    if (this.sharded) anchoring.push(this.subscriber.ssubscribe(anchors.shard));
    Promise.all(anchoring).catch((error: unknown) => {
      if (epoch === this.subEpoch) this.onStatus('anchor subscription failed', error);
    });
    for (const route of [...this.routes()]) this.sync(route);
  }

  private async detectVersion(): Promise<void> {
    try {
      const info = await this.commands.info('server');
      const major = Number(/redis_version:(\d+)/.exec(info)?.[1] ?? '0');
      const sharded = major >= 7;
      if (this.versionKnown && sharded !== this.sharded) {
        // Another Redis behind the same address: the subscriptions must change kind.
        this.sharded = sharded;
        this.subscriber.disconnect(true);
        return;
      }
      this.sharded = sharded;
      const first = !this.versionKnown;
      this.versionKnown = true;
      if (first && this.subUp) this.resubscribeAll();
    } catch (error) {
      this.onStatus('version check failed', error);
    }
  }

  // ------------------------------------------------------------------ reads

  /**
   * A resume subscribes first and reads second (docs/protocol.md, RESUME); across nodes the
   * subscription must be in place in Redis before the read, or an event appended between the
   * read and the subscription would be in neither.
   */
  private whenSubscribed(ref: SandboxRef): Promise<void> {
    const route = this.sandboxRoutes.get(sandboxKey(ref));
    if (route === undefined || !route.want || (route.have && route.pending === 0)) return Promise.resolve();
    if (!this.subUp) return Promise.reject(unavailable(new Error('not connected to Redis')));
    return new Promise((resolve, reject) => route.settled.push({ resolve, reject }));
  }

  async replayAfter(ref: SandboxRef, afterId: EventId, limit: number): Promise<ReplayResult> {
    if (this.closed) throw storeClosedError(this.kind);
    checkLimit(limit);
    await this.whenSubscribed(ref);
    let reply: unknown[];
    try {
      reply = await this.commands.seReplay(
        streamKey(ref),
        metaKey(ref),
        formatEventId(afterId),
        // One more than asked: the first entry may be `afterId` itself.
        Number.isFinite(limit) ? String(limit + 1) : '0',
        Number.isFinite(this.retention.maxAgeMs) ? String(Math.ceil(this.retention.maxAgeMs)) : '0',
      );
    } catch (error) {
      throw unavailable(error);
    }
    const now = Number(reply[1]);
    // Every id Redis ever issued has a millisecond at most its clock's now.
    const highWater: EventId = { ms: now, seq: ID_MAX_SEQ };
    if (reply[0] === 0) return buildReplayResult([], afterId, { highWater, afterIdRetained: false });
    const [, , lastText, trimmedText, firstText, entries] = reply as [
      number,
      string,
      string,
      string,
      string,
      [string, string[]][],
    ];
    const events: StoredEvent[] = [];
    let afterIdRetained = false;
    for (const entry of entries) {
      const event = eventFromEntry(ref, entry);
      if (event === undefined) continue;
      const vs = compareIds(event.id, afterId);
      if (vs === 0) afterIdRetained = true;
      else if (vs > 0 && events.length < limit) events.push(event);
    }
    return buildReplayResult(events, afterId, {
      lastId: parseEventId(lastText),
      trimmedThrough: trimmedText === '' ? undefined : parseEventId(trimmedText),
      earliestId: firstText === '' ? undefined : parseEventId(firstText),
      highWater,
      afterIdRetained,
    });
  }

  async history(query: HistoryQuery): Promise<StoredEvent[]> {
    if (this.closed) throw storeClosedError(this.kind);
    const limit = checkLimit(query.limit);
    let floor = historyFloor(query);
    // Age retention on read as well (the scripts trim only when a sandbox is written or
    // replayed); judged by this node's clock, which may differ from Redis's by the skew.
    if (Number.isFinite(this.retention.maxAgeMs)) {
      const cutoff = Math.ceil(Date.now() - this.retention.maxAgeMs);
      if (compareIds(floor, { ms: cutoff, seq: 0 }) < 0) floor = { ms: cutoff, seq: 0 };
    }
    const key = streamKey(query);
    const out: StoredEvent[] = [];
    const page = Math.min(Number.isFinite(limit) ? Math.max(limit, 16) : HISTORY_PAGE, HISTORY_PAGE * 5);
    try {
      if (query.newest === true) {
        let upper = '+';
        for (;;) {
          const entries = (await this.commands.xrevrange(key, upper, formatEventId(floor), 'COUNT', page)) as [
            string,
            string[],
          ][];
          for (const entry of entries) {
            const event = eventFromEntry(query, entry);
            if (event !== undefined && matchesHistoryFilters(event, query)) out.push(event);
            if (out.length >= limit) break;
          }
          if (out.length >= limit || entries.length < page) break;
          upper = `(${entries[entries.length - 1]![0]}`;
        }
        out.reverse();
      } else {
        let lower = formatEventId(floor);
        for (;;) {
          const entries = (await this.commands.xrange(key, lower, '+', 'COUNT', page)) as [string, string[]][];
          for (const entry of entries) {
            const event = eventFromEntry(query, entry);
            if (event !== undefined && matchesHistoryFilters(event, query)) out.push(event);
            if (out.length >= limit) break;
          }
          if (out.length >= limit || entries.length < page) break;
          lower = `(${entries[entries.length - 1]![0]}`;
        }
      }
    } catch (error) {
      throw unavailable(error);
    }
    return out;
  }

  // ------------------------------------------------------------------ close

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweepTimer);
    if (this.fenceTimer !== undefined) clearTimeout(this.fenceTimer);
    this.settleWaiters(++this.fenceSeq);
    for (const route of this.routes()) fail(route, storeClosedError(this.kind));
    const quit = async (redis: Redis): Promise<void> => {
      try {
        if (redis.status === 'ready') await redis.quit();
        else redis.disconnect();
      } catch {
        redis.disconnect();
      }
    };
    await Promise.all([quit(this.commands), quit(this.subscriber)]);
  }
}

function newRoute(kind: Route['kind'], name: string): Route {
  return { kind, name, want: false, have: false, pending: 0, requested: false, settled: [] };
}

function settle(route: Route): void {
  const waiting = route.settled;
  route.settled = [];
  for (const waiter of waiting) waiter.resolve();
}

function fail(route: Route, error: Error): void {
  const waiting = route.settled;
  route.settled = [];
  for (const waiter of waiting) waiter.reject(error);
}

function compareIds(a: EventId, b: EventId): number {
  return a.ms !== b.ms ? a.ms - b.ms : a.seq - b.seq;
}
