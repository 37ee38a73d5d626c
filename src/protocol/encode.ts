/**
 * RESP2/RESP3 reply encoding: pure functions from values to bytes, no sockets.
 * Byte layouts follow the Redis 7 replies captured in the project's fixtures.
 */

export type Protocol = 2 | 3;

const CRLF = '\r\n';

function ascii(text: string): Buffer {
  return Buffer.from(text, 'latin1');
}

export const OK = ascii('+OK\r\n');
export const PONG = ascii('+PONG\r\n');
export const RESET = ascii('+RESET\r\n');
export const EMPTY_ARRAY = ascii('*0\r\n');
const NULL_BULK_RESP2 = ascii('$-1\r\n');
const NULL_RESP3 = ascii('_\r\n');

export function simpleString(text: string): Buffer {
  return Buffer.from(`+${text}${CRLF}`);
}

/**
 * `text` starts with the error code word, e.g. `ERR unknown command`. Like Redis's
 * addReplyErrorLength, CR and LF inside the message become spaces so one error stays one line.
 */
export function errorReply(text: string): Buffer {
  return Buffer.from(`-${text.replace(/[\r\n]/g, ' ')}${CRLF}`);
}

const SMALL_INTEGERS: Buffer[] = Array.from({ length: 1024 }, (_, n) => ascii(`:${n}\r\n`));

export function integer(value: number): Buffer {
  return (value >= 0 && value < SMALL_INTEGERS.length && SMALL_INTEGERS[value]) || ascii(`:${value}\r\n`);
}

export function bulk(value: string | Buffer): Buffer {
  const body = typeof value === 'string' ? Buffer.from(value) : value;
  const header = ascii(`$${body.length}\r\n`);
  const out = Buffer.allocUnsafe(header.length + body.length + 2);
  header.copy(out, 0);
  body.copy(out, header.length);
  out[out.length - 2] = 13;
  out[out.length - 1] = 10;
  return out;
}

export function nullBulk(protocol: Protocol): Buffer {
  return protocol === 3 ? NULL_RESP3 : NULL_BULK_RESP2;
}

const NULL_ARRAY_RESP2 = ascii('*-1\r\n');

export function nullArray(protocol: Protocol): Buffer {
  return protocol === 3 ? NULL_RESP3 : NULL_ARRAY_RESP2;
}

export function bulkOrNull(value: string | undefined, protocol: Protocol): Buffer {
  return value === undefined ? nullBulk(protocol) : bulk(value);
}

export function array(items: readonly Buffer[]): Buffer {
  return Buffer.concat([ascii(`*${items.length}\r\n`), ...items]);
}

/** Out-of-band data: a `>` push in RESP3, a plain array in RESP2 (how Redis sends pub/sub). */
export function push(protocol: Protocol, items: readonly Buffer[]): Buffer {
  return Buffer.concat([ascii(`${protocol === 3 ? '>' : '*'}${items.length}\r\n`), ...items]);
}

/** A map: `%` in RESP3, a flat key/value array in RESP2 (as Redis does for HELLO). */
export function map(protocol: Protocol, entries: readonly (readonly [Buffer, Buffer])[]): Buffer {
  const header = protocol === 3 ? `%${entries.length}\r\n` : `*${entries.length * 2}\r\n`;
  return Buffer.concat([ascii(header), ...entries.flat()]);
}

/** INFO's reply: a verbatim string (`=`, format `txt`) in RESP3, a bulk string in RESP2. */
export function verbatimText(protocol: Protocol, text: string): Buffer {
  if (protocol === 2) return bulk(text);
  const body = Buffer.from(`txt:${text}`);
  return Buffer.concat([ascii(`=${body.length}\r\n`), body, ascii(CRLF)]);
}

const MESSAGE_RESP2 = ascii('*3\r\n$7\r\nmessage\r\n');
const MESSAGE_RESP3 = ascii('>3\r\n$7\r\nmessage\r\n');
const PMESSAGE_RESP2 = ascii('*4\r\n$8\r\npmessage\r\n');
const PMESSAGE_RESP3 = ascii('>4\r\n$8\r\npmessage\r\n');

/**
 * One delivery frame, built with a single allocation: `*3 message <channel> <payload>` or
 * `*4 pmessage <pattern> <channel> <payload>` (`>` instead of `*` in RESP3). `payload` is the
 * event JSON line. Callers build each frame once per publish and write that same Buffer to
 * every subscriber (encode once, write many).
 */
export function deliveryFrame(
  protocol: Protocol,
  pattern: string | undefined,
  channel: string,
  payload: string,
): Buffer {
  const prefix =
    pattern === undefined
      ? protocol === 3
        ? MESSAGE_RESP3
        : MESSAGE_RESP2
      : protocol === 3
        ? PMESSAGE_RESP3
        : PMESSAGE_RESP2;
  const patternBytes = pattern === undefined ? 0 : Buffer.byteLength(pattern);
  const channelBytes = Buffer.byteLength(channel);
  const payloadBytes = Buffer.byteLength(payload);
  const patternHeader = pattern === undefined ? '' : `$${patternBytes}\r\n`;
  const channelHeader = `$${channelBytes}\r\n`;
  const payloadHeader = `$${payloadBytes}\r\n`;
  const size =
    prefix.length +
    (pattern === undefined ? 0 : patternHeader.length + patternBytes + 2) +
    channelHeader.length +
    channelBytes +
    2 +
    payloadHeader.length +
    payloadBytes +
    2;
  const out = Buffer.allocUnsafe(size);
  let at = prefix.copy(out, 0);
  if (pattern !== undefined) {
    at += out.write(patternHeader, at, 'latin1');
    at += out.write(pattern, at, 'utf8');
    at += out.write(CRLF, at, 'latin1');
  }
  at += out.write(channelHeader, at, 'latin1');
  at += out.write(channel, at, 'utf8');
  at += out.write(CRLF, at, 'latin1');
  at += out.write(payloadHeader, at, 'latin1');
  at += out.write(payload, at, 'utf8');
  out.write(CRLF, at, 'latin1');
  return out;
}
