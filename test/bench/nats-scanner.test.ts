import { expect, it } from 'vitest';
// @ts-expect-error: plain JavaScript, type-checked by bench/tsconfig.json (npm run typecheck)
import { NatsScanner, pubFrame } from '../../bench/lib/nats.js';

interface Scanner {
  frames: number;
  errors: number;
  firstError: string | undefined;
  feed(buf: Buffer, start: number, end: number, now: number): void;
}

/** A MSG frame as nats-server writes it: its control line, then the payload. */
const msg = (subject: string, payload: string) => `MSG ${subject} 1 ${Buffer.byteLength(payload)}\r\n${payload}\r\n`;

/** What nats-server sends a bench publisher and subscriber (NATS client protocol). */
const stream = Buffer.from(
  [
    'INFO {"server_id":"x","version":"2.9.10","max_payload":1048576}\r\n',
    'PONG\r\n',
    msg('ev.sb-0', '{"type":"bench.tick","data":{"t":"0000000001234"}}'),
    'PING\r\n',
    msg('_INBOX.bench.ack0', '{"stream":"BENCH","seq":1}'),
    'HMSG ev.sb-0 2 _INBOX.r 12 17\r\nNATS/1.0\r\n\r\nhello\r\n',
    msg('_INBOX.bench.ack0', '{"error":{"code":503,"description":"no responders available"}}'),
    "-ERR 'Slow Consumer'\r\n",
    '+OK\r\n',
  ].join(''),
);

function scan(chunkSize: number) {
  const pings: number[] = [];
  const times: Array<[number, number]> = [];
  const scanner = new NatsScanner(
    (sent: number, now: number) => times.push([sent, now]),
    () => pings.push(1),
    true,
  ) as Scanner;
  for (let at = 0; at < stream.length; at += chunkSize) {
    scanner.feed(stream, at, Math.min(stream.length, at + chunkSize), 77);
  }
  return { scanner, pings: pings.length, times };
}

it('counts messages and PONGs, answers PING, and counts error acks and -ERR, however the stream is split', () => {
  for (const chunkSize of [1, 2, 3, 7, 16, 61, stream.length]) {
    const { scanner, pings, times } = scan(chunkSize);
    // PONG, the delivery, the ack, the HMSG and the error ack.
    expect(scanner.frames, `chunks of ${chunkSize}`).toBe(5);
    expect(pings).toBe(1);
    expect(scanner.errors).toBe(2);
    expect(scanner.firstError).toContain('no responders');
    expect(times).toEqual([[1234, 77]]);
  }
});

it('puts the payload right after the PUB line, where the latency stamp is written', () => {
  const body = Buffer.from('{"type":"bench.tick","data":{"t":"0000000000000"}}');
  const { bytes, payloadAt } = pubFrame('ev.sb-1', '_INBOX.bench.ack3', body) as { bytes: Buffer; payloadAt: number };
  expect(bytes.toString()).toBe(`PUB ev.sb-1 _INBOX.bench.ack3 ${body.length}\r\n${body}\r\n`);
  expect(bytes.subarray(payloadAt, payloadAt + body.length)).toEqual(body);
});
