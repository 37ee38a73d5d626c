/**
 * Finds the text of `data` inside a publish payload that JSON.parse has already accepted, so
 * the event line can reuse it instead of serialising the parsed object again.
 *
 * Only the layout every client library produces is recognised: `{"type": <string>, "data":
 * <object>}`, whitespace allowed between those tokens. Anything else (other key order, `data`
 * with whitespace outside its strings, which could include a raw CR or LF) returns undefined
 * and the caller falls back to JSON.stringify. Because the whole payload is valid JSON with
 * exactly those two keys, the slice is valid compact JSON for the same object; it can differ
 * from JSON.stringify's text only in spelling, never in meaning (`\u0041` for `A`, `1.0` for
 * `1`, and numbers keep digits a double would round).
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;

function isJsonWhitespace(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09;
}

function skipWhitespace(text: string, at: number): number {
  while (at < text.length && isJsonWhitespace(text.charCodeAt(at))) at++;
  return at;
}

/** `at` is an opening quote; returns the index after its closing quote, or -1. */
function stringEnd(text: string, at: number): number {
  let quote = at;
  for (;;) {
    quote = text.indexOf('"', quote + 1);
    if (quote < 0) return -1;
    let backslashes = 0;
    while (text.charCodeAt(quote - 1 - backslashes) === BACKSLASH) backslashes++;
    if ((backslashes & 1) === 0) return quote + 1; // an even run of backslashes escapes itself
  }
}

/** `at` is `{`; returns the index after the matching `}`, or -1 when whitespace is in the way. */
function compactObjectEnd(text: string, at: number): number {
  let depth = 0;
  for (let i = at; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === QUOTE) {
      const end = stringEnd(text, i);
      if (end < 0) return -1;
      i = end - 1;
    } else if (code === OPEN_BRACE || code === OPEN_BRACKET) {
      depth++;
    } else if (code === CLOSE_BRACE || code === CLOSE_BRACKET) {
      depth--;
      if (depth === 0) return i + 1;
    } else if (isJsonWhitespace(code)) {
      return -1;
    }
  }
  return -1;
}

/** Index after `"<key>"` followed by optional whitespace and a colon, or -1. */
function keyEnd(text: string, at: number, key: string): number {
  if (text.charCodeAt(at) !== QUOTE || !text.startsWith(key, at + 1)) return -1;
  const close = at + 1 + key.length;
  if (text.charCodeAt(close) !== QUOTE) return -1;
  const colon = skipWhitespace(text, close + 1);
  return text.charCodeAt(colon) === COLON ? colon + 1 : -1;
}

/**
 * The text of `data` in a payload JSON.parse accepted as an object with `type` (a string) and
 * `data` (an object), or undefined when the payload's layout is not the usual one.
 */
export function compactDataText(payload: string): string | undefined {
  let at = skipWhitespace(payload, 0);
  if (payload.charCodeAt(at) !== OPEN_BRACE) return undefined;
  at = keyEnd(payload, skipWhitespace(payload, at + 1), 'type');
  if (at < 0) return undefined;
  at = skipWhitespace(payload, at);
  if (payload.charCodeAt(at) !== QUOTE) return undefined;
  at = skipWhitespace(payload, stringEnd(payload, at));
  if (payload.charCodeAt(at) !== COMMA) return undefined;
  at = keyEnd(payload, skipWhitespace(payload, at + 1), 'data');
  if (at < 0) return undefined;
  const start = skipWhitespace(payload, at);
  if (payload.charCodeAt(start) !== OPEN_BRACE) return undefined;
  const end = compactObjectEnd(payload, start);
  if (end < 0) return undefined;
  // Only the payload's closing brace may follow: with a third key (a second "data", say),
  // JSON.parse's object would not be the one this slice spells.
  const close = skipWhitespace(payload, end);
  if (payload.charCodeAt(close) !== CLOSE_BRACE || skipWhitespace(payload, close + 1) !== payload.length) {
    return undefined;
  }
  return payload.slice(start, end);
}
