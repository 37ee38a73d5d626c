// @ts-check
// The NATS client protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol), as
// much of it as the bench needs to drive nats-server with JetStream: CONNECT, SUB, PUB with a
// reply subject (JetStream answers every publish to a stream's subject with an ack message on
// it), PING/PONG, and a streaming scanner that counts MSG frames without building values, like
// ReplyScanner in resp.js does for RESP. No npm dependency: the `nats` package's own buffering
// and callbacks per message would make the generator, not the server, the limit.
import net from 'node:net';

const CRLF = Buffer.from('\r\n');
export const PING = Buffer.from('PING\r\n');
export const PONG = Buffer.from('PONG\r\n');
const T_MARK = Buffer.from('"t":"');
const ERROR_MARK = Buffer.from('"error"');

/** The subject a channel (sandbox id) is published on; JetStream streams take `ev.*`. */
export const subjectOf = (/** @type {string} */ channel) => `ev.${channel}`;

/**
 * CONNECT with a token (nats-server's `authorization { token }`), no +OK per command
 * (verbose false), no header support needed.
 * @param {string | undefined} token
 */
export function connectFrame(token) {
  const options = { verbose: false, pedantic: false, lang: 'node', version: '0', protocol: 1, headers: false };
  return Buffer.from(
    `CONNECT ${JSON.stringify(token === undefined ? options : { ...options, auth_token: token })}\r\n`,
  );
}

/**
 * @param {string} subject
 * @param {number} sid
 */
export function subFrame(subject, sid) {
  return Buffer.from(`SUB ${subject} ${sid}\r\n`);
}

/**
 * `PUB <subject> [reply] <#bytes>` and the payload; `tAt` is where the payload starts.
 * @param {string} subject
 * @param {string | undefined} reply
 * @param {Buffer} body
 */
export function pubFrame(subject, reply, body) {
  const head = Buffer.from(`PUB ${subject}${reply === undefined ? '' : ` ${reply}`} ${body.length}\r\n`, 'latin1');
  return { bytes: Buffer.concat([head, body, CRLF]), payloadAt: head.length };
}

const ST_LINE = 0;
const ST_BODY = 1;

/**
 * Counts MSG (and HMSG) frames and PONGs in a stream from nats-server, fed chunk by chunk; a
 * server PING is answered through `onPing` (the server closes a client that does not answer).
 * Optionally reads the send time out of message payloads (latency) and counts acks that carry
 * a JetStream error (`checkAcks`).
 */
export class NatsScanner {
  /**
   * @param {((sentMicros: number, nowMicros: number) => void) | undefined} onPayloadTime
   * @param {() => void} onPing
   * @param {boolean} [checkAcks]
   */
  constructor(onPayloadTime, onPing, checkAcks = false) {
    /** MSG frames and PONGs seen. */
    this.frames = 0;
    /** -ERR lines and JetStream error acks. */
    this.errors = 0;
    /** @type {string | undefined} */
    this.firstError = undefined;
    this.onPayloadTime = onPayloadTime;
    this.onPing = onPing;
    this.checkAcks = checkAcks;
    this.state = ST_LINE;
    /** A control line split across reads. */
    this.line = Buffer.allocUnsafe(4096);
    this.lineLen = 0;
    this.skip = 0;
    /** Payload bytes gathered when it has to be read (latency, ack check). */
    this.body = Buffer.allocUnsafe(1024);
    this.bodyLen = 0;
    this.bodyWanted = 0;
  }

  /**
   * @param {Buffer} buf
   * @param {number} start
   * @param {number} end
   * @param {number} now receive time in µs handed to onPayloadTime
   */
  feed(buf, start, end, now) {
    let i = start;
    while (i < end) {
      if (this.state === ST_BODY) {
        const take = Math.min(this.skip, end - i);
        if (this.bodyWanted > this.bodyLen) {
          const part = Math.min(take, this.bodyWanted - this.bodyLen);
          buf.copy(this.body, this.bodyLen, i, i + part);
          this.bodyLen += part;
        }
        i += take;
        this.skip -= take;
        if (this.skip === 0) {
          this.state = ST_LINE;
          this.frames++;
          if (this.bodyWanted > 0) this.readBody(now);
        }
        continue;
      }
      const lf = buf.indexOf(10, i);
      if (lf < 0 || lf >= end) {
        this.keepLine(buf, i, end);
        return;
      }
      let line;
      if (this.lineLen > 0) {
        this.keepLine(buf, i, lf + 1);
        line = this.line.subarray(0, this.lineLen);
        this.lineLen = 0;
      } else {
        line = buf.subarray(i, lf + 1);
      }
      i = lf + 1;
      this.controlLine(line);
    }
  }

  /**
   * @param {Buffer} buf
   * @param {number} from
   * @param {number} to
   */
  keepLine(buf, from, to) {
    const need = this.lineLen + (to - from);
    if (need > this.line.length) {
      const grown = Buffer.allocUnsafe(need * 2);
      this.line.copy(grown, 0, 0, this.lineLen);
      this.line = grown;
    }
    buf.copy(this.line, this.lineLen, from, to);
    this.lineLen = need;
  }

  /** @param {Buffer} line one control line, CRLF included */
  controlLine(line) {
    const c0 = line[0];
    if (c0 === 77 /* M */ || (c0 === 72 /* H */ && line[1] === 77)) {
      // MSG <subject> <sid> [reply-to] <#bytes> / HMSG ... <#header bytes> <#total bytes>: the
      // last number is the payload's size.
      let at = line.length - 3;
      let size = 0;
      let scale = 1;
      while (at >= 0 && line[at] >= 48 && line[at] <= 57) {
        size += (line[at] - 48) * scale;
        scale *= 10;
        at--;
      }
      this.skip = size + 2;
      this.state = ST_BODY;
      this.bodyLen = 0;
      this.bodyWanted = this.onPayloadTime !== undefined || this.checkAcks ? Math.min(size, this.body.length) : 0;
    } else if (c0 === 80 /* P */ && line[1] === 73 /* I */) {
      this.onPing();
    } else if (c0 === 80 /* P */) {
      this.frames++; // PONG
    } else if (c0 === 45 /* - */) {
      this.errors++;
      this.firstError ??= line.toString('latin1').trim();
    }
    // INFO and +OK: nothing to count.
  }

  /** @param {number} now */
  readBody(now) {
    const body = this.body.subarray(0, this.bodyLen);
    this.bodyWanted = 0;
    if (this.checkAcks && body.indexOf(ERROR_MARK) >= 0) {
      this.errors++;
      this.firstError ??= body.toString('utf8');
      return;
    }
    if (this.onPayloadTime === undefined) return;
    const at = body.indexOf(T_MARK);
    if (at < 0 || at + 5 + 13 > body.length) return;
    let value = 0;
    for (let k = at + 5; k < at + 5 + 13; k++) value = value * 10 + (body[k] - 48);
    if (value > 0) this.onPayloadTime(value, now);
  }
}

/**
 * One request/reply on a fresh connection (JetStream's API is requests to `$JS.API.>`): returns
 * the reply's payload as text.
 * @param {number} port
 * @param {string | undefined} token
 * @param {string} subject
 * @param {string} body
 * @returns {Promise<string>}
 */
export function natsRequest(port, token, subject, body) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const inbox = `_INBOX.bench${process.pid}`;
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply to ${subject} on port ${port}`));
    }, 10_000);
    socket.on('connect', () => {
      socket.write(
        Buffer.concat([connectFrame(token), subFrame(inbox, 1), pubFrame(subject, inbox, Buffer.from(body)).bytes]),
      );
    });
    socket.on('data', (chunk) => {
      text += chunk.toString('utf8');
      const err = /^-ERR (.*)\r\n/m.exec(text);
      if (err !== null) {
        clearTimeout(timer);
        socket.destroy();
        reject(new Error(`nats-server: ${err[1]}`));
        return;
      }
      const msg = /^MSG \S+ \d+ (?:\S+ )?(\d+)\r\n/m.exec(text);
      if (msg === null) return;
      const from = msg.index + msg[0].length;
      const size = Number(msg[1]);
      if (Buffer.byteLength(text.slice(from)) < size + 2) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.from(text.slice(from)).subarray(0, size).toString('utf8'));
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * Connects and reads the server's INFO line (version, max_payload...).
 * @param {number} port
 * @returns {Promise<Record<string, unknown>>}
 */
export function natsInfo(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no INFO on port ${port}`));
    }, 5_000);
    socket.on('data', (chunk) => {
      text += chunk.toString('utf8');
      const end = text.indexOf('\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.destroy();
      try {
        resolve(JSON.parse(text.slice(text.indexOf(' ') + 1, end)));
      } catch (error) {
        reject(error);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}
