import net from 'node:net';
import Parser from 'redis-parser';

/**
 * A TCP client that sees exact bytes: for asserting replies byte for byte, and for sending
 * anything at all (broken frames, split writes, the ComputeSDK client's inline lines).
 */
export class RawClient {
  private received = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host }, () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Waits until `predicate` holds for everything received so far (or the socket closes). */
  async waitFor(predicate: (received: Buffer) => boolean, timeoutMs = 5_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.received)) {
      if (this.closed) break;
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received;
  }

  /** Takes exactly `length` bytes (waiting for them), as latin1 text for readable diffs. */
  async take(length: number, timeoutMs?: number): Promise<string> {
    await this.waitFor((received) => received.length >= length, timeoutMs);
    const taken = this.received.subarray(0, length);
    this.received = this.received.subarray(taken.length);
    return taken.toString('latin1');
  }

  /** Takes as many bytes as `expected` has, so a test can `expect(await c.expectLike(x)).toBe(x)`. */
  read(expected: string): Promise<string> {
    return this.take(Buffer.byteLength(expected, 'latin1'));
  }

  /** Takes everything up to and including the next CRLF. */
  async line(timeoutMs?: number): Promise<string> {
    await this.waitFor((received) => received.includes('\r\n'), timeoutMs);
    const end = this.received.indexOf('\r\n');
    if (end < 0) return this.take(this.received.length);
    return this.take(end + 2);
  }

  /** Everything received and not yet taken. */
  get pending(): string {
    return this.received.toString('latin1');
  }

  /** Resolves when the server has closed the connection. */
  async closedByServer(timeoutMs = 5_000): Promise<boolean> {
    await this.waitFor(() => false, timeoutMs);
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A command as a RESP array of bulk strings (what every Redis client sends). */
export function resp(...args: string[]): string {
  return `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;
}

/** A bulk string as Redis sends it, lengths in bytes. */
export function bulkString(text: string): string {
  return `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
}

/**
 * A RESP parser (redis-parser, as the client uses) that pushes every reply it completes onto
 * `replies`, errors included as Error objects, strings as strings.
 */
export function replyCollector(replies: unknown[]): Parser {
  return new Parser({
    returnReply: (reply: unknown) => replies.push(reply),
    returnError: (error: Error) => replies.push(error),
    returnFatalError: (error: Error) => replies.push(error),
    returnBuffers: false,
  });
}
