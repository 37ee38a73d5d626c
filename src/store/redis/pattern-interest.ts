/**
 * Who needs workspace channels, in Redis Cluster (docs/scaling.md, "Redis Cluster", "Patterns
 * without broadcast"). A plain PUBLISH there goes to every node of the cluster over its bus, so
 * an event is published on its workspace's channel only while some broker node holds a pattern in
 * that workspace (or one over every workspace). The registry lives under one hash tag (one slot):
 *
 * - `se:{patterns}:interest`: sorted set, member `ws:<id>` or `all`, score when it lapses;
 * - `se:{patterns}:version`: bumped by every new registration;
 * - `se:{patterns}:alive`: sorted set, member a node id, score when the node counts as gone;
 * - `se:{patterns}:seen`: sorted set, member a node id, score the version it has applied.
 *
 * Every node reads the registry each period and passes the channel to the append script only for
 * the workspaces found there (the script may not read a key of another slot). A node that
 * registers a new pattern cannot know when the others start publishing on the channel, so it waits
 * until every live node has applied its version (reported only once that node's appends sent
 * before it read the registry have been answered), then fills the pattern's sandboxes from the
 * streams (`onSettled`): the events published without the channel meanwhile reach it too.
 *
 * "Every live node" is every node whose liveness has not lapsed. A node the others do not count
 * (one that has not read the registry yet, at its start, or whose refreshes have failed for about
 * as long as a liveness lasts) cannot be waited for, so it must not leave the channel out: until
 * it has read the registry, and again once that read is close to lapsing, it publishes every event
 * on its workspace channel (a cost in broadcasts, never a missed event).
 */
import type { Cluster } from 'ioredis';

const PREFIX = 'se:{patterns}:';
export const INTEREST_KEY = `${PREFIX}interest`;
const VERSION_KEY = `${PREFIX}version`;
const ALIVE_KEY = `${PREFIX}alive`;
const SEEN_KEY = `${PREFIX}seen`;
/** How often a node refreshes its registrations and reads everyone's. */
export const INTEREST_PERIOD_MS = 1_000;
/** A registration, or a node's liveness, lapses this long after its last refresh. */
const INTEREST_TTL_MS = 5_000;

type Scope = number | 'all';

function member(scope: Scope): string {
  return scope === 'all' ? 'all' : `ws:${scope}`;
}

interface Pending {
  scope: Scope;
  name: string;
  /** The registry version of the registration (known once its MULTI answered). */
  version: number | undefined;
  /** When it was registered (node clock, ms): the fill starts there. */
  since: number;
}

export class PatternInterest {
  /** Scopes local clients hold patterns in. */
  private readonly held = new Set<string>();
  /** Members registered by any node, as last applied. */
  private known = new Set<string>();
  /** New registrations waiting for every live node to apply them. */
  private readonly pending: Pending[] = [];
  private readonly timer: NodeJS.Timeout;
  private refreshing = false;
  private closed = false;
  /** True from a failed refresh to the next one that succeeds: a failure is logged once, not every period. */
  private failing = false;
  /**
   * Until when (this node's clock) `known` may be trusted: a period before this node's liveness,
   * written by the same refresh, lapses for the others (the period covers appends still in
   * flight and clocks that differ by less than that). 0: the registry was never read.
   */
  private trustedUntil = 0;

  /**
   * `drain` resolves once the appends in flight when it is called have been answered (so they
   * were written with what this node knew before).
   */
  constructor(
    private readonly commands: Cluster,
    private readonly nodeId: string,
    private readonly drain: () => Promise<void>,
    private readonly onSettled: (scope: Scope, since: number) => void,
    private readonly onStatus: (status: string, error?: unknown) => void,
  ) {
    this.timer = setInterval(() => void this.refresh(), INTEREST_PERIOD_MS);
    this.timer.unref();
  }

  /**
   * Reads the registry now, not at the next period: called when the cluster client becomes ready,
   * since until its first read this node publishes every event on its workspace channel.
   */
  readNow(): void {
    void this.refresh();
  }

  /** Whether an event of `workspaceId` must go on its workspace channel. */
  wanted(workspaceId: number): boolean {
    if (Date.now() >= this.trustedUntil) return true;
    const name = member(workspaceId);
    return this.known.has('all') || this.known.has(name) || this.held.has(name) || this.held.has('all');
  }

  hold(scope: Scope, interested: boolean): void {
    const name = member(scope);
    if (!interested) {
      this.held.delete(name);
      return;
    }
    if (this.held.has(name)) return;
    this.held.add(name);
    const pending: Pending = { scope, name, version: undefined, since: Date.now() };
    this.pending.push(pending);
    this.register(pending);
  }

  private register(pending: Pending): void {
    const expires = String(Date.now() + INTEREST_TTL_MS);
    this.commands
      .multi()
      .zadd(INTEREST_KEY, expires, pending.name)
      .incr(VERSION_KEY)
      .exec()
      .then(
        (results) => {
          const [error, version] = results?.[1] ?? [new Error('no reply')];
          if (error) throw error;
          pending.version = Number(version);
          void this.refresh();
        },
        (error: unknown) => {
          throw error;
        },
      )
      .catch((error: unknown) => {
        // Registered again on the next period (its version stays unknown until then).
        this.onStatus('pattern registration failed, retrying', error);
        if (!this.closed)
          setTimeout(() => this.held.has(pending.name) && this.register(pending), INTEREST_PERIOD_MS).unref();
      });
  }

  private async refresh(): Promise<void> {
    if (this.refreshing || this.closed) return;
    this.refreshing = true;
    try {
      const now = Date.now();
      const multi = this.commands.multi();
      for (const name of this.held) multi.zadd(INTEREST_KEY, String(now + INTEREST_TTL_MS), name);
      multi
        .zremrangebyscore(INTEREST_KEY, '-inf', String(now))
        .zadd(ALIVE_KEY, String(now + INTEREST_TTL_MS), this.nodeId)
        .zremrangebyscore(ALIVE_KEY, '-inf', String(now))
        // The version first, then the set: a registration between them is seen, its version not yet.
        .get(VERSION_KEY)
        .zrangebyscore(INTEREST_KEY, String(now), '+inf')
        .zrange(ALIVE_KEY, 0, -1)
        .zrange(SEEN_KEY, 0, -1, 'WITHSCORES')
        .pexpire(INTEREST_KEY, INTEREST_TTL_MS * 4)
        .pexpire(ALIVE_KEY, INTEREST_TTL_MS * 4)
        .pexpire(SEEN_KEY, INTEREST_TTL_MS * 4)
        .pexpire(VERSION_KEY, INTEREST_TTL_MS * 100);
      const results = (await multi.exec()) ?? [];
      const values = results.map(([error, value]) => {
        if (error) throw error;
        return value;
      });
      const base = this.held.size + 3; // after the ZADDs of held scopes and three upkeep commands
      const version = Number(values[base] ?? 0);
      this.known = new Set(values[base + 1] as string[]);
      this.trustedUntil = now + INTEREST_TTL_MS - INTEREST_PERIOD_MS;
      const alive = values[base + 2] as string[];
      const seenFlat = values[base + 3] as string[];
      // Appends sent before `known` changed are answered before this node says it applied it.
      await this.drain();
      await this.commands.zadd(SEEN_KEY, String(version), this.nodeId);
      const seen = new Map<string, number>();
      for (let i = 0; i + 1 < seenFlat.length; i += 2) seen.set(seenFlat[i]!, Number(seenFlat[i + 1]));
      seen.set(this.nodeId, version);
      this.settle(alive, seen);
      if (this.failing) {
        this.failing = false;
        this.onStatus('pattern interest refresh succeeded again');
      }
    } catch (error) {
      // Unknown meanwhile: keep what was known (a lapsed interest costs broadcasts, not events).
      // Logged when it starts failing, not once a period: while the cluster client is not ready
      // (at start, in a failover) every period fails the same way.
      if (!this.failing) {
        this.failing = true;
        this.onStatus('pattern interest refresh failed (retried every period; logged again when it succeeds)', error);
      }
    } finally {
      this.refreshing = false;
    }
  }

  /** Fills the registrations every live node has applied. */
  private settle(alive: string[], seen: Map<string, number>): void {
    for (let i = this.pending.length - 1; i >= 0; i--) {
      const pending = this.pending[i]!;
      if (pending.version === undefined) continue;
      const everyone = alive.every((node) => (seen.get(node) ?? 0) >= pending.version!);
      if (!everyone) continue;
      this.pending.splice(i, 1);
      if (this.held.has(pending.name)) this.onSettled(pending.scope, pending.since);
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
  }
}
