import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePublishPayload } from '../../src/event/event.js';
import { compactDataText } from '../../src/event/payload-text.js';
import { jsonValues } from './json-values.js';

const LIMIT = 65_536;
/** The payload's type and data, the data decoded to be compared as text. */
const parse = (payload: string) => {
  const { type, data } = parsePublishPayload(Buffer.from(payload), LIMIT);
  return { type, dataJson: data.toString() };
};

/** JSON values with the strings most likely to trip a scanner: quotes, backslashes, braces. */
const trickyString = fc.stringMatching(/^[a-z"\\{}[\]:, \n\u00e9\u{1F600}]{0,12}$/u);
const jsonValue = jsonValues(trickyString).object;

/** JSON.stringify with whitespace sprinkled between tokens, as a pretty-printer would. */
const spacedLayouts = [
  (type: string, data: string) => `{"type":${type},"data":${data}}`,
  (type: string, data: string) => ` { "type" : ${type} , "data" : ${data} } `,
  (type: string, data: string) => `{\r\n  "type":\t${type},\n  "data": ${data}\n}\n`,
];

describe('PUBLISH payload: data is reused as sent, never changed in meaning', () => {
  it('gives back an equal object, as one line without whitespace outside strings', () => {
    fc.assert(
      fc.property(
        trickyString.filter((t) => t.length > 0),
        jsonValue,
        fc.nat(2),
        fc.boolean(),
        (type, data, layout, pretty) => {
          const dataText = pretty ? JSON.stringify(data, null, 2) : JSON.stringify(data);
          const payload = spacedLayouts[layout]!(JSON.stringify(type), dataText);
          const result = parse(payload);
          expect(result.type).toBe(type);
          // Compact data in any of these layouts is taken as sent, not re-serialised.
          if (!pretty) expect(compactDataText(payload)).toBe(dataText);
          expect(JSON.parse(result.dataJson)).toEqual(JSON.parse(dataText));
          expect(result.dataJson).not.toMatch(/[\r\n]/);
          // Compact: the text JSON.stringify would give, apart from number spelling.
          expect(result.dataJson).toBe(JSON.stringify(JSON.parse(result.dataJson)));
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it('takes the text as sent for the usual layout, and re-serialises anything else', () => {
    expect(compactDataText('{"type":"t","data":{"a":[1,{"b":"}\\""}]}}')).toBe('{"a":[1,{"b":"}\\""}]}');
    expect(compactDataText('{ "type" : "t" , "data" : {"a":1} }')).toBe('{"a":1}');
    // Whitespace inside data (a raw newline among it) is never copied: JSON.stringify decides.
    expect(compactDataText('{"type":"t","data":{"a": 1}}')).toBeUndefined();
    expect(parse('{"type":"t","data":{\n"a": 1}}').dataJson).toBe('{"a":1}');
    // Other key orders and duplicate keys: JSON.parse keeps the last one, so must we.
    expect(compactDataText('{"data":{"a":1},"type":"t"}')).toBeUndefined();
    expect(compactDataText('{"type":"t","data":{"a":1},"data":{"b":2}}')).toBeUndefined();
    expect(parse('{"type":"t","data":{"a":1},"data":{"b":2}}').dataJson).toBe('{"b":2}');
    expect(compactDataText('{"type":"t","type":"u","data":{}}')).toBeUndefined();
    expect(parse('{"type":"t","type":"u","data":{}}').type).toBe('u');
    // Escapes in strings, and in the key names the scanner looks for.
    expect(compactDataText('{"type":"a\\\\","data":{"k":"\\\\\\""}}')).toBe('{"k":"\\\\\\""}');
    expect(compactDataText('{"typ\\u0065":"t","data":{}}')).toBeUndefined();
    expect(parse('{"typ\\u0065":"t","data":{"x":1}}')).toEqual({ type: 't', dataJson: '{"x":1}' });
  });

  it('still refuses what docs/protocol.md refuses', () => {
    expect(() => parse('{"type":"t","data":[]}')).toThrow(/"data" must be a JSON object/);
    expect(() => parse('{"type":"t","data":{},"extra":1}')).toThrow(/unexpected field "extra"/);
    expect(() => parse('{"type":"","data":{}}')).toThrow(/"type" must be a string/);
    expect(() => parse('{"type":"t","data":{}')).toThrow(/not valid JSON/);
    expect(parse('{"type":"t"}')).toEqual({ type: 't', dataJson: '{}' });
  });

  it('refuses a type holding an unpaired surrogate (it has no UTF-8 form to store), not a paired one', () => {
    // Regression: SQLite read such a type back as U+FFFD, so HISTORY differed from delivery.
    for (const type of ['\\ud800x', 'x\\udc00', '\\udc00\\ud800']) {
      expect(() => parse(`{"type":"${type}","data":{}}`)).toThrow(/unpaired surrogate/);
    }
    expect(parse('{"type":"\\ud83d\\ude00 ok","data":{}}').type).toBe('\u{1F600} ok');
  });
});
