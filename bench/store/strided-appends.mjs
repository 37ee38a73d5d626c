// @ts-check
import { eventData } from '../lib/event-data.js';

/**
 * Appends spread over many streams, as traffic over many sandboxes reaches the SQLite store:
 * shared by wal-frames.mjs and stall.mjs.
 */

/**
 * Returns `appendMany(total)`: the next `total` appends, `inFlight` at a time, to `sandboxes`
 * streams in a stride (7919 is prime to any size here), each event's data `data`.
 * @param {{ append(input: import('../../src/event/event.js').NewEvent): Promise<unknown> }} store
 * @param {number} sandboxes
 * @param {number} inFlight
 * @param {Buffer} data
 */
export function stridedAppends(store, sandboxes, inFlight, data) {
  let next = 0;
  return async function appendMany(/** @type {number} */ total) {
    const end = next + total;
    const one = async () => {
      while (next < end) {
        const n = next++;
        const sandboxId = `sandbox-${String((n * 7919) % sandboxes).padStart(8, '0')}`;
        await store.append({ workspaceId: 1, sandboxId, type: 'terminal.output', ...eventData(data) });
      }
    };
    await Promise.all(Array.from({ length: inFlight }, one));
  };
}
