import fc from 'fast-check';
import RedisParser from 'redis-parser';
import { describe, expect, it } from 'vitest';
import {
  array,
  bulk,
  bulkArray,
  integer,
  nullBulk,
  pipelinedInteger,
  push,
  subscriptionConfirmation,
} from '../../src/protocol/encode.js';

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

describe('subscriptionConfirmation', () => {
  it('writes the bytes of push(kind, name, count) in both protocols, for any name and count', () => {
    const kind = bulk('subscribe');
    const name = fc.option(fc.string({ unit: 'binary', maxLength: 300 }), { nil: undefined });
    const count = fc.oneof(fc.integer({ min: 0, max: 2000 }), fc.nat());
    fc.assert(
      fc.property(fc.constantFrom(2 as const, 3 as const), name, count, (protocol, text, n) => {
        const expected = push(protocol, [kind, text === undefined ? nullBulk(protocol) : bulk(text), integer(n)]);
        expect(subscriptionConfirmation(protocol, kind, text, n).equals(expected)).toBe(true);
      }),
    );
  });

  it('is the frame Redis sends', () => {
    expect(subscriptionConfirmation(2, bulk('subscribe'), 'sb-1', 1).toString()).toBe(
      '*3\r\n$9\r\nsubscribe\r\n$4\r\nsb-1\r\n:1\r\n',
    );
    expect(subscriptionConfirmation(3, bulk('unsubscribe'), undefined, 0).toString()).toBe(
      '>3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n',
    );
  });
});

describe('pipelinedInteger', () => {
  it("gives integer's bytes, and for one value called again, the bytes right after the last", () => {
    for (const value of [0, 1, 10, 63, 64, 1023, 1024, 123456789]) {
      const replies = Array.from({ length: 600 }, () => pipelinedInteger(value));
      for (const reply of replies) expect(reply.toString('latin1')).toBe(`:${value}\r\n`);
      const adjacent = replies.filter(
        (reply, k) =>
          k > 0 &&
          reply.buffer === replies[k - 1]!.buffer &&
          reply.byteOffset === replies[k - 1]!.byteOffset + replies[k - 1]!.length,
      ).length;
      // Small values lie back to back but for a wrap every few hundred replies.
      if (value < 64) expect(adjacent).toBeGreaterThanOrEqual(595);
    }
  });
});
