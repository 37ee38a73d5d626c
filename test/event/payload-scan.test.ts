import { isUtf8 } from 'node:buffer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createStoredEvent,
  eventJson,
  eventLineHead,
  eventLineMiddle,
  eventLineSize,
  parsePublishPayload,
  readPublishPayload,
  parsePublishPayloadWithJsonParse,
  writeEventLine,
} from '../../src/event/event.js';
import { REFUSED, scanPublishPayload } from '../../src/event/payload-scan.js';
import { jsonValues } from './json-values.js';

const LIMIT = 4_096;

type Outcome = { type: string; dataJson: string } | { code: string; message: string };

function outcome(parse: () => { type: string; dataJson: string }): Outcome {
  try {
    return parse();
  } catch (error) {
    const { code, message } = error as { code: string; message: string };
    return { code, message };
  }
}

/**
 * Bytes around a payload in what was received (the request's header before it, its CRLF and
 * the next request after it), chosen to look like the JSON the scan might be waiting for.
 */
const AROUND = ['', '}', '"}}', '0', '1}', 'e5}', '\\u0041"}', '"data":{}}', ' '];

/** The payload's bytes scanned as PUBLISH takes them (in place, among other bytes), its data decoded to compare. */
function viaScan(bytes: Buffer): Outcome {
  const results = AROUND.map((after, k) => {
    const before = Buffer.from(`$${bytes.length}\r\n`.slice(0, k));
    const received = Buffer.concat([before, bytes, Buffer.from(after)]);
    return outcome(() => {
      const { type, data } = parsePublishPayload(received, LIMIT, before.length, before.length + bytes.length);
      // The bytes handed on are UTF-8 (NewEvent.data), not only text that decodes alike.
      expect(isUtf8(data), data.toString()).toBe(true);
      return { type, dataJson: data.toString() };
    });
  });
  for (const result of results) expect(result).toEqual(results[0]); // what follows never changes the verdict
  return results[0]!;
}

/** The reference: the bytes decoded (what is not UTF-8 becoming U+FFFD), then JSON.parse. */
function viaJsonParse(bytes: Buffer): Outcome {
  return outcome(() => parsePublishPayloadWithJsonParse(bytes.toString(), bytes.length, LIMIT));
}

/**
 * The scan of the bytes and JSON.parse of their text give the same verdict and the same text:
 * same type and data text (so the same event line), or the same error.
 */
function expectSameVerdictOfBytes(bytes: Buffer): void {
  const reference = viaJsonParse(bytes);
  expect(viaScan(bytes)).toEqual(reference);
  // The scan's own verdict, before the type rules: it refuses only what JSON.parse's path refuses.
  if (scanPublishPayload(bytes) === REFUSED) expect(reference).toHaveProperty('code');
  if (!('code' in reference)) expect(scanPublishPayload(bytes)).not.toBe(REFUSED);
}

/** expectSameVerdictOfBytes of the payload's UTF-8 (a lone surrogate is sent as EF BF BD). */
function expectSameVerdict(payload: string): void {
  expectSameVerdictOfBytes(Buffer.from(payload));
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

  it('builds the same event line as before from the slice, as text and as bytes', () => {
    const middle = eventLineMiddle(7, 'sb');
    fc.assert(
      fc.property(usualPayload, (payload) => {
        const bytes = Buffer.from(payload);
        const reference = viaJsonParse(bytes);
        if ('code' in reference) return;
        // Where PUBLISH's path reads it: into its publication, `data` left where it lies.
        const read = { type: '', dataBytes: bytes, dataStart: 0, dataEnd: 0 };
        readPublishPayload(bytes, LIMIT, 0, bytes.length, read);
        const { type, dataBytes, dataStart, dataEnd } = read;
        const data = dataBytes.subarray(dataStart, dataEnd);
        const line = createStoredEvent(
          { workspaceId: 7, sandboxId: 'sb', type },
          data.toString(),
          { ms: 1, seq: 2 },
          3,
        );
        const before = createStoredEvent(
          { workspaceId: 7, sandboxId: 'sb', ...reference },
          reference.dataJson,
          { ms: 1, seq: 2 },
          3,
        );
        expect(line.json).toBe(before.json);
        // The memory store writes the line as bytes (writeEventLine): the same bytes.
        const head = eventLineHead(middle, JSON.stringify(type));
        const size = eventLineSize(line.id, head, dataEnd - dataStart, 3);
        const written = Buffer.alloc(size + 2);
        expect(writeEventLine(written, 1, line.id, head, dataBytes, dataStart, dataEnd, 3)).toBe(size + 1);
        expect(written.subarray(1, size + 1).equals(Buffer.from(before.json))).toBe(true);
      }),
      { numRuns: 1_000 },
    );
  });

  it('writes the line as bytes for any id and timestamp, as eventJson builds it as text', () => {
    const head = eventLineHead(eventLineMiddle(1, 'sb-é'), JSON.stringify('type.é'));
    const data = Buffer.from('{"k":"v€"}');
    // `data` among other bytes, as a request holds it.
    const received = Buffer.concat([Buffer.from('}"x'), data, Buffer.from('"}\r\n')]);
    const numbers = fc.oneof(
      fc.constantFrom(0, 9, 10, 99_999_999, 100_000_000, 100_000_001, 1_765_000_000_000, Number.MAX_SAFE_INTEGER),
      fc.maxSafeNat(),
    );
    fc.assert(
      fc.property(numbers, numbers, numbers, (ms, seq, timestamp) => {
        const id = { ms, seq };
        const out = Buffer.alloc(eventLineSize(id, head, data.length, timestamp));
        expect(writeEventLine(out, 0, id, head, received, 3, 3 + data.length, timestamp)).toBe(out.length);
        expect(out.toString()).toBe(eventJson(id, 1, 'sb-é', 'type.é', data.toString(), timestamp));
      }),
      { numRuns: 2_000 },
    );
  });

  it('takes bytes that are not UTF-8 as decoding takes them (U+FFFD), wherever they are', () => {
    const invalid = fc.constantFrom(
      [0x80],
      [0xff],
      [0xc3], // a lead byte without its continuation
      [0xe2, 0x82], // a three-byte sequence cut short
      [0xed, 0xa0, 0x80], // a surrogate encoded in UTF-8
      [0xc0, 0xaf], // an overlong '/'
      [0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
      [0xe0, 0x9f, 0xbf], // an overlong three-byte form
      [0xf0, 0x8f, 0xbf, 0xbf], // an overlong four-byte form
      [0xf5, 0x80, 0x80, 0x80], // a lead byte no sequence has
      [0xbf, 0xc3, 0xa9], // a stray continuation byte before a valid sequence
      [0xc3, 0xa9], // valid: é
      [0xf0, 0x9f, 0x98, 0x80], // valid: an emoji
      // valid: the first and last of each length and around the surrogates
      [0xc2, 0x80, 0xdf, 0xbf, 0xe0, 0xa0, 0x80, 0xef, 0xbf, 0xbf],
      [0xed, 0x9f, 0xbf, 0xee, 0x80, 0x80, 0xf0, 0x90, 0x80, 0x80, 0xf4, 0x8f, 0xbf, 0xbf],
      [...Buffer.from('é€😀'.repeat(40))], // a long run of sequences
    );
    fc.assert(
      fc.property(fc.oneof(usualPayload, payloadLike), fc.nat(), invalid, (payload, position, inserted) => {
        const bytes = Buffer.from(payload);
        const at = bytes.length === 0 ? 0 : position % bytes.length;
        expectSameVerdictOfBytes(Buffer.concat([bytes.subarray(0, at), Buffer.from(inserted), bytes.subarray(at)]));
      }),
      { numRuns: 5_000 },
    );
    const cases: [string, number[], string][] = [
      ['{"type":"t","data":{"k":"', [0xff, 0xfe], '"}}'],
      ['{"type":"', [0xc3], '","data":{}}'],
      ['{"type":"t","data":{"', [0x80], '":1}}'],
      ['{"type":"t","data":{"k":', [0xc3, 0xa9], '}}'],
    ];
    for (const [before, inserted, after] of cases) {
      expectSameVerdictOfBytes(Buffer.concat([Buffer.from(before), Buffer.from(inserted), Buffer.from(after)]));
    }
    // Inside a string the event keeps U+FFFD, as PUBLISH always stored it.
    const { data } = parsePublishPayload(
      Buffer.from([...Buffer.from('{"type":"t","data":{"k":"'), 0xff, ...Buffer.from('"}}')]),
      LIMIT,
    );
    expect(data.toString()).toBe('{"k":"\ufffd"}');
  });

  it('finds each byte that ends a run of plain string bytes wherever it falls (they are tested four at a time)', () => {
    const stops = ['"', '\\"', '\\\\', '\\n', '\\u00e9', '\\u00g9', '\\x', '\u0001', '\u001f', 'é', '😀', '\\'];
    for (const stopping of stops) {
      for (let before = 0; before <= 9; before++) {
        for (let after = 0; after <= 5; after++) {
          const text = `${'a'.repeat(before)}${stopping}${'b'.repeat(after)}`;
          expectSameVerdict(`{"type":"t${text}","data":{"k${text}":"${text}"}}`);
          expectSameVerdict(`{"type":"t","data":{"k":"${text}`); // cut inside the string
        }
      }
    }
    for (let before = 0; before <= 9; before++) {
      const bytes = Buffer.from(`{"type":"t","data":{"k":"${'a'.repeat(before)}\u0000${'b'.repeat(before % 4)}"}}`);
      bytes[bytes.indexOf(0)] = 0xff; // a byte that is not UTF-8 at each place in a run
      expectSameVerdictOfBytes(bytes);
    }
  });

  it('agrees on nesting around the depths where the scan grows its stack, and as deep as the size limit allows', () => {
    for (const depth of [63, 64, 65, 127, 128, 129, 1_000, 2_000]) {
      const open = Array.from({ length: depth }, (_, k) => (k % 2 === 0 ? '{"a":' : '[')).join('');
      const close = Array.from({ length: depth }, (_, k) => (k % 2 === 0 ? '}' : ']'))
        .reverse()
        .join('');
      expectSameVerdict(`{"type":"t","data":${open}1${close}}`);
      expectSameVerdict(`{"type":"t","data":${open}1${close.slice(1)}}`);
      expectSameVerdict(`{"type":"t","data":{"x":${open}1${close},"y":[${open}1${close}]}}`);
    }
  });

  it('checks the size as received, before anything is decoded', () => {
    const invalid = Buffer.concat([
      Buffer.from('{"type":"t","data":{"k":"'),
      Buffer.alloc(LIMIT - 30, 0xff),
      Buffer.from('"}}'),
    ]);
    expect(invalid.length).toBeLessThanOrEqual(LIMIT); // decoded, it is three times larger
    expect(viaScan(invalid)).toEqual(viaJsonParse(invalid));
    expect(viaScan(invalid)).not.toHaveProperty('code');
    const over = Buffer.concat([invalid, Buffer.alloc(LIMIT, 0x20)]);
    expect(viaScan(over)).toMatchObject({ code: 'EVENT_TOO_LARGE' });
  });
});
