/**
 * One subscriber connection and what hangs on it (docs/scaling.md, "Redis Cluster"): its
 * subscriptions, the publish fence that proves which messages it will never carry, and the
 * gap-fill run when it comes back. A standalone Redis has one shard; in Redis Cluster the node
 * keeps one per master, because a master pushes only the shard channels of its own slots and
 * orders only its own messages: a PING on one master's connection proves nothing about another.
 */
import type { Redis, RedisOptions } from 'ioredis';
import type { NewEvent, StoredEvent } from '../../event/event.js';
import type { LostEventsListener, RetentionPolicy } from '../types.js';
import type { RedisEngineStats, ScriptedRedis } from './connection.js';
import { decodeMessage } from './keys.js';
import { GapFill } from './gap-fill.js';
import { PublishFence } from './publish-fence.js';
import { Subscriptions } from './subscriptions.js';

export interface ShardHooks {
  /** Local fan-out of one event (the store listener). */
  deliver: (event: StoredEvent, appended: NewEvent | undefined, alreadyDelivered?: number) => number | undefined;
  onStatus: (status: string, error?: unknown) => void;
  /**
   * Cluster: whether a pushed event belongs to this master's slots. A plain PUBLISH (workspace
   * channels) reaches every master's connection; only the copy from the event's own master
   * comes in order with its shard channel's messages, so the others are dropped.
   */
  accepts?: (event: StoredEvent) => boolean;
  /** Cluster: this master's connection, where the gap-fill lists a pattern's streams. */
  scanNodes?: () => Redis[];
}

export class Shard {
  readonly subscriptions: Subscriptions;
  readonly fence: PublishFence;
  readonly gapFill: GapFill;

  /**
   * `url`: the subscriber connection's address (the master's, in Cluster). `shardAnchor`: a
   * shard channel in one of that master's slots (Cluster answers MOVED for any other). `label`
   * names the master in status lines.
   */
  constructor(
    readonly url: string,
    common: RedisOptions,
    nodeId: string,
    commands: ScriptedRedis,
    retention: RetentionPolicy,
    hooks: ShardHooks,
    stats: RedisEngineStats,
    shardAnchor?: string,
    label?: string,
  ) {
    const status =
      label === undefined
        ? hooks.onStatus
        : (text: string, error?: unknown) => hooks.onStatus(`${text} (${label})`, error);
    this.fence = new PublishFence(
      hooks.deliver,
      () => this.subscriptions.probe(),
      (key) => this.subscriptions.watches(key),
      stats,
    );
    this.subscriptions = new Subscriptions(
      url,
      common,
      nodeId,
      this.fence,
      {
        onStatus: status,
        onMessage: (message) => this.receive(message, status),
        onReconnect: (confirmed) => this.gapFill.reconnected(confirmed),
      },
      stats,
      shardAnchor,
    );
    this.gapFill = new GapFill(commands, retention, this.fence, this.subscriptions, status, stats, hooks.scanNodes);
    this.accepts = hooks.accepts;
  }

  private readonly accepts: ((event: StoredEvent) => boolean) | undefined;

  set lostListener(listener: LostEventsListener | undefined) {
    this.gapFill.lostListener = listener;
  }

  private receive(message: string, onStatus: (status: string) => void): void {
    const event = decodeMessage(message);
    if (event === undefined) {
      onStatus('ignored a message that is not an event');
      return;
    }
    if (this.accepts !== undefined && !this.accepts(event)) return;
    this.gapFill.live(event);
  }

  async close(error: Error): Promise<void> {
    this.fence.close();
    this.gapFill.close();
    await this.subscriptions.close(error);
  }
}
