/**
 * The text of a short run of UTF-8 bytes that mostly repeats from one request to the next (a
 * command's name, a PUBLISH's channel, an event's type): decoded once, and the same string
 * handed out again while the bytes received are the same, compared byte by byte. Decoding a
 * short argument costs about 50 ns (a call into Node's buffer binding and a new string); the
 * comparison a few, and a string seen again keeps its hash for the Map lookups that follow
 * (docs/performance.md, "Eighth round: the event's line as bytes").
 */
export class RepeatedText {
  private text = '';
  /** The last bytes decoded, `length` of them (-1: none yet). */
  private readonly bytes: Uint8Array;
  private length = -1;

  /** Runs longer than `maxBytes` are decoded every time (and not remembered). */
  constructor(readonly maxBytes: number) {
    this.bytes = new Uint8Array(maxBytes);
  }

  /** The UTF-8 text of `source[start, end)`. */
  of(source: Buffer, start: number, end: number): string {
    const length = end - start;
    const known = this.bytes;
    if (length === this.length) {
      let k = 0;
      while (k < length && source[start + k] === known[k]) k++;
      if (k === length) return this.text;
    }
    const text = source.toString('utf8', start, end);
    if (length <= this.maxBytes) {
      for (let k = 0; k < length; k++) known[k] = source[start + k]!;
      this.length = length;
      this.text = text;
    }
    return text;
  }
}
