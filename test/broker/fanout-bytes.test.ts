/** Regression: fan-out frames stay exact for every form (RESP2/3, qualified names, patterns) across slab growth, sweeps and sockets that stop draining. */
import { EventEmitter } from 'node:events';
import { afterEach, expect, it, vi } from 'vitest';
import { Broker, type Subscriber } from '../../src/broker/broker.js';
import { channelKey } from '../../src/broker/scope.js';
import { OutputBudget } from '../../src/runtime/output-budget.js';
import { WritePath } from '../../src/session/write-path.js';
import type { StoredEvent } from '../../src/event/event.js';
import { deliveryFrame, type Protocol } from '../../src/protocol/encode.js';

class SlowSocket extends EventEmitter {
  writableLength = 0;
  destroyed = false;
  chunks: Buffer[] = [];
  held = false;
  write(data: Buffer): boolean {
    this.chunks.push(data); // kept by reference, as a real socket's buffer holds it
    this.writableLength += data.length;
    return !this.held;
  }
  drainNow(): void {
    this.writableLength = 0;
    this.emit('drain');
  }
  end() {}
  destroy() {}
  cork() {}
  uncork() {}
}

class Sub implements Subscriber {
  socket = new SlowSocket();
  out = new WritePath(
    this.socket,
    () => 1 << 30,
    () => {
      throw new Error('overflow');
    },
    10_000,
    new OutputBudget(0),
  );
  expected: Buffer[] = [];
  constructor(readonly protocol: Protocol) {}
  deliver(frame: Buffer): void {
    this.out.write(frame);
  }
}

afterEach(() => vi.restoreAllMocks());

it('every subscriber receives exactly its frames, across slab growth, sweeps and drain waits', async () => {
  let clock = 0;
  vi.spyOn(performance, 'now').mockImplementation(() => clock);
  const broker = new Broker();
  const subs: { sub: Sub; kind: string; name: string; pattern?: string; ws: number; sb?: string }[] = [];
  const add = (protocol: Protocol, kind: 'chan' | 'pat' | 'all', name: string, sb?: string) => {
    const sub = new Sub(protocol);
    if (kind === 'chan') {
      broker.subscribe(sub, { workspaceId: 1, sandboxId: sb!, key: channelKey(1, sb!), displayName: name });
    } else {
      broker.psubscribe(sub, name, kind === 'all' ? 'all' : 1);
    }
    subs.push({ sub, kind, name, ws: 1, sb });
  };
  for (const sb of ['a', 'b']) {
    add(2, 'chan', sb, sb);
    add(2, 'chan', sb, sb);
    add(3, 'chan', sb, sb);
    add(2, 'chan', `{1}${sb}`, sb);
  }
  add(2, 'pat', '*');
  add(3, 'pat', '?');
  add(2, 'all', '{1}*');
  let seq = 0;
  let maxSlab = 0;
  let shrankAfterPeak = false;
  for (let round = 0; round < 300; round += 1) {
    // some rounds hot (slabs grow), some cold (sweeps let slabs go)
    clock += round % 50 < 25 ? 0.05 : 300;
    if (round % 7 === 0) for (const s of subs) s.sub.socket.held = !s.sub.socket.held;
    const perTurn = 1 + (round % 13) * 5;
    for (let i = 0; i < perTurn; i += 1) {
      const sb = (seq & 1) === 0 ? 'a' : 'b';
      const json = JSON.stringify({
        id: `${seq}-0`,
        sandboxId: sb,
        workspaceId: 1,
        type: 't',
        data: { seq, pad: 'x'.repeat(seq % 300), u: 'é✓' },
        timestamp: seq,
      });
      const event = { workspaceId: 1, sandboxId: sb, json, id: { ms: seq, seq: 0 } } as unknown as StoredEvent;
      seq += 1;
      for (const s of subs) {
        if (s.kind === 'chan' && s.sb === sb)
          s.sub.expected.push(deliveryFrame(s.sub.protocol, undefined, s.name, json));
        if (s.kind === 'pat') s.sub.expected.push(deliveryFrame(s.sub.protocol, s.name, sb, json));
        if (s.kind === 'all') s.sub.expected.push(deliveryFrame(s.sub.protocol, s.name, `{1}${sb}`, json));
      }
      broker.fanOut(event);
    }
    const slab = broker.frameSlabBytes();
    if (slab < maxSlab) shrankAfterPeak = true;
    maxSlab = Math.max(maxSlab, slab);
    await new Promise((resolve) => setImmediate(resolve));
    for (const s of subs) if (!s.sub.socket.held && s.sub.socket.writableLength > 0) s.sub.socket.drainNow();
  }
  for (const s of subs) {
    s.sub.socket.held = false;
    s.sub.socket.drainNow();
  }
  await new Promise((resolve) => setImmediate(resolve));
  for (const s of subs) {
    const got = Buffer.concat(s.sub.socket.chunks);
    const want = Buffer.concat(s.sub.expected);
    expect(got.length, `${s.kind} ${s.name} p${s.sub.protocol}`).toBe(want.length);
    expect(got.equals(want), `${s.kind} ${s.name} p${s.sub.protocol}`).toBe(true);
  }
  expect(broker.stats.fannedOut).toBe(seq);
  expect(maxSlab).toBeGreaterThan(2048); // slabs did grow
  expect(shrankAfterPeak).toBe(true); // and sweeps let them go
});
