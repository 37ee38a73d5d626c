/**
 * Word splitting for inline commands, following Redis's sds.c sdssplitargs.
 *
 * Works on UTF-16 code units, and only ASCII units are special, so multi-byte characters pass
 * through untouched. `\xHH` yields the code unit 0xHH: the request decoder passes a latin1 view
 * of the line (one unit per byte) and converts each word back from bytes to UTF-8, so there
 * `"\xc3\xa9"` is "é" exactly as in Redis; a caller passing ordinary text gets U+00HH.
 * Unlike C strings, NUL is an ordinary character here.
 */

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const BACKSLASH = 0x5c;

/** C isspace(): used to skip blanks and after a closing quote. */
function isSpace(c: number): boolean {
  return c === SPACE || (c >= TAB && c <= CR);
}

/** sdssplitargs ends an unquoted word only on these (not on \v or \f). */
function endsWord(c: number): boolean {
  return c === SPACE || c === LF || c === CR || c === TAB;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

function escaped(c: number): string {
  switch (c) {
    case 0x6e:
      return '\n'; // \n
    case 0x72:
      return '\r'; // \r
    case 0x74:
      return '\t'; // \t
    case 0x62:
      return '\b'; // \b
    case 0x61:
      return '\x07'; // \a
    default:
      return String.fromCharCode(c);
  }
}

/**
 * Split an inline command line into words. Returns null for unbalanced quotes or a closing quote
 * followed by something other than a space, as sdssplitargs does (`"foo"bar`, `"foo`).
 */
export function splitInlineArgs(line: string): string[] | null {
  const n = line.length;
  const words: string[] = [];
  let i = 0;
  for (;;) {
    while (i < n && isSpace(line.charCodeAt(i))) i++;
    if (i >= n) return words;

    let word = '';
    let segment = i; // start of the run of plain characters not yet added to `word`
    let done = false;
    while (!done) {
      if (i >= n) {
        word += line.slice(segment, i);
        break;
      }
      const c = line.charCodeAt(i);
      if (endsWord(c)) {
        word += line.slice(segment, i);
        break;
      }
      if (c !== DQUOTE && c !== SQUOTE) {
        i++;
        continue;
      }
      // A quote may open in the middle of a word (`foo"bar"` is `foobar`), as in Redis.
      word += line.slice(segment, i);
      i++;
      segment = i;
      if (c === DQUOTE) {
        for (;;) {
          if (i >= n) return null; // unterminated quotes
          const q = line.charCodeAt(i);
          if (q === BACKSLASH && i + 1 < n) {
            word += line.slice(segment, i);
            const h1 = i + 3 < n && line.charCodeAt(i + 1) === 0x78 ? hexValue(line.charCodeAt(i + 2)) : -1;
            const h2 = h1 >= 0 ? hexValue(line.charCodeAt(i + 3)) : -1;
            if (h2 >= 0) {
              word += String.fromCharCode(h1 * 16 + h2);
              i += 4;
            } else {
              word += escaped(line.charCodeAt(i + 1));
              i += 2;
            }
            segment = i;
          } else if (q === DQUOTE) {
            break;
          } else {
            i++;
          }
        }
      } else {
        for (;;) {
          if (i >= n) return null;
          const q = line.charCodeAt(i);
          if (q === BACKSLASH && i + 1 < n && line.charCodeAt(i + 1) === SQUOTE) {
            // The only escape between single quotes.
            word += `${line.slice(segment, i)}'`;
            i += 2;
            segment = i;
          } else if (q === SQUOTE) {
            break;
          } else {
            i++;
          }
        }
      }
      // `i` is on the closing quote: it must end the line or be followed by a space.
      word += line.slice(segment, i);
      i++;
      if (i < n && !isSpace(line.charCodeAt(i))) return null;
      done = true;
    }
    words.push(word);
  }
}
