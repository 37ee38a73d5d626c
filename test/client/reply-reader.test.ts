import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeCommand, type Frame, ReplyReader, RespProtocolError } from '../../src/client/reply-reader.js';

/** Bytes captured from the broker in RESP3 (HELLO 3, HISTORY, RESUME, messages, errors). */
const EVENT =
  '{"id":"1795474100694-0","sandboxId":"sb","workspaceId":1,"type":"a","data":{"x":"é 🚀 ü"},"timestamp":1795474100694}';
const bulk = (text: string): string => `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
const CAPTURE = Buffer.from(
  '%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:1\r\n' +
    '$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n' +
    `:0\r\n*1\r\n${bulk(EVENT)}*0\r\n` +
    `>6\r\n$6\r\nresume\r\n$2\r\nsb\r\n:1\r\n$8\r\ncomplete\r\n$15\r\n1795474100694-0\r\n$15\r\n1795474100694-0\r\n` +
    `>3\r\n$7\r\nmessage\r\n$2\r\nsb\r\n${bulk(EVENT)}+PONG\r\n` +
    '>6\r\n$6\r\nresume\r\n$3\r\nsb3\r\n:3\r\n$7\r\ntrimmed\r\n_\r\n_\r\n' +
    `>4\r\n$8\r\npmessage\r\n$2\r\ns*\r\n$2\r\nsb\r\n${bulk(EVENT)}` +
    '-WRONGPASS invalid username-password pair or user is disabled.\r\n',
  'utf8',
);

const EXPECTED: Frame[] = [
  {
    kind: 'reply',
    value: [
      'server',
      'redis',
      'version',
      '7.0.15',
      'proto',
      3,
      'id',
      1,
      'mode',
      'standalone',
      'role',
      'master',
      'modules',
      [],
    ],
  },
  { kind: 'reply', value: 0 },
  { kind: 'reply', value: [EVENT] },
  { kind: 'reply', value: [] },
  { kind: 'push', value: ['resume', 'sb', 1, 'complete', '1795474100694-0', '1795474100694-0'] },
  { kind: 'push', value: ['message', 'sb', EVENT] },
  { kind: 'reply', value: 'PONG' },
  { kind: 'push', value: ['resume', 'sb3', 3, 'trimmed', null, null] },
  { kind: 'push', value: ['pmessage', 's*', 'sb', EVENT] },
  { kind: 'error', message: 'WRONGPASS invalid username-password pair or user is disabled.' },
];

function readAll(chunks: Buffer[]): Frame[] {
  const frames: Frame[] = [];
  const reader = new ReplyReader((frame) => frames.push(frame));
  for (const chunk of chunks) reader.feed(chunk);
  return frames;
}

function readOne(text: string): Frame[] {
  return readAll([Buffer.from(text, 'utf8')]);
}

describe('ReplyReader', () => {
  it("decodes the broker's RESP3 replies and tells pushes from replies", () => {
    expect(readAll([CAPTURE])).toEqual(EXPECTED);
  });

  it('gives the same frames for every split into two chunks', () => {
    for (let at = 1; at < CAPTURE.length; at += 1) {
      expect(readAll([CAPTURE.subarray(0, at), CAPTURE.subarray(at)]), `split at ${at}`).toEqual(EXPECTED);
    }
  });

  it('gives the same frames byte by byte: multi-byte UTF-8 split across chunks stays whole', () => {
    const bytes = [...CAPTURE].map((byte) => Buffer.from([byte]));
    const frames = readAll(bytes);
    expect(frames).toEqual(EXPECTED);
    const message = frames[5];
    expect(message?.kind === 'push' && JSON.parse(message.value[2] as string).data.x).toBe('é 🚀 ü');
  });

  it('gives the same frames for random chunkings (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: CAPTURE.length - 1 }), { maxLength: 40 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const chunks: Buffer[] = [];
        let from = 0;
        for (const point of [...points, CAPTURE.length]) {
          chunks.push(CAPTURE.subarray(from, point));
          from = point;
        }
        expect(readAll(chunks)).toEqual(EXPECTED);
      }),
      { numRuns: 300 },
    );
  });

  it('translates the other RESP3 types', () => {
    expect(readOne('#t\r\n#f\r\n,3.14\r\n(12345678901234567890\r\n~2\r\n:1\r\n:2\r\n=7\r\ntxt:abc\r\n')).toEqual([
      { kind: 'reply', value: 1 },
      { kind: 'reply', value: 0 },
      { kind: 'reply', value: '3.14' },
      { kind: 'reply', value: '12345678901234567890' },
      { kind: 'reply', value: [1, 2] },
      { kind: 'reply', value: 'txt:abc' },
    ]);
    expect(readOne('!22\r\nSYNTAX invalid\r\nsyntax\r\n+OK\r\n')).toEqual([
      { kind: 'error', message: 'SYNTAX invalid  syntax' },
      { kind: 'reply', value: 'OK' },
    ]);
    expect(readOne('*-1\r\n$-1\r\n>2\r\n*1\r\n$1\r\na\r\n%1\r\n$1\r\nk\r\n_\r\n+after\r\n')).toEqual([
      { kind: 'reply', value: null },
      { kind: 'reply', value: null },
      { kind: 'push', value: [['a'], ['k', null]] },
      { kind: 'reply', value: 'after' },
    ]);
  });

  it('rejects what is not RESP, past its limits, without recursion', () => {
    const fails = (text: string, limits = {}): void => {
      const reader = new ReplyReader(() => {}, limits);
      expect(() => reader.feed(Buffer.from(text, 'latin1'))).toThrow(RespProtocolError);
    };
    fails('?what\r\n');
    fails('|1\r\n+a\r\n+b\r\n+c\r\n');
    fails('$abc\r\n');
    fails('$-2\r\n');
    fails('+no crlf\n');
    fails(`$${2 * 1024 * 1024}\r\n`, { maxBulkBytes: 1024 * 1024 });
    fails('*5\r\n', { maxElements: 4 });
    fails(`+${'x'.repeat(200)}`, { maxLineBytes: 100 });
    fails('>1\r\n'.repeat(100_000)); // nesting capped long before any stack could overflow
  });

  it('stops delivering once closed, even in the middle of a chunk', () => {
    const frames: Frame[] = [];
    const reader = new ReplyReader((frame) => {
      frames.push(frame);
      reader.close();
    });
    reader.feed(Buffer.from('+A\r\n+B\r\n'));
    expect(frames).toEqual([{ kind: 'reply', value: 'A' }]);
  });

  it('encodes commands as RESP arrays with byte lengths', () => {
    expect(encodeCommand(['PUBLISH', 'sb', '{"x":"é"}']).toString('utf8')).toBe(
      '*3\r\n$7\r\nPUBLISH\r\n$2\r\nsb\r\n$10\r\n{"x":"é"}\r\n',
    );
  });
});
