import type { Principal } from '../auth/principal.js';
import type { Broker } from '../broker/broker.js';
import { channelKey, visibleName } from '../broker/scope.js';
import { formatEventId, type StoredEvent } from '../event/event.js';

/**
 * What each sandbox has been doing lately, for `GET /sandboxes` and the per-workspace figures
 * of `/metrics/stream` (docs/http.md, docs/console.md). Counted from the events this node
 * published; a sandbox that has been quiet for `IDLE_MS` and has no subscriber is forgotten,
 * so the table holds the active sandboxes only.
 */

/** Event rates are averaged over this many one-second buckets. */
const RATE_WINDOW_SECONDS = 10;
const IDLE_MS = 10 * 60_000;
/** A bound on memory whatever the number of sandboxes: the least recently active go first. */
const MAX_TRACKED_SANDBOXES = 10_000;

interface SandboxFigures {
  workspaceId: number;
  sandboxId: string;
  events: number;
  last: StoredEvent;
  /** Events per second of the last RATE_WINDOW_SECONDS, by `second % RATE_WINDOW_SECONDS`. */
  buckets: number[];
  bucketSeconds: number[];
}

interface WorkspaceFigures {
  published: number;
  delivered: number;
}

export interface SandboxSummary {
  /** The name this credential uses for it (`{7}sb-1` for another workspace's, as an admin). */
  sandboxId: string;
  workspaceId: number;
  subscribers: number;
  events_per_second: number;
  events: number;
  last_event: { id: string; type: string; timestamp: number } | null;
}

export interface WorkspaceSummary {
  workspaceId: number;
  published: number;
  delivered: number;
  published_per_second: number;
  active_sandboxes: number;
  subscribers: number;
}

export class SandboxActivity {
  private readonly sandboxes = new Map<string, SandboxFigures>();
  private readonly workspaces = new Map<number, WorkspaceFigures>();

  constructor(
    private readonly broker: Broker,
    private readonly now: () => number = Date.now,
  ) {}

  /** `events` events of one sandbox published, the last being `event`, delivered to `receivers` subscriptions in all. */
  record(event: StoredEvent, receivers: number, events = 1): void {
    const key = channelKey(event.workspaceId, event.sandboxId);
    const second = Math.floor(this.now() / 1000);
    let figures = this.sandboxes.get(key);
    if (figures === undefined) {
      figures = {
        workspaceId: event.workspaceId,
        sandboxId: event.sandboxId,
        events: 0,
        last: event,
        buckets: new Array<number>(RATE_WINDOW_SECONDS).fill(0),
        bucketSeconds: new Array<number>(RATE_WINDOW_SECONDS).fill(0),
      };
      if (this.sandboxes.size >= MAX_TRACKED_SANDBOXES) this.forgetOldest();
    } else {
      // Re-inserted: the Map's order is then the order of last activity.
      this.sandboxes.delete(key);
    }
    this.sandboxes.set(key, figures);
    figures.events += events;
    figures.last = event;
    const slot = second % RATE_WINDOW_SECONDS;
    if (figures.bucketSeconds[slot] !== second) {
      figures.bucketSeconds[slot] = second;
      figures.buckets[slot] = 0;
    }
    figures.buckets[slot]! += events;
    let workspace = this.workspaces.get(event.workspaceId);
    if (workspace === undefined) {
      workspace = { published: 0, delivered: 0 };
      this.workspaces.set(event.workspaceId, workspace);
    }
    workspace.published += events;
    workspace.delivered += receivers;
  }

  /** The sandboxes this principal may see that are active: recent events or subscribers. */
  visibleSandboxes(principal: Principal): SandboxSummary[] {
    this.forgetIdle();
    const rows = new Map<string, SandboxSummary>();
    for (const figures of this.sandboxes.values()) {
      const name = visibleName(principal, figures);
      if (name === undefined) continue;
      rows.set(name, this.summary(name, figures));
    }
    // Watched but quiet sandboxes are active too (PUBSUB CHANNELS' view of the broker).
    for (const name of this.broker.visibleChannels(principal)) {
      if (rows.has(name)) continue;
      const key = name.startsWith('{') ? name : channelKey(principal.workspaceId, name);
      const workspaceId = name.startsWith('{') ? Number(name.slice(1, name.indexOf('}'))) : principal.workspaceId;
      rows.set(name, {
        sandboxId: name,
        workspaceId,
        subscribers: this.broker.subscriberCount(key),
        events_per_second: 0,
        events: 0,
        last_event: null,
      });
    }
    return [...rows.values()].sort((a, b) => (b.last_event?.timestamp ?? 0) - (a.last_event?.timestamp ?? 0));
  }

  /** Per-workspace figures, limited to what the principal may see (a sandbox token: its sandbox). */
  visibleWorkspaces(principal: Principal): WorkspaceSummary[] {
    const sandboxes = this.visibleSandboxes(principal);
    const byWorkspace = new Map<number, WorkspaceSummary>();
    for (const row of sandboxes) {
      let summary = byWorkspace.get(row.workspaceId);
      if (summary === undefined) {
        summary = this.emptySummary(principal, row.workspaceId);
        byWorkspace.set(row.workspaceId, summary);
      }
      summary.active_sandboxes += 1;
      summary.subscribers += row.subscribers;
      summary.published_per_second = round2(summary.published_per_second + row.events_per_second);
      // A sandbox token sees its own sandbox's count, not its workspace's.
      if (principal.role === 'sandbox') summary.published += row.events;
    }
    if (principal.role !== 'admin' && !byWorkspace.has(principal.workspaceId)) {
      byWorkspace.set(principal.workspaceId, this.emptySummary(principal, principal.workspaceId));
    }
    return [...byWorkspace.values()].sort((a, b) => a.workspaceId - b.workspaceId);
  }

  /** A workspace's totals before its sandboxes are added (a sandbox token's start at zero). */
  private emptySummary(principal: Principal, workspaceId: number): WorkspaceSummary {
    const totals = principal.role === 'sandbox' ? undefined : this.workspaces.get(workspaceId);
    return {
      workspaceId,
      published: totals?.published ?? 0,
      delivered: totals?.delivered ?? 0,
      published_per_second: 0,
      active_sandboxes: 0,
      subscribers: 0,
    };
  }

  private summary(name: string, figures: SandboxFigures): SandboxSummary {
    const second = Math.floor(this.now() / 1000);
    let recent = 0;
    for (let slot = 0; slot < RATE_WINDOW_SECONDS; slot++) {
      const age = second - figures.bucketSeconds[slot]!;
      if (age >= 0 && age < RATE_WINDOW_SECONDS) recent += figures.buckets[slot]!;
    }
    return {
      sandboxId: name,
      workspaceId: figures.workspaceId,
      subscribers: this.broker.subscriberCount(channelKey(figures.workspaceId, figures.sandboxId)),
      events_per_second: round2(recent / RATE_WINDOW_SECONDS),
      events: figures.events,
      last_event: { id: formatEventId(figures.last.id), type: figures.last.type, timestamp: figures.last.timestamp },
    };
  }

  private forgetIdle(): void {
    const cutoff = this.now() - IDLE_MS;
    for (const [key, figures] of this.sandboxes) {
      // Oldest activity first: stop at the first recent one.
      if (figures.last.timestamp >= cutoff) break;
      this.sandboxes.delete(key);
    }
  }

  private forgetOldest(): void {
    const oldest = this.sandboxes.keys().next();
    if (!oldest.done) this.sandboxes.delete(oldest.value);
  }
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}
