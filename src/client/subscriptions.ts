import { EventsNetworkError } from './errors.js';
import type { Link } from './link.js';
import type { Restorer } from './restore.js';
import {
  checkName,
  checkTypes,
  parsePatternStart,
  parseStart,
  type SubscriptionRegistry,
} from './subscription-registry.js';
import type { PatternSubscribeOptions, SubscribeOptions } from './types.js';

/**
 * The client's subscribe and unsubscribe calls while it runs: each changes the registry at
 * once, and is sent now when a connection is ready, or left to the restore of the next one
 * (docs/client.md, "Methods").
 */

/** What the subscription calls need to know of the client's connection. */
export interface SubscriptionConnection {
  /** The connection while the client is ready; undefined otherwise. */
  readyLink(): Link | undefined;
  /** The connection in use, ready or not (an UNSUBSCRIBE goes to it). */
  currentLink(): Link | undefined;
  /** Whether the client is idle or failed: a subscription then waits for the next `connect()`. */
  stopped(): boolean;
  /** Resolves once the client is ready; rejects when it stops trying. */
  whenReady(): Promise<void>;
}

export class Subscriptions {
  /** UNSUBSCRIBEs waiting for their confirmation, by sandbox id (see subscribe). */
  private readonly unsubscribing = new Map<string, Promise<void>>();

  constructor(
    private readonly registry: SubscriptionRegistry,
    private readonly restorer: Restorer,
    private readonly connection: SubscriptionConnection,
  ) {}

  async subscribe(sandboxId: string, options: SubscribeOptions): Promise<void> {
    const name = checkName(sandboxId, 'sandboxId');
    const start = parseStart(options.from);
    // Frames of a subscription still being undone would pass for this one's and move its
    // position past what it asked to replay.
    await this.unsubscribing.get(name)?.catch(() => {}); // its own caller hears of a failure
    const subscription = this.registry.addChannel(name, start, checkTypes(options.types));
    if (subscription === undefined) return;
    await this.ensure(
      (link) => link.channels.has(name),
      () => this.registry.isCurrent(subscription),
      (link) => this.restorer.channel(link, subscription),
      () => this.registry.dropChannel(name),
      name,
    );
  }

  async unsubscribe(sandboxId: string): Promise<void> {
    if (!this.registry.removeChannel(sandboxId)) return;
    const link = this.connection.currentLink();
    if (link === undefined || !link.channels.delete(sandboxId)) return;
    const undoing = link.confirm(['UNSUBSCRIBE', sandboxId], 'unsubscribe', 1).then(() => {}, ignoreLinkLoss);
    this.unsubscribing.set(sandboxId, undoing);
    try {
      await undoing;
    } finally {
      if (this.unsubscribing.get(sandboxId) === undoing) this.unsubscribing.delete(sandboxId);
    }
  }

  async psubscribe(pattern: string, options: PatternSubscribeOptions = {}): Promise<void> {
    checkName(pattern, 'pattern');
    const start = parsePatternStart(options.from);
    const subscription = this.registry.addPattern(pattern, start, checkTypes(options.types));
    if (subscription === undefined) return;
    await this.ensure(
      (link) => link.patterns.has(pattern),
      () => this.registry.isCurrentPattern(subscription),
      (link) => this.restorer.pattern(link, subscription, false),
      () => this.registry.removePattern(pattern),
      pattern,
    );
  }

  async punsubscribe(pattern: string): Promise<void> {
    if (!this.registry.removePattern(pattern)) return;
    const link = this.connection.currentLink();
    if (link === undefined || !link.patterns.delete(pattern)) return;
    await link.confirm(['PUNSUBSCRIBE', pattern], 'punsubscribe', 1).catch(ignoreLinkLoss);
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
      if (this.connection.stopped()) return; // applied by the next connect()
      if (this.connection.readyLink() === undefined) await this.connection.whenReady();
      if (!stillWanted()) {
        const reason = this.registry.droppedReason(name);
        if (reason !== undefined) throw reason;
        return; // unsubscribed meanwhile
      }
      const link = this.connection.readyLink();
      if (link === undefined) continue;
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
}

/** An UNSUBSCRIBE on a connection that dropped meanwhile: nothing left to undo. */
function ignoreLinkLoss(error: unknown): void {
  if (error instanceof EventsNetworkError) return;
  throw error;
}
