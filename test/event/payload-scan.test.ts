import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createStoredEvent, parsePublishPayload, parsePublishPayloadWithJsonParse } from '../../src/event/event.js';
import { REFUSED, scanPublishPayload } from '../../src/event/payload-scan.js';
import { jsonValues } from './json-values.js';

const LIMIT = 4_096;

type Outcome = { type: string; dataJson: string } | { code: string; message: string };

function outcome(parse: typeof parsePublishPayload, payload: string): Outcome {
  try {
    return parse(payload, Buffer.byteLength(payload), LIMIT);
  } catch (error) {
    const { code, message } = error as { code: string; message: string };
    return { code, message };
  }
}

/**
 * The scan and JSON.parse give the same verdict and the same text: same type and data text
 * (so the same event line), or the same error.
 */
function expectSameVerdict(payload: string): void {
  const viaJsonParse = outcome(parsePublishPayloadWithJsonParse, payload);
  expect(outcome(parsePublishPayload, payload)).toEqual(viaJsonParse);
  // The scan's own verdict, before the type rules: it refuses only what JSON.parse's path refuses.
  if (scanPublishPayload(payload) === REFUSED) expect(viaJsonParse).toHaveProperty('code');
  if (!('code' in viaJsonParse)) expect(scanPublishPayload(payload)).not.toBe(REFUSED);
}

/** Strings likely to trip a scanner: quotes, backslashes, escapes, braces, surrogates, controls. */
const trickyString = fc
  .array(
    fc.constantFrom(
      'a',
      'type',
      'data',
      '"',
      '\\',
      '\\u0041',
      '{',
      '}',
      '[',
      ']',
      ':',
      ',',
      ' ',
      '\n',
      '\u0001',
      '\u00e9',
      '\u{1F600}',
      '\ud800',
      '\udc00',
    ),
    { maxLength: 8 },
  )
  .map((parts) => parts.join(''));
const jsonValue = jsonValues(trickyString).value;

/** Member names: the two accepted ones, spelled plainly or with escapes, and others. */
const memberName = fc.oneof(
  fc.constantFrom('"type"', '"data"', '"typ\\u0065"', '"\\u0064ata"', '"Type"', '"__proto__"', '"datа"'),
  trickyString.map((name) => JSON.stringify(name)),
);
const whitespace = fc.constantFrom('', '', ' ', '\n', '\r\n\t ');

/** Payload-shaped objects: members in any order, duplicates, any values, any whitespace. */
const payloadLike = fc
  .array(
    fc.tuple(
      memberName,
      fc.oneof(
        trickyString.map((s) => JSON.stringify(s)),
        jsonValue.map((v) => JSON.stringify(v)),
        jsonValue.map((v) => JSON.stringify(v, null, 1)),
      ),
      whitespace,
    ),
    { maxLength: 4 },
  )
  .chain((members) =>
    whitespace.map(
      (ws) => `${ws}{${members.map(([name, value, space]) => `${space}${name}${space}:${value}`).join(',')}}${ws}`,
    ),
  );

/** The usual payload: `{"type": <string>, "data": <object>}`. */
const usualPayload = fc
  .tuple(trickyString, fc.dictionary(trickyString, jsonValue, { maxKeys: 4 }))
  .map(([type, data]) => JSON.stringify({ type, data }));

/** A payload with one edit: a character removed, replaced, inserted, or the end cut off. */
function mutated(source: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const inserted = fc.constantFrom(
    '"',
    '\\',
    '{',
    '}',
    '[',
    ']',
    ',',
    ':',
    ' ',
    '0',
    '-',
    '.',
    'e',
    'n',
    '\u0000',
    'x',
  );
  return fc
    .tuple(source, fc.nat(), inserted, fc.constantFrom('remove', 'replace', 'insert', 'cut'))
    .map(([text, position, char, edit]) => {
      const i = text.length === 0 ? 0 : position % text.length;
      if (edit === 'remove') return text.slice(0, i) + text.slice(i + 1);
      if (edit === 'replace') return text.slice(0, i) + char + text.slice(i + 1);
      if (edit === 'insert') return text.slice(0, i) + char + text.slice(i);
      return text.slice(0, i);
    });
}

describe('PUBLISH payload scan: the verdict and text of JSON.parse, without building objects', () => {
  it('agrees on payloads of the usual layout', () => {
    fc.assert(fc.property(usualPayload, expectSameVerdict), { numRuns: 2_000 });
  });

  it('agrees on payload-shaped objects: any member names, order, duplicates, values, whitespace', () => {
    fc.assert(fc.property(payloadLike, expectSameVerdict), { numRuns: 3_000 });
  });

  it('agrees on payloads with one character edited (mostly malformed JSON)', () => {
    fc.assert(fc.property(mutated(fc.oneof(usualPayload, payloadLike)), expectSameVerdict), { numRuns: 5_000 });
  });

  it('agrees on hostile strings made of JSON tokens', () => {
    const tokens = fc.constantFrom(
      '{',
      '}',
      '[',
      ']',
      '"type"',
      '"data"',
      ':',
      ',',
      '"x"',
      '1',
      '-0.5e+3',
      'true',
      'null',
      ' ',
      '\\',
      '"',
    );
    fc.assert(
      fc.property(
        fc.array(tokens, { maxLength: 16 }).map((parts) => parts.join('')),
        expectSameVerdict,
      ),
      { numRuns: 3_000 },
    );
  });

  it('agrees on the edge cases of numbers, literals, escapes and nesting', () => {
    const data = [
      '0',
      '-0',
      '01',
      '-',
      '1.',
      '.5',
      '1e',
      '1e+',
      '1E-2',
      '-0.0e0',
      '1.5e999',
      'tru',
      'nul',
      'NaN',
      'Infinity',
      '"\\u00e"',
      '"\\x41"',
      '"\\/"',
      '"\\ud800"',
      '[1,]',
      '[,1]',
      '{"a":1,}',
      '[]',
      '{}',
      '[[[[[[]]]]]]',
      `${'['.repeat(200)}${']'.repeat(200)}`,
      `${'['.repeat(200)}${']'.repeat(199)}`,
    ];
    for (const value of data) {
      expectSameVerdict(`{"type":"t","data":{"v":${value}}}`);
      expectSameVerdict(`{"type":"t","data":${value}}`);
      expectSameVerdict(`{"type":${value}}`);
    }
    for (const payload of [
      '',
      ' ',
      '{',
      '}',
      '{}',
      'null',
      '[]',
      '"x"',
      '{"type":"t"}x',
      '{"type":"t"}\u00a0',
      '\ufeff{"type":"t"}',
    ]) {
      expectSameVerdict(payload);
    }
    expectSameVerdict(`{"type":"${'x'.repeat(128)}"}`);
    expectSameVerdict(`{"type":"${'x'.repeat(129)}"}`);
    expectSameVerdict('{"type":"\\ud83d\\ude00"}');
    expectSameVerdict('{"type":"\\ud83d"}');
    expectSameVerdict('{"type":"\ud83d"}');
  });

  it('builds the same event line as before from the slice', () => {
    fc.assert(
      fc.property(usualPayload, (payload) => {
        const viaJsonParse = outcome(parsePublishPayloadWithJsonParse, payload);
        if ('code' in viaJsonParse) return;
        const viaScan = parsePublishPayload(payload, Buffer.byteLength(payload), LIMIT);
        const line = (fields: { type: string; dataJson: string }) =>
          createStoredEvent({ workspaceId: 7, sandboxId: 'sb', ...fields }, { ms: 1, seq: 2 }, 3).json;
        expect(line(viaScan)).toBe(line(viaJsonParse));
      }),
      { numRuns: 1_000 },
    );
  });
});
