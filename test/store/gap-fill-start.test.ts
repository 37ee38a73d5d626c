import { expect, it } from 'vitest';
import { fillStart } from '../../src/store/redis/gap-fill.js';

// Where a Redis engine node's gap-fill starts reading a sandbox's stream (docs/scaling.md,
// "Gap-fill" and "Redis Cluster"): the last id it delivered, just below the newest live message
// after a reconnect, and a new pattern's floor.
const id = (ms: number, seq = 0) => ({ ms, seq });
const justBelow = (ms: number) => ({ ms: ms - 1, seq: Number.MAX_SAFE_INTEGER });

it('after a reconnect, starts from the last id delivered, or just below the newest live message', () => {
  expect(fillStart(id(500, 3), id(900), undefined, false)).toEqual(justBelow(900));
  expect(fillStart(id(950, 3), id(900), undefined, false)).toEqual(id(950, 3));
  expect(fillStart(undefined, id(900), undefined, false)).toEqual(justBelow(900));
  expect(fillStart(undefined, undefined, undefined, false)).toBeUndefined();
  expect(fillStart(id(7), undefined, undefined, true)).toEqual(id(7));
});

it("starts a new pattern's sandboxes at its floor, however new the live messages already received", () => {
  // The race a Cluster test met under load: the pattern registered at 1,100 (floor 1,000); the
  // publishing node put its next event (1,270) on no workspace channel, read the registration,
  // and put the one after (1,279, another sandbox) on it, which arrived here live. The first
  // sandbox's event came by no channel this node listens on: its fill must start below it.
  expect(fillStart(undefined, id(1279), id(1000), true)).toEqual(id(1000));
  // What was delivered here still counts: nothing before it is read again.
  expect(fillStart(id(1200, 1), id(1279), id(1000), true)).toEqual(id(1200, 1));
  expect(fillStart(id(900), id(1279), id(1000), true)).toEqual(id(1000));
  // A quiet workspace: the last live message is older than the floor, nothing before the floor.
  expect(fillStart(undefined, id(10), id(1000), true)).toEqual(id(1000));
});

it("keeps a watched sandbox outside the pattern's scope no earlier than the floor nor the newest live message", () => {
  expect(fillStart(undefined, id(1279), id(1000), false)).toEqual(justBelow(1279));
  expect(fillStart(undefined, id(10), id(1000), false)).toEqual(id(1000));
});
