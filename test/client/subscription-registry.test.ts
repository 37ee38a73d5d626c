import { describe, expect, it } from 'vitest';
import { EventsAuthError } from '../../src/client/errors.js';
import {
  parsePatternStart,
  parseStart,
  SubscriptionRegistry,
  ZERO_ID,
} from '../../src/client/subscription-registry.js';
import { parseEventId } from '../../src/event/event.js';

const id = (text: string) => parseEventId(text)!;

describe('SubscriptionRegistry', () => {
  it('turns "from now" into a position once, and resumes every later restore from the cursor', () => {
    const registry = new SubscriptionRegistry();
    const subscription = registry.addChannel('sb-1', 'now')!;
    expect(registry.resumePoint(subscription)).toBeUndefined(); // ask the broker for its newest id
    expect(registry.settleNow(subscription, id('5-0'))).toEqual(id('5-0'));
    expect(registry.lastEventId('sb-1')).toBe('5-0');
    expect(registry.admit('sb-1', id('6-0'))).toBe(true);
    expect(registry.resumePoint(subscription)).toEqual(id('6-0'));
    // nothing retained: the zero id
    const empty = registry.addChannel('sb-2', 'now')!;
    expect(registry.settleNow(empty, undefined)).toEqual(ZERO_ID);
  });

  it('starts from a given id, and a new start id replaces the position while "$" keeps it', () => {
    const registry = new SubscriptionRegistry();
    const first = registry.addChannel('sb-1', parseStart('3-1'))!;
    expect(registry.resumePoint(first)).toEqual(id('3-1'));
    expect(registry.admit('sb-1', id('4-0'))).toBe(true);
    expect(registry.addChannel('sb-1', 'now')).toBeUndefined(); // already kept
    expect(registry.removeChannel('sb-1')).toBe(true);
    expect(registry.lastEventId('sb-1')).toBeUndefined(); // no pattern: forgotten

    registry.addPattern('sb-*');
    const again = registry.addChannel('sb-1', 'now')!;
    expect(registry.admit('sb-1', id('7-0'))).toBe(true);
    registry.removeChannel('sb-1');
    expect(registry.lastEventId('sb-1')).toBe('7-0'); // a pattern may still deliver it
    const restarted = registry.addChannel('sb-1', parseStart('0'))!;
    expect(registry.isCurrent(again)).toBe(false);
    expect(registry.resumePoint(restarted)).toEqual(ZERO_ID);
  });

  it('delivers each event at most once, in order, and restarts below the cursor on a `future` answer', () => {
    const registry = new SubscriptionRegistry();
    registry.addChannel('sb-1', 'now');
    expect(registry.admit('sb-1', id('10-0'))).toBe(true);
    expect(registry.admit('sb-1', id('10-0'))).toBe(false);
    expect(registry.admit('sb-1', id('9-5'))).toBe(false);
    registry.restartAt('sb-1', '2-0');
    expect(registry.admit('sb-1', id('3-0'))).toBe(true);
    registry.restartAt('sb-1', null);
    expect(registry.lastEventId('sb-1')).toBe('0-0');
  });

  it('routes a pattern message only for sandboxes not subscribed by id', () => {
    const registry = new SubscriptionRegistry();
    registry.addChannel('sb-1', 'now');
    registry.addPattern('sb-*');
    expect(registry.routes('sb-1', undefined)).toBe(true);
    expect(registry.routes('sb-1', 'sb-*')).toBe(false);
    expect(registry.routes('sb-2', 'sb-*')).toBe(true);
    expect(registry.routes('sb-2', undefined)).toBe(false);
    expect(registry.routes('sb-2', 'other-*')).toBe(false);
  });

  it('answers what to restore, and remembers why a restore dropped one', () => {
    const registry = new SubscriptionRegistry();
    registry.addChannel('sb-1', 'now');
    registry.addChannel('sb-2', parseStart('0'));
    registry.addPattern('ws-*');
    expect(registry.addPattern('ws-*')).toBeUndefined();
    const plan = registry.restorePlan();
    expect(plan.channels.map((channel) => channel.name)).toEqual(['sb-1', 'sb-2']);
    expect(plan.patterns).toEqual([{ pattern: 'ws-*', start: 'now', types: [] }]);

    const refused = new EventsAuthError('NO_PERMISSION', 'no');
    registry.dropChannel('sb-2', refused);
    expect(registry.droppedReason('sb-2')).toBe(refused);
    expect(registry.list()).toEqual({ channels: ['sb-1'], patterns: ['ws-*'] });
    registry.addChannel('sb-2', 'now');
    expect(registry.droppedReason('sb-2')).toBeUndefined();
  });

  it("keeps each pattern's cursor: settled from now once, moved by every frame of the pattern, forgotten with it", () => {
    const registry = new SubscriptionRegistry();
    const pattern = registry.addPattern('ws-*')!;
    expect(registry.lastCursor('ws-*')).toBeUndefined(); // PRESUME ws-* $ first
    registry.settlePatternNow(pattern, 'w5');
    expect(registry.lastCursor('ws-*')).toBe('w5');
    registry.advancePattern('ws-*', 'w7');
    registry.settlePatternNow(pattern, 'w6'); // a later "now" does not move a known position
    expect(registry.lastCursor('ws-*')).toBe('w7');
    registry.advancePattern('ws-*', null); // an ephemeral event has no cursor
    registry.advancePattern('other-*', 'w9'); // frames in flight of a pattern no longer kept
    expect(registry.lastCursor('ws-*')).toBe('w7');
    expect(registry.lastCursor('other-*')).toBeUndefined();
    registry.restartPatternAt('ws-*', 'w2'); // the broker's order restarted (future)
    expect(registry.lastCursor('ws-*')).toBe('w2');
    expect(registry.removePattern('ws-*')).toBe(true);
    expect(registry.lastCursor('ws-*')).toBeUndefined();

    const kept = registry.addPattern('job-*', parsePatternStart('w40'), ['a.*'])!;
    expect(kept).toEqual({ pattern: 'job-*', start: 'w40', types: ['a.*'] });
    expect(registry.lastCursor('job-*')).toBe('w40');
    registry.settlePatternNow(kept, null); // the Redis engine tells none: nothing moves
    expect(registry.lastCursor('job-*')).toBe('w40');
  });

  it('refuses a malformed start', () => {
    for (const bad of ['0', '1-0', 'w', 'w01', 'later']) expect(() => parsePatternStart(bad)).toThrow(/cursor w<n>/);
    expect(parsePatternStart('$')).toBe('now');
    expect(parsePatternStart(undefined)).toBe('now');
    expect(() => parseStart('later')).toThrow(/from must be/);
    expect(parseStart('$')).toBe('now');
  });
});
