/** A sandbox with a few events holds one byte chunk in the memory store's ring, grown by copying, and reads back exactly. */
import { describe, expect, it } from 'vitest';
import { eventJson, eventLineHead, eventLineMiddle } from '../../src/event/event.js';
import { EventRing, RingContext } from '../../src/store/event-ring.js';
import { ringData } from '../support/event-data.js';

const data = (n: number, pad: number) => `{"n":${n},"pad":"${'x'.repeat(pad)}","u":"é"}`;
const line = (n: number, pad: number) => eventJson({ ms: 1_000 + n, seq: 0 }, 7, 'sb-1', 't', data(n, pad), 1_000 + n);
const HEAD = eventLineHead(eventLineMiddle(7, 'sb-1'), '"t"');

/** Pushes event `n` as the memory store does (its line as bytes); returns the line as text. */
function push(ring: EventRing, n: number, pad: number): string {
  const size = ring.push({ ms: 1_000 + n, seq: 0 }, 1_000 + n, 't', HEAD, ...ringData(data(n, pad)));
  return ring.newestChunk.toString('utf8', ring.newestLineEnd - size, ring.newestLineEnd);
}

describe('EventRing growth', () => {
  it('keeps the events of a small sandbox in one chunk, then adds chunks once it holds more', () => {
    const ring = new EventRing(7, 'sb-1', new RingContext(), 10_000);
    const lines: string[] = [];
    for (let n = 0; n < 60; n++) {
      const json = line(n, 100 + (n % 7) * 13);
      lines.push(json);
      expect(push(ring, n, 100 + (n % 7) * 13)).toBe(json);
      const bytes = lines.reduce((sum, text) => sum + Buffer.byteLength(text), 0);
      // Below 4 KiB of lines, one chunk of at most twice (and a minimum of 512 bytes) what it holds.
      if (bytes <= 4 * 1024) {
        expect(ring.chunkCount).toBe(1);
        expect(ring.byteCapacity).toBeLessThanOrEqual(Math.max(512, 2 * bytes));
      }
      for (const at of [0, Math.floor(n / 2), n]) expect(ring.eventAt(at).json).toBe(lines[at]);
    }
    expect(ring.chunkCount).toBeGreaterThan(1);
    for (let at = 0; at < 60; at++) expect(ring.eventAt(at).json).toBe(lines[at]);
  });

  it('reads back exactly after trimming the oldest and growing again', () => {
    const ring = new EventRing(7, 'sb-1', new RingContext(), 4);
    const lines: string[] = [];
    for (let n = 0; n < 40; n++) {
      if (ring.length === 4) {
        ring.shift();
        lines.shift();
      }
      const json = line(n, (n * 37) % 300);
      lines.push(json);
      expect(push(ring, n, (n * 37) % 300)).toBe(json);
      expect(Array.from({ length: ring.length }, (_, at) => ring.eventAt(at).json)).toEqual(lines);
    }
    expect(ring.slotCapacity).toBe(4);
  });
});
