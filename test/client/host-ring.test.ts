import { describe, expect, it } from 'vitest';
import { HostRing } from '../../src/client/host-ring.js';

describe('HostRing', () => {
  it('tries each node once on the first connect, then fails over round robin', () => {
    const ring = new HostRing({ hosts: [{ host: 'a', port: 1 }, { host: 'b' }, { host: 'c', port: 3 }] }, {});
    ring.restart();
    expect(ring.current).toEqual({ host: 'a', port: 1 });
    expect(ring.advanceToUntried()).toBe(true);
    expect(ring.current).toEqual({ host: 'b', port: 6380 });
    expect(ring.advanceToUntried()).toBe(true);
    expect(ring.advanceToUntried()).toBe(false);
    expect(ring.current.host).toBe('c');
    ring.advance();
    expect(ring.current.host).toBe('a'); // wraps around
    ring.restart();
    expect(ring.current.host).toBe('a');
    expect(ring.advanceToUntried()).toBe(true);
  });

  it('takes host and port, then the environment, then the defaults', () => {
    expect(new HostRing({}, {}).current).toEqual({ host: '127.0.0.1', port: 6380 });
    const env = { COMPUTESDK_PUBSUB_HOST: 'broker', COMPUTESDK_PUBSUB_PORT: '7000' };
    expect(new HostRing({}, env).current).toEqual({ host: 'broker', port: 7000 });
    expect(new HostRing({ host: 'h', port: 9 }, env).current).toEqual({ host: 'h', port: 9 });
    expect(new HostRing({ hosts: [], host: 'h' }, env).size).toBe(1);
    expect(new HostRing({ hosts: [{ host: 'x' }] }, env).current).toEqual({ host: 'x', port: 7000 });
    const one = new HostRing({ host: 'h' }, {});
    one.advance();
    expect(one.current.host).toBe('h');
  });

  it('refuses malformed nodes', () => {
    expect(() => new HostRing({ hosts: [{ host: '' }] }, {})).toThrow(/hosts\[0\] must be/);
    expect(() => new HostRing({ hosts: [{ host: 'a' }, { host: 'b', port: 70_000 }] }, {})).toThrow(
      /hosts\[1\]\.port must be an integer/,
    );
  });
});
