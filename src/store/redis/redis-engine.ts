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
 * - Redis Cluster (docs/scaling.md, "Redis Cluster"): detected from the address (INFO
 *   `redis_mode:cluster`) or given as several seeds; commands go through ioredis `Cluster`,
 *   and the node keeps one subscriber connection (a Shard) per master, each sandbox's route on
 *   the master of its channel's slot, moved when the slot map changes.
 */
import { randomBytes } from 'node:crypto';
import type { RedisOptions } from 'ioredis';
import { Cluster, ReplyError } from 'ioredis';
import {
  eventJson,
  newEventDataText,
  parseEventId,
  setEventOrder,
  type EventId,
  type NewEvent,
  type StoredEvent,
  StoredEventRecord,
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
  type ClusterWithScripts,
  connectionOptions,
  masterConnection,
  nodeAddress,
  openClusterCommands,
  openCommandConnection,
  quitConnection,
  type RedisEngineStats,
  type ScriptedRedis,
  unavailable,
} from './connection.js';
import {
  JSON_HEAD,
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
import {
  listIndexedSandboxes,
  listScannedSandboxes,
  readHistory,
  readHistoryPages,
  readReplay,
  readWorkspaceAfter,
} from './reads.js';
import { PatternInterest } from './pattern-interest.js';
import { ReplicaAcks } from './replica-acks.js';
import { Shard } from './shard.js';
import { SLOT_COUNT, slotOf } from './slots.js';

export interface RedisEngineOptions {
  /**
   * `redis://host:port[/db]` (ioredis URL syntax, `rediss://` for TLS), or the seeds of a Redis
   * Cluster: `redis://host:port,host:port` (credentials and scheme of the first apply to all).
   */
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
   * (default true; always off on a Redis Cluster, where a script writes keys of one slot only):
   * the sandbox index that `listSandboxes` reads, and the workspace order that
   * `replayWorkspaceAfter` reads (pattern resume). Off, `listSandboxes` scans the stream keys
   * instead, and the engine has no `replayWorkspaceAfter` (a pattern resume answers
   * `not_resumable`).
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
/** In Cluster, how long an append waits for a replica (replica-acks.ts) before it fails. */
const REPLICA_WAIT_MS = 2_000;
/** While a cluster is not fully served at start (cluster_state not ok), its state is asked again this often. */
const CLUSTER_STATE_RETRY_MS = 500;
/** The single shard of a standalone Redis. */
const STANDALONE = 'standalone';

/** The seed addresses in an `--engine` value: one, or several separated by commas. */
export function engineSeeds(url: string): string[] {
  const match = /^(rediss?:\/\/)(?:([^@/]*)@)?([^/]*)(\/.*)?$/.exec(url);
  if (match === null) return [url];
  const [, scheme, auth, hosts, path] = match;
  const parts = hosts!.split(',').filter((part) => part !== '');
  if (parts.length <= 1) return [url];
  return parts.map((host) => `${scheme}${auth === undefined ? '' : `${auth}@`}${host}${path ?? ''}`);
}

export class RedisEngine implements EventStore {
  readonly kind = 'redis';
  /** Pattern resume over one workspace only (see replayWorkspaceAfter). */
  readonly orderPerWorkspace = true;
  private retention: RetentionPolicy;
  private commands: ScriptedRedis;
  /**
   * The first INFO said the address is a standalone Redis; before it the kind is unknown (a
   * single address may be a node of a cluster, see `cluster`).
   */
  private standalone = false;
  /** Subscriber connections: one (`standalone`), or one per master keyed `host:port`. */
  private readonly shards = new Map<string, Shard>();
  /** Cluster: the shard holding each watched sandbox's route. */
  private readonly placed = new Map<string, Shard>();
  /** The sandboxes local clients watch, kept across shards (routes move with the slot map). */
  private readonly wanted = new Map<string, SandboxRef>();
  /** Cluster: every slot has a master, and the cluster said `cluster_state:ok` once. */
  private clusterServed = false;
  private clusterStateTimer: NodeJS.Timeout | undefined;
  private waitingSaid = false;
  /** The master of each slot when the routes were last placed. */
  private readonly slotMasters: (string | undefined)[] = [];
  /** Cluster: appends sent and not answered yet (the pattern registry waits for them, see track). */
  private readonly appendsInFlight = new Set<Promise<string>>();
  /** Cluster: appends acknowledged once a replica has them (replica-acks.ts). */
  private replicaAcks: ReplicaAcks | undefined;
  /** Cluster: which workspaces some node holds patterns in (workspace channels only for those). */
  private patternInterest: PatternInterest | undefined;
  private readonly common: RedisOptions;
  private readonly nodeId = randomBytes(8).toString('hex');
  private readonly seeds: string[];
  private lostListener: LostEventsListener | undefined;
  private readonly workspaceChannels: boolean;
  /** The workspace keys (see RedisEngineOptions.workspaceKeys): turned off on a cluster. */
  private workspaceKeys: boolean;
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
    this.common = connectionOptions(options.redis);
    this.seeds = engineSeeds(options.url);
    if (this.seeds.length > 1) {
      this.commands = this.openCluster();
      return;
    }
    const commands = openCommandConnection(options.url, this.common);
    this.commands = commands;
    commands.on('ready', () => {
      this.onStatus('commands ready');
      void this.detectVersion();
    });
    commands.on('error', (error) => this.onStatus('commands error', error));
    commands.on('close', () => this.onStatus('commands closed'));
  }

  /** Whether the engine runs on a Redis Cluster (known after the first connect for one address). */
  get isCluster(): boolean {
    return this.cluster !== undefined;
  }

  /** The commands client when the engine runs on a Redis Cluster, else undefined. */
  private get cluster(): ClusterWithScripts | undefined {
    return this.commands instanceof Cluster ? this.commands : undefined;
  }

  private *allShards(): Iterable<Shard> {
    yield* this.shards.values();
  }

  /**
   * Connected to Redis on both connections, every wanted subscription is in place, and no
   * gap-fill is running (the node is sure it saw every message).
   */
  isReady(): boolean {
    if (this.readiness() !== 'ready') return false;
    for (const shard of this.allShards()) if (!shard.subscriptions.allInPlace()) return false;
    return true;
  }

  /**
   * `ready`: both connections up, the server checked, no gap-fill running (a subscription still
   * being made does not count: it is waited for where it matters, by a resume's read).
   */
  readiness(): StoreReadiness {
    let shardsServing = this.shards.size > 0 && (this.standalone || this.clusterServed);
    for (const shard of this.allShards()) {
      if (!shard.subscriptions.connected() || shard.gapFill.filling) shardsServing = false;
    }
    const serving = !this.closed && this.refusal === undefined && this.commands.status === 'ready' && shardsServing;
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
    this.lostListener = listener;
    for (const shard of this.allShards()) shard.lostListener = listener;
  }

  async append(input: NewEvent): Promise<StoredEvent> {
    this.checkServing();
    // The JSON line around the id and timestamp, built by the same function as every store's.
    const template = eventJson(
      { ms: 0, seq: 0 },
      input.workspaceId,
      input.sandboxId,
      input.type,
      newEventDataText(input),
      0,
    );
    const middle = template.slice(JSON_HEAD.length + '0-0'.length, template.length - '0}'.length);
    const { maxCount, maxAgeMs } = this.retention;
    const maxBytes = this.retention.maxBytes ?? Infinity;
    const finiteAge = Number.isFinite(maxAgeMs);
    const key = sandboxKey(input);
    // The connection that carries this sandbox's messages here, if any (its fence).
    const cluster = this.cluster;
    const shard =
      cluster === undefined
        ? this.shards.get(STANDALONE)
        : (this.placed.get(key) ??
          (this.patternsWanted.size > 0 ? this.shardOfSlot(slotOf(sandboxChannel(input))) : undefined));
    const args = [
      input.type,
      middle,
      messageHeader(input, input.type),
      Number.isFinite(maxCount) ? String(maxCount) : '0',
      finiteAge ? String(Math.ceil(maxAgeMs)) : '0',
      finiteAge ? String(Math.ceil(maxAgeMs) + KEY_TTL_SLACK_MS) : '0',
      sandboxChannel(input),
      cluster !== undefined || (shard?.subscriptions.isSharded ?? true) ? '1' : '0',
      // In Cluster a plain PUBLISH goes to every node over the cluster bus: only while some
      // node holds a pattern in the workspace (docs/scaling.md, "Redis Cluster").
      this.workspaceChannels && (cluster === undefined || this.patternInterest?.wanted(input.workspaceId) === true)
        ? workspaceChannel(input.workspaceId)
        : '',
      Number.isFinite(maxBytes) ? String(maxBytes) : '0',
      this.ephemeral?.(input.type) === true ? '1' : '0',
      input.sandboxId,
      String(input.workspaceId),
    ];
    const keys = [streamKey(input), metaKey(input)];
    if (this.workspaceKeys && cluster === undefined) {
      keys.push(sandboxIndexKey(input.workspaceId), WORKSPACES_KEY, workspaceOrderKey(input.workspaceId), ORDERS_KEY);
    }
    shard?.fence.beginAppend(key);
    let idText: string;
    let orderText = '';
    try {
      if (cluster === undefined) [idText, orderText] = await this.commands.seAppend(keys.length, ...keys, ...args);
      else idText = await this.track(this.replicaAcks!.append(keys[0]!, keys[1]!, args));
    } catch (error) {
      shard?.fence.appendAnswered(key, undefined);
      throw unavailable(error);
    }
    const arrived = shard?.fence.appendAnswered(key, idText);
    this.stats.appended += 1;
    const id = parseEventId(idText);
    if (id === undefined) throw unavailable(new Error(`Redis returned an invalid id ${idText}`));
    const event = new StoredEventRecord(
      id,
      input.workspaceId,
      input.sandboxId,
      input.type,
      id.ms,
      `${JSON_HEAD}${idText}${middle}${id.ms}}`,
    );
    if (orderText !== '') setEventOrder(event, Number(orderText));
    const { watched, active } = shard?.subscriptions.carrier(input) ?? { watched: false, active: false };
    if (shard === undefined || !watched) {
      // Nobody here watches this sandbox: nothing arrives by subscription; the listener still
      // sees the event (it fans out to no one, and counts).
      notifyListener(this.listener, event, input);
      return event;
    }
    // Someone here watches it: the event comes back through the subscription, in order with
    // other nodes' events, and is delivered from there.
    return shard.fence.awaitDelivery(event, input, arrived, !active);
  }

  setInterest(ref: SandboxRef, interested: boolean): void {
    if (this.closed) return;
    const key = sandboxKey(ref);
    if (interested) this.wanted.set(key, { workspaceId: ref.workspaceId, sandboxId: ref.sandboxId });
    else this.wanted.delete(key);
    if (this.standalone) {
      this.shards.get(STANDALONE)?.subscriptions.setInterest(ref, interested);
      return;
    }
    if (!this.isCluster) return; // made when the first connect tells the kind
    if (!interested) {
      this.placed.get(key)?.subscriptions.setInterest(ref, false);
      this.placed.delete(key);
      return;
    }
    this.place(key, ref);
  }

  /** Patterns held before the kind is known: made on the standalone shard when it exists. */
  private readonly patternsWanted = new Set<number | 'all'>();

  setPatternInterest(scope: number | 'all', interested: boolean): void {
    // Without workspace channels nothing is published where a pattern route would listen; such
    // a route would only make every append in its scope wait for the fence timer.
    if (this.closed || !this.workspaceChannels) return;
    if (interested) this.patternsWanted.add(scope);
    else this.patternsWanted.delete(scope);
    if (this.isCluster) {
      // The workspace channel is on every master's connection (each keeps its own slots' copies).
      this.patternInterest?.hold(scope, interested);
      for (const shard of this.allShards()) shard.subscriptions.setPatternInterest(scope, interested);
      return;
    }
    this.shards.get(STANDALONE)?.subscriptions.setPatternInterest(scope, interested);
  }

  /** Keeps an append in `appendsInFlight` until it is answered. */
  private track(append: Promise<string>): Promise<string> {
    this.appendsInFlight.add(append);
    const forget = (): void => {
      this.appendsInFlight.delete(append);
    };
    append.then(forget, forget);
    return append;
  }

  /**
   * Every node has applied a new pattern registration: events of the scope published before it
   * went without the workspace channel, so each master's connection fills them from the streams.
   */
  private patternSettled(since: number): void {
    for (const shard of this.allShards()) {
      shard.gapFill.fillFrom(since);
      shard.subscriptions.fillOnConnect();
    }
  }

  private newShard(url: string, anchor?: string, label?: string): Shard {
    const cluster = this.cluster;
    const master = label;
    const clusterHooks =
      cluster === undefined || master === undefined
        ? {}
        : {
            accepts: (event: SandboxRef) => cluster.slots[slotOf(sandboxChannel(event))]?.[0] === master,
            scanNodes: () => {
              const node = masterConnection(cluster, master);
              return node === undefined ? [] : [node];
            },
          };
    const shard = new Shard(
      url,
      this.common,
      this.nodeId,
      this.commands,
      this.retention,
      {
        deliver: (event, appended, alreadyDelivered) =>
          notifyListener(this.listener, event, appended, alreadyDelivered),
        onStatus: this.onStatus,
        ...clusterHooks,
      },
      this.stats,
      anchor,
      label,
    );
    shard.lostListener = this.lostListener;
    return shard;
  }

  private async detectVersion(): Promise<void> {
    try {
      const info = await this.commands.info('server');
      if (this.closed || this.isCluster) return;
      if (/redis_mode:cluster/.test(info)) {
        // One node of a cluster: it serves only its own slots, so the whole cluster is used
        // from it as a seed (docs/scaling.md, "Redis Cluster").
        this.onStatus('the address is a node of a Redis Cluster: using the cluster');
        const standalone = this.commands;
        standalone.removeAllListeners('ready');
        this.commands = this.openCluster();
        await quitConnection(standalone);
        return;
      }
      this.standalone = true;
      let shard = this.shards.get(STANDALONE);
      if (shard === undefined) {
        shard = this.newShard(this.seeds[0]!);
        this.shards.set(STANDALONE, shard);
        for (const ref of this.wanted.values()) shard.subscriptions.setInterest(ref, true);
        for (const scope of this.patternsWanted) shard.subscriptions.setPatternInterest(scope, true);
      }
      const micros = /server_time_usec:(\d+)/.exec(info)?.[1];
      if (micros !== undefined) shard.gapFill.firstConnect(Math.floor(Number(micros) / 1000));
      shard.subscriptions.versionDetected(majorVersion(info) >= 7);
    } catch (error) {
      // An error reply (not a lost connection, which the next 'ready' retries) comes again on
      // every try: an ACL user without INFO gets NOPERM. Without INFO the engine cannot tell a
      // single Redis from a Redis Cluster, so at start it refuses the address with the reason
      // rather than stay loading with no end.
      if (error instanceof ReplyError && !this.everReady) {
        this.refuse(
          `INFO answered ${(error as Error).message}: the engine reads INFO to tell a single Redis from a Redis Cluster and to check the version (grant the user INFO)`,
        );
      } else this.onStatus('version check failed', error);
    }
  }

  // ------------------------------------------------------------------ Redis Cluster

  private openCluster(): ClusterWithScripts {
    // A script writes keys of one slot only: no sandbox index, no workspace order.
    this.workspaceKeys = false;
    this.replayWorkspaceAfter = undefined;
    const commands = openClusterCommands(this.seeds, this.common);
    this.replicaAcks = new ReplicaAcks(commands, REPLICA_WAIT_MS);
    this.patternInterest = new PatternInterest(
      commands,
      this.nodeId,
      () => Promise.allSettled([...this.appendsInFlight]).then(() => {}),
      (_scope, since) => this.patternSettled(since),
      this.onStatus,
    );
    for (const scope of this.patternsWanted) this.patternInterest.hold(scope, true);
    commands.on('ready', () => {
      this.onStatus('cluster commands ready');
      this.patternInterest?.readNow();
      void this.checkCluster();
    });
    // After every read of the slot map (MOVED, a lost node, or the periodic refresh).
    commands.on('refresh', () => this.placeAll());
    commands.on('error', (error) => this.onStatus('cluster commands error', error));
    commands.on('close', () => {
      // ioredis closes and retries while no seed answers or the slot map is not complete.
      if (this.everReady) this.onStatus('cluster commands closed');
      else this.notServedYet('or no seed answers');
    });
    commands.on('+node', (node: { options: { host?: string; port?: number } }) =>
      this.onStatus(`cluster node added ${nodeAddress(node)}`),
    );
    commands.on('-node', (node: { options: { host?: string; port?: number } }) =>
      this.onStatus(`cluster node removed ${nodeAddress(node)}`),
    );
    return commands;
  }

  /**
   * Served once the cluster says `cluster_state:ok` (every slot covered by a reachable master):
   * until then the node is loading, never half serving (docs/scaling.md, "Readiness").
   */
  private async checkCluster(): Promise<void> {
    const cluster = this.cluster;
    if (this.closed || cluster === undefined) return;
    try {
      const info = await cluster.info('server');
      if (majorVersion(info) < 7) {
        this.refuse('a Redis Cluster before version 7 has no sharded pub/sub (SSUBSCRIBE)');
        return;
      }
      const state = await cluster.cluster('INFO');
      if (!/cluster_state:ok/.test(state)) {
        this.notServedYet('cluster_state is not ok');
        this.retryClusterCheck();
        return;
      }
      const micros = /server_time_usec:(\d+)/.exec(info)?.[1];
      const connectedMs = micros === undefined ? undefined : Math.floor(Number(micros) / 1000);
      this.placeAll(connectedMs);
      this.clusterServed = this.allSlotsServed() && mastersConnected(cluster);
      if (!this.clusterServed) this.retryClusterCheck();
    } catch (error) {
      this.onStatus('cluster check failed', error);
      this.retryClusterCheck();
    }
  }

  /** Said once per wait at start: the node stays loading meanwhile. */
  private notServedYet(detail: string): void {
    if (this.waitingSaid) return;
    this.waitingSaid = true;
    this.onStatus(`the cluster does not serve every slot yet (${detail}): waiting, not serving`);
  }

  private retryClusterCheck(): void {
    if (this.clusterStateTimer !== undefined || this.closed) return;
    this.clusterStateTimer = setTimeout(() => {
      this.clusterStateTimer = undefined;
      void this.checkCluster();
    }, CLUSTER_STATE_RETRY_MS);
    this.clusterStateTimer.unref();
  }

  /** Every slot has a master in the client's slot map. */
  private allSlotsServed(): boolean {
    const slots = this.cluster?.slots;
    if (slots === undefined) return false;
    for (let slot = 0; slot < SLOT_COUNT; slot++) if (slots[slot]?.[0] === undefined) return false;
    return true;
  }

  /** The shard of the master serving `slot` now (made if new); undefined if no master has it. */
  private shardOfSlot(slot: number, connectedMs?: number): Shard | undefined {
    const master = this.cluster?.slots[slot]?.[0];
    return master === undefined ? undefined : this.shardOfMaster(master, connectedMs);
  }

  /**
   * The shard of a master (made if new: its subscriber connection starts at once). `connectedMs`
   * (the cluster checked) is where its fills start if it has none yet: the shards made when the
   * slot map was first read, before the check, get it here too.
   */
  private shardOfMaster(master: string, connectedMs?: number): Shard {
    let shard = this.shards.get(master);
    if (shard === undefined) {
      shard = this.newShard(this.masterUrl(master), this.anchorFor(master), master);
      this.shards.set(master, shard);
      shard.subscriptions.versionDetected(true);
      for (const scope of this.patternsWanted) shard.subscriptions.setPatternInterest(scope, true);
    }
    if (connectedMs !== undefined) shard.gapFill.firstConnect(connectedMs);
    return shard;
  }

  /** The subscriber address of a master: the first seed's scheme and credentials, its host and port. */
  private masterUrl(master: string): string {
    const colon = master.lastIndexOf(':');
    const url = new URL(this.seeds[0]!);
    url.hostname = master.slice(0, colon);
    url.port = master.slice(colon + 1);
    url.pathname = '';
    return url.toString();
  }

  /**
   * A shard channel of this node in one of `master`'s slots, held for the connection's life
   * (keys.ts, anchorChannels): Cluster answers MOVED to an SSUBSCRIBE of another master's slot.
   */
  private anchorFor(master: string): string | undefined {
    const slots = this.cluster?.slots;
    if (slots === undefined) return undefined;
    for (let n = 0; n < 100_000; n++) {
      const name = `se:{node:${this.nodeId}:${n}}:anchor`;
      if (slots[slotOf(name)]?.[0] === master) return name;
    }
    return undefined;
  }

  /**
   * One subscriber connection per master of the slot map (readiness waits for each), every
   * watched sandbox's route on the master of its slot, and the shards of former masters dropped.
   */
  private placeAll(connectedMs?: number): void {
    const slots = this.cluster?.slots;
    if (this.closed || slots === undefined) return;
    // The client reads the slot map every second: with no master changed and every route in
    // place, there is nothing to move (this skips a slot computation per watched sandbox).
    let changed = this.slotMasters.length !== SLOT_COUNT;
    for (let slot = 0; slot < SLOT_COUNT; slot++) {
      const master = slots[slot]?.[0];
      if (this.slotMasters[slot] !== master) {
        this.slotMasters[slot] = master;
        changed = true;
      }
    }
    if (!changed && connectedMs === undefined && [...this.allShards()].every((s) => s.subscriptions.allInPlace()))
      return;
    const masters = new Set<string>();
    for (const entry of slots) if (entry?.[0] !== undefined) masters.add(entry[0]);
    for (const master of masters) this.shardOfMaster(master, connectedMs);
    for (const [key, ref] of this.wanted) this.place(key, ref, connectedMs);
    for (const [master, shard] of this.shards) {
      if (masters.has(master)) continue;
      let holds = false;
      for (const placed of this.placed.values()) if (placed === shard) holds = true;
      if (holds) continue;
      this.shards.delete(master);
      this.onStatus(`no longer a master: closing its subscriber connection (${master})`);
      void shard.close(unavailable(new Error(`${master} is no longer a master`)));
    }
  }

  /**
   * Puts one sandbox's route on its slot's master. A route that moves from another connection
   * takes its last delivered id along, and the new connection fills the meantime from the
   * stream once the subscription is confirmed (docs/scaling.md, "Gap-fill").
   */
  private place(key: string, ref: SandboxRef, connectedMs?: number): void {
    const target = this.shardOfSlot(slotOf(sandboxChannel(ref)), connectedMs);
    const current = this.placed.get(key);
    if (target === undefined || target === current) {
      if (target !== undefined) target.subscriptions.setInterest(ref, true);
      return;
    }
    this.placed.set(key, target);
    if (current !== undefined) {
      const last = current.fence.lastDelivered(key);
      current.subscriptions.setInterest(ref, false);
      if (last !== undefined) target.fence.skipThrough(key, last);
      target.gapFill.inheritStart(current.gapFill.startPoint());
      this.onStatus(`moved a route to ${target.url}`);
    }
    target.subscriptions.setInterest(ref, true);
    if (current !== undefined) target.subscriptions.fillOnConnect();
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
    const key = sandboxKey(ref);
    const shard = this.isCluster ? this.placed.get(key) : this.shards.get(STANDALONE);
    await shard?.subscriptions.whenSubscribed(ref);
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
   * not resumable (`orderPerWorkspace`). Without the workspace keys (a cluster) there is none.
   */
  replayWorkspaceAfter: ((scope: number | 'all', after: number, limit: number) => Promise<WorkspaceReplay>) | undefined;

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
   * From the sandbox indexes a page at a time, or, without the workspace keys (a cluster), from
   * a SCAN of the stream keys on every master (docs/scaling.md, "Listing sandboxes").
   */
  async listSandboxes(scope: number | 'all'): Promise<SandboxListing[]> {
    this.checkServing();
    if (this.workspaceKeys) return listIndexedSandboxes(this.commands, scope);
    return listScannedSandboxes(this.commands, scope);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.clusterStateTimer !== undefined) clearTimeout(this.clusterStateTimer);
    this.patternInterest?.close();
    const shards = [...this.allShards()];
    this.shards.clear();
    this.placed.clear();
    await Promise.all([
      quitConnection(this.commands),
      ...shards.map((shard) => shard.close(storeClosedError(this.kind))),
    ]);
  }
}

function majorVersion(info: string): number {
  return Number(/redis_version:(\d+)/.exec(info)?.[1] ?? '0');
}

/**
 * Whether the commands client's connection to every master is up, and those not made yet are
 * started. ioredis makes a node's connection on its first command (connection.ts); with the
 * offline queue off, a command to a node still connecting fails and is retried after the
 * failover delay, behind appends sent after it: two PUBLISHes pipelined by one client could
 * then get their ids in the wrong order. So the engine serves only once they are all up.
 */
function mastersConnected(cluster: ClusterWithScripts): boolean {
  let connected = true;
  for (const node of cluster.nodes('master')) {
    if (node.status === 'ready') continue;
    connected = false;
    if (node.status === 'wait') node.connect().catch(() => {});
  }
  return connected;
}
