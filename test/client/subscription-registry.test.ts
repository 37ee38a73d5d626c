import { describe, expect, it } from 'vitest';
import { EventsAuthError } from '../../src/client/errors.js';
import { parseStart, SubscriptionRegistry, ZERO_ID } from '../../src/client/subscription-registry.js';
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

  it('answers what to restore, patterns coming back live, and remembers why a restore dropped one', () => {
    const registry = new SubscriptionRegistry();
    registry.addChannel('sb-1', 'now');
    registry.addChannel('sb-2', parseStart('0'));
    registry.addPattern('ws-*');
    expect(registry.addPattern('ws-*')).toBeUndefined();
    const plan = registry.restorePlan();
    expect(plan.channels.map((channel) => channel.name)).toEqual(['sb-1', 'sb-2']);
    expect(plan.patterns).toEqual([{ pattern: 'ws-*', resume: { kind: 'live' }, types: [] }]);

    const refused = new EventsAuthError('NO_PERMISSION', 'no');
    registry.dropChannel('sb-2', refused);
    expect(registry.droppedReason('sb-2')).toBe(refused);
    expect(registry.list()).toEqual({ channels: ['sb-1'], patterns: ['ws-*'] });
    registry.addChannel('sb-2', 'now');
    expect(registry.droppedReason('sb-2')).toBeUndefined();
  });

  it('refuses a malformed start', () => {
    expect(() => parseStart('later')).toThrow(/from must be/);
    expect(parseStart('$')).toBe('now');
  });
});
