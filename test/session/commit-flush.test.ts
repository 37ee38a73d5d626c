/**
 * docs/performance.md, "Sixth round": a SQLite commit runs in the event loop's check phase, and
 * what it queues for the sockets goes out as it ends (flushWrites), not an event-loop turn later
 * behind everything that turn's poll phase reads.
 */
import { EventEmitter } from 'node:events';
import { afterEach, expect, it } from 'vitest';
import { OutputBudget } from '../../src/runtime/output-budget.js';
import { flushWrites, WritePath } from '../../src/session/write-path.js';
import type { SqliteStore } from '../../src/store/sqlite-store.js';
import { BIG, Clock, newEvent, sqliteFactory } from '../store/helpers.js';

class RecordingSocket extends EventEmitter {
  writableLength = 0;
  destroyed = false;
  readonly chunks: Buffer[] = [];
  write(data: Buffer): boolean {
    this.chunks.push(data);
    return true;
  }
  end() {}
  destroy() {}
  cork() {}
  uncork() {}
}

const withHook = sqliteFactory({ afterCommit: flushWrites });
const withoutHook = sqliteFactory({});
afterEach(async () => {
  await withHook.cleanup();
  await withoutHook.cleanup();
});

/** A store whose listener queues every committed event on a write path, as the fan-out does. */
async function storeWritingTo(factory: ReturnType<typeof sqliteFactory>) {
  const store = (await factory.create({ retention: BIG, now: new Clock().now })) as unknown as SqliteStore;
  const socket = new RecordingSocket();
  const output = new WritePath(
    socket,
    () => 1 << 20,
    () => {},
    1_000,
    new OutputBudget(0),
  );
  store.setListener((event) => {
    output.write(Buffer.from(`${event.json}\n`));
  });
  return { store, socket };
}

it("with afterCommit, a commit's frames are on the socket when its appends resolve", async () => {
  const { store, socket } = await storeWritingTo(withHook);
  await Promise.all([store.append(newEvent('sb')), store.append(newEvent('sb'))]);
  expect(Buffer.concat(socket.chunks).toString().split('\n').filter(Boolean)).toHaveLength(2);
});

it('without it, they wait for the next turn (what the hook saves)', async () => {
  const { store, socket } = await storeWritingTo(withoutHook);
  await Promise.all([store.append(newEvent('sb')), store.append(newEvent('sb'))]);
  expect(socket.chunks).toHaveLength(0);
  await new Promise((resolve) => setImmediate(resolve));
  expect(Buffer.concat(socket.chunks).toString().split('\n').filter(Boolean)).toHaveLength(2);
});

it('flushWrites with nothing queued does nothing, and writing still works after it', async () => {
  flushWrites();
  const { store, socket } = await storeWritingTo(withHook);
  await store.append(newEvent('sb'));
  expect(socket.chunks).toHaveLength(1);
});
