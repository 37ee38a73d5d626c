import { describe, expect, it } from 'vitest';
import { splitInlineArgs } from '../../src/protocol/inline.js';

describe('splitInlineArgs (sds.c sdssplitargs)', () => {
  it.each([
    ['PING', ['PING']],
    ['SUBSCRIBE sb-1 tok', ['SUBSCRIBE', 'sb-1', 'tok']],
    ['  a \t b  ', ['a', 'b']],
    ['', []],
    ['   ', []],
    ['\r\n', []],
    ['\t\v\f\r\n ', []],
    ['SUBSCRIBE "sb 1" \'x\'', ['SUBSCRIBE', 'sb 1', 'x']],
    ['""', ['']],
    ["''", ['']],
    ['a "" b', ['a', '', 'b']],
    ['"a"\t"b"', ['a', 'b']],
    ['"a"\v"b"', ['a', 'b']], // any isspace() may follow a closing quote
    ['foo"bar baz"', ['foobar baz']], // a quote may open mid-word
    ["foo'bar baz'", ['foobar baz']],
    ['\fa b', ['a', 'b']],
    ['a\vb', ['a\vb']], // sdssplitargs ends a bare word only on space, tab, CR, LF
    ['a\fb', ['a\fb']],
    ['a\0b', ['a\0b']], // binary-safe: NUL is ordinary
  ])('%j', (line, expected) => {
    expect(splitInlineArgs(line)).toEqual(expected);
  });

  it('decodes double-quoted escapes', () => {
    expect(splitInlineArgs('"\\n\\r\\t\\b\\a"')).toEqual(['\n\r\t\b\x07']);
    expect(splitInlineArgs('"\\x41\\x6a\\x6A"')).toEqual(['Ajj']);
    expect(splitInlineArgs('"\\x00\\xff"')).toEqual(['\x00\xff']);
    expect(splitInlineArgs('"\\"q\\""')).toEqual(['"q"']);
    expect(splitInlineArgs('"a\\\\b"')).toEqual(['a\\b']);
    expect(splitInlineArgs('"\\q\\\'"')).toEqual(["q'"]); // \<any> is that char
    expect(splitInlineArgs('"\\x4g"')).toEqual(['x4g']); // not two hex digits: \x is x
    expect(splitInlineArgs('"\\x4"')).toEqual(['x4']);
    expect(splitInlineArgs('"a b\tc"')).toEqual(['a b\tc']);
  });

  it("single quotes only know \\'", () => {
    expect(splitInlineArgs("'it\\'s'")).toEqual(["it's"]);
    expect(splitInlineArgs("'a\\nb'")).toEqual(['a\\nb']);
    expect(splitInlineArgs("'\"'")).toEqual(['"']);
    expect(splitInlineArgs('"\'"')).toEqual(["'"]);
  });

  it.each([
    ['"abc'],
    ["'abc"],
    ['"abc"def'],
    ["'a'b"],
    ['SUBSCRIBE "sb'],
    ['"abc\\"'], // the escaped quote does not close
    ['"abc\\'],
    ["'abc\\'"],
    ['""x'],
  ])('returns null for unbalanced or glued quotes: %j', (line) => {
    expect(splitInlineArgs(line)).toBeNull();
  });

  it('keeps multi-byte characters, unquoted and quoted', () => {
    expect(splitInlineArgs('é€😀 "é€ 😀" \'😀 x\'')).toEqual(['é€😀', 'é€ 😀', '😀 x']);
    expect(splitInlineArgs('"\\😀"')).toEqual(['😀']);
  });

  it('gives code unit 0xHH for \\xHH (the decoder feeds it one unit per byte)', () => {
    expect(splitInlineArgs('"\\xc3\\xa9"')).toEqual(['\xc3\xa9']);
  });

  it('handles long lines in linear time', () => {
    const words = Array.from({ length: 20_000 }, (_, i) => (i % 2 ? `"w ${i}"` : `w${i}`));
    const out = splitInlineArgs(words.join(' '));
    expect(out).toHaveLength(20_000);
    expect(out![1]).toBe('w 1');
  });
});
