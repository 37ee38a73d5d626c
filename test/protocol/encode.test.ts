import fc from 'fast-check';
import RedisParser from 'redis-parser';
import { describe, expect, it } from 'vitest';
import { array, bulk, bulkArray } from '../../src/protocol/encode.js';

describe('bulkArray', () => {
  it('writes the bytes of an array of bulk strings, as one buffer, for any text', () => {
    // Full Unicode: a text's UTF-8 length, not its JavaScript length, goes in the header.
    const texts = fc.array(fc.string({ unit: 'binary', maxLength: 300 }), { maxLength: 40 });
    fc.assert(
      fc.property(texts, (list) => {
        const encoded = bulkArray(list);
        expect(encoded.equals(array(list.map((text) => bulk(text))))).toBe(true);
        const replies: unknown[] = [];
        const parser = new RedisParser({
          returnReply: (reply: unknown) => replies.push(reply),
          returnError: (error: Error) => replies.push(error),
        });
        parser.execute(encoded);
        // Lone surrogates become U+FFFD in UTF-8, as Buffer.from does.
        expect(replies).toEqual([list.map((text) => Buffer.from(text).toString())]);
      }),
    );
  });

  it('writes *0 for no texts', () => {
    expect(bulkArray([]).toString()).toBe('*0\r\n');
  });
});
