import { afterEach, expect, it } from 'vitest';
import type { StoredEvent } from '../../src/event/event.js';
import type { SqliteStore } from '../../src/store/sqlite-store.js';
import { BIG, Clock, newEvent, sqliteFactory } from './helpers.js';

const factory = sqliteFactory({ groupCommitWindowMs: 1_000 });
afterEach(() => factory.cleanup());

/** The next macrotask turn: an append of a later turn than the one before. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

it('with a commit window, appends of steady light traffic share one commit, each resolved once it is durable', async () => {
  const store = (await factory.create({ retention: BIG, now: new Clock().now })) as unknown as SqliteStore;
  const heard: string[] = [];
  store.setListener((event) => {
    heard.push(event.json);
  });
  // After a quiet spell: committed at once.
  await store.append(newEvent('sb'));
  expect(store.stats().batches).toBe(1);
  // Three appends in three turns, right after that commit: held for the window, one commit.
  const resolved: StoredEvent[] = [];
  const pending = [];
  for (let i = 0; i < 3; i++) {
    pending.push(store.append(newEvent('sb')).then((event) => resolved.push(event)));
    await nextTurn();
  }
  // Held: nothing of them is announced or resolved before the commit.
  expect(resolved).toEqual([]);
  expect(heard).toHaveLength(1);
  await Promise.all(pending);
  expect(store.stats().batches).toBe(2);
  expect(heard).toEqual([heard[0], ...resolved.map((event) => event.json)]);
  const history = await store.history({ workspaceId: 1, sandboxId: 'sb', limit: 10 });
  expect(history.map((event) => event.json)).toEqual(heard);
});

it('writes a held batch at once when it stops being tiny', async () => {
  const store = (await factory.create({ retention: BIG, now: new Clock().now })) as unknown as SqliteStore;
  await store.append(newEvent('sb'));
  const first = store.append(newEvent('sb'));
  await nextTurn(); // held now
  let settled = 0;
  for (const append of [first, ...Array.from({ length: 20 }, () => store.append(newEvent('sb')))]) {
    void append.then(() => settled++);
  }
  // Not held to the window: the batch of 21 is written on the next turn.
  await nextTurn();
  await nextTurn();
  expect(settled).toBe(21);
  expect(store.stats().batches).toBe(2);
});
