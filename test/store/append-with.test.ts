import { afterEach, describe, expect, it } from 'vitest';
import type { NewEvent, StoredEvent } from '../../src/event/event.js';
import type { AppendReceipt } from '../../src/store/types.js';
import { Clock, memoryFactory, type StoreFactory, sqliteFactory } from './helpers.js';
import { eventData } from '../support/event-data.js';

/** Records what a store told it, and in which order relative to the listener. */
class RecordingReceipt implements AppendReceipt {
  answers: string[] = [];
  constructor(private readonly log: string[]) {}
  appended(event: StoredEvent): void {
    this.log.push(`receipt ${event.json}`);
    this.answers.push('appended');
  }
  refused(error: unknown): void {
    this.log.push(`refused ${(error as { code?: string }).code}`);
    this.answers.push('refused');
  }
}

const input = (n: number): NewEvent => ({
  workspaceId: 1,
  sandboxId: 'sb',
  type: 't',
  ...eventData(`{"n":${n}}`),
});

describe.each([memoryFactory, sqliteFactory])('appendWith (%o)', (makeFactory: () => StoreFactory) => {
  let factory: StoreFactory;
  afterEach(async () => factory.cleanup());

  it('answers each receipt once, after the listener saw the event, with the event append would give', async () => {
    factory = makeFactory();
    const clock = new Clock();
    const store = await factory.create({ retention: { maxCount: 100, maxAgeMs: 86_400_000 }, now: clock.now });
    const log: string[] = [];
    store.setListener((event) => {
      log.push(`listener ${event.json}`);
    });
    const receipts = [0, 1, 2].map(() => new RecordingReceipt(log));
    for (const [n, receipt] of receipts.entries()) store.appendWith!(input(n), receipt);
    // The memory store is durable at once; SQLite answers when its commit is done.
    if (factory.kind === 'memory') expect(log).toHaveLength(6);
    else expect(log).toHaveLength(0);
    const viaPromise = await store.append(input(3));
    expect(receipts.map((r) => r.answers)).toEqual([['appended'], ['appended'], ['appended']]);
    const lines = log.filter((line) => line.startsWith('listener')).map((line) => line.slice('listener '.length));
    expect(lines).toHaveLength(4);
    expect(lines[3]).toBe(viaPromise.json);
    // Each receipt comes after its own event reached the listener.
    for (let n = 0; n < 3; n++) {
      expect(log.indexOf(`receipt ${lines[n]}`)).toBeGreaterThan(log.indexOf(`listener ${lines[n]}`));
    }
  });

  it('refuses through the receipt once the store is closed', async () => {
    factory = makeFactory();
    const store = await factory.create({ retention: { maxCount: 100, maxAgeMs: 86_400_000 }, now: new Clock().now });
    await store.close();
    const log: string[] = [];
    const receipt = new RecordingReceipt(log);
    store.appendWith!(input(0), receipt);
    expect(log).toEqual(['refused STORE_CLOSED']);
  });
});
