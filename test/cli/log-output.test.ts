import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { LogOutput } from '../../src/cli/log-output.js';

// A real pipe, as a supervisor or a shell gives the daemon's standard output: the test holds
// the read end and decides when it is read.
interface Pipe {
  writeFd: number;
  received(): string;
  /** Starts reading (the reader starts paused: the kernel's buffer fills, then writes wait). */
  read(): void;
  /** Resolves once what was received satisfies `predicate`. */
  until(predicate: (text: string) => boolean): Promise<string>;
  closeReader(): void;
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

function openPipe(writeFlags = 0): Pipe {
  const dir = mkdtempSync(path.join(tmpdir(), 'sandbox-events-log-output-'));
  const fifo = path.join(dir, 'stdout');
  execFileSync('mkfifo', [fifo]);
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFd = openSync(fifo, constants.O_WRONLY | writeFlags);
  const reader = new net.Socket({ fd: readFd, readable: true, writable: false });
  let text = '';
  let waiters: (() => void)[] = [];
  reader.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    for (const wake of waiters.splice(0)) wake();
  });
  reader.pause();
  cleanups.push(() => {
    reader.destroy();
    closeSync(writeFd);
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    writeFd,
    received: () => text,
    read: () => reader.resume(),
    until: async (predicate) => {
      while (!predicate(text)) await new Promise<void>((resolve) => waiters.push(resolve));
      waiters = [];
      return text;
    },
    closeReader: () => reader.destroy(),
  };
}

const line = (i: number, bytes = 100): string => `${String(i).padStart(6, '0')} ${'x'.repeat(bytes - 8)}\n`;
const lines = (text: string): string[] => text.split('\n').filter((l) => l !== '');

it('writes every line, in order, and settles once they are written', async () => {
  const pipe = openPipe();
  const output = new LogOutput(pipe.writeFd, () => {});
  pipe.read();
  for (let i = 0; i < 2_000; i += 1) output.write(line(i));
  expect(await output.settle(10_000)).toBe(true);
  const received = lines(await pipe.until((text) => lines(text).length === 2_000));
  expect(received).toEqual(Array.from({ length: 2_000 }, (_, i) => line(i).slice(0, -1)));
});

it('holds at most its byte bound while the reader is behind, drops the rest, then reports how many', async () => {
  const pipe = openPipe();
  let reported: number | undefined;
  const output = new LogOutput(
    pipe.writeFd,
    (count) => {
      reported = count;
      output.write(`dropped ${count}\n`);
    },
    8_192,
  );
  // In one turn no write completes: the first line is being written and the next ones wait,
  // up to 8,192 bytes in all (81 lines of 100 bytes); the other 4,919 are dropped.
  for (let i = 0; i < 5_000; i += 1) output.write(line(i));
  pipe.read();
  const received = lines(await pipe.until((text) => text.includes('dropped')));
  expect(received).toEqual([...Array.from({ length: 81 }, (_, i) => line(i).slice(0, -1)), 'dropped 4919']);
  expect(reported).toBe(4_919);
  expect(await output.settle(10_000)).toBe(true);
  // Caught up: it takes lines again.
  output.write(line(5_000));
  expect(lines(await pipe.until((text) => text.includes('005000'))).at(-1)).toBe(line(5_000).slice(0, -1));
});

it('an output whose reader has gone (EPIPE): settles false, takes no more lines, never throws', async () => {
  const pipe = openPipe();
  const output = new LogOutput(pipe.writeFd, () => {});
  pipe.closeReader();
  output.write(line(0));
  expect(await output.settle(60_000)).toBe(false);
  expect(() => output.write(line(1))).not.toThrow();
  expect(await output.settle(60_000)).toBe(false);
});

it.each([
  ['blocking', 0],
  ['non-blocking (EAGAIN)', constants.O_NONBLOCK],
])(
  'a %s output whose reader does not read: settle gives up at its bound; the lines follow once it reads',
  async (_kind, flags) => {
    const pipe = openPipe(flags);
    const output = new LogOutput(pipe.writeFd, () => {});
    // 400 KiB: more than a pipe's kernel buffer (64 KiB on Linux) holds.
    for (let i = 0; i < 400; i += 1) output.write(line(i, 1_024));
    expect(await output.settle(50)).toBe(false);
    expect(lines(pipe.received())).toEqual([]);
    pipe.read();
    expect(await output.settle(60_000)).toBe(true);
    const received = lines(await pipe.until((text) => lines(text).length === 400));
    expect(received).toEqual(Array.from({ length: 400 }, (_, i) => line(i, 1_024).slice(0, -1)));
  },
);
