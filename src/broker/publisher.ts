import type { Principal } from '../auth/principal.js';
import type { NewEvent, StoredEvent } from '../event/event.js';
import type { AppendReceipt, EventStore, SandboxRef } from '../store/types.js';
import type { Broker } from './broker.js';
import { type RateLimit, RateLimiter } from './rate-limit.js';

/**
 * Metrics hooks, kept off the per-event path (docs/performance.md, "Metrics"): they are called
 * once per batch of publishes (those settled in one event-loop turn), not once per event.
 */
export interface PublishObserver {
  /**
   * `events` publishes settled; one publish of the batch was timed, from `publish()` to the store
   * reporting it durable and to its fan-out being queued, in seconds, and stands for all of them.
   */
  batch(events: number, storedSeconds: number, deliveredSeconds: number): void;
  /**
   * `events` consecutive events of one sandbox published, the last being `last`, reaching
   * `receivers` subscriptions in all (GET /sandboxes' figures).
   */
  published?(last: StoredEvent, events: number, receivers: number): void;
}

/**
 * One publish on its way through the store, made by whoever publishes, and told the outcome
 * itself: exactly once, after the event is durable and fanned out (`published`), or why it was
 * not stored (`failed`). The RESP connection's PUBLISH reply is one (PublishReply), so a PUBLISH
 * makes one object, not a reply and a request besides (docs/performance.md, "Ninth round: the
 * layers of a PUBLISH"); no promise is made per event (docs/performance.md, "The publish path").
 * It is the store's `append` input itself, so the listener, which gets that same object back,
 * records the fan-out on it: no per-event lookup (a WeakMap here cost ≈ 14 % of the publish
 * path's CPU, most of it in the garbage collector). It is also the store's receipt, so the
 * store's answer reaches the publisher without a closure.
 */
export abstract class Publication implements NewEvent, AppendReceipt {
  readonly workspaceId: number;
  readonly sandboxId: string;
  receivers = 0;
  /** The publisher it went through (Publisher.start). */
  publisher: Publisher | undefined = undefined;
  /** NewEvent's: set here, or by readPublishPayload into the publication (PUBLISH). */
  type: string;
  dataBytes: Buffer;
  dataStart: number;
  dataEnd: number;

  /** `data`'s UTF-8 is `dataBytes[dataStart, dataEnd)` (NewEvent). */
  constructor(ref: SandboxRef, type: string, dataBytes: Buffer, dataStart = 0, dataEnd = dataBytes.length) {
    this.workspaceId = ref.workspaceId;
    this.sandboxId = ref.sandboxId;
    this.type = type;
    this.dataBytes = dataBytes;
    this.dataStart = dataStart;
    this.dataEnd = dataEnd;
  }

  /** The event is durable and was delivered to `receivers` subscriptions. */
  abstract published(event: StoredEvent, receivers: number): void;
  /** The event was not stored. */
  abstract failed(error: unknown): void;

  /** @internal AppendReceipt */
  appended(event: StoredEvent): void {
    this.publisher!.settle(this, event);
    this.published(event, this.receivers);
  }

  /** @internal AppendReceipt */
  refused(error: unknown): void {
    this.publisher!.refuse(this);
    this.failed(error);
  }
}

/** `publish`'s promise, as a publication. */
class PromisedPublish extends Publication {
  constructor(
    ref: SandboxRef,
    type: string,
    data: Buffer,
    private readonly resolve: (result: PublishResult) => void,
    readonly failed: (error: unknown) => void,
  ) {
    super(ref, type, data);
  }

  published(event: StoredEvent, receivers: number): void {
    this.resolve({ event, receivers });
  }
}

/** Events published through this node and the deliveries they made, of one workspace. */
export interface WorkspaceTotals {
  published: number;
  delivered: number;
}

export interface PublishResult {
  event: StoredEvent;
  /** Subscriptions the event was delivered to (PUBLISH's integer reply). */
  receivers: number;
}

/**
 * The one publish path, shared by every transport: store the event, and deliver it only once
 * it is durable (docs/operations.md, "Durability": nobody may hold an id a restarted broker could reissue).
 */
export class Publisher {
  private readonly limiter: RateLimiter;
  published = 0;
  rateLimited = 0;
  /** Events published through this node and the deliveries they made, per workspace (INFO, docs/protocol.md). */
  readonly byWorkspace = new Map<number, WorkspaceTotals>();
  /** The workspace `lastTotals` are of (NaN: none yet). */
  private lastWorkspaceId = Number.NaN;
  private lastTotals: WorkspaceTotals | undefined = undefined;
  observer: PublishObserver | undefined;
  /** The last sandbox token held to the rate limit, and its bucket's key (admit). */
  private lastLimited: Principal | undefined = undefined;
  private lastLimitKey = '';
  /** Publishes waiting for the store, and who waits for there to be none (whenIdle). */
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];
  /** The batch the observer hears of next: publishes settled, and the run of one sandbox's events. */
  private batchEvents = 0;
  private timing = false;
  /**
   * The publish being timed (one per batch while a metrics observer is attached) and its
   * performance.now() readings: kept here, not on every publication, which would carry three
   * fields more for the one in a batch that is timed.
   */
  private timed: Publication | undefined = undefined;
  private timedStartedAt = 0;
  private timedStoredAt = 0;
  private timedDeliveredAt = 0;
  private storedSeconds = 0;
  private deliveredSeconds = 0;
  private runLast: StoredEvent | undefined;
  private runEvents = 0;
  private runReceivers = 0;

  constructor(
    private readonly store: EventStore,
    private readonly broker: Broker,
    rateLimit: RateLimit,
  ) {
    this.limiter = new RateLimiter(rateLimit);
    store.setListener((event, appended, alreadyDelivered) => {
      // Another node's event (Redis engine): nobody here waits for it.
      if (!(appended instanceof Publication)) return this.broker.fanOut(event);
      const timed = appended === this.timed;
      if (timed) this.timedStoredAt = performance.now();
      appended.receivers = alreadyDelivered ?? this.broker.fanOut(event);
      if (timed) this.timedDeliveredAt = performance.now();
      return appended.receivers;
    });
  }

  /** Applies a new publish rate limit to every sandbox token (a config reload). */
  setRateLimit(rateLimit: RateLimit): void {
    this.limiter.setLimit(rateLimit);
  }

  /** Resolves once no publish is waiting for the store (shutdown waits for them). */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** @internal one publish left the store (stored or refused). */
  publishDone(): void {
    this.inFlight -= 1;
    if (this.inFlight > 0 || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /**
   * `publisher` is whoever publishes: a sandbox token is held to the publish rate limit
   * (docs/protocol.md: 1,000/s, burst 2,000 by default), checked before anything is stored. Throws
   * RateLimitedError synchronously so a refused event never reaches the store.
   */
  publish(publisher: Principal, ref: SandboxRef, type: string, data: Buffer): Promise<PublishResult> {
    this.admit(publisher);
    return new Promise((resolve, reject) => this.start(new PromisedPublish(ref, type, data, resolve, reject)));
  }

  /**
   * `publish` without a promise: `publication` is told once the event is durable and fanned
   * out, before this returns when the store is durable at once (memory), with the other
   * events of its commit otherwise (SQLite). Throws RateLimitedError synchronously, as `publish`.
   */
  publishWith(publisher: Principal, publication: Publication): void {
    this.admit(publisher);
    this.start(publication);
  }

  private admit(publisher: Principal): void {
    if (publisher.role !== 'sandbox') return;
    // The bucket's key, made again only for another token than the last: a flat string whose
    // hash is kept, where a new one would be joined and hashed for every publish.
    if (publisher !== this.lastLimited) {
      this.lastLimited = publisher;
      this.lastLimitKey = `${publisher.workspaceId}:${publisher.sandboxId}`;
    }
    try {
      this.limiter.take(this.lastLimitKey);
    } catch (error) {
      this.rateLimited += 1;
      throw error;
    }
  }

  private start(publication: Publication): void {
    publication.publisher = this;
    // One publish at a time is timed, and it stands for its batch.
    if (this.observer !== undefined && !this.timing) {
      this.timing = true;
      this.timed = publication;
      this.timedStartedAt = performance.now();
      this.timedDeliveredAt = 0;
    }
    this.inFlight += 1;
    const store = this.store;
    if (store.appendWith !== undefined) store.appendWith(publication, publication);
    // A store with promises only (the Redis engine).
    else store.append(publication).then(publication.appended.bind(publication), publication.refused.bind(publication));
  }

  /** @internal the store refused the publish. */
  refuse(request: Publication): void {
    this.publishDone();
    if (request === this.timed) {
      this.timed = undefined;
      this.timing = false; // the next publish is timed instead
    }
  }

  /** @internal the store has the event durable and the listener fanned it out. */
  settle(request: Publication, event: StoredEvent): void {
    this.publishDone();
    this.published += 1;
    // INFO's per-tenant figures (docs/protocol.md, "INFO per tenant"): the last workspace's
    // totals again, or one map lookup.
    const totals = this.totalsOf(event.workspaceId);
    totals.published += 1;
    totals.delivered += request.receivers;
    if (this.observer === undefined) return;
    if (request === this.timed) {
      this.timed = undefined;
      if (this.timedDeliveredAt !== 0) {
        this.storedSeconds = (this.timedStoredAt - this.timedStartedAt) / 1000;
        this.deliveredSeconds = (this.timedDeliveredAt - this.timedStartedAt) / 1000;
      }
    }
    if (this.batchEvents === 0) setImmediate(this.reportBatch);
    this.batchEvents += 1;
    const run = this.runLast;
    if (run !== undefined && run.sandboxId === event.sandboxId && run.workspaceId === event.workspaceId) {
      this.runEvents += 1;
      this.runReceivers += request.receivers;
    } else {
      this.reportRun();
      this.runEvents = 1;
      this.runReceivers = request.receivers;
    }
    this.runLast = event;
  }

  /** The totals of `workspaceId` in `byWorkspace`: events come in runs of one workspace. */
  private totalsOf(workspaceId: number): WorkspaceTotals {
    if (workspaceId === this.lastWorkspaceId) return this.lastTotals!;
    let totals = this.byWorkspace.get(workspaceId);
    if (totals === undefined) {
      totals = { published: 0, delivered: 0 };
      this.byWorkspace.set(workspaceId, totals);
    }
    this.lastWorkspaceId = workspaceId;
    this.lastTotals = totals;
    return totals;
  }

  private reportRun(): void {
    if (this.runLast !== undefined) this.observer?.published?.(this.runLast, this.runEvents, this.runReceivers);
    this.runLast = undefined;
  }

  /** Once per turn with settled publishes: the observer hears of the whole batch. */
  private readonly reportBatch = (): void => {
    this.reportRun();
    this.observer?.batch(this.batchEvents, this.storedSeconds, this.deliveredSeconds);
    this.batchEvents = 0;
    this.timing = false;
  };
}
