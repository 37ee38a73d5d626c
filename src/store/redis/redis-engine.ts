/**
 * The Redis engine: several broker nodes share one Redis and behave as one broker
 * (docs/scaling.md).
 *
 * - Events live in one stream per workspace and sandbox; the stream id is the event id.
 *   `append` is one Lua script (XADD, exact retention, SPUBLISH on the sandbox's channel, PUBLISH
 *   on the workspace's), so publish order is stream order across all nodes (scripts.ts).
 * - A node subscribes in Redis only to what its own clients watch (the broker's interest
 *   hooks), on a second connection (subscriptions.ts); events from that subscription go to the
 *   listener (local fan-out), in the order Redis pushed them, which is id order per sandbox.
 * - The node that appends an event its own clients watch delivers it from its subscription too,
 *   never from the append path, so its subscribers get it once and in order with the events of
 *   other nodes (publish-fence.ts).
 * - Loss of Redis: commands fail at once (no offline queue) with STORE_UNAVAILABLE, ioredis
 *   reconnects with backoff, and the subscriptions are made again on the new connection.
 */
import { randomBytes } from 'node:crypto';
import type { RedisOptions } from 'ioredis';
import {
  eventJson,
  parseEventId,
  setEventOrder,
  type EventId,
  type NewEvent,
  type StoredEvent,
} from '../../event/event.js';
import {
  checkLimit,
  checkRetention,
  ephemeralMatcher,
  notifyListener,
  sandboxKey,
  storeClosedError,
  storeLoadingError,
} from '../semantics.js';
import { SandboxEventsError } from '../../errors.js';
import type {
  DurableEventListener,
  EventStore,
  HistoryPages,
  HistoryQuery,
  LostEventsListener,
  StoreReadiness,
  ReplayResult,
  RetentionPolicy,
  SandboxListing,
  SandboxRef,
  WorkspaceReplay,
} from '../types.js';
import {
  connectionOptions,
  openCommandConnection,
  quitConnection,
  type RedisEngineStats,
  type RedisWithScripts,
  unavailable,
} from './connection.js';
import {
  JSON_HEAD,
  decodeMessage,
  messageHeader,
  metaKey,
  ORDERS_KEY,
  sandboxChannel,
  sandboxIndexKey,
  streamKey,
  WORKSPACES_KEY,
  workspaceChannel,
  workspaceOrderKey,
} from './keys.js';
import { GapFill } from './gap-fill.js';
import { PublishFence } from './publish-fence.js';
import {
  listIndexedSandboxes,
  listScannedSandboxes,
  readHistory,
  readHistoryPages,
  readReplay,
  readWorkspaceAfter,
} from './reads.js';
import { Subscriptions } from './subscriptions.js';

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
  /**
   * Keep the keys of a workspace that the append script writes beside the sandbox's own
   * (default true): the sandbox index that `listSandboxes` reads, and the workspace order that
   * `replayWorkspaceAfter` reads (pattern resume). A Redis Cluster cannot (a script writes keys
   * of one slot only); off, `listSandboxes` scans the stream keys instead, and the engine has no
   * `replayWorkspaceAfter` (a pattern resume answers `not_resumable`).
   */
  workspaceKeys?: boolean;
  /** Extra ioredis options (tests: retry timing). */
  redis?: RedisOptions;
  /** Called with connection state changes and errors, for logs. */
  onStatus?: (status: string, error?: unknown) => void;
  /**
   * Called once if the address turns out to be one the engine cannot fully serve (a node of a
   * Redis Cluster): the daemon stops with this error. Default: reported through `onStatus`.
   */
  onRefused?: (error: SandboxEventsError) => void;
}

/** A stream key outlives its last append by the age limit plus this. */
const KEY_TTL_SLACK_MS = 60_000;

export class RedisEngine implements EventStore {
  readonly kind = 'redis';
  /** Pattern resume over one workspace only (see replayWorkspaceAfter). */
  readonly orderPerWorkspace = true;
  private retention: RetentionPolicy;
  private readonly commands: RedisWithScripts;
  private readonly subscriptions: Subscriptions;
  private readonly fence: PublishFence;
  private readonly gapFill: GapFill;
  private readonly workspaceChannels: boolean;
  private readonly workspaceKeys: boolean;
  /** Types delivered but never stored (`--ephemeral-types`); undefined when none. */
  private ephemeral: ((type: string) => boolean) | undefined;
  private readonly onStatus: (status: string, error?: unknown) => void;
  private listener: DurableEventListener | undefined;
  private closed = false;
  /** Ready once since start: before that, the node is loading (see `readiness`). */
  private everReady = false;
  /** Why this address cannot be served (checked on connect); every call fails with it. */
  private refusal: SandboxEventsError | undefined;
  private readonly onRefused: (error: SandboxEventsError) => void;
  readonly stats: RedisEngineStats = {
    appended: 0,
    received: 0,
    duplicatesDropped: 0,
    fences: 0,
    resubscribes: 0,
    gapFills: 0,
    gapFilled: 0,
    gapsReported: 0,
  };

  constructor(options: RedisEngineOptions) {
    this.retention = checkRetention(options.retention);
    this.workspaceChannels = options.workspaceChannels ?? true;
    this.workspaceKeys = options.workspaceKeys ?? true;
    this.replayWorkspaceAfter = this.workspaceKeys
      ? (scope, after, limit) => this.readWorkspace(scope, after, limit)
      : undefined;
    this.ephemeral = ephemeralMatcher(this.retention);
    this.onStatus = options.onStatus ?? (() => {});
    this.onRefused = options.onRefused ?? ((error) => this.onStatus('refused', error));
    const common = connectionOptions(options.redis);
    this.commands = openCommandConnection(options.url, common);
    this.fence = new PublishFence(
      (event, appended, alreadyDelivered) => notifyListener(this.listener, event, appended, alreadyDelivered),
      () => this.subscriptions.probe(),
      (key) => this.subscriptions.watches(key),
      this.stats,
    );
    this.subscriptions = new Subscriptions(
      options.url,
      common,
      randomBytes(8).toString('hex'),
      this.fence,
      {
        onStatus: this.onStatus,
        onMessage: (message) => this.receive(message),
        onReconnect: (confirmed) => this.gapFill.reconnected(confirmed),
      },
      this.stats,
    );
    this.gapFill = new GapFill(
      this.commands,
      this.retention,
      this.fence,
      this.subscriptions,
      this.onStatus,
      this.stats,
    );
    this.commands.on('ready', () => {
      this.onStatus('commands ready');
      void this.detectVersion();
    });
    this.commands.on('error', (error) => this.onStatus('commands error', error));
    this.commands.on('close', () => this.onStatus('commands closed'));
  }

  /**
   * Connected to Redis on both connections, every wanted subscription is in place, and no
   * gap-fill is running (the node is sure it saw every message).
   */
  isReady(): boolean {
    return this.readiness() === 'ready' && this.subscriptions.allInPlace();
  }

  /**
   * `ready`: both connections up, the server checked, no gap-fill running (a subscription still
   * being made does not count: it is waited for where it matters, by a resume's read).
   */
  readiness(): StoreReadiness {
    const serving =
      !this.closed &&
      this.refusal === undefined &&
      this.commands.status === 'ready' &&
      this.subscriptions.connected() &&
      !this.gapFill.filling;
    if (serving) {
      this.everReady = true;
      return 'ready';
    }
    return this.everReady || this.refusal !== undefined || this.closed ? 'unavailable' : 'loading';
  }

  /** Throws what a call gets while the engine cannot serve it at all (closed, refused, loading). */
  private checkServing(): void {
    if (this.closed) throw storeClosedError(this.kind);
    if (this.refusal !== undefined) throw this.refusal;
    if (this.readiness() === 'loading') {
      throw storeLoadingError();
    }
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
    this.ephemeral = ephemeralMatcher(this.retention);
  }

  setListener(listener: DurableEventListener): void {
    this.listener = listener;
  }

  setLostEventsListener(listener: LostEventsListener): void {
    this.gapFill.lostListener = listener;
  }

  async append(input: NewEvent): Promise<StoredEvent> {
    this.checkServing();
    // The JSON line around the id and timestamp, built by the same function as every store's.
    const template = eventJson({ ms: 0, seq: 0 }, input.workspaceId, input.sandboxId, input.type, input.dataJson, 0);
    const middle = template.slice(JSON_HEAD.length + '0-0'.length, template.length - '0}'.length);
    const { maxCount, maxAgeMs } = this.retention;
    const maxBytes = this.retention.maxBytes ?? Infinity;
    const finiteAge = Number.isFinite(maxAgeMs);
    const key = sandboxKey(input);
    const keys = [streamKey(input), metaKey(input)];
    if (this.workspaceKeys) {
      keys.push(sandboxIndexKey(input.workspaceId), WORKSPACES_KEY, workspaceOrderKey(input.workspaceId), ORDERS_KEY);
    }
    this.fence.beginAppend(key);
    let idText: string;
    let orderText: string;
    try {
      [idText, orderText] = await this.commands.seAppend(
        keys.length,
        ...keys,
        input.type,
        middle,
        messageHeader(input, input.type),
        Number.isFinite(maxCount) ? String(maxCount) : '0',
        finiteAge ? String(Math.ceil(maxAgeMs)) : '0',
        finiteAge ? String(Math.ceil(maxAgeMs) + KEY_TTL_SLACK_MS) : '0',
        sandboxChannel(input),
        this.subscriptions.isSharded ? '1' : '0',
        this.workspaceChannels ? workspaceChannel(input.workspaceId) : '',
        Number.isFinite(maxBytes) ? String(maxBytes) : '0',
        this.ephemeral?.(input.type) === true ? '1' : '0',
        input.sandboxId,
        String(input.workspaceId),
      );
    } catch (error) {
      this.fence.appendAnswered(key, undefined);
      throw unavailable(error);
    }
    const arrived = this.fence.appendAnswered(key, idText);
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
    if (orderText !== '') setEventOrder(event, Number(orderText));
    const { watched, active } = this.subscriptions.carrier(input);
    if (!watched) {
      // Nobody here watches this sandbox: nothing arrives by subscription; the listener still
      // sees the event (it fans out to no one, and counts).
      notifyListener(this.listener, event, input);
      return event;
    }
    // Someone here watches it: the event comes back through the subscription, in order with
    // other nodes' events, and is delivered from there.
    return this.fence.awaitDelivery(event, input, arrived, !active);
  }

  private receive(message: string): void {
    const event = decodeMessage(message);
    if (event === undefined) {
      this.onStatus('ignored a message that is not an event');
      return;
    }
    this.gapFill.live(event);
  }

  setInterest(ref: SandboxRef, interested: boolean): void {
    if (this.closed) return;
    this.subscriptions.setInterest(ref, interested);
  }

  setPatternInterest(scope: number | 'all', interested: boolean): void {
    // Without workspace channels nothing is published where a pattern route would listen; such
    // a route would only make every append in its scope wait for the fence timer.
    if (this.closed || !this.workspaceChannels) return;
    this.subscriptions.setPatternInterest(scope, interested);
  }

  private async detectVersion(): Promise<void> {
    try {
      const info = await this.commands.info('server');
      if (/redis_mode:cluster/.test(info)) {
        this.refuse(
          'the address is a node of a Redis Cluster; this engine serves a standalone Redis only (one master serves only its own slots)',
        );
        return;
      }
      const major = Number(/redis_version:(\d+)/.exec(info)?.[1] ?? '0');
      const micros = /server_time_usec:(\d+)/.exec(info)?.[1];
      if (micros !== undefined) this.gapFill.firstConnect(Math.floor(Number(micros) / 1000));
      this.subscriptions.versionDetected(major >= 7);
    } catch (error) {
      this.onStatus('version check failed', error);
    }
  }

  /** This address cannot be fully served: never half serve it (docs/scaling.md, "Readiness"). */
  private refuse(reason: string): void {
    if (this.refusal !== undefined) return;
    this.refusal = new SandboxEventsError('ENGINE_REFUSED', `cannot use this Redis: ${reason}`);
    this.onRefused(this.refusal);
  }

  async replayAfter(ref: SandboxRef, afterId: EventId, limit: number): Promise<ReplayResult> {
    this.checkServing();
    checkLimit(limit);
    await this.subscriptions.whenSubscribed(ref);
    return readReplay(this.commands, this.retention, ref, afterId, limit, this.ephemeral !== undefined);
  }

  async history(query: HistoryQuery): Promise<StoredEvent[]> {
    this.checkServing();
    const limit = checkLimit(query.limit);
    return readHistory(this.commands, this.retention, query, limit);
  }

  /**
   * A pattern resume's replay (docs/protocol.md, "Pattern resume"), from the workspace order
   * the append script keeps; the order is per workspace, so a pattern over every workspace is
   * not resumable (`orderPerWorkspace`). Without the workspace keys there is none (undefined).
   */
  readonly replayWorkspaceAfter:
    | ((scope: number | 'all', after: number, limit: number) => Promise<WorkspaceReplay>)
    | undefined;

  private async readWorkspace(scope: number | 'all', after: number, limit: number): Promise<WorkspaceReplay> {
    this.checkServing();
    checkLimit(limit);
    if (scope === 'all') {
      throw new SandboxEventsError(
        'NOT_SUPPORTED',
        'the redis engine keeps an order per workspace only: a pattern over every workspace cannot resume',
      );
    }
    return readWorkspaceAfter(this.commands, this.retention, scope, after, limit);
  }

  /** The reply's ids counted inside Redis, then its events a page at a time (reads.ts). */
  async historyPages(query: HistoryQuery): Promise<HistoryPages> {
    this.checkServing();
    const limit = checkLimit(query.limit);
    return readHistoryPages(this.commands, this.retention, query, limit);
  }

  /**
   * From the sandbox indexes a page at a time, or, without the workspace keys, from a SCAN of
   * the stream keys (docs/scaling.md, "Listing sandboxes").
   */
  async listSandboxes(scope: number | 'all'): Promise<SandboxListing[]> {
    this.checkServing();
    if (this.workspaceKeys) return listIndexedSandboxes(this.commands, scope);
    return listScannedSandboxes(this.commands, scope);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fence.close();
    this.gapFill.close();
    await Promise.all([quitConnection(this.commands), this.subscriptions.close(storeClosedError(this.kind))]);
  }
}
