import { describe, expect, it } from 'vitest';
import {
  decodeMessage,
  jsonFromParts,
  messageHeader,
  sandboxChannel,
  streamKey,
  metaKey,
} from '../../src/store/redis/keys.js';
import { eventJson } from '../../src/event/event.js';
import { openEngine } from '../../src/store/open-store.js';

describe('--engine', () => {
  it('accepts redis:// and rediss:// URLs only, with a clear error', () => {
    const retention = { maxCount: 10, maxAgeMs: 1000 };
    for (const spec of ['redis', 'http://127.0.0.1:6379', 'redis://', 'sqlite']) {
      expect(() => openEngine(spec, { retention })).toThrow(/unknown engine .*use redis:\/\/host:port/);
    }
  });
});

describe('Redis names and messages', () => {
  const ref = { workspaceId: 42, sandboxId: 'a}b:c ü' };

  it("keeps a sandbox's stream, meta hash and channel under one hash tag", () => {
    const slotTag = (name: string): string => name.slice(name.indexOf('{') + 1, name.indexOf('}'));
    expect(new Set([streamKey(ref), metaKey(ref), sandboxChannel(ref)].map(slotTag)).size).toBe(1);
    expect(new Set([streamKey(ref), metaKey(ref), sandboxChannel(ref)]).size).toBe(3);
  });

  it('round-trips a published message into the same event the stores build', () => {
    const id = '1732361234567-3';
    const template = eventJson({ ms: 0, seq: 0 }, ref.workspaceId, ref.sandboxId, 'x:1}€', '{"k":"v"}', 0);
    const middle = template.slice('{"id":"0-0'.length, template.length - '0}'.length);
    const json = jsonFromParts(id, middle);
    expect(json).toBe(
      eventJson({ ms: 1732361234567, seq: 3 }, ref.workspaceId, ref.sandboxId, 'x:1}€', '{"k":"v"}', 1732361234567),
    );
    expect(decodeMessage(messageHeader(ref, 'x:1}€') + json)).toEqual({
      id: { ms: 1732361234567, seq: 3 },
      workspaceId: 42,
      sandboxId: ref.sandboxId,
      type: 'x:1}€',
      timestamp: 1732361234567,
      json,
    });
    expect(decodeMessage('garbage')).toBeUndefined();
  });
});
