/**
 * A publish payload checked in one pass over its bytes as received, building no objects and
 * decoding nothing: well-formed JSON (RFC 8259, section 2 to 7: the grammar JSON.parse accepts),
 * valid UTF-8 (RFC 3629, section 4), a top-level object whose only members are `type` and
 * `data`. It returns where the type and `data` sit, so the event line reuses the payload's own
 * bytes of `data` (docs/performance.md, "The publish path", "Seventh round: the payload's bytes"
 * and "Ninth round: the payload scan").
 *
 * JSON's structure is all ASCII, so bytes of 0x80 and up can only be inside strings, and a scan
 * of the UTF-8 bytes gives the verdict a scan of the decoded text would, provided the bytes are
 * valid UTF-8: the scan checks each sequence where a string has one, and says NOT_UTF8 of a
 * payload that has a bad one (decoded, it has a U+FFFD there instead: still a string character,
 * so a bad sequence never changes the JSON verdict, and the scan goes on past it).
 *
 * Its verdict is JSON.parse's: test/event/payload-scan.test.ts checks with generated and mutated
 * payloads that it accepts exactly what `JSON.parse` + the field checks accept, and gives the same
 * text. The refusal's message is left to that slower path (parsePublishPayload), which runs only
 * for a payload this scanner refused, whose layout it does not slice, or whose bytes are not UTF-8.
 *
 * How it is fast (it is on every PUBLISH): the position is a local passed between functions that
 * return the next one (a store to module state per byte made the string loop 3 ns a byte), every
 * byte test is one load from BYTE_CLASS, a string's plain bytes are tested four at a time, and
 * the accepted payload's positions go into one object reused by every scan. The string loop is
 * kept small: larger ones (eight bytes at a time, or 32-bit words for long runs) were no longer
 * inlined where strings are scanned, and every shape but the longest strings lost.
 */

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const QUOTE = 0x22;
const PLUS = 0x2b;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DOT = 0x2e;
const SLASH = 0x2f;
const ZERO = 0x30;
const NINE = 0x39;
const COLON = 0x3a;
const OPEN_BRACKET = 0x5b;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
/** `{` + 2 is `}`, `[` + 2 is `]`: a container's closing byte from its opening one. */
const CLOSING_OFFSET = 2;

/** A byte that ends a run of plain string bytes: a quote, a backslash, a control byte, or past ASCII. */
const STRING_STOP = 1;
const HEX_DIGIT = 2;
const DIGIT = 4;
const WHITESPACE = 8;
/** What may follow a backslash in a string besides `u` (RFC 8259, section 7): `" \ / b f n r t`. */
const SHORT_ESCAPE = 16;

/** What each byte is, as bits: one load answers each test of the scan. */
const BYTE_CLASS = new Uint8Array(256);
for (let code = 0; code < 256; code++) {
  let bits = 0;
  // Control characters must be escaped in a string (RFC 8259, section 7).
  if (code < SPACE || code === QUOTE || code === BACKSLASH || code >= 0x80) bits |= STRING_STOP;
  if ((code >= ZERO && code <= NINE) || ((code | 0x20) >= 0x61 && (code | 0x20) <= 0x66)) bits |= HEX_DIGIT;
  if (code >= ZERO && code <= NINE) bits |= DIGIT;
  if (code === SPACE || code === LF || code === CR || code === TAB) bits |= WHITESPACE;
  if (code === QUOTE || code === BACKSLASH || code === SLASH || 'bfnrt'.includes(String.fromCharCode(code))) {
    bits |= SHORT_ESCAPE;
  }
  BYTE_CLASS[code] = bits;
}

/** The scan refused the payload: not JSON, or not exactly `{"type": ..., "data": {...}}`. */
export const REFUSED = 0;
/** Accepted, but `data`'s text can't be reused as is: the caller serialises the parsed value. */
export const UNUSUAL_LAYOUT = 1;
/**
 * Well-formed JSON once decoded, but a string holds bytes that are not UTF-8: the caller decodes
 * the payload (each bad sequence a U+FFFD, as PUBLISH always stored it) and parses the text.
 */
export const NOT_UTF8 = 2;

export interface ScannedPayload {
  /** `type` as JSON text (with its quotes), not yet checked against the type rules. */
  typeStart: number;
  typeEnd: number;
  /** Whether the type's text has escapes (it must then be unescaped). */
  typeEscaped: boolean;
  /** `data`'s text, compact; -1 when the payload has no `data`. */
  dataStart: number;
  dataEnd: number;
}

/** What scanPublishPayload returns on acceptance: the same object every time, valid until the next scan. */
const scanned: ScannedPayload = { typeStart: 0, typeEnd: 0, typeEscaped: false, dataStart: 0, dataEnd: 0 };

// What the scan saw, set only where it sees it (rare bytes): a scan is synchronous.
/** A backslash in a string closed since the last reset. */
let sawEscape = false;
/** Whitespace outside strings since the last reset (a `data` with any is not compact). */
let sawWhitespace = false;
/** A byte sequence that is not UTF-8 in a string of this payload. */
let sawBadUtf8 = false;
/** Open containers, deepest last: the opening byte of each. */
let nesting = new Uint8Array(64);

/** Past the whitespace at `i` (the caller saw a byte of at most 0x20 there). */
function skipWhitespace(source: Uint8Array, i: number, stop: number): number {
  const start = i;
  while (i < stop && (BYTE_CLASS[source[i]!]! & WHITESPACE) !== 0) i++;
  if (i !== start) sawWhitespace = true;
  return i;
}

/**
 * `i` is past a string's opening quote: returns the index past its closing quote, or -1 when
 * the string is malformed or unterminated before `stop`. The bytes of a string's runs are
 * tested four at a time (one load of BYTE_CLASS each, OR-ed); the byte that stops a run is
 * then looked at alone.
 */
function stringEnd(source: Uint8Array, i: number, stop: number): number {
  const classes = BYTE_CLASS;
  let escaped = false;
  for (;;) {
    while (
      i + 4 <= stop &&
      ((classes[source[i]!]! | classes[source[i + 1]!]! | classes[source[i + 2]!]! | classes[source[i + 3]!]!) &
        STRING_STOP) ===
        0
    ) {
      i += 4;
    }
    while (i < stop && (classes[source[i]!]! & STRING_STOP) === 0) i++;
    if (i >= stop) return -1;
    const code = source[i]!;
    if (code === QUOTE) {
      if (escaped) sawEscape = true;
      return i + 1;
    }
    if (code === BACKSLASH) {
      escaped = true;
      if (i + 1 < stop && (classes[source[i + 1]!]! & SHORT_ESCAPE) !== 0) {
        i += 2;
      } else {
        i = unicodeEscapeEnd(source, i, stop);
        if (i < 0) return -1;
      }
    } else if (code >= 0x80) {
      i = utf8End(source, i, stop);
    } else {
      return -1; // a control character: it must be escaped (RFC 8259, section 7)
    }
  }
}

/** `i` is on a backslash in a string not followed by a short escape: the index past `\uXXXX`, or -1. */
function unicodeEscapeEnd(source: Uint8Array, i: number, stop: number): number {
  return i + 6 <= stop &&
    source[i + 1] === 0x75 /* u */ &&
    (BYTE_CLASS[source[i + 2]!]! &
      BYTE_CLASS[source[i + 3]!]! &
      BYTE_CLASS[source[i + 4]!]! &
      BYTE_CLASS[source[i + 5]!]! &
      HEX_DIGIT) !==
      0
    ? i + 6
    : -1;
}

/**
 * `i` is on a byte past ASCII in a string: the index past the run of UTF-8 sequences that starts
 * there (RFC 3629, section 4: no overlong form, no surrogate, nothing past U+10FFFF). A byte
 * that starts no valid sequence is stepped over alone, and noted (sawBadUtf8): decoded, bad
 * bytes become U+FFFDs, string characters all the same, and a sequence never takes in an ASCII
 * byte, so the scan of what follows is the scan of the decoded text.
 */
function utf8End(source: Uint8Array, i: number, stop: number): number {
  do {
    const lead = source[i]!;
    let length: number;
    let low = 0x80; // the range of the second byte
    let high = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      if (lead === 0xe0) low = 0xa0;
      else if (lead === 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      if (lead === 0xf0) low = 0x90;
      else if (lead === 0xf4) high = 0x8f;
    } else {
      sawBadUtf8 = true;
      return i + 1;
    }
    if (i + length > stop) {
      sawBadUtf8 = true;
      return i + 1;
    }
    const second = source[i + 1]!;
    if (
      second < low ||
      second > high ||
      (length > 2 && (source[i + 2]! & 0xc0) !== 0x80) ||
      (length > 3 && (source[i + 3]! & 0xc0) !== 0x80)
    ) {
      sawBadUtf8 = true;
      return i + 1;
    }
    i += length;
  } while (i < stop && source[i]! >= 0x80);
  return i;
}

/** number = [ minus ] int [ frac ] [ exp ] (RFC 8259, section 6): the index past it, or -1. */
function numberEnd(source: Uint8Array, i: number, stop: number): number {
  const classes = BYTE_CLASS;
  if (source[i] === MINUS) i++;
  if (i >= stop) return -1;
  const first = source[i]!;
  if (first === ZERO) i++;
  else if ((classes[first]! & DIGIT) !== 0) {
    i++;
    while (i < stop && (classes[source[i]!]! & DIGIT) !== 0) i++;
  } else return -1;
  if (i < stop && source[i] === DOT) {
    i++;
    if (i >= stop || (classes[source[i]!]! & DIGIT) === 0) return -1;
    while (i < stop && (classes[source[i]!]! & DIGIT) !== 0) i++;
  }
  if (i < stop && (source[i]! | 0x20) === 0x65 /* e or E */) {
    i++;
    if (i < stop && (source[i] === PLUS || source[i] === MINUS)) i++;
    if (i >= stop || (classes[source[i]!]! & DIGIT) === 0) return -1;
    while (i < stop && (classes[source[i]!]! & DIGIT) !== 0) i++;
  }
  return i;
}

/** The index past `true`, `false` or `null` at `i` (its first byte checked by the caller), or -1. */
function literalEnd(source: Uint8Array, i: number, stop: number, first: number): number {
  if (first === 0x74 /* t */) {
    return i + 4 <= stop && source[i + 1] === 0x72 && source[i + 2] === 0x75 && source[i + 3] === 0x65 ? i + 4 : -1;
  }
  if (first === 0x66 /* f */) {
    return i + 5 <= stop &&
      source[i + 1] === 0x61 &&
      source[i + 2] === 0x6c &&
      source[i + 3] === 0x73 &&
      source[i + 4] === 0x65
      ? i + 5
      : -1;
  }
  return i + 4 <= stop && source[i + 1] === 0x75 && source[i + 2] === 0x6c && source[i + 3] === 0x6c ? i + 4 : -1;
}

/** `"name" :` and the whitespace after it, inside an object at `i`: the index past it, or -1. */
function memberNameEnd(source: Uint8Array, i: number, stop: number): number {
  if (i >= stop || source[i] !== QUOTE) return -1;
  i = stringEnd(source, i + 1, stop);
  if (i < 0) return -1;
  if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
  if (i >= stop || source[i] !== COLON) return -1;
  i++;
  if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
  return i;
}

/** The nesting stack with room at `depth`. */
function nestingAt(depth: number): Uint8Array {
  if (depth === nesting.length) {
    const grown = new Uint8Array(nesting.length * 2);
    grown.set(nesting);
    nesting = grown;
  }
  return nesting;
}

/**
 * Scans one JSON value at `i` (whitespace before it already skipped), iteratively, so that
 * nesting depth costs no stack: the index past it, or -1 when it is not well-formed.
 */
function valueEnd(source: Uint8Array, i: number, stop: number): number {
  let depth = 0;
  for (;;) {
    // A value.
    if (i >= stop) return -1;
    const code = source[i]!;
    if (code === QUOTE) {
      i = stringEnd(source, i + 1, stop);
    } else if (code === OPEN_BRACE || code === OPEN_BRACKET) {
      i++;
      if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
      if (i >= stop) return -1;
      if (source[i] === code + CLOSING_OFFSET) {
        i++;
      } else {
        nestingAt(depth)[depth] = code;
        depth++;
        if (code === OPEN_BRACE) {
          i = memberNameEnd(source, i, stop);
          if (i < 0) return -1;
        }
        continue; // the first element or member value
      }
    } else if (code === 0x74 /* t */ || code === 0x66 /* f */ || code === 0x6e /* n */) {
      i = literalEnd(source, i, stop, code);
    } else {
      i = numberEnd(source, i, stop);
    }
    if (i < 0) return -1;
    // After a value: close containers, or go on to the next element or member.
    for (;;) {
      if (depth === 0) return i;
      if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
      if (i >= stop) return -1;
      const next = source[i]!;
      const open = nesting[depth - 1]!;
      if (next === COMMA) {
        i++;
        if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
        if (open === OPEN_BRACE) {
          i = memberNameEnd(source, i, stop);
          if (i < 0) return -1;
        }
        break;
      }
      if (next !== open + CLOSING_OFFSET) return -1;
      i++;
      depth--;
    }
  }
}

const TYPE = 1;
const DATA = 2;

/** Which of the two accepted member names the four bytes at `at` spell: TYPE, DATA or 0. */
function plainMemberName(source: Uint8Array, at: number): number {
  const first = source[at];
  if (first === 0x74 && source[at + 1] === 0x79 && source[at + 2] === 0x70 && source[at + 3] === 0x65) return TYPE;
  if (first === 0x64 && source[at + 1] === 0x61 && source[at + 2] === 0x74 && source[at + 3] === 0x61) return DATA;
  return 0;
}

/** Which of the two accepted member names `source[start, end)` (a JSON string) spells: TYPE, DATA or 0. */
function memberName(source: Uint8Array, start: number, end: number, escaped: boolean): number {
  if (!escaped) return end - start === 6 ? plainMemberName(source, start + 1) : 0;
  // Rare: a name spelled with escapes (`"typ\u0065"`) is unescaped to be compared.
  const name = JSON.parse(Buffer.from(source.buffer, source.byteOffset + start, end - start).toString()) as string;
  return name === 'type' ? TYPE : name === 'data' ? DATA : 0;
}

/**
 * Scans `payload[start, stop)`, the UTF-8 bytes of the text JSON.parse would see. On acceptance
 * returns where (in `payload`) its type and data are (an object the next scan reuses); REFUSED
 * when JSON.parse would refuse it or its fields are not `type` (a string, last one wins, as in
 * JSON.parse) and `data` (an object), UNUSUAL_LAYOUT when it is acceptable but its `data` bytes
 * can't be reused (not exactly `{"type": <string>, "data": <compact object>}`), NOT_UTF8 when
 * it is acceptable once decoded but its strings have bytes that are not UTF-8.
 *
 * Bytes past `stop` may belong to the next request: the scan never reads them (every lookahead
 * is bounded by `stop`), so what follows a payload never changes its verdict.
 */
export function scanPublishPayload(
  payload: Uint8Array,
  start = 0,
  stop = payload.length,
): ScannedPayload | typeof REFUSED | typeof UNUSUAL_LAYOUT | typeof NOT_UTF8 {
  const source = payload;
  sawBadUtf8 = false;
  let i = start;
  if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
  if (i >= stop || source[i] !== OPEN_BRACE) return REFUSED;
  i++;
  if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
  let members = 0;
  let usual = true;
  let typeStart = -1;
  let typeEnd = -1;
  let typeEscaped = false;
  let dataStart = -1;
  let dataEnd = -1;
  for (;;) {
    const nameStart = i;
    if (i >= stop || source[i] !== QUOTE) return REFUSED; // `{}` too: it has no type
    // `"type"` and `"data"` as every client spells them: their six bytes, without the string loop.
    let name = i + 6 <= stop && source[i + 5] === QUOTE ? plainMemberName(source, i + 1) : 0;
    let escapedName = false;
    if (name !== 0) {
      i += 6;
    } else {
      sawEscape = false;
      i = stringEnd(source, i + 1, stop);
      if (i < 0) return REFUSED;
      escapedName = sawEscape;
      name = memberName(source, nameStart, i, escapedName);
      if (name === 0) return REFUSED;
    }
    // The usual layout: "type" then "data", spelled without escapes, nothing else.
    members++;
    if (escapedName || members > 2 || name !== members) usual = false;
    if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
    if (i >= stop || source[i] !== COLON) return REFUSED;
    i++;
    if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
    const valueStart = i;
    const opening = i < stop ? source[i]! : 0;
    if (name === TYPE) {
      // Only the last `type` counts (JSON.parse keeps the last duplicate).
      if (opening === QUOTE) {
        sawEscape = false;
        i = stringEnd(source, i + 1, stop);
        typeStart = valueStart;
        typeEnd = i;
        typeEscaped = sawEscape;
      } else {
        i = valueEnd(source, i, stop);
        typeStart = -1;
      }
    } else {
      sawWhitespace = false;
      i = valueEnd(source, i, stop);
      dataStart = opening === OPEN_BRACE ? valueStart : -2; // -2: data present, not an object
      dataEnd = i;
      if (sawWhitespace) usual = false;
    }
    if (i < 0) return REFUSED;
    if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
    if (i >= stop) return REFUSED;
    const next = source[i]!;
    i++;
    if (next === CLOSE_BRACE) break;
    if (next !== COMMA) return REFUSED;
    if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
  }
  if (i < stop && source[i]! <= SPACE) i = skipWhitespace(source, i, stop);
  if (i !== stop) return REFUSED;
  if (typeStart < 0 || dataStart === -2) return REFUSED;
  if (sawBadUtf8) return NOT_UTF8;
  // Without `data`, the layout does not matter: the event's data is `{}`.
  if (dataStart >= 0 && !usual) return UNUSUAL_LAYOUT;
  scanned.typeStart = typeStart;
  scanned.typeEnd = typeEnd;
  scanned.typeEscaped = typeEscaped;
  scanned.dataStart = dataStart;
  scanned.dataEnd = dataEnd;
  return scanned;
}
