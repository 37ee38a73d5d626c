/**
 * Who needs workspace channels, in Redis Cluster (docs/scaling.md, "Redis Cluster", "Patterns").
 * A plain PUBLISH there goes to every node of the cluster over its bus, so an event is
 * published on its workspace's channel only while some broker node holds a pattern in that
 * workspace (or one over every workspace). Nodes register what they hold in one sorted set
 * (member: `ws:<id>` or `all`, score: when the registration lapses) and refresh it; every node
 * reads the set on the same period and passes the channel to the append script only for
 * workspaces found there (the script may not read a key of another slot).
 *
 * A node learns of another's new pattern up to one period late, so a new registration is
 * followed, once every node must have read it, by a gap-fill of the pattern's sandboxes from the
 * streams (`onSettled`): events published meanwhile without the channel reach the pattern too.
 */
import type { Cluster } from 'ioredis';

export const INTEREST_KEY = 'se:{patterns}:interest';
/** How often a node refreshes its registrations and reads everyone's. */
export const INTEREST_PERIOD_MS = 1_000;
/** A registration lapses this long after its last refresh (a node that died stops holding). */
const INTEREST_TTL_MS = 5_000;

type Scope = number | 'all';

function member(scope: Scope): string {
  return scope === 'all' ? 'all' : `ws:${scope}`;
}

export class PatternInterest {
  /** Scopes local clients hold patterns in, and when each was first registered (node clock). */
  private readonly held = new Map<string, number>();
  /** Members registered by any node, as last read. */
  private known = new Set<string>();
  private readonly timer: NodeJS.Timeout;
  private readonly settleTimers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly commands: Cluster,
    private readonly onSettled: (scope: Scope, since: number) => void,
    private readonly onStatus: (status: string, error?: unknown) => void,
  ) {
    this.timer = setInterval(() => void this.refresh(), INTEREST_PERIOD_MS);
    this.timer.unref();
  }

  /** Whether an event of `workspaceId` must go on its workspace channel. */
  wanted(workspaceId: number): boolean {
    return this.known.has('all') || this.known.has(member(workspaceId)) || this.held.has(member(workspaceId));
  }

  hold(scope: Scope, interested: boolean): void {
    const name = member(scope);
    if (!interested) {
      this.held.delete(name);
      return;
    }
    if (this.held.has(name)) return;
    const since = Date.now();
    this.held.set(name, since);
    this.known.add(name);
    void this.refresh();
    // Every node has read the registration after two of its periods (plus a slack for its timer).
    const timer = setTimeout(
      () => {
        this.settleTimers.delete(timer);
        if (this.held.has(name)) this.onSettled(scope, since);
      },
      2 * INTEREST_PERIOD_MS + 500,
    );
    timer.unref();
    this.settleTimers.add(timer);
  }

  private async refresh(): Promise<void> {
    const now = Date.now();
    try {
      const pipeline = this.commands.pipeline();
      for (const name of this.held.keys()) pipeline.zadd(INTEREST_KEY, String(now + INTEREST_TTL_MS), name);
      pipeline.zremrangebyscore(INTEREST_KEY, '-inf', String(now));
      pipeline.pexpire(INTEREST_KEY, INTEREST_TTL_MS * 2);
      pipeline.zrangebyscore(INTEREST_KEY, String(now), '+inf');
      const results = (await pipeline.exec()) ?? [];
      const [error, members] = results[results.length - 1] ?? [new Error('no reply')];
      if (error) throw error;
      this.known = new Set(members as string[]);
    } catch (error) {
      // Unknown meanwhile: keep what was known (a lapsed interest costs broadcasts, not events).
      this.onStatus('pattern interest refresh failed', error);
    }
  }

  close(): void {
    clearInterval(this.timer);
    for (const timer of this.settleTimers) clearTimeout(timer);
    this.settleTimers.clear();
  }
}
