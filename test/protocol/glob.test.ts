import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileGlob, isGlobPattern } from '../../src/protocol/glob.js';

/**
 * Test oracle: Redis's recursive stringmatchlen walk (util.c, case-sensitive), transcribed over
 * byte arrays; out-of-range reads stand for C's NUL terminator. Exponential in the worst case,
 * so only used on short inputs.
 */
function redisMatch(pattern: string, subject: string): boolean {
  const p = Buffer.from(pattern, 'utf8');
  const s = Buffer.from(subject, 'utf8');
  const state = { skipLonger: false };
  const at = (buf: Buffer, i: number): number => (i < buf.length ? buf[i]! : 0);

  function walk(pi: number, si: number, nesting: number): boolean {
    if (nesting > 1000) return false;
    let plen = p.length - pi;
    let slen = s.length - si;
    while (plen > 0 && slen > 0) {
      const c = p[pi]!;
      if (c === 0x2a /* * */) {
        while (plen > 0 && at(p, pi + 1) === 0x2a) {
          pi++;
          plen--;
        }
        if (plen === 1) return true;
        while (slen > 0) {
          if (walk(pi + 1, si, nesting + 1)) return true;
          if (state.skipLonger) return false;
          si++;
          slen--;
        }
        state.skipLonger = true;
        return false;
      } else if (c === 0x3f /* ? */) {
        si++;
        slen--;
      } else if (c === 0x5b /* [ */) {
        pi++;
        plen--;
        const not = at(p, pi) === 0x5e;
        if (not) {
          pi++;
          plen--;
        }
        let match = false;
        for (;;) {
          if (at(p, pi) === 0x5c && plen >= 2) {
            pi++;
            plen--;
            if (p[pi] === s[si]) match = true;
          } else if (at(p, pi) === 0x5d) {
            break;
          } else if (plen === 0) {
            pi--;
            plen++;
            break;
          } else if (plen >= 3 && at(p, pi + 1) === 0x2d) {
            let start = p[pi]!;
            let end = p[pi + 2]!;
            if (start > end) [start, end] = [end, start];
            pi += 2;
            plen -= 2;
            if (s[si]! >= start && s[si]! <= end) match = true;
          } else if (p[pi] === s[si]) {
            match = true;
          }
          pi++;
          plen--;
        }
        if (not) match = !match;
        if (!match) return false;
        si++;
        slen--;
      } else {
        if (c === 0x5c && plen >= 2) {
          pi++;
          plen--;
        }
        if (p[pi] !== s[si]) return false;
        si++;
        slen--;
      }
      pi++;
      plen--;
      if (slen === 0) {
        while (at(p, pi) === 0x2a) {
          pi++;
          plen--;
        }
        break;
      }
    }
    return plen === 0 && slen === 0;
  }
  return walk(0, 0, 0);
}

function matches(pattern: string, subject: string): boolean {
  return compileGlob(pattern)(subject);
}

describe('compileGlob: Redis stringmatchlen cases', () => {
  it.each([
    ['h?llo', 'hello', true],
    ['h?llo', 'hallo', true],
    ['h?llo', 'hxllo', true],
    ['h?llo', 'hllo', false],
    ['h?llo', 'heello', false],
    ['h*llo', 'hllo', true],
    ['h*llo', 'heeeello', true],
    ['h*llo', 'hello world', false],
    ['h[ae]llo', 'hello', true],
    ['h[ae]llo', 'hallo', true],
    ['h[ae]llo', 'hillo', false],
    ['h[^e]llo', 'hallo', true],
    ['h[^e]llo', 'hbllo', true],
    ['h[^e]llo', 'hello', false],
    ['h[a-b]llo', 'hallo', true],
    ['h[a-b]llo', 'hbllo', true],
    ['h[a-b]llo', 'hcllo', false],
    ['sb-*', 'sb-123', true],
    ['sb-*', 'sb-', true], // `*` matches an empty run after the prefix
    ['sb-*', 'xb-123', false],
    ['*', 'anything', true],
    ['*', '', false], // util.c: an empty subject only matches an empty pattern
    ['**', '', false],
    ['', '', true],
    ['', 'a', false],
    ['a*', 'a', true],
    ['a**', 'a', true],
    ['a*?', 'a', false],
    ['*a', 'bba', true],
    ['*a*b', 'xaxxb', true],
    ['*a*b', 'xaxxbx', false],
    ['exact', 'exact', true],
    ['exact', 'Exact', false], // case-sensitive
    ['H?LLO', 'hello', false],
  ])('%j against %j is %s', (pattern, subject, expected) => {
    expect(matches(pattern, subject)).toBe(expected);
    expect(redisMatch(pattern, subject)).toBe(expected);
  });

  it('reversed ranges work as in Redis', () => {
    expect(matches('[z-a]', 'm')).toBe(true);
    expect(matches('[z-a]', 'A')).toBe(false);
    expect(matches('x[9-0]', 'x5')).toBe(true);
  });

  it('escapes outside and inside brackets', () => {
    expect(matches('h\\*llo', 'h*llo')).toBe(true);
    expect(matches('h\\*llo', 'hello')).toBe(false);
    expect(matches('\\?', '?')).toBe(true);
    expect(matches('\\?', 'a')).toBe(false);
    expect(matches('[\\]]', ']')).toBe(true);
    expect(matches('[\\^a]', '^')).toBe(true);
    expect(matches('[\\-]', '-')).toBe(true);
    expect(matches('a\\', 'a\\')).toBe(true); // a lone trailing backslash is literal
    expect(matches('\\\\', '\\')).toBe(true);
  });

  it('unclosed and empty brackets as Redis treats them', () => {
    expect(matches('[abc', 'b')).toBe(true); // the set read so far
    expect(matches('[abc', 'd')).toBe(false);
    expect(matches('[abc', 'ab')).toBe(false);
    expect(matches('[', 'x')).toBe(false);
    expect(matches('[^', 'x')).toBe(true);
    expect(matches('[]', 'x')).toBe(false);
    expect(matches('[^]', 'x')).toBe(true);
    expect(matches('[]a]', ']a]')).toBe(false);
    expect(matches('[a-]', '_')).toBe(true); // Redis reads `a-]` as the range ']'..'a'
    expect(matches('x[', 'x')).toBe(false);
  });

  it('matches bytes, as Redis does, for non-ASCII subjects', () => {
    expect(matches('?', 'é')).toBe(false); // é is two bytes in UTF-8
    expect(matches('??', 'é')).toBe(true);
    expect(matches('*€*', 'a€b')).toBe(true);
    expect(matches('sb-é*', 'sb-éx')).toBe(true);
    expect(matches('sb-?*', 'sb-😀')).toBe(true);
    expect(matches('[é]', 'é')).toBe(false); // a set of the two bytes matches one byte
  });

  it('stops matching past the nesting guard of 1000 star groups', () => {
    const subject = 'a'.repeat(1001);
    expect(matches('*a'.repeat(1000), subject)).toBe(true);
    expect(matches('*a'.repeat(1001), subject)).toBe(false);
    expect(matches(`${'*a'.repeat(1000)}*`, subject)).toBe(true); // a final star does not nest
  });

  it('finishes on pathological patterns', () => {
    const subject = 'a'.repeat(256);
    expect(matches(`${'*?'.repeat(5000)}x`, subject)).toBe(false);
    // At the nesting guard, so these run the matcher itself.
    expect(matches(`${'*?'.repeat(1000)}x`, subject)).toBe(false);
    expect(matches(`${'*a'.repeat(1000)}*b`, subject)).toBe(false);
    expect(matches(`${'*?'.repeat(1000)}a`, subject)).toBe(false); // needs 1001 bytes
    expect(matches(`${'*?'.repeat(255)}a`, subject)).toBe(true);
    expect(matches(`${'*a'.repeat(3000)}*b`, subject)).toBe(false);
    expect(matches(`${'*a'.repeat(200)}*b`, subject)).toBe(false);
    expect(matches('?*'.repeat(256), subject)).toBe(true);
    expect(matches(`${'a*'.repeat(128)}a`, subject)).toBe(true);
  });

  it('compiles once and matches many subjects', () => {
    const m = compileGlob('sb-[0-9]*');
    const hits = Array.from({ length: 1000 }, (_, i) => `sb-${i}`).filter(m);
    expect(hits).toHaveLength(1000);
    expect(m('sb-x')).toBe(false);
  });

  it('agrees with the Redis algorithm on random patterns', () => {
    const pattern = fc.string({
      unit: fc.constantFrom('a', 'b', '*', '?', '[', ']', '^', '-', '\\', 'é'),
      maxLength: 10,
    });
    const subject = fc.string({
      unit: fc.constantFrom('a', 'b', '*', '?', '[', ']', '^', '-', '\\', 'é', 'c'),
      maxLength: 10,
    });
    fc.assert(
      fc.property(pattern, subject, (p, s) => {
        expect(matches(p, s)).toBe(redisMatch(p, s));
      }),
      { numRuns: 5000 },
    );
  });
});

describe('isGlobPattern', () => {
  it('is true for *, ? and [', () => {
    expect(isGlobPattern('sb-*')).toBe(true);
    expect(isGlobPattern('sb-?')).toBe(true);
    expect(isGlobPattern('sb-[12]')).toBe(true);
    expect(isGlobPattern('sb-123')).toBe(false);
    expect(isGlobPattern('')).toBe(false);
  });
});
