// RESP for the load generator: commands pre-encoded into Buffers, and a streaming scanner that
// counts complete replies without building any value (the generator must stay cheaper than the
// servers it drives: a client library would be the bottleneck).

/** One command as a RESP array of bulk strings. */
export function command(...args) {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) {
    const text = String(arg);
    parts.push(`$${Buffer.byteLength(text)}\r\n${text}\r\n`);
  }
  return Buffer.from(parts.join(''));
}

/**
 * A publish payload of exactly `size` bytes that the broker accepts as an event
 * (`{"type","data"}`) and Redis carries as it is. `t` is a 13-digit string field the latency
 * case overwrites in place with the send time in microseconds; `tOffset` is where its digits
 * start.
 */
export function payload(size) {
  const head = '{"type":"bench.tick","data":{"t":"';
  const mid = '","p":"';
  const tail = '"}}';
  const fixed = head.length + 13 + mid.length + tail.length;
  if (size < fixed) throw new Error(`payload size ${size} is below the minimum ${fixed}`);
  const text = head + '0'.repeat(13) + mid + 'x'.repeat(size - fixed) + tail;
  return { bytes: Buffer.from(text, 'latin1'), tOffset: head.length };
}

/** Writes `value` (a non-negative integer) as 13 zero-padded digits at `at`. */
export function writeDigits13(buffer, at, value) {
  for (let i = at + 12; i >= at; i--) {
    buffer[i] = 48 + (value % 10);
    value = Math.floor(value / 10);
  }
}

const ST_TYPE = 0;
const ST_NUM = 1;
const ST_LF = 2;
const ST_BODY = 3;
const ST_LINE = 4;

const K_ARRAY = 1;
const K_BULK = 2;
const K_LINE = 3;

const T_MARK = Buffer.from('"t":"');

/**
 * Counts complete top-level replies in a byte stream (any RESP2/RESP3 type, nested arrays
 * included), fed chunk by chunk. Optionally reads the send time out of message payloads (the
 * last bulk of a top-level array) for latency.
 */
export class ReplyScanner {
  constructor(onPayloadTime) {
    /** Complete top-level replies seen. */
    this.frames = 0;
    /** Top-level error replies seen. */
    this.errors = 0;
    this.firstError = undefined;
    this.state = ST_TYPE;
    this.kind = 0;
    this.num = 0;
    this.neg = false;
    this.skip = 0;
    this.topError = false;
    // Remaining elements per open array, innermost last.
    this.stack = new Int32Array(16);
    this.depth = 0;
    this.onPayloadTime = onPayloadTime;
    // A payload split across reads is gathered here (latency mode only).
    this.gather = undefined;
    this.gatherLen = 0;
    this.gathering = false;
  }

  /** Feeds `buf[start, end)`; `now` is the receive time handed to onPayloadTime. */
  feed(buf, start, end, now) {
    let i = start;
    while (i < end) {
      switch (this.state) {
        case ST_BODY: {
          const take = Math.min(this.skip, end - i);
          if (this.gathering) this.gatherBytes(buf, i, take);
          i += take;
          this.skip -= take;
          if (this.skip === 0) {
            this.state = ST_TYPE;
            if (this.gathering) {
              this.gathering = false;
              this.readTime(this.gather, 0, this.gatherLen, now);
            }
            this.elementDone();
          }
          break;
        }
        case ST_TYPE: {
          const b = buf[i++];
          this.num = 0;
          this.neg = false;
          if (b === 42 /* * */ || b === 62 /* > */ || b === 37 /* % */ || b === 126 /* ~ */) {
            this.kind = K_ARRAY;
            this.mapLike = b === 37;
            this.state = ST_NUM;
          } else if (b === 36 /* $ */ || b === 61 /* = */) {
            this.kind = K_BULK;
            this.state = ST_NUM;
          } else {
            // + - : _ # , ( and anything line-shaped.
            this.kind = K_LINE;
            if (b === 45 /* - */ && this.depth === 0) this.topError = true;
            this.state = ST_LINE;
          }
          break;
        }
        case ST_NUM: {
          const b = buf[i++];
          if (b === 13) this.state = ST_LF;
          else if (b === 45) this.neg = true;
          else this.num = this.num * 10 + (b - 48);
          break;
        }
        case ST_LF: {
          i++;
          const n = this.neg ? -this.num : this.num;
          if (this.kind === K_ARRAY) {
            const count = this.mapLike ? n * 2 : n;
            if (count <= 0) this.elementDone();
            else this.stack[this.depth++] = count;
            this.state = ST_TYPE;
          } else if (n < 0) {
            this.state = ST_TYPE;
            this.elementDone();
          } else {
            this.skip = n + 2;
            this.state = ST_BODY;
            // The last bulk of a top-level array is a message's payload.
            if (this.onPayloadTime !== undefined && this.depth === 1 && this.stack[0] === 1) {
              if (end - i >= this.skip) {
                this.readTime(buf, i, i + n, now);
              } else {
                this.gathering = true;
                this.gatherLen = 0;
              }
            }
          }
          break;
        }
        case ST_LINE: {
          const lf = buf.indexOf(10, i);
          if (lf < 0 || lf >= end) {
            if (this.topError) this.captureError(buf, i, end);
            i = end;
          } else {
            if (this.topError) this.captureError(buf, i, lf);
            i = lf + 1;
            this.state = ST_TYPE;
            this.elementDone();
          }
          break;
        }
      }
    }
  }

  elementDone() {
    while (this.depth > 0) {
      if (--this.stack[this.depth - 1] > 0) return;
      this.depth--;
    }
    this.frames++;
    if (this.topError) {
      this.topError = false;
      this.errors++;
    }
  }

  captureError(buf, from, to) {
    if (this.firstError === undefined) this.firstError = buf.toString('latin1', Math.max(from - 1, 0), to).trim();
  }

  gatherBytes(buf, from, count) {
    const need = this.gatherLen + count;
    if (this.gather === undefined || this.gather.length < need) {
      const next = Buffer.allocUnsafe(Math.max(need, 1024));
      if (this.gather !== undefined) this.gather.copy(next, 0, 0, this.gatherLen);
      this.gather = next;
    }
    buf.copy(this.gather, this.gatherLen, from, from + count);
    this.gatherLen = need;
  }

  readTime(buf, from, to, now) {
    const at = buf.indexOf(T_MARK, from);
    if (at < 0 || at + 5 + 13 > to) return;
    let value = 0;
    for (let k = at + 5; k < at + 5 + 13; k++) value = value * 10 + (buf[k] - 48);
    if (value > 0) this.onPayloadTime(value, now);
  }
}
