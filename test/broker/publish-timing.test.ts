import { describe, expect, it } from 'vitest';
import type { Principal } from '../../src/auth/principal.js';
import { Broker } from '../../src/broker/broker.js';
import { type PublishObserver, Publisher } from '../../src/broker/publisher.js';
import type { NewEvent } from '../../src/event/event.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import type { AppendReceipt, DurableEventListener, EventStore } from '../../src/store/types.js';

/**
 * The latency figures a metrics observer hears of (`batch`): one publish per batch is timed, and
 * the publisher keeps its readings, not the publication (docs/performance.md, "Eleventh round").
 */

/** A memory store whose appends wait until the test lets them go, or refuses them. */
class HeldStore {
  private readonly held: { input: NewEvent; receipt: AppendReceipt }[] = [];
  readonly inner = new MemoryStore({ retention: { maxCount: 100, maxAgeMs: 3_600_000 }, pruneIntervalMs: 0 });

  setListener(listener: DurableEventListener): void {
    this.inner.setListener(listener);
  }

  appendWith(input: NewEvent, receipt: AppendReceipt): void {
    this.held.push({ input, receipt });
  }

  /** Stores the held appends in order; the first `refuse` of them are refused instead. */
  release(refuse = 0): void {
    for (const [index, { input, receipt }] of this.held.splice(0).entries()) {
      if (index < refuse) receipt.refused(new Error('refused by the test'));
      else this.inner.appendWith(input, receipt);
    }
  }
}

const principal: Principal = { role: 'workspace', workspaceId: 1, expiresAt: Number.POSITIVE_INFINITY };
const ref = { workspaceId: 1, sandboxId: 'sb-1' };

function setUp(): {
  store: HeldStore;
  publisher: Publisher;
  batches: { events: number; storedSeconds: number; deliveredSeconds: number }[];
} {
  const store = new HeldStore();
  const publisher = new Publisher(store as unknown as EventStore, new Broker(), { perSecond: 1e9, burst: 1e9 });
  const batches: { events: number; storedSeconds: number; deliveredSeconds: number }[] = [];
  const observer: PublishObserver = {
    batch: (events, storedSeconds, deliveredSeconds) => batches.push({ events, storedSeconds, deliveredSeconds }),
  };
  publisher.observer = observer;
  return { store, publisher, batches };
}

/** One turn of the event loop: the batch is reported on the turn after its publishes settle. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('Publisher: the timed publish of a batch', () => {
  it('reports the time from publish to stored and to delivered, once for the whole batch', async () => {
    const { store, publisher, batches } = setUp();
    const outcomes = [1, 2, 3].map(() => publisher.publish(principal, ref, 'a', Buffer.from('{}')));
    await nextTurn(); // the appends wait: time passes between publish and store
    store.release();
    await Promise.all(outcomes);
    await nextTurn();
    expect(batches).toHaveLength(1);
    const [batch] = batches as [(typeof batches)[number]];
    expect(batch.events).toBe(3);
    expect(batch.storedSeconds).toBeGreaterThan(0);
    expect(batch.deliveredSeconds).toBeGreaterThanOrEqual(batch.storedSeconds);
  });

  it('times the next publish when the timed one is refused', async () => {
    const { store, publisher, batches } = setUp();
    const refused = publisher.publish(principal, ref, 'a', Buffer.from('{}'));
    await nextTurn();
    store.release(1);
    await expect(refused).rejects.toThrow('refused by the test');
    const stored = publisher.publish(principal, ref, 'a', Buffer.from('{}'));
    await nextTurn();
    store.release();
    await stored;
    await nextTurn();
    expect(batches).toHaveLength(1);
    expect(batches[0]!.events).toBe(1);
    expect(batches[0]!.storedSeconds).toBeGreaterThan(0);
  });
});
