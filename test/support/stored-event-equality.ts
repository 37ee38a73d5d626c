/**
 * Vitest setup: a StoredEvent a store made equals another (or a plain object) when its six fields
 * do. Its `json` is a getter (made on first read, docs/performance.md, "Eighth round: the event's
 * line as bytes"), which `toEqual` would not look at on its own: it compares own properties.
 */
import { expect } from 'vitest';
import { StoredEventRecord } from '../../src/event/event.js';

/** A record as a plain object of its fields; a plain object as it is. */
function fields(value: object): object {
  if (!(value instanceof StoredEventRecord)) return value;
  const event = value;
  return {
    id: event.id,
    workspaceId: event.workspaceId,
    sandboxId: event.sandboxId,
    type: event.type,
    timestamp: event.timestamp,
    json: event.json,
  };
}

function isPlainOrRecord(value: unknown): value is object {
  if (value instanceof StoredEventRecord) return true;
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

expect.addEqualityTesters([
  function storedEventEquals(this: { equals: (a: unknown, b: unknown) => boolean }, a: unknown, b: unknown) {
    if (!(a instanceof StoredEventRecord) && !(b instanceof StoredEventRecord)) return undefined;
    if (!isPlainOrRecord(a) || !isPlainOrRecord(b)) return undefined;
    return this.equals(fields(a), fields(b));
  },
]);
