/**
 * The node's subscriber connection to Redis and what it holds (docs/scaling.md, "Fan-out",
 * "Anchor channels", "Changes of mind"): a route per sandbox channel, workspace channel or the
 * all-workspaces pattern that local clients want, made again on every connect.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { sandboxKey } from '../semantics.js';
import type { SandboxRef } from '../types.js';
import { quitConnection, unavailable } from './connection.js';
import { ALL_WORKSPACES_PATTERN, anchorChannels, sandboxChannel, workspaceChannel } from './keys.js';
import type { PublishFence } from './publish-fence.js';

/** A Redis subscription this node wants: a sandbox channel, a workspace channel, or the all-workspaces pattern. */
interface Route {
  kind: 'sandbox' | 'workspace' | 'all';
  name: string;
  /** The sandbox (kind `sandbox`) or the workspace id (kind `workspace`). */
  target?: SandboxRef | number;
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

export interface SubscriptionEvents {
  onStatus: (status: string, error?: unknown) => void;
  /** A message pushed on any route, in the order Redis pushed it. */
  onMessage: (message: string) => void;
  /**
   * The connection came back and its subscriptions were sent again (not on the first connect):
   * messages pushed while it was down are lost. `confirmed` resolves once Redis answered every
   * one of them (a PING behind them), so from then on every message comes.
   */
  onReconnect: (confirmed: Promise<unknown>) => void;
}

export class Subscriptions {
  readonly subscriber: Redis;
  /** Redis 7 has sharded pub/sub; decided on each connect (INFO server, on the commands connection). */
  private sharded = true;
  private versionKnown = false;
  private readonly sandboxRoutes = new Map<string, Route>();
  private readonly workspaceRoutes = new Map<number, Route>();
  private allRoute: Route | undefined;
  /** Bumped on each subscriber (re)connect: replies of an older connection are ignored. */
  private epoch = 0;
  private up = false;
  private connects = 0;
  /** Whether the next connect is followed by a gap-fill even if it is the first (see fillOnConnect). */
  private fillOnNextConnect = false;
  private closed = false;
  /** Names this node's anchor channels (see anchorChannels). */
  private readonly anchors: { shard: string; plain: string };

  constructor(
    url: string,
    common: RedisOptions,
    nodeId: string,
    private readonly fence: PublishFence,
    private readonly events: SubscriptionEvents,
    private readonly stats: { resubscribes: number },
    shardAnchor?: string,
  ) {
    const anchors = anchorChannels(nodeId);
    this.anchors = shardAnchor === undefined ? anchors : { ...anchors, shard: shardAnchor };
    // Subscriptions are made again by the engine itself on each connect, in its own order.
    this.subscriber = new Redis(url, {
      ...common,
      autoResubscribe: false,
      connectionName: 'sandbox-events:subscriber',
    });
    const { onStatus, onMessage } = events;
    this.subscriber.on('error', (error) => onStatus('subscriber error', error));
    this.subscriber.on('ready', () => this.onConnect());
    this.subscriber.on('close', () => this.onDisconnect());
    this.subscriber.on('smessage', (_channel: string, message: string) => onMessage(message));
    this.subscriber.on('message', (_channel: string, message: string) => onMessage(message));
    this.subscriber.on('pmessage', (_pattern: string, _channel: string, message: string) => onMessage(message));
  }

  get isUp(): boolean {
    return this.up;
  }

  /** Whether the sandbox channel is published with SPUBLISH (Redis 7) or PUBLISH. */
  get isSharded(): boolean {
    return this.sharded;
  }

  /** Connected, and the server's version known (so subscriptions are being made). */
  connected(): boolean {
    return this.up && this.versionKnown;
  }

  /** Connected, the server's version known, and every wanted subscription confirmed. */
  allInPlace(): boolean {
    if (!this.connected()) return false;
    for (const route of this.routes()) if (route.want && !route.have) return false;
    return true;
  }

  /** A command on the subscriber connection for the publish fence; undefined while it is down. */
  probe(): Promise<unknown> | undefined {
    return this.up ? this.subscriber.ping() : undefined;
  }

  /** The server's major version, learnt on the commands connection's connect. */
  versionDetected(sharded: boolean): void {
    if (this.versionKnown && sharded !== this.sharded) {
      // Another Redis behind the same address: the subscriptions must change kind.
      this.sharded = sharded;
      this.subscriber.disconnect(true);
      return;
    }
    this.sharded = sharded;
    const first = !this.versionKnown;
    this.versionKnown = true;
    if (first && this.up) this.resubscribeAll();
  }

  /** Whether a sandbox's last-delivered id must be kept (it is still watched). */
  watches(key: string): boolean {
    return this.sandboxRoutes.has(key);
  }

  /**
   * For an append of `ref`: whether any route here could carry its message back (`watched`),
   * and whether one of them is confirmed and settled (`active`).
   */
  carrier(ref: SandboxRef): { watched: boolean; active: boolean } {
    const candidates = [
      this.sandboxRoutes.get(sandboxKey(ref)),
      this.workspaceRoutes.get(ref.workspaceId),
      this.allRoute,
    ];
    let watched = false;
    let active = false;
    for (const route of candidates) {
      if (route === undefined) continue;
      watched = true;
      if (route.have && route.want && route.pending === 0) active = true;
    }
    return { watched, active };
  }

  setInterest(ref: SandboxRef, interested: boolean): void {
    if (this.closed) return;
    const key = sandboxKey(ref);
    let route = this.sandboxRoutes.get(key);
    if (route === undefined) {
      if (!interested) return;
      route = newRoute('sandbox', sandboxChannel(ref));
      route.target = { workspaceId: ref.workspaceId, sandboxId: ref.sandboxId };
      this.sandboxRoutes.set(key, route);
    }
    route.want = interested;
    this.sync(route);
  }

  setPatternInterest(scope: number | 'all', interested: boolean): void {
    if (this.closed) return;
    let route = scope === 'all' ? this.allRoute : this.workspaceRoutes.get(scope);
    if (route === undefined) {
      if (!interested) return;
      route =
        scope === 'all' ? newRoute('all', ALL_WORKSPACES_PATTERN) : newRoute('workspace', workspaceChannel(scope));
      if (scope !== 'all') route.target = scope;
      if (scope === 'all') this.allRoute = route;
      else this.workspaceRoutes.set(scope, route);
    }
    route.want = interested;
    this.sync(route);
  }

  /**
   * A resume subscribes first and reads second (docs/protocol.md, RESUME); across nodes the
   * subscription must be in place in Redis before the read, or an event appended between the
   * read and the subscription would be in neither.
   */
  whenSubscribed(ref: SandboxRef): Promise<void> {
    const route = this.sandboxRoutes.get(sandboxKey(ref));
    if (route === undefined || !route.want || (route.have && route.pending === 0)) return Promise.resolve();
    if (!this.up) return Promise.reject(unavailable(new Error('not connected to Redis')));
    return new Promise((resolve, reject) => route.settled.push({ resolve, reject }));
  }

  /** The sandboxes local clients watch by channel. */
  watchedSandboxes(): SandboxRef[] {
    const out: SandboxRef[] = [];
    for (const route of this.sandboxRoutes.values()) {
      if (route.want && typeof route.target === 'object') out.push(route.target);
    }
    return out;
  }

  /** The pattern scopes local clients hold: workspace ids, or 'all'. */
  patternScopes(): (number | 'all')[] {
    const out: (number | 'all')[] = [];
    for (const route of this.workspaceRoutes.values()) if (route.want) out.push(route.target as number);
    if (this.allRoute?.want === true) out.push('all');
    return out;
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
   * an UNSUBSCRIBE's reply missed events published in that round trip (docs/scaling.md,
   * "Changes of mind"). Replies come in order too, so the last one leaves `have` as the newest
   * command asked.
   */
  private sync(route: Route): void {
    const current = route.pending > 0 ? route.requested : route.have;
    if (route.want === current) {
      if (route.pending > 0) return;
      if (route.want) settle(route);
      else this.forget(route);
      return;
    }
    if (!this.up || !this.versionKnown) return; // made on (re)connect
    route.pending += 1;
    const subscribing = route.want;
    route.requested = subscribing;
    const epoch = this.epoch;
    const seq = this.fence.nextSeq(); // every reply on this connection is a fence too
    this.subscriptionCommand(route, subscribing).then(
      () => {
        if (epoch !== this.epoch) return;
        route.pending -= 1;
        route.have = subscribing;
        this.fence.settle(seq);
        if (route.pending === 0) this.sync(route);
      },
      (error: unknown) => {
        if (epoch !== this.epoch) return;
        route.pending -= 1;
        this.events.onStatus('subscription failed', error);
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
    if (route.kind === 'all') {
      if (this.allRoute === route) this.allRoute = undefined;
      return;
    }
    const routes: Map<unknown, Route> = route.kind === 'sandbox' ? this.sandboxRoutes : this.workspaceRoutes;
    for (const [key, value] of routes) {
      if (value === route) {
        routes.delete(key);
        return;
      }
    }
  }

  private onConnect(): void {
    this.up = true;
    this.epoch += 1;
    this.events.onStatus('subscriber ready');
    if (this.versionKnown) this.resubscribeAll();
  }

  private onDisconnect(): void {
    if (!this.up) return;
    this.up = false;
    this.epoch += 1;
    this.events.onStatus('subscriber closed');
    for (const route of [...this.routes()]) {
      route.have = false;
      route.pending = 0;
      fail(route, unavailable(new Error('lost the connection to Redis')));
      if (!route.want) this.forget(route);
    }
    // Messages in flight are lost with the connection; the appends waiting for theirs are durable.
    this.fence.settleAll();
  }

  private resubscribeAll(): void {
    this.stats.resubscribes += 1;
    // The anchors first, so that they are in place before any route can be dropped again.
    const epoch = this.epoch;
    const anchoring: Promise<unknown>[] = [this.subscriber.subscribe(this.anchors.plain)];
    if (this.sharded) anchoring.push(this.subscriber.ssubscribe(this.anchors.shard));
    Promise.all(anchoring).catch((error: unknown) => {
      if (epoch === this.epoch) this.events.onStatus('anchor subscription failed', error);
    });
    for (const route of [...this.routes()]) this.sync(route);
    this.connects += 1;
    if (this.connects > 1 || this.fillOnNextConnect) {
      this.fillOnNextConnect = false;
      this.events.onReconnect(this.subscriber.ping());
    }
  }

  /**
   * Routes were moved here from another connection (a Cluster slot changed master): their
   * messages of the meantime went nowhere, so a gap-fill runs once their subscriptions are
   * confirmed, now if connected, else on the connect.
   */
  fillOnConnect(): void {
    if (this.up && this.versionKnown) this.events.onReconnect(this.subscriber.ping());
    else this.fillOnNextConnect = true;
  }

  /** Fails every waiting resume with `error` and drops the connection. */
  async close(error: Error): Promise<void> {
    this.closed = true;
    for (const route of this.routes()) fail(route, error);
    await quitConnection(this.subscriber);
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
