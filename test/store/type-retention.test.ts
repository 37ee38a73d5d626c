/**
 * Per-type retention (`--retention` rules, docs/operations.md, "Per-type retention") on both
 * embedded stores: each class of types is pruned on its own, so high-rate types never evict the
 * others; and a replay is judged by the types its reader takes (docs/protocol.md, "History and
 * resume"): pruned events of other types do not make it `trimmed`, pruned ones of its types do.
 * The Redis engine refuses rules at start (test/e2e/type-retention.test.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import type { StoredEvent } from '../../src/event/event.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import { parseRetentionRules } from '../../src/store/semantics.js';
import type { ReaderTypes, RetentionPolicy } from '../../src/store/types.js';
import {
  Clock,
  ids,
  memoryFactory,
  newEvent,
  sqliteFactory,
  type StoreFactory,
  type TestStore,
  tempDir,
} from './helpers.js';

const DAY = 24 * 3600 * 1000;
/** The done-when of the brief: 20 events per sandbox, but metrics kept to 5 on their own. */
const METRICS_5: RetentionPolicy = {
  maxCount: 20,
  maxAgeMs: DAY,
  rules: [{ glob: 'sandbox.metrics', maxCount: 5 }],
};
const ref = { workspaceId: 1, sandboxId: 'sb-1' };
const only = (...types: string[]): ReaderTypes => ({ matches: (type) => types.includes(type) });

describe.each([
  ['memory', memoryFactory],
  ['sqlite', () => sqliteFactory()],
])('per-type retention, %s store', (_kind, makeFactory: () => StoreFactory) => {
  let factory: StoreFactory;
  let clock: Clock;
  beforeEach(() => {
    factory = makeFactory();
    clock = new Clock();
  });
  afterEach(() => factory.cleanup());

  const open = (retention: RetentionPolicy): Promise<TestStore> => factory.create({ retention, now: clock.now });

  async function fill(store: TestStore, types: string[], sandboxId = 'sb-1'): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    for (const [i, type] of types.entries()) {
      out.push(await store.append(newEvent(sandboxId, type, { i })));
      clock.advance(1);
    }
    return out;
  }

  it('keeps metrics to their own count without evicting the lifecycle event', async () => {
    const store = await open(METRICS_5);
    const [completed, ...metrics] = await fill(store, ['execution.completed', ...Array(60).fill('sandbox.metrics')]);
    await store.prune();
    expect(ids(await store.history({ ...ref, type: 'execution.completed', limit: 100 }))).toEqual(ids([completed!]));
    expect(ids(await store.history({ ...ref, type: 'sandbox.metrics', limit: 100 }))).toEqual(ids(metrics.slice(-5)));
    // Every type, merged in id order; LIMIT and NEWEST over the merge.
    expect(ids(await store.history({ ...ref, limit: 100 }))).toEqual(ids([completed!, ...metrics.slice(-5)]));
    expect(ids(await store.history({ ...ref, limit: 2 }))).toEqual(ids([completed!, metrics[55]!]));
    expect(ids(await store.history({ ...ref, limit: 2, newest: true }))).toEqual(ids(metrics.slice(-2)));
    expect(await store.listSandboxes!(1)).toEqual([{ ...ref, lastId: metrics[59]!.id }]);
  });

  it('pages a history whose events alternate between classes, with holes where one class was pruned meanwhile', async () => {
    const store = await open(METRICS_5);
    // a, m, a, m, ...: every page reads across both classes in turn.
    const all = await fill(
      store,
      Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? 'execution.step' : 'sandbox.metrics')),
    );
    const pages = await store.historyPages!({ ...ref, limit: 100 });
    expect(pages.count).toBe(10);
    // Two more metrics: the two oldest metrics go, in the middle of the counted reply.
    await fill(store, ['sandbox.metrics', 'sandbox.metrics']);
    await store.prune();
    const got: (StoredEvent | undefined)[] = [];
    for await (const page of pages.pages()) got.push(...page);
    expect(got).toEqual(all.map((event, i) => (i === 1 || i === 3 ? undefined : event)));
  });

  it('gives each rule its class (the first match wins) and the rest the policy count', async () => {
    const store = await open({
      maxCount: 2,
      maxAgeMs: DAY,
      rules: parseRetentionRules('terminal.stdout=1,terminal.*=3'),
    });
    const events = await fill(store, [
      'terminal.stdout',
      'terminal.stderr',
      'process.exited',
      'terminal.stdout',
      'terminal.stderr',
      'terminal.stdin',
      'process.exited',
      'terminal.stderr',
      'execution.completed',
      'terminal.stdout',
    ]);
    await store.prune();
    const kept = (await store.history({ ...ref, limit: 100 })).map((event) => event.type);
    expect(kept).toEqual([
      'terminal.stderr', // terminal.*: the newest 3 of stderr, stdin, stderr, stderr, stderr
      'terminal.stdin',
      'process.exited', // other types: the newest 2
      'terminal.stderr',
      'execution.completed',
      'terminal.stdout', // terminal.stdout: the newest 1
    ]);
    expect(ids(await store.history({ ...ref, limit: 100 }))).toEqual(ids([4, 5, 6, 7, 8, 9].map((i) => events[i]!)));
  });

  it('tells a resume `trimmed` only when a type its reader takes lost events after its id', async () => {
    const store = await open(METRICS_5);
    const [completed, ...metrics] = await fill(store, ['execution.completed', ...Array(60).fill('sandbox.metrics')]);
    await store.prune();
    const held = metrics.slice(-5);
    // Every type: metrics after the id were pruned.
    const all = await store.replayAfter(ref, completed!.id, 100);
    expect(all).toMatchObject({ complete: false, gap: 'trimmed' });
    expect(ids(all.events)).toEqual(ids(held));
    // Only execution.completed: nothing of it was pruned, so the replay is exact (and it still
    // carries what is held: the session filters it).
    const lifecycle = await store.replayAfter(ref, completed!.id, 100, only('execution.completed'));
    expect(lifecycle).toMatchObject({ complete: true });
    expect(ids(lifecycle.events)).toEqual(ids(held));
    // The id of a pruned metric: not `unknown` (it was issued), and exact for a lifecycle reader.
    expect(await store.replayAfter(ref, metrics[10]!.id, 100, only('execution.completed'))).toMatchObject({
      complete: true,
    });
    expect(await store.replayAfter(ref, metrics[10]!.id, 100)).toMatchObject({ complete: false, gap: 'trimmed' });
    expect(await store.replayAfter(ref, metrics[10]!.id, 100, only('sandbox.metrics'))).toMatchObject({
      complete: false,
      gap: 'trimmed',
    });
    // From the newest pruned metric on, every reader's replay is exact.
    expect(await store.replayAfter(ref, metrics[54]!.id, 100)).toMatchObject({ complete: true });
    expect(await store.replayAfter(ref, held[0]!.id, 100)).toMatchObject({ complete: true });
  });

  it('tells a lifecycle reader `trimmed` once its own class is pruned past its id', async () => {
    const store = await open({ ...METRICS_5, maxCount: 2 });
    const events = await fill(store, [
      'execution.started',
      'sandbox.metrics',
      'execution.progress',
      'execution.completed',
    ]);
    await store.prune();
    expect((await store.history({ ...ref, limit: 100 })).map((event) => event.type)).toEqual([
      'sandbox.metrics',
      'execution.progress',
      'execution.completed',
    ]);
    const lifecycle = only('execution.started', 'execution.progress', 'execution.completed');
    // Before execution.started (pruned): trimmed; from it on: exact.
    expect(await store.replayAfter(ref, { ms: 0, seq: 0 }, 100, lifecycle)).toMatchObject({ gap: 'trimmed' });
    expect(await store.replayAfter(ref, events[0]!.id, 100, lifecycle)).toMatchObject({ complete: true });
    // A metrics reader lost nothing, even from the beginning.
    expect(await store.replayAfter(ref, { ms: 0, seq: 0 }, 100, only('sandbox.metrics'))).toMatchObject({
      complete: true,
    });
  });

  it('judges a pattern resume (workspace order) by the types its reader takes', async () => {
    const store = await open(METRICS_5);
    await fill(store, ['execution.completed'], 'sb-a');
    await fill(store, Array(10).fill('sandbox.metrics'), 'sb-b');
    await store.prune();
    const all = await store.replayWorkspaceAfter!(1, 0, 100);
    expect(all).toMatchObject({ complete: false, gap: 'trimmed' });
    expect(all.events.map((event) => event.sandboxId)).toEqual(['sb-a', ...Array(5).fill('sb-b')]);
    expect(await store.replayWorkspaceAfter!(1, 0, 100, only('execution.completed'))).toMatchObject({
      complete: true,
    });
    expect(await store.replayWorkspaceAfter!('all', 0, 100, only('execution.completed'))).toMatchObject({
      complete: true,
    });
    expect(await store.replayWorkspaceAfter!('all', 0, 100)).toMatchObject({ gap: 'trimmed' });
  });

  it('keeps each class within the age limit too', async () => {
    const store = await open({ ...METRICS_5, maxAgeMs: 1_000 });
    await fill(store, ['execution.completed', 'sandbox.metrics']);
    clock.advance(2_000);
    const fresh = await fill(store, ['sandbox.metrics']);
    await store.prune();
    expect(ids(await store.history({ ...ref, limit: 100 }))).toEqual(ids(fresh));
    expect(await store.replayAfter(ref, { ms: 0, seq: 0 }, 100, only('execution.completed'))).toMatchObject({
      gap: 'trimmed',
    });
  });

  it('keeps at most 64 per-type marks per sandbox, folding the oldest into one for every type', async () => {
    const store = await open({ ...METRICS_5, maxCount: 1 });
    const types = Array.from({ length: 70 }, (_, i) => `t${i}`);
    const events = await fill(store, types);
    await store.prune(); // 69 types pruned: the marks of t0..t4 fold into one of every type
    expect(ids(await store.history({ ...ref, limit: 100 }))).toEqual(ids(events.slice(-1)));
    const at = (i: number) => events[i]!.id;
    // A reader of t1 only, from t1's id: t1's own mark was folded into every type's, which is
    // at t4: told `trimmed` (never `complete` wrongly); past the fold, exact.
    expect(await store.replayAfter(ref, at(1), 100, only('t1'))).toMatchObject({ gap: 'trimmed' });
    expect(await store.replayAfter(ref, at(4), 100, only('t1'))).toMatchObject({ complete: true });
    // Types kept apart are judged on their own.
    expect(await store.replayAfter(ref, at(10), 100, only('t9'))).toMatchObject({ complete: true });
    expect(await store.replayAfter(ref, at(10), 100, only('t20'))).toMatchObject({ gap: 'trimmed' });
  });

  it('refuses bad rules with INVALID_ARGUMENT, changing nothing', async () => {
    for (const rules of [
      [{ glob: '', maxCount: 1 }],
      [{ glob: 'a', maxCount: 0 }],
      [
        { glob: 'a', maxCount: 1 },
        { glob: 'a', maxCount: 2 },
      ],
      [{ glob: 'a'.repeat(129), maxCount: 1 }],
      Array.from({ length: 33 }, (_, i) => ({ glob: `t${i}`, maxCount: 1 })),
    ]) {
      await expect(open({ ...METRICS_5, rules })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
  });
});

describe('per-type retention and the memory store budget', () => {
  it('evicts the oldest events of the idlest sandbox across its classes, and says so to filtered resumes', async () => {
    const clock = new Clock();
    const store = new MemoryStore({ retention: METRICS_5, now: clock.now, pruneIntervalMs: 0, maxTotalBytes: 3_000 });
    try {
      const idle: StoredEvent[] = [];
      for (const type of ['execution.started', 'sandbox.metrics', 'execution.completed', 'sandbox.metrics']) {
        idle.push(await store.append(newEvent('sb-idle', type, { pad: 'x'.repeat(100) })));
        clock.advance(1);
      }
      for (let i = 0; i < 40; i++) {
        await store.append(newEvent('sb-busy', 'execution.progress', { i, pad: 'x'.repeat(100) }));
        clock.advance(1);
      }
      expect(store.stats().evicted).toBeGreaterThan(0);
      expect(store.stats().retainedBytes).toBeLessThanOrEqual(3_000);
      const idleRef = { workspaceId: 1, sandboxId: 'sb-idle' };
      const left = await store.history({ ...idleRef, limit: 100 });
      // Oldest first over both classes: what is left is the newest of the idle sandbox's events.
      expect(ids(idle).slice(idle.length - left.length)).toEqual(ids(left));
      expect(await store.replayAfter(idleRef, { ms: 0, seq: 0 }, 100, only('execution.started'))).toMatchObject({
        gap: 'trimmed',
      });
    } finally {
      await store.close();
    }
  });
});

describe('per-type retention across a SQLite restart', () => {
  it('keeps the per-type marks, so a filtered resume is still judged by its types', async () => {
    const dir = await tempDir();
    const path = join(dir, 'events.db');
    const clock = new Clock();
    try {
      let store = SqliteStore.open({ path, retention: METRICS_5, now: clock.now, pruneIntervalMs: 0 });
      const completed = await store.append(newEvent('sb-1', 'execution.completed'));
      for (let i = 0; i < 30; i++) {
        clock.advance(1);
        await store.append(newEvent('sb-1', 'sandbox.metrics', { i }));
      }
      await store.prune();
      await store.close();
      store = SqliteStore.open({ path, retention: METRICS_5, now: clock.now, pruneIntervalMs: 0 });
      try {
        expect(await store.history({ ...ref, type: 'execution.completed', limit: 10 })).toHaveLength(1);
        expect(await store.history({ ...ref, limit: 100 })).toHaveLength(6);
        expect(await store.replayAfter(ref, completed.id, 100, only('execution.completed'))).toMatchObject({
          complete: true,
        });
        expect(await store.replayAfter(ref, completed.id, 100)).toMatchObject({ gap: 'trimmed' });
        expect(await store.replayWorkspaceAfter(1, 0, 100, only('execution.completed'))).toMatchObject({
          complete: true,
        });
        expect(await store.replayWorkspaceAfter(1, 0, 100)).toMatchObject({ gap: 'trimmed' });
      } finally {
        await store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('counts what pruning without rules removed against every type once rules are added', async () => {
    const dir = await tempDir();
    const path = join(dir, 'events.db');
    const clock = new Clock();
    try {
      const plain: RetentionPolicy = { maxCount: 2, maxAgeMs: DAY };
      let store = SqliteStore.open({ path, retention: plain, now: clock.now, pruneIntervalMs: 0 });
      const first = await store.append(newEvent('sb-1', 'execution.started'));
      for (const type of ['execution.progress', 'execution.completed']) {
        clock.advance(1);
        await store.append(newEvent('sb-1', type));
      }
      await store.prune(); // prefix pruning: execution.started is gone
      await store.close();
      store = SqliteStore.open({
        path,
        retention: { ...plain, rules: METRICS_5.rules },
        now: clock.now,
        pruneIntervalMs: 0,
      });
      try {
        expect(await store.replayAfter(ref, { ms: 0, seq: 0 }, 100, only('execution.started'))).toMatchObject({
          gap: 'trimmed',
        });
        expect(await store.replayAfter(ref, first.id, 100, only('execution.started'))).toMatchObject({
          complete: true,
        });
      } finally {
        await store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
