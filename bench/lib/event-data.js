// @ts-check
/**
 * An event's `data` as every build's store input takes it: `dataBytes[dataStart, dataEnd)`
 * (NewEvent since the tenth round) and `data` (the builds before it), so that the A/B
 * benchmarks can hand one input to either build.
 * @param {Buffer} data
 * @returns {{ dataBytes: Buffer, dataStart: number, dataEnd: number }}
 */
export function eventData(data) {
  return /** @type {any} */ ({ data, dataBytes: data, dataStart: 0, dataEnd: data.length });
}
