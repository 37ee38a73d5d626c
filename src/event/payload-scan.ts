/**
 * A publish payload checked in one pass over its bytes as received, building no objects and
 * decoding nothing: well-formed JSON (RFC 8259, section 2 to 7: the grammar JSON.parse accepts),
 * a top-level object whose only members are `type` and `data`. It returns where the type and
 * `data` sit, so the event line reuses the payload's own bytes of `data` (docs/performance.md,
 * "The publish path" and "Seventh round: the payload's bytes").
 *
 * JSON's structure is all ASCII, so bytes of 0x80 and up can only be inside strings, and a scan
 * of the UTF-8 bytes gives the verdict a scan of the decoded text would, provided the bytes are
 * valid UTF-8: the scan says whether it saw any (`nonAscii`), and the caller checks those.
 *
 * Its verdict is JSON.parse's: test/event/payload-scan.test.ts checks with generated and mutated
 * payloads that it accepts exactly what `JSON.parse` + the field checks accept, and gives the same
 * text. The refusal's message is left to that slower path (parsePublishPayload), which runs only
 * for a payload this scanner refused or whose layout it does not slice.
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
const UPPER_E = 0x45;
const OPEN_BRACKET = 0x5b;
const BACKSLASH = 0x5c;
const CLOSE_BRACKET = 0x5d;
const LOWER_E = 0x65;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/** The scan refused the payload: not JSON, or not exactly `{"type": ..., "data": {...}}`. */
export const REFUSED = 0;
/** Accepted, but `data`'s text can't be reused as is: the caller serialises the parsed value. */
export const UNUSUAL_LAYOUT = 1;

export interface ScannedPayload {
  /** `type` as JSON text (with its quotes), not yet checked against the type rules. */
  typeStart: number;
  typeEnd: number;
  /** Whether the type's text has escapes (it must then be unescaped). */
  typeEscaped: boolean;
  /** `data`'s text, compact; -1 when the payload has no `data`. */
  dataStart: number;
  dataEnd: number;
  /** Whether a string of the payload has bytes past ASCII (which must then be valid UTF-8). */
  nonAscii: boolean;
}

const EMPTY = new Uint8Array(0);

// The scan's position and findings, kept in module state: a scan is synchronous and builds no
// object until it accepts.
let text: Uint8Array = EMPTY;
let at = 0;
/**
 * Where the payload ends in `text`. Bytes past it may belong to the next request: a lookahead
 * that reads one can only make the scan refuse (it then has `at` past `end`, and a payload is
 * accepted only when the scan ends exactly at `end`), as it would refuse a payload cut there.
 */
let end = 0;
let stringHasEscape = false;
/** Every byte of the strings scanned so far OR-ed together: 0x80 is set when one is not ASCII. */
let stringBits = 0;
/** Whitespace seen outside strings since the last reset (a `data` with any is not compact). */
let sawWhitespace = false;
/** Open containers, deepest last: 1 for an array, 0 for an object. */
let nesting = new Uint8Array(64);

function isWhitespace(code: number): boolean {
  return code === SPACE || code === LF || code === CR || code === TAB;
}

function skipWhitespace(): void {
  const start = at;
  while (at < end && isWhitespace(text[at]!)) at++;
  if (at !== start) sawWhitespace = true;
}

function isHexDigit(code: number | undefined): boolean {
  if (code === undefined) return false;
  return (code >= ZERO && code <= NINE) || ((code | 0x20) >= 0x61 && (code | 0x20) <= 0x66);
}

/**
 * `at` is on an opening quote; moves past the closing one. False when the string is malformed.
 * The position is a local while the loop runs: `at` is module state, and a store to it per
 * character made this loop 3 ns a character.
 */
function scanString(): boolean {
  const source = text;
  const stop = end;
  let i = at + 1;
  let escapes = false;
  let bits = 0;
  for (;;) {
    if (i >= stop) break;
    const code = source[i]!;
    if (code === QUOTE) {
      at = i + 1;
      stringHasEscape = escapes;
      stringBits |= bits;
      return true;
    }
    if (code < SPACE) break; // control characters must be escaped (RFC 8259, section 7)
    bits |= code;
    if (code !== BACKSLASH) {
      i++;
      continue;
    }
    escapes = true;
    const escaped = source[i + 1];
    if (escaped === 0x75 /* u */) {
      if (
        !isHexDigit(source[i + 2]) ||
        !isHexDigit(source[i + 3]) ||
        !isHexDigit(source[i + 4]) ||
        !isHexDigit(source[i + 5])
      ) {
        break;
      }
      i += 6;
      continue;
    }
    // " \ / b f n r t
    if (
      escaped !== QUOTE &&
      escaped !== BACKSLASH &&
      escaped !== SLASH &&
      escaped !== 0x62 &&
      escaped !== 0x66 &&
      escaped !== 0x6e &&
      escaped !== 0x72 &&
      escaped !== 0x74
    ) {
      break;
    }
    i += 2;
  }
  at = i;
  stringHasEscape = escapes;
  stringBits |= bits;
  return false;
}

function scanDigits(): boolean {
  const start = at;
  while (at < end) {
    const code = text[at]!;
    if (code < ZERO || code > NINE) break;
    at++;
  }
  return at > start;
}

/** number = [ minus ] int [ frac ] [ exp ] (RFC 8259, section 6). */
function scanNumber(): boolean {
  if (text[at] === MINUS) at++;
  const first = text[at] ?? 0; // past the end: no digit
  if (first === ZERO) at++;
  else if (!(first > ZERO && first <= NINE) || !scanDigits()) return false;
  if (text[at] === DOT) {
    at++;
    if (!scanDigits()) return false;
  }
  const e = text[at];
  if (e === LOWER_E || e === UPPER_E) {
    at++;
    const sign = text[at];
    if (sign === PLUS || sign === MINUS) at++;
    if (!scanDigits()) return false;
  }
  return true;
}

/** Whether the bytes at `from` spell `word` (ASCII). */
function spells(from: number, word: string): boolean {
  if (from + word.length > end) return false;
  for (let k = 0; k < word.length; k++) if (text[from + k] !== word.charCodeAt(k)) return false;
  return true;
}

function scanLiteral(word: string): boolean {
  if (!spells(at, word)) return false;
  at += word.length;
  return true;
}

function push(isArray: number, depth: number): void {
  if (depth === nesting.length) {
    const grown = new Uint8Array(nesting.length * 2);
    grown.set(nesting);
    nesting = grown;
  }
  nesting[depth] = isArray;
}

/**
 * Scans one JSON value at `at` (whitespace before it already skipped), iteratively, so that
 * nesting depth costs no stack. False when it is not well-formed.
 */
function scanValue(): boolean {
  let depth = 0;
  for (;;) {
    // A value.
    const code = text[at];
    if (code === OPEN_BRACE || code === OPEN_BRACKET) {
      at++;
      skipWhitespace();
      const close = code === OPEN_BRACE ? CLOSE_BRACE : CLOSE_BRACKET;
      if (text[at] === close) {
        at++;
      } else {
        push(code === OPEN_BRACKET ? 1 : 0, depth);
        depth++;
        if (code === OPEN_BRACE && !scanMemberName()) return false;
        continue; // the first element or member value
      }
    } else if (code === QUOTE) {
      if (!scanString()) return false;
    } else if (code === 0x74 /* t */) {
      if (!scanLiteral('true')) return false;
    } else if (code === 0x66 /* f */) {
      if (!scanLiteral('false')) return false;
    } else if (code === 0x6e /* n */) {
      if (!scanLiteral('null')) return false;
    } else if (!scanNumber()) {
      return false;
    }
    // After a value: close containers, or go on to the next element or member.
    for (;;) {
      if (depth === 0) return true;
      skipWhitespace();
      const next = text[at];
      const inArray = nesting[depth - 1] === 1;
      if (next === COMMA) {
        at++;
        skipWhitespace();
        if (!inArray && !scanMemberName()) return false;
        break;
      }
      if (next !== (inArray ? CLOSE_BRACKET : CLOSE_BRACE)) return false;
      at++;
      depth--;
    }
  }
}

/** `"name" :` and the whitespace after it, inside an object. */
function scanMemberName(): boolean {
  if (text[at] !== QUOTE || !scanString()) return false;
  skipWhitespace();
  if (text[at] !== COLON) return false;
  at++;
  skipWhitespace();
  return true;
}

/** Which of the two accepted member names `text[start, end)` (a JSON string) spells, if any. */
function memberName(start: number, end: number, escaped: boolean): 'type' | 'data' | undefined {
  if (!escaped) {
    if (end - start !== 6) return undefined;
    if (spells(start + 1, 'type')) return 'type';
    if (spells(start + 1, 'data')) return 'data';
    return undefined;
  }
  // Rare: a name spelled with escapes (`"typ\u0065"`) is unescaped to be compared.
  const name = JSON.parse(Buffer.from(text.buffer, text.byteOffset + start, end - start).toString()) as string;
  return name === 'type' || name === 'data' ? name : undefined;
}

/**
 * Scans `payload[start, stop)`, the UTF-8 bytes of the text JSON.parse would see. On acceptance
 * returns where (in `payload`) its type and data are; REFUSED when JSON.parse would refuse it or its fields are not
 * `type` (a string, last one wins, as in JSON.parse) and `data` (an object), UNUSUAL_LAYOUT when
 * it is acceptable but its `data` bytes can't be reused (not exactly `{"type": <string>,
 * "data": <compact object>}`). Bytes that are not valid UTF-8 are the caller's to look for (see
 * `nonAscii`): inside strings they pass here.
 */
export function scanPublishPayload(
  payload: Uint8Array,
  start = 0,
  stop = payload.length,
): ScannedPayload | typeof REFUSED | typeof UNUSUAL_LAYOUT {
  text = payload;
  at = start;
  end = stop;
  stringBits = 0;
  try {
    return scanObject();
  } finally {
    text = EMPTY;
  }
}

function scanObject(): ScannedPayload | typeof REFUSED | typeof UNUSUAL_LAYOUT {
  skipWhitespace();
  if (text[at] !== OPEN_BRACE) return REFUSED;
  at++;
  skipWhitespace();
  if (text[at] === CLOSE_BRACE) return REFUSED; // no type
  let members = 0;
  let usual = true;
  let typeStart = -1;
  let typeEnd = -1;
  let typeEscaped = false;
  let dataStart = -1;
  let dataEnd = -1;
  for (;;) {
    const nameStart = at;
    if (text[at] !== QUOTE || !scanString()) return REFUSED;
    const name = memberName(nameStart, at, stringHasEscape);
    if (name === undefined) return REFUSED;
    // The usual layout: "type" then "data", spelled without escapes, nothing else.
    members++;
    if (stringHasEscape || (members === 1 && name !== 'type') || (members === 2 && name !== 'data') || members > 2) {
      usual = false;
    }
    skipWhitespace();
    if (text[at] !== COLON) return REFUSED;
    at++;
    skipWhitespace();
    const valueStart = at;
    const opening = text[at];
    sawWhitespace = false;
    if (!scanValue()) return REFUSED;
    if (name === 'type') {
      // Only the last `type` counts (JSON.parse keeps the last duplicate).
      if (opening === QUOTE) {
        typeStart = valueStart;
        typeEnd = at;
        typeEscaped = stringHasEscape;
      } else {
        typeStart = -1;
      }
    } else {
      dataStart = opening === OPEN_BRACE ? valueStart : -2; // -2: data present, not an object
      dataEnd = at;
      if (sawWhitespace) usual = false;
    }
    skipWhitespace();
    const next = text[at];
    at++;
    if (next === CLOSE_BRACE) break;
    if (next !== COMMA) return REFUSED;
    skipWhitespace();
  }
  skipWhitespace();
  if (at !== end) return REFUSED;
  if (typeStart < 0 || dataStart === -2) return REFUSED;
  // Without `data`, the layout does not matter: the event's data is `{}`.
  if (dataStart >= 0 && !usual) return UNUSUAL_LAYOUT;
  return { typeStart, typeEnd, typeEscaped, dataStart, dataEnd, nonAscii: (stringBits & 0x80) !== 0 };
}
