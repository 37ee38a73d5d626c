import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SandboxEventsError } from '../../src/errors.js';
import {
  ProtocolError,
  RequestDecoder,
  type DecodedCommand,
  type DecoderLimits,
} from '../../src/protocol/request-decoder.js';

const LIMITS: DecoderLimits = {
  maxArgs: 1024,
  maxBulkBytes: 1024 * 1024,
  maxInlineBytes: 64 * 1024,
  maxRequestBytes: 2 * 1024 * 1024,
};
const PRE_AUTH: DecoderLimits = {
  maxArgs: 10,
  maxBulkBytes: 16 * 1024,
  maxInlineBytes: 64 * 1024,
  maxRequestBytes: 16 * 1024,
};

/** RESP array of bulk strings, encoded here so the test does not depend on encode.ts. */
function multibulk(args: string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const body = Buffer.from(arg, 'utf8');
    parts.push(Buffer.from(`$${body.length}\r\n`), body, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

function drain(decoder: RequestDecoder, limits: DecoderLimits = LIMITS): DecodedCommand[] {
  const out: DecodedCommand[] = [];
  for (let c = decoder.next(limits); c; c = decoder.next(limits)) out.push(c);
  return out;
}

function decodeChunks(chunks: Buffer[], limits: DecoderLimits = LIMITS): DecodedCommand[] {
  const decoder = new RequestDecoder();
  const out: DecodedCommand[] = [];
  for (const chunk of chunks) {
    decoder.push(chunk);
    out.push(...drain(decoder, limits));
  }
  return out;
}

function decode(input: string | Buffer, limits: DecoderLimits = LIMITS): DecodedCommand[] {
  return decodeChunks([typeof input === 'string' ? Buffer.from(input, 'latin1') : input], limits);
}

function args(commands: DecodedCommand[]): string[][] {
  return commands.map((c) => c.args);
}

/** Split `buf` at the given offsets (any order, out-of-range values wrap). */
function cut(buf: Buffer, offsets: number[]): Buffer[] {
  const points = [...new Set(offsets.map((o) => (buf.length ? o % (buf.length + 1) : 0)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of [...points, buf.length]) {
    if (p > from) out.push(buf.subarray(from, p));
    from = Math.max(from, p);
  }
  return out;
}

function protocolError(input: string | Buffer, limits: DecoderLimits = LIMITS): ProtocolError {
  const decoder = new RequestDecoder();
  decoder.push(typeof input === 'string' ? Buffer.from(input, 'latin1') : input);
  try {
    drain(decoder, limits);
  } catch (err) {
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err).toBeInstanceOf(SandboxEventsError);
    expect((err as ProtocolError).code).toBe('PROTOCOL_ERROR');
    expect((err as ProtocolError).name).toBe('ProtocolError');
    // After an error the decoder stays failed with the same error.
    expect(() => decoder.next(limits)).toThrow(err as Error);
    return err as ProtocolError;
  }
  throw new Error('expected a ProtocolError');
}

describe('RequestDecoder: Redis vectors', () => {
  it('decodes a multibulk SUBSCRIBE', () => {
    const out = decode('*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n');
    expect(out).toEqual([{ args: ['SUBSCRIBE', 'a', 'b'], inline: false, byteLengths: [9, 1, 1] }]);
  });

  it('decodes an inline SUBSCRIBE with quotes', () => {
    const out = decode(`SUBSCRIBE "sb 1" 'x'\r\n`);
    expect(out).toEqual([{ args: ['SUBSCRIBE', 'sb 1', 'x'], inline: true, byteLengths: [9, 4, 1] }]);
  });

  it('decodes pipelined inline commands one per next()', () => {
    const decoder = new RequestDecoder();
    decoder.push(Buffer.from('AUTH pw\r\nPING\r\n'));
    expect(decoder.next(LIMITS)?.args).toEqual(['AUTH', 'pw']);
    expect(decoder.bufferedBytes).toBe(6);
    expect(decoder.next(LIMITS)?.args).toEqual(['PING']);
    expect(decoder.next(LIMITS)).toBeUndefined();
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('accepts a bare LF as the end of an inline line', () => {
    expect(args(decode('PING\nPING x\r\n'))).toEqual([['PING'], ['PING', 'x']]);
  });

  it('ignores *0, *-10 and empty lines, as Redis does', () => {
    const out = decode('*-10\r\n*0\r\n\r\n\n   \r\n\t\r\n*-1\r\nPING\r\n');
    expect(args(out)).toEqual([['PING']]);
  });

  it('skips the byte after a header CR and the CRLF after a body without checking them', () => {
    // networking.c moves past `\r` + one byte and past `<len>` + 2 bytes.
    expect(args(decode('*2\rX$1\r\na??$2\r\nbcZZ'))).toEqual([['a', 'bc']]);
  });

  it('keeps CR, LF and binary inside bulks', () => {
    const out = decode(multibulk(['PUBLISH', 'sb', '{"a":"\r\n"}\r\n*1\r\n', '']));
    expect(args(out)).toEqual([['PUBLISH', 'sb', '{"a":"\r\n"}\r\n*1\r\n', '']]);
    expect(out[0]!.byteLengths).toEqual([7, 2, 16, 0]);
  });

  it('reports byte lengths of multi-byte arguments as received', () => {
    const out = decode(Buffer.concat([multibulk(['PUBLISH', 'é€😀']), Buffer.from('PING é€😀\r\n')]));
    expect(out).toEqual([
      { args: ['PUBLISH', 'é€😀'], inline: false, byteLengths: [7, 9] },
      { args: ['PING', 'é€😀'], inline: true, byteLengths: [4, 9] },
    ]);
  });

  it('decodes invalid UTF-8 with replacement characters but keeps the received length', () => {
    const out = decode(Buffer.from('*1\r\n$2\r\n\xff\xfe\r\n', 'latin1'));
    expect(out[0]!.args).toEqual(['\ufffd\ufffd']);
    expect(out[0]!.byteLengths).toEqual([2]);
  });

  it('turns \\xHH escapes of an inline line into bytes', () => {
    const out = decode(Buffer.from('SET k "\\xc3\\xa9" "\\x41"\r\n'));
    expect(out[0]).toEqual({ args: ['SET', 'k', 'é', 'A'], inline: true, byteLengths: [3, 1, 2, 1] });
  });

  it('keeps a bulk at the largest size, a request at the largest size and a line at the longest length', () => {
    const bulk = 'x'.repeat(LIMITS.maxBulkBytes);
    expect(args(decode(multibulk(['PUBLISH', bulk])))).toEqual([['PUBLISH', bulk]]);
    // *2\r\n $4\r\nAUTH\r\n $16360\r\n<body>\r\n is exactly 16 KiB.
    const body = 'x'.repeat(PRE_AUTH.maxRequestBytes - 24);
    expect(multibulk(['AUTH', body]).length).toBe(PRE_AUTH.maxRequestBytes);
    expect(args(decode(multibulk(['AUTH', body]), PRE_AUTH))).toEqual([['AUTH', body]]);
    expect(protocolError(multibulk(['AUTH', `${body}x`]), PRE_AUTH).message).toBe('Protocol error: request too large');
    const word = 'y'.repeat(LIMITS.maxInlineBytes);
    expect(args(decode(`${word}\r\n`))).toEqual([[word]]);
  });
});

describe('RequestDecoder: protocol errors', () => {
  it.each([
    ['*3000000000\r\n', 'Protocol error: invalid multibulk length'],
    ['*abc\r\n', 'Protocol error: invalid multibulk length'],
    ['*1025\r\n', 'Protocol error: invalid multibulk length'],
    ['*\r\n', 'Protocol error: invalid multibulk length'],
    ['*+1\r\n', 'Protocol error: invalid multibulk length'],
    ['* 1\r\n', 'Protocol error: invalid multibulk length'],
    ['*1 \r\n', 'Protocol error: invalid multibulk length'],
    ['*01\r\n', 'Protocol error: invalid multibulk length'],
    ['*-0\r\n', 'Protocol error: invalid multibulk length'],
    ['*-\r\n', 'Protocol error: invalid multibulk length'],
    ['*1-\r\n', 'Protocol error: invalid multibulk length'],
    ['*99999999999999999999\r\n', 'Protocol error: invalid multibulk length'],
    ['*-99999999999999999999\r\n', 'Protocol error: invalid multibulk length'],
    ['*1\r\n$-10\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$-1\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$blabla\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$01\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$1048577\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\n$99999999999999999999\r\n', 'Protocol error: invalid bulk length'],
    ['*1\r\nfoo\r\n', "Protocol error: expected '$', got 'f'"],
    ['*2\r\n$1\r\na\r\n:1\r\n', "Protocol error: expected '$', got ':'"],
    ['*1\r\n*1\r\n$1\r\na\r\n', "Protocol error: expected '$', got '*'"],
    ['SUBSCRIBE "sb\r\n', 'Protocol error: unbalanced quotes in request'],
    ['GET "a"b\r\n', 'Protocol error: unbalanced quotes in request'],
    ["GET 'a\r\n", 'Protocol error: unbalanced quotes in request'],
  ])('%j -> %s', (input, message) => {
    expect(protocolError(input).message).toBe(message);
  });

  it('fails fast on nested arrays without recursing', () => {
    const err = protocolError('*1\r\n'.repeat(100_000));
    expect(err.message).toBe("Protocol error: expected '$', got '*'");
  });

  it('refuses a too long *<n> line once past maxInlineBytes', () => {
    const decoder = new RequestDecoder();
    decoder.push(Buffer.from(`*${'1'.repeat(LIMITS.maxInlineBytes - 1)}`));
    expect(decoder.next(LIMITS)).toBeUndefined();
    decoder.push(Buffer.from('1'));
    expect(() => decoder.next(LIMITS)).toThrow('Protocol error: too big mbulk count string');
    expect(protocolError(`*${'9'.repeat(70_000)}`).message).toBe('Protocol error: too big mbulk count string');
  });

  it('refuses a too long $<len> line once past maxInlineBytes', () => {
    const decoder = new RequestDecoder();
    decoder.push(Buffer.from(`*1\r\n$${'1'.repeat(LIMITS.maxInlineBytes - 1)}`));
    expect(decoder.next(LIMITS)).toBeUndefined();
    decoder.push(Buffer.from('1'));
    expect(() => decoder.next(LIMITS)).toThrow('Protocol error: too big bulk count string');
  });

  it('refuses an inline line without LF once past maxInlineBytes', () => {
    const decoder = new RequestDecoder();
    decoder.push(Buffer.from('x'.repeat(LIMITS.maxInlineBytes)));
    expect(decoder.next(LIMITS)).toBeUndefined();
    decoder.push(Buffer.from('\r')); // may still be stripped as part of CRLF
    expect(decoder.next(LIMITS)).toBeUndefined();
    decoder.push(Buffer.from('x'));
    expect(() => decoder.next(LIMITS)).toThrow('Protocol error: too big inline request');
    expect(protocolError(`${'x'.repeat(LIMITS.maxInlineBytes + 1)}\r\n`).message).toBe(
      'Protocol error: too big inline request',
    );
  });

  it('never buffers endless bytes without a newline', () => {
    for (const prefix of ['\x00', '$\x00', '"', '+']) {
      const decoder = new RequestDecoder();
      decoder.push(Buffer.from(prefix, 'latin1'));
      const chunk = Buffer.alloc(4096, 0x00);
      let error: unknown;
      try {
        for (let i = 0; i < 100; i++) {
          decoder.push(chunk);
          decoder.next(LIMITS);
          expect(decoder.bufferedBytes).toBeLessThanOrEqual(LIMITS.maxInlineBytes + 1);
        }
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(ProtocolError);
      expect((error as Error).message).toBe('Protocol error: too big inline request');
    }
  });

  it('refuses too many inline arguments', () => {
    const line = `${Array.from({ length: 11 }, (_, i) => `a${i}`).join(' ')}\r\n`;
    expect(protocolError(line, PRE_AUTH).message).toBe('Protocol error: too many arguments in inline request');
    expect(decode(line, LIMITS)[0]!.args).toHaveLength(11);
  });

  it('refuses a request larger than maxRequestBytes before its bodies arrive', () => {
    const decoder = new RequestDecoder();
    decoder.push(Buffer.from('*3\r\n$4\r\nAUTH\r\n$10000\r\n'));
    expect(decoder.next(PRE_AUTH)).toBeUndefined();
    decoder.push(Buffer.from(`${'x'.repeat(10_000)}\r\n`));
    expect(decoder.next(PRE_AUTH)).toBeUndefined();
    decoder.push(Buffer.from('$10000\r\n'));
    expect(() => decoder.next(PRE_AUTH)).toThrow('Protocol error: request too large');
    expect(decoder.bufferedBytes).toBeLessThanOrEqual(PRE_AUTH.maxRequestBytes);
  });

  it('refuses as soon as the count makes the request too large', () => {
    const small = { ...LIMITS, maxRequestBytes: 100 };
    expect(protocolError('*20\r\n', small).message).toBe('Protocol error: request too large');
    expect(decode('*15\r\n', small)).toEqual([]); // 5 + 15 * 6 bytes may still fit
  });

  it('refuses an inline line larger than maxRequestBytes when that is the smaller bound', () => {
    const line = 'x'.repeat(PRE_AUTH.maxRequestBytes + 1);
    expect(protocolError(line, PRE_AUTH).message).toBe('Protocol error: request too large');
    expect(protocolError(`${line}\r\n`, PRE_AUTH).message).toBe('Protocol error: request too large');
  });
});

describe('RequestDecoder: limits that change between commands', () => {
  it('refuses *11 and bulks over 16 KiB before AUTH', () => {
    expect(protocolError('*11\r\n', PRE_AUTH).message).toBe('Protocol error: invalid multibulk length');
    expect(decode(multibulk(Array(10).fill('a')), PRE_AUTH)).toHaveLength(1);
    expect(protocolError('*2\r\n$4\r\nAUTH\r\n$16385\r\n', PRE_AUTH).message).toBe(
      'Protocol error: invalid bulk length',
    );
  });

  it('applies the limits given to each next() call, one command at a time', () => {
    const many = Array.from({ length: 12 }, (_, i) => `arg${i}`);
    const big = 'b'.repeat(20_000);
    const decoder = new RequestDecoder();
    decoder.push(
      Buffer.concat([
        multibulk(['AUTH', 'token']),
        multibulk(['SUBSCRIBE', ...many]),
        multibulk(['PUBLISH', 'sb', big]),
        Buffer.from('PING\r\n'),
      ]),
    );
    expect(decoder.next(PRE_AUTH)?.args).toEqual(['AUTH', 'token']);
    expect(decoder.next(LIMITS)?.args).toEqual(['SUBSCRIBE', ...many]);
    expect(decoder.next(LIMITS)?.args).toEqual(['PUBLISH', 'sb', big]);
    expect(decoder.next(PRE_AUTH)?.args).toEqual(['PING']);
  });

  it('refuses the second command when the tiny limits stay in force', () => {
    const decoder = new RequestDecoder();
    decoder.push(Buffer.concat([multibulk(['AUTH', 'bad']), multibulk(Array(11).fill('x'))]));
    expect(decoder.next(PRE_AUTH)?.args).toEqual(['AUTH', 'bad']);
    expect(() => decoder.next(PRE_AUTH)).toThrow('Protocol error: invalid multibulk length');
  });
});

describe('RequestDecoder: chunking', () => {
  const stream = Buffer.concat([
    multibulk(['SUBSCRIBE', 'sb-é€😀', 'x']),
    Buffer.from(`PING "é€ 😀" 'q' é€😀\r\n`),
    Buffer.from('*0\r\n\r\n'),
    multibulk(['PUBLISH', 'sb-1', '{"a":"\r\n😀"}', '']),
    Buffer.from('AUTH tok\n'),
    multibulk(['é€😀']),
    Buffer.from('*-1\r\n'),
    Buffer.from('QUIT\r\n'),
  ]);
  const expected = [
    { args: ['SUBSCRIBE', 'sb-é€😀', 'x'], inline: false, byteLengths: [9, 12, 1] },
    { args: ['PING', 'é€ 😀', 'q', 'é€😀'], inline: true, byteLengths: [4, 10, 1, 9] },
    { args: ['PUBLISH', 'sb-1', '{"a":"\r\n😀"}', ''], inline: false, byteLengths: [7, 4, 14, 0] },
    { args: ['AUTH', 'tok'], inline: true, byteLengths: [4, 3] },
    { args: ['é€😀'], inline: false, byteLengths: [9] },
    { args: ['QUIT'], inline: true, byteLengths: [4] },
  ];

  it('decodes the stream in one chunk', () => {
    expect(decode(stream)).toEqual(expected);
  });

  it('decodes identically when cut in two at every offset', () => {
    for (let at = 0; at <= stream.length; at++) {
      expect(decodeChunks([stream.subarray(0, at), stream.subarray(at)])).toEqual(expected);
    }
  });

  it('decodes identically when cut in three at many offsets', () => {
    for (let a = 0; a <= stream.length; a += 3) {
      for (let b = a; b <= stream.length; b += 5) {
        const chunks = [stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)];
        expect(decodeChunks(chunks)).toEqual(expected);
      }
    }
  });

  it('decodes identically byte by byte', () => {
    const bytes = Array.from(stream, (_, i) => stream.subarray(i, i + 1));
    expect(decodeChunks(bytes)).toEqual(expected);
  });

  it('buffers a 1 MiB bulk arriving in 64 KiB chunks and then releases it', () => {
    const body = Buffer.alloc(1024 * 1024, 'z');
    const frame = Buffer.concat([
      Buffer.from(`*2\r\n$7\r\nPUBLISH\r\n$${body.length}\r\n`),
      body,
      Buffer.from('\r\nPING\r\n'),
    ]);
    const decoder = new RequestDecoder();
    const out: DecodedCommand[] = [];
    for (let at = 0; at < frame.length; at += 64 * 1024) {
      decoder.push(frame.subarray(at, at + 64 * 1024));
      out.push(...drain(decoder));
      if (out.length === 0) expect(decoder.bufferedBytes).toBe(Math.min(at + 64 * 1024, frame.length));
    }
    expect(out.map((c) => c.byteLengths)).toEqual([[7, body.length], [4]]);
    expect(out[0]!.args[1]).toBe(body.toString());
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('stores a request trickling in byte by byte compactly', () => {
    const frame = multibulk(['AUTH', 'x'.repeat(PRE_AUTH.maxRequestBytes - 24)]);
    const decoder = new RequestDecoder();
    const out: DecodedCommand[] = [];
    for (let i = 0; i < frame.length; i++) {
      decoder.push(frame.subarray(i, i + 1));
      out.push(...drain(decoder, PRE_AUTH));
    }
    expect(out.map((c) => c.byteLengths)).toEqual([[4, PRE_AUTH.maxRequestBytes - 24]]);
    // White-box: 16 KiB of 1-byte reads must not be held as 16,384 Buffer objects.
    decoder.push(frame.subarray(0, 1));
    for (let i = 1; i < frame.length - 1; i++) decoder.push(frame.subarray(i, i + 1));
    expect((decoder as unknown as { chunks: Buffer[] }).chunks.length).toBeLessThanOrEqual(3);
    decoder.push(frame.subarray(frame.length - 1));
    expect(drain(decoder, PRE_AUTH)[0]!.args[1]).toHaveLength(PRE_AUTH.maxRequestBytes - 24);
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('keeps only the unconsumed bytes', () => {
    const decoder = new RequestDecoder();
    const partial = Buffer.from('*2\r\n$4\r\nPING\r\n$3\r\nab');
    decoder.push(Buffer.concat([multibulk(['PING']), partial]));
    expect(decoder.next(LIMITS)?.args).toEqual(['PING']);
    expect(decoder.next(LIMITS)).toBeUndefined();
    expect(decoder.bufferedBytes).toBe(partial.length);
    decoder.push(Buffer.from('c\r\n'));
    expect(decoder.next(LIMITS)?.args).toEqual(['PING', 'abc']);
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('reset() drops everything buffered', () => {
    const decoder = new RequestDecoder();
    decoder.push(Buffer.from('*2\r\n$4\r\nPI'));
    expect(decoder.next(LIMITS)).toBeUndefined();
    decoder.reset();
    expect(decoder.bufferedBytes).toBe(0);
    decoder.push(Buffer.from('PING\r\n'));
    expect(decoder.next(LIMITS)?.args).toEqual(['PING']);
  });

  it('decodes a long pipeline of small commands', () => {
    const one = multibulk(['PUBLISH', 'sb-1', '{"type":"x"}']);
    const decoder = new RequestDecoder();
    decoder.push(Buffer.concat(Array(10_000).fill(one)));
    const out = drain(decoder);
    expect(out).toHaveLength(10_000);
    expect(out[9_999]!.args).toEqual(['PUBLISH', 'sb-1', '{"type":"x"}']);
  });
});

describe('RequestDecoder: properties', () => {
  const argument = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.string({ unit: fc.constantFrom('\r', '\n', '\r\n', '*', '$', '"', ' ', 'é', '😀', 'a'), maxLength: 20 }),
  );
  const command = fc.array(argument, { minLength: 1, maxLength: 8 });
  const offsets = fc.array(fc.nat(), { maxLength: 12 });

  it('(a) decodes any commands encoded as multibulk, whatever the chunking', () => {
    fc.assert(
      fc.property(fc.array(command, { maxLength: 10 }), offsets, (commands, cuts) => {
        const stream = Buffer.concat(commands.map(multibulk));
        const out = decodeChunks(cut(stream, cuts));
        expect(args(out)).toEqual(commands);
        expect(out.map((c) => c.byteLengths)).toEqual(commands.map((c) => c.map((a) => Buffer.byteLength(a))));
        expect(out.every((c) => !c.inline)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  const SMALL: DecoderLimits = { maxArgs: 6, maxBulkBytes: 48, maxInlineBytes: 40, maxRequestBytes: 120 };
  const bound = Math.max(SMALL.maxInlineBytes, SMALL.maxRequestBytes);
  const token = fc.constantFrom(
    '*',
    '$',
    '\r\n',
    '\r',
    '\n',
    '0',
    '1',
    '2',
    '3',
    '-1',
    '-',
    '10',
    '48',
    '49',
    '99999999999999999999',
    'abc',
    'PING',
    ' ',
    '"',
    "'",
    '\\',
    '\\x4',
    '\x00',
    'é',
    '😀',
    '*1\r\n',
    '$1\r\na\r\n',
  );
  const soup = fc.array(token, { maxLength: 60 }).map((t) => Buffer.from(t.join('')));
  const mutated = fc
    .tuple(fc.array(command, { maxLength: 4 }), fc.array(fc.tuple(fc.nat(), fc.nat(255), fc.nat(2)), { maxLength: 6 }))
    .map(([commands, edits]) => {
      const bytes = [...Buffer.concat(commands.map(multibulk))];
      for (const [pos, byte, op] of edits) {
        const at = pos % (bytes.length + 1);
        if (op === 0) bytes.splice(at, 0, byte);
        else if (op === 1) bytes.splice(at, 1);
        else bytes[at] = byte;
      }
      return Buffer.from(bytes);
    });
  const anyInput = fc.oneof(
    fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a)),
    soup,
    mutated,
  );

  type Outcome = { commands: DecodedCommand[]; error?: string; buffered: number };

  function run(chunks: Buffer[]): Outcome {
    const decoder = new RequestDecoder();
    const commands: DecodedCommand[] = [];
    for (const chunk of chunks) {
      decoder.push(chunk);
      expect(decoder.bufferedBytes).toBeLessThanOrEqual(bound + chunk.length);
      try {
        for (let c = decoder.next(SMALL); c; c = decoder.next(SMALL)) {
          commands.push(c);
          expect(decoder.bufferedBytes).toBeLessThanOrEqual(bound + chunk.length);
        }
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError);
        expect((err as ProtocolError).code).toBe('PROTOCOL_ERROR');
        expect((err as Error).message).toMatch(/^Protocol error: /);
        return { commands, error: (err as Error).message, buffered: -1 };
      }
      expect(decoder.bufferedBytes).toBeLessThanOrEqual(bound + 1);
    }
    return { commands, buffered: decoder.bufferedBytes };
  }

  it('(b) any bytes in any chunks yield commands or a ProtocolError, within the memory bound', () => {
    fc.assert(
      fc.property(anyInput, offsets, (input, cuts) => {
        const { commands } = run(cut(input, cuts));
        for (const c of commands) {
          expect(c.args.length).toBeGreaterThanOrEqual(1);
          expect(c.args.length).toBeLessThanOrEqual(SMALL.maxArgs);
          expect(c.byteLengths).toHaveLength(c.args.length);
          if (!c.inline) expect(Math.max(...c.byteLengths)).toBeLessThanOrEqual(SMALL.maxBulkBytes);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('(c) the outcome, error message included, does not depend on the chunking', () => {
    fc.assert(
      fc.property(anyInput, offsets, (input, cuts) => {
        expect(run(cut(input, cuts))).toEqual(run([input]));
      }),
      { numRuns: 3000 },
    );
  });
});

describe('RequestDecoder: a last argument taken as bytes (PUBLISH)', () => {
  const isPublish = (name: string) => name.toUpperCase() === 'PUBLISH';

  /** A multibulk whose arguments are the given bytes. */
  function multibulkOfBytes(parts: Buffer[]): Buffer {
    const out: Buffer[] = [Buffer.from(`*${parts.length}\r\n`)];
    for (const part of parts) out.push(Buffer.from(`$${part.length}\r\n`), part, Buffer.from('\r\n'));
    return Buffer.concat(out);
  }

  it('hands over the bytes received, not decoded, however the frame was split', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('PUBLISH', 'publish', 'PuBlIsH'),
        fc.string({ maxLength: 8 }),
        fc.uint8Array({ maxLength: 300 }), // any bytes, UTF-8 or not
        fc.array(fc.nat(), { maxLength: 4 }),
        (name, channel, payload, offsets) => {
          const frame = multibulkOfBytes([Buffer.from(name), Buffer.from(channel), Buffer.from(payload)]);
          const decoder = new RequestDecoder(isPublish);
          const out: DecodedCommand[] = [];
          for (const chunk of cut(frame, offsets)) {
            decoder.push(chunk);
            out.push(...drain(decoder));
          }
          expect(out).toHaveLength(1);
          const [command] = out as [DecodedCommand];
          expect(command.args).toEqual([name, channel, '']);
          expect(command.byteLengths).toEqual([name.length, Buffer.byteLength(channel), payload.length]);
          const { lastBytes, lastStart = -1 } = command;
          expect(lastBytes?.subarray(lastStart, lastStart + payload.length).equals(Buffer.from(payload))).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('does so for an inline command too, with its escapes applied', () => {
    const decoder = new RequestDecoder(isPublish);
    decoder.push(Buffer.from('publish sb "{\\"a\\":\\"\\xff\\"}"\r\n', 'latin1'));
    const [command] = drain(decoder) as [DecodedCommand];
    expect(command.args).toEqual(['publish', 'sb', '']);
    expect(command.lastBytes).toEqual(Buffer.from([...Buffer.from('{"a":"'), 0xff, ...Buffer.from('"}')]));
    expect(command.lastStart).toBe(0);
    expect(command.byteLengths).toEqual([7, 2, 9]);
  });

  it('decodes every argument of other commands, and of a command of one word', () => {
    const decoder = new RequestDecoder(isPublish);
    decoder.push(Buffer.concat([multibulk(['SUBSCRIBE', 'a', 'b']), multibulk(['PUBLISH'])]));
    const commands = drain(decoder);
    expect(commands.map((c) => [c.args, c.lastBytes])).toEqual([
      [['SUBSCRIBE', 'a', 'b'], undefined],
      [['PUBLISH'], undefined],
    ]);
  });
});

describe('RequestDecoder: names and channels that repeat', () => {
  it('gives each command its own first two arguments when they repeat, change by one byte or are long', () => {
    // One decoder for the whole pipeline: its remembered names and channels must never leak
    // into a command whose bytes differ (same length, one byte apart, non-ASCII, past the
    // remembered size, the name's case changed).
    const word = fc.oneof(
      fc.constantFrom('PUBLISH', 'PUBLISi', 'publish', 'sb-1', 'sb-2', 'sb-é', 'sb-è', '{1}sb-1', ''),
      fc.string({ maxLength: 8 }),
      fc.string({ minLength: 299, maxLength: 302 }),
    );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(word, word, fc.string({ maxLength: 4 })), { minLength: 1, maxLength: 30 }),
        (commands) => {
          const decoder = new RequestDecoder();
          decoder.push(Buffer.concat(commands.map((command) => multibulk(command))));
          expect(args(drain(decoder))).toEqual(commands);
        },
      ),
    );
  });
});

describe('RequestDecoder: reused commands (reuseCommands)', () => {
  const isPublish = (name: string) => name.toUpperCase() === 'PUBLISH';

  /** What a command says, copied: a reused command changes once the next one is decoded. */
  function snapshot(command: DecodedCommand): DecodedCommand {
    return {
      args: [...command.args],
      inline: command.inline,
      byteLengths: [...command.byteLengths],
      lastBytes:
        command.lastBytes === undefined
          ? undefined
          : Buffer.from(
              command.lastBytes.subarray(command.lastStart, command.lastStart! + command.byteLengths.at(-1)!),
            ),
      lastStart: command.lastStart === undefined ? undefined : 0,
    };
  }

  function decodeEach(
    decoder: RequestDecoder,
    chunks: Buffer[],
  ): { commands: DecodedCommand[]; objects: DecodedCommand[][] } {
    const commands: DecodedCommand[] = [];
    const objects: DecodedCommand[][] = [];
    for (const chunk of chunks) {
      decoder.push(chunk);
      const burst: DecodedCommand[] = [];
      for (let c = decoder.next(LIMITS); c; c = decoder.next(LIMITS)) {
        commands.push(snapshot(c));
        burst.push(c);
      }
      objects.push(burst);
    }
    return { commands, objects };
  }

  it('hands out, one at a time, the commands a decoder without reuse hands out, whatever the chunking', () => {
    const argument = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('sb-1', 'é', ''));
    // Arguments counts that change and repeat, PUBLISH (its last argument as bytes) among them,
    // and inline lines between multibulks.
    const request = fc.oneof(
      fc.array(argument, { minLength: 1, maxLength: 5 }).map((words) => multibulk(words)),
      fc
        .tuple(argument, fc.string({ maxLength: 30 }))
        .map(([channel, event]) => multibulk(['PUBLISH', channel, event])),
      fc.constantFrom(Buffer.from('PING\r\n'), Buffer.from('PUBLISH sb-2 "{}"\r\n'), Buffer.from('\r\n')),
    );
    fc.assert(
      fc.property(fc.array(request, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 8 }), (requests, cuts) => {
        const chunks = cut(Buffer.concat(requests), cuts);
        const reused = decodeEach(new RequestDecoder(isPublish, { reuseCommands: true }), chunks).commands;
        const fresh = decodeEach(new RequestDecoder(isPublish), chunks).commands;
        expect(reused).toEqual(fresh);
      }),
      { numRuns: 1000 },
    );
  });

  it('fills one object again within a burst of input, and keeps none once the input runs out', () => {
    const decoder = new RequestDecoder(isPublish, { reuseCommands: true });
    const pipeline = Buffer.concat([
      multibulk(['PUBLISH', 'sb-1', '{"type":"a"}']),
      multibulk(['PUBLISH', 'sb-1', '{"type":"b"}']),
      multibulk(['SUBSCRIBE', 'sb-1']),
    ]);
    const { objects } = decodeEach(decoder, [pipeline, multibulk(['PUBLISH', 'sb-1', '{"type":"c"}'])]);
    const [first, second] = objects as [DecodedCommand[], DecodedCommand[]];
    expect(first).toHaveLength(3);
    expect(first[1]).toBe(first[0]);
    expect(first[2]).toBe(first[0]); // another count of arguments: the same object, new arrays
    // The input ran out in between: the next burst's command is a new object, so that an idle
    // decoder holds no command and no received bytes.
    expect(second[0]).not.toBe(first[0]);
    expect(first[0]!.args).toEqual(['SUBSCRIBE', 'sb-1']);
    expect(first[0]!.lastBytes).toBeUndefined();
  });

  it('hands out new objects every time without reuseCommands', () => {
    const decoder = new RequestDecoder(isPublish);
    decoder.push(Buffer.concat([multibulk(['PING']), multibulk(['PING'])]));
    const [a, b] = drain(decoder) as [DecodedCommand, DecodedCommand];
    expect(b).not.toBe(a);
    expect(b.args).not.toBe(a.args);
    expect(b.byteLengths).not.toBe(a.byteLengths);
  });
});
