import { type EventId, formatEventId, parseEventId } from '../event/event.js';
import { parseEvent } from '../event/parse-event.js';
import { EventsAuthError, EventsNetworkError, EventsPubSubError } from './errors.js';
import type { Link } from './link.js';
import type { RespValue } from './reply-reader.js';
import type { ChannelSubscription, PatternSubscription, SubscriptionRegistry } from './subscription-registry.js';
import type { GapInfo, GapReason } from './types.js';

/**
 * Sends the registry's subscriptions on a connection: every channel with `RESUME` from its
 * last id, every pattern with `PRESUME ... WITHCURSOR` from its cursor, and reads the broker's
 * answer to each resume (docs/protocol.md, "History and resume" and "Pattern resume";
 * docs/client.md, "Exact resume").
 */

export interface RestoreHooks {
  /** The broker cannot promise an exact replay (or a pattern came back live only). */
  gap(gap: GapInfo): void;
  /** After a reconnect, a channel the token may no longer reach was dropped; the others carry on. */
  dropped(error: EventsAuthError): void;
}

export class Restorer {
  constructor(
    private readonly registry: SubscriptionRegistry,
    private readonly hooks: RestoreHooks,
  ) {}

  /**
   * Subscribes everything the registry keeps on a fresh connection. `allConfirmed` runs
   * synchronously when the last confirmation arrives, before the frames that follow it: the
   * client is ready (and says `connect`) before it hands out replayed events, as an application
   * written for the ComputeSDK client expects. Channel subscriptions are sent corked, in one write.
   */
  async restoreAll(link: Link, reconnect: boolean, allConfirmed: () => void): Promise<void> {
    const plan = this.registry.restorePlan();
    let outstanding = plan.channels.length + plan.patterns.length;
    const confirmed = (): void => {
      outstanding -= 1;
      if (outstanding === 0) allConfirmed();
    };
    const work: Promise<void>[] = [];
    link.cork();
    try {
      for (const subscription of plan.patterns) work.push(this.pattern(link, subscription, reconnect, confirmed));
      for (const subscription of plan.channels) {
        work.push(
          this.channel(link, subscription, confirmed).catch((error: unknown) => {
            // After a reconnect, a channel the token may no longer reach is dropped and reported;
            // the others carry on. Anything else fails the attempt (and is retried).
            if (reconnect && error instanceof EventsAuthError && error.code === 'NO_PERMISSION') {
              this.registry.dropChannel(subscription.name, error);
              this.hooks.dropped(error);
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
  async channel(link: Link, subscription: ChannelSubscription, confirmed?: () => void): Promise<void> {
    const { name } = subscription;
    link.channels.add(name);
    let from = this.registry.resumePoint(subscription);
    let fromEmpty = false;
    if (from === undefined) {
      const reply = await link.command(['HISTORY', name, 'NEWEST', 'LIMIT', '1']);
      if (!Array.isArray(reply)) throw new EventsPubSubError('PROTOCOL_ERROR', 'HISTORY: expected an array reply');
      const newest = typeof reply[0] === 'string' ? parseEvent(reply[0]) : undefined;
      from = this.registry.settleNow(subscription, newest === undefined ? undefined : parseEventId(newest.id)!);
      if (from === undefined) {
        confirmed?.(); // unsubscribed meanwhile
        return;
      }
      fromEmpty = newest === undefined;
    }
    const requested = from;
    await link.confirm(['RESUME', name, formatEventId(requested), ...typeOptions(subscription.types)], 'resume', 1, {
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

  /**
   * PRESUME of one pattern from its cursor, with WITHCURSOR so that each of its `pmessage`
   * frames carries the event's cursor (docs/protocol.md, "Pattern resume"). A pattern with no
   * cursor yet subscribes from now (`$`) and takes the broker's newest cursor as its position,
   * so a connection that drops before the first event still resumes exactly. With no cursor
   * after a reconnect (the store keeps no order: the Redis engine) it comes back live only,
   * and says so with a `pattern` gap.
   */
  async pattern(
    link: Link,
    subscription: PatternSubscription,
    reconnect: boolean,
    confirmed?: () => void,
  ): Promise<void> {
    const { pattern } = subscription;
    link.patterns.add(pattern);
    const from = this.registry.lastCursor(pattern);
    const command = ['PRESUME', pattern, from ?? '$', 'WITHCURSOR', ...typeOptions(subscription.types)];
    try {
      await link.confirm(command, 'presume', 1, {
        onConfirmation: (push) => {
          this.onPresumeConfirmation(push, subscription, from, reconnect);
          confirmed?.();
        },
        onLateError: (error) =>
          link.destroy(
            new EventsPubSubError('REPLAY_FAILED', `resume of ${pattern} failed during the replay: ${error.message}`, {
              cause: error,
            }),
          ),
      });
    } catch (error) {
      if (!(error instanceof EventsNetworkError)) link.patterns.delete(pattern);
      throw error;
    }
  }

  /** `presume <pattern> <count> <status> null <newest cursor|null>` (docs/protocol.md, "Pattern resume"). */
  private onPresumeConfirmation(
    push: RespValue[],
    subscription: PatternSubscription,
    requested: string | undefined,
    reconnect: boolean,
  ): void {
    const [, , , status, , last] = push;
    const { pattern } = subscription;
    const lastId = typeof last === 'string' ? last : null;
    const gap = (reason: GapReason): void =>
      this.hooks.gap({
        reason,
        pattern,
        ...(requested === undefined ? {} : { requestedId: requested }),
        earliestId: null,
        lastId,
      });
    if (requested === undefined) {
      this.registry.settlePatternNow(subscription, lastId);
      if (reconnect) gap('pattern'); // nothing to resume from: what matched meanwhile is not replayed
      return;
    }
    if (status === 'complete') return;
    if (status === 'future') {
      // The broker's order is behind the cursor (a memory store that restarted): start over
      // from its newest cursor, or the next reconnect would ask for that future point again.
      this.registry.restartPatternAt(pattern, lastId);
    }
    gap(status === 'trimmed' || status === 'future' ? status : status === 'not_resumable' ? 'pattern' : 'unknown');
  }

  /** `resume <channel> <count> <status> <earliest|null> <last|null>` (docs/protocol.md, "History and resume"). */
  private onResumeConfirmation(push: RespValue[], requested: EventId, fromEmpty: boolean): void {
    const [, channel, , status, earliest, last] = push;
    if (typeof channel !== 'string' || status === 'complete') return;
    const earliestId = typeof earliest === 'string' ? earliest : null;
    const lastId = typeof last === 'string' ? last : null;
    if (status === 'future') {
      // The broker's stream is behind the client's cursor: its ids will restart below it, and
      // dropping them as duplicates would lose them. Start over from the broker's newest id.
      this.registry.restartAt(channel, lastId);
    }
    // Subscribing "from now" to a sandbox with nothing retained resumes from the zero id; a
    // `trimmed` answer then only says that older events were pruned, before this client came.
    if (status === 'trimmed' && fromEmpty) return;
    const reason: GapReason = status === 'trimmed' || status === 'future' ? status : 'unknown';
    this.hooks.gap({ reason, channel, requestedId: formatEventId(requested), earliestId, lastId });
  }
}

/** `TYPE <glob>` per type glob, the option RESUME and PRESUME take. */
function typeOptions(types: readonly string[]): string[] {
  return types.flatMap((glob) => ['TYPE', glob]);
}
