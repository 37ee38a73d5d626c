/**
 * Glob matching with the semantics of Redis's util.c stringmatchlen (case-sensitive), used for
 * PSUBSCRIBE and PUBSUB CHANNELS patterns.
 *
 * Redis matches recursively; here the pattern is tokenised once and matched with the two-pointer
 * algorithm that only backtracks to the last `*`. That gives the same answers because every
 * token other than `*` matches exactly one byte, and it runs in O(pattern x subject) time with
 * no recursion, whatever the pattern.
 *
 * Like Redis, matching is over bytes: a non-ASCII subject or pattern is compared as UTF-8, so
 * `?` matches one byte and `[a-z]` compares byte values.
 */

const STAR = 0;
const ANY = 1;
const LITERAL = 2;
const CLASS = 3;

const BACKSLASH = 0x5c;
const ASTERISK = 0x2a;
const QUESTION = 0x3f;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const CARET = 0x5e;
const DASH = 0x2d;

/** util.c: `if (nesting > 1000) return 0;` each non-final `*` group adds one level. */
const MAX_STAR_NESTING = 1000;

const NON_ASCII = /[^\x00-\x7f]/;
const GLOB_SPECIAL = /[*?[\\]/;

/** A string whose code units are the UTF-8 bytes of `text` (the identity for ASCII). */
function byteString(text: string): string {
  return NON_ASCII.test(text) ? Buffer.from(text, 'utf8').toString('latin1') : text;
}

interface CompiledPattern {
  kinds: Uint8Array;
  /** LITERAL: the byte; CLASS: index into `classes`. */
  values: Uint32Array;
  /** 256-entry tables, negation already applied. */
  classes: Uint8Array[];
}

/** Tokenise exactly as stringmatchlen walks the pattern (the walk never depends on the subject). */
function tokenise(p: string): CompiledPattern & { nonFinalStarGroups: number } {
  const n = p.length;
  const kinds: number[] = [];
  const values: number[] = [];
  const classes: Uint8Array[] = [];
  let i = 0;
  while (i < n) {
    const c = p.charCodeAt(i);
    if (c === ASTERISK) {
      // Consecutive stars are one token, as Redis collapses them.
      while (i + 1 < n && p.charCodeAt(i + 1) === ASTERISK) i++;
      kinds.push(STAR);
      values.push(0);
    } else if (c === QUESTION) {
      kinds.push(ANY);
      values.push(0);
    } else if (c === OPEN_BRACKET) {
      const table = new Uint8Array(256);
      i++;
      const negate = i < n && p.charCodeAt(i) === CARET;
      if (negate) i++;
      for (;;) {
        if (i < n && p.charCodeAt(i) === BACKSLASH && n - i >= 2) {
          // `\x` inside brackets is the literal x.
          i++;
          table[p.charCodeAt(i)] = 1;
        } else if (i < n && p.charCodeAt(i) === CLOSE_BRACKET) {
          break;
        } else if (i >= n) {
          // Unclosed `[`: Redis steps back one so the pattern ends here; what was read is the set.
          i--;
          break;
        } else if (n - i >= 3 && p.charCodeAt(i + 1) === DASH) {
          // Ranges may be written backwards: `[z-a]` is `[a-z]`.
          let lo = p.charCodeAt(i);
          let hi = p.charCodeAt(i + 2);
          if (lo > hi) [lo, hi] = [hi, lo];
          table.fill(1, lo, hi + 1);
          i += 2;
        } else {
          table[p.charCodeAt(i)] = 1;
        }
        i++;
      }
      if (negate) for (let b = 0; b < 256; b++) table[b] = table[b] ? 0 : 1;
      kinds.push(CLASS);
      values.push(classes.length);
      classes.push(table);
    } else if (c === BACKSLASH && n - i >= 2) {
      i++;
      kinds.push(LITERAL);
      values.push(p.charCodeAt(i));
    } else {
      // Includes a lone trailing backslash, which Redis compares literally.
      kinds.push(LITERAL);
      values.push(c);
    }
    i++;
  }
  let nonFinalStarGroups = 0;
  for (let t = 0; t < kinds.length - 1; t++) if (kinds[t] === STAR) nonFinalStarGroups++;
  return {
    kinds: Uint8Array.from(kinds),
    values: Uint32Array.from(values),
    classes,
    nonFinalStarGroups,
  };
}

function matchTokens({ kinds, values, classes }: CompiledPattern, s: string): boolean {
  const slen = s.length;
  // util.c: with an empty subject the loop never runs and only an empty pattern matches (so
  // `*` does not match ""). A non-empty subject always reaches the star handling below.
  if (slen === 0) return kinds.length === 0;
  const tlen = kinds.length;
  let si = 0;
  let ti = 0;
  let starT = -1;
  let starS = 0;
  while (si < slen) {
    if (ti < tlen) {
      const kind = kinds[ti]!;
      if (kind === STAR) {
        starT = ti++;
        starS = si;
        continue;
      }
      const b = s.charCodeAt(si);
      const ok = kind === ANY || (kind === LITERAL ? values[ti] === b : classes[values[ti]!]![b] === 1);
      if (ok) {
        ti++;
        si++;
        continue;
      }
    }
    if (starT < 0) return false;
    // Let the last star swallow one more byte and retry what follows it.
    ti = starT + 1;
    si = ++starS;
  }
  while (ti < tlen && kinds[ti] === STAR) ti++;
  return ti === tlen;
}

/**
 * Compile `pattern` once; the returned function matches subjects without re-parsing.
 */
export function compileGlob(pattern: string): (subject: string) => boolean {
  if (!GLOB_SPECIAL.test(pattern)) return (subject) => subject === pattern;
  const compiled = tokenise(byteString(pattern));
  // A match must pass through every non-final star group, one recursion level each in Redis,
  // so past its nesting guard nothing can match.
  if (compiled.nonFinalStarGroups > MAX_STAR_NESTING) return () => false;
  return (subject) => matchTokens(compiled, byteString(subject));
}

/** True if `s` would be treated as a pattern rather than a plain name. */
export function isGlobPattern(s: string): boolean {
  return s.includes('*') || s.includes('?') || s.includes('[');
}
