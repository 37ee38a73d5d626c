import type { NewEvent } from '../../src/event/event.js';

/** Bytes around `data` that would show in an event's line if its offsets were off by any amount. */
const AROUND = Buffer.from('\r\n$128\r\n{"type":"t","data":');

/**
 * `data`'s UTF-8 as a received PUBLISH holds it: among other bytes of the request, so that a store
 * must take `dataBytes[dataStart, dataEnd)` and nothing around it (NewEvent).
 */
export function eventData(data: string | Buffer): Pick<NewEvent, 'dataBytes' | 'dataStart' | 'dataEnd'> {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  return {
    dataBytes: Buffer.concat([AROUND, bytes, AROUND]),
    dataStart: AROUND.length,
    dataEnd: AROUND.length + bytes.length,
  };
}

/** eventData as EventRing.push's last three arguments. */
export function ringData(data: string | Buffer): [Buffer, number, number] {
  const { dataBytes, dataStart, dataEnd } = eventData(data);
  return [dataBytes, dataStart, dataEnd];
}
