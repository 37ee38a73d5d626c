import net from 'node:net';
import { errorFromReply, type EventsError, EventsNetworkError, EventsPubSubError } from './errors.js';
import { encodeCommand, type Frame, ReplyReader, RespProtocolError, type RespValue } from './reply-reader.js';

/**
 * One TCP connection to the broker: the only code of the client that touches `node:net`. It
 * writes commands, matches replies to them in order, and hands pushes (messages and
 * confirmations) to its owner. It knows nothing about reconnecting: when it closes, for
 * whatever reason, it tells its owner once, with the cause, and is never used again.
 */

/** Callbacks of the link's owner (the client). None of them may throw. */
export interface LinkHandlers {
  /** A push that no command is waiting for: messages, and confirmations (after the command saw them). */
  onPush(link: Link, push: RespValue[]): void;
  /** An error nobody asked for (a late replay failure, an error with no command pending). */
  onUnsolicitedError(link: Link, error: EventsError): void;
  /** The connection is gone; called exactly once. */
  onClose(link: Link, cause: EventsError): void;
}

/** Hooks of a command whose confirmation arrives as pushes (SUBSCRIBE, PSUBSCRIBE, RESUME...). */
export interface ConfirmHooks {
  /** Each confirmation push, when it arrives (before the messages that follow it are handled). */
  onConfirmation?(push: RespValue[]): void;
  /** An error after every confirmation came: the command failed half-way (a replay). */
  onLateError?(error: EventsError): void;
}

interface Pending {
  readonly name: string;
  /** 'reply': the next reply is the answer. 'confirm': pushes of `kind`, then the PONG of a barrier. */
  readonly mode: 'reply' | 'confirm';
  readonly kind: string;
  readonly expect: number;
  readonly pushes: RespValue[][];
  readonly hooks: ConfirmHooks;
  error: EventsError | undefined;
  settled: boolean;
  resolve(value: RespValue): void;
  reject(error: EventsError): void;
}

const PING = encodeCommand(['PING']);
let nextLinkId = 1;

export interface LinkOptions {
  host: string;
  port: number;
  /** The token this link authenticates with (kept for refresh decisions). */
  token: string;
}

export class Link {
  readonly id = nextLinkId++;
  readonly socket: net.Socket;
  /** The token the broker accepted last on this link. */
  token: string;
  /** Set by the owner once the handshake and the restore are done. */
  ready = false;
  closed = false;
  /** Bytes received so far: the heartbeat's proof of life. */
  bytesIn = 0;
  /** Channels and patterns this link was asked to subscribe (by the restore or later). */
  readonly channels = new Set<string>();
  readonly patterns = new Set<string>();

  private readonly reader: ReplyReader;
  private queue: (Pending | undefined)[] = [];
  private queueHead = 0;
  private tcpConnected = false;
  private socketError: Error | undefined;
  private cause: EventsError | undefined;
  private readonly closedPromise: Promise<void>;

  constructor(
    options: LinkOptions,
    private readonly handlers: LinkHandlers,
  ) {
    this.token = options.token;
    this.reader = new ReplyReader((frame) => this.onFrame(frame));
    this.socket = net.connect({ host: options.host, port: options.port });
    this.socket.setNoDelay(true);
    // The kernel reaps a peer that vanished without FIN even if heartbeats are turned off.
    this.socket.setKeepAlive(true, 30_000);
    this.socket.on('connect', () => {
      this.tcpConnected = true;
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (error) => {
      this.socketError ??= error;
    });
    this.closedPromise = new Promise((resolve) => {
      this.socket.on('close', () => {
        this.onSocketClose();
        resolve();
      });
    });
  }

  /** Neither closed nor being torn down. */
  get alive(): boolean {
    return !this.closed && this.cause === undefined;
  }

  /** Sends a command; resolves with its reply, rejects with the broker's error or the link's end. */
  command(args: readonly string[]): Promise<RespValue> {
    return this.enqueue(args, 'reply', '', 0, {});
  }

  /**
   * Sends a command whose success is told by `expect` pushes of `kind` (one per channel or
   * pattern), followed by a PING. The PING's PONG is the barrier that closes the command: an
   * error before it belongs to this command, even one that comes after the confirmations
   * (a RESUME whose replay failed half-way; the broker runs commands strictly in order). The
   * promise resolves with the confirmations as soon as they are all in.
   */
  confirm(args: readonly string[], kind: string, expect: number, hooks: ConfirmHooks = {}): Promise<RespValue> {
    return this.enqueue(args, 'confirm', kind, expect, hooks);
  }

  /** Batches the writes made until `uncork()` into one segment. */
  cork(): void {
    this.socket.cork();
  }

  uncork(): void {
    this.socket.uncork();
  }

  pauseReading(): void {
    this.socket.pause();
  }

  resumeReading(): void {
    this.socket.resume();
  }

  /** Tears the link down; the owner hears about it once, through `onClose`, with `cause`. */
  destroy(cause: EventsError): void {
    if (this.closed) return;
    this.cause ??= cause;
    this.reader.close();
    this.socket.destroy();
  }

  /** Destroys the link and resolves once the socket is closed. */
  close(cause: EventsError): Promise<void> {
    this.destroy(cause);
    return this.closedPromise;
  }

  private enqueue(
    args: readonly string[],
    mode: Pending['mode'],
    kind: string,
    expect: number,
    hooks: ConfirmHooks,
  ): Promise<RespValue> {
    const name = args[0]!.toUpperCase();
    if (this.closed || this.cause !== undefined) {
      return Promise.reject(this.lostError(name));
    }
    return new Promise<RespValue>((resolve, reject) => {
      this.queue.push({
        name,
        mode,
        kind,
        expect,
        pushes: [],
        hooks,
        error: undefined,
        settled: false,
        resolve,
        reject,
      });
      this.socket.write(encodeCommand(args));
      if (mode === 'confirm') this.socket.write(PING);
    });
  }

  private onData(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    try {
      this.reader.feed(chunk);
    } catch (error) {
      const message = error instanceof RespProtocolError ? error.message : String(error);
      this.destroy(
        new EventsPubSubError('PROTOCOL_ERROR', `broker sent an invalid reply: ${message}`, { cause: error }),
      );
    }
  }

  private head(): Pending | undefined {
    return this.queue[this.queueHead];
  }

  private shift(): void {
    this.queue[this.queueHead] = undefined;
    this.queueHead += 1;
    if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (this.queueHead > 256 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
  }

  private onFrame(frame: Frame): void {
    if (frame.kind === 'push') {
      this.onPushFrame(frame.value);
      return;
    }
    if (frame.kind === 'error' && frame.message.startsWith('ERR token expired')) {
      // Written by the broker outside the reply order, right before it closes the connection
      // (docs/protocol.md, "Authentication": told why, then closed). Not a command's reply.
      this.cause ??= errorFromReply(frame.message, 'connection');
      return;
    }
    const pending = this.head();
    if (pending === undefined) {
      const error =
        frame.kind === 'error'
          ? errorFromReply(frame.message, 'connection')
          : new EventsPubSubError('PROTOCOL_ERROR', 'broker sent a reply with no command pending');
      // A reply nobody asked for means the reply order can no longer be trusted.
      if (frame.kind === 'error') this.handlers.onUnsolicitedError(this, error);
      else this.destroy(error);
      return;
    }
    if (pending.mode === 'reply') {
      this.shift();
      if (frame.kind === 'error') pending.reject(errorFromReply(frame.message, pending.name));
      else pending.resolve(frame.value);
      return;
    }
    // A confirm command: errors are kept until the barrier's PONG closes the command.
    if (frame.kind === 'error') {
      pending.error ??= errorFromReply(frame.message, pending.name);
      return;
    }
    if (frame.value !== 'PONG') {
      this.destroy(new EventsPubSubError('PROTOCOL_ERROR', `unexpected reply to ${pending.name}`));
      return;
    }
    this.shift();
    if (pending.settled) {
      if (pending.error !== undefined) {
        if (pending.hooks.onLateError !== undefined) pending.hooks.onLateError(pending.error);
        else this.handlers.onUnsolicitedError(this, pending.error);
      }
      return;
    }
    pending.settled = true;
    pending.reject(
      pending.error ??
        new EventsPubSubError(
          'PROTOCOL_ERROR',
          `${pending.name}: ${pending.pushes.length} of ${pending.expect} confirmations`,
        ),
    );
  }

  private onPushFrame(push: RespValue[]): void {
    const kind = typeof push[0] === 'string' ? push[0].toLowerCase() : '';
    const pending = this.head();
    if (
      pending !== undefined &&
      pending.mode === 'confirm' &&
      !pending.settled &&
      kind === pending.kind &&
      pending.error === undefined
    ) {
      pending.pushes.push(push);
      pending.hooks.onConfirmation?.(push);
      if (pending.pushes.length === pending.expect) {
        pending.settled = true;
        pending.resolve(pending.pushes);
      }
      return;
    }
    this.handlers.onPush(this, push);
  }

  private lostError(name: string): EventsError {
    const cause = this.cause;
    if (cause instanceof EventsNetworkError) return cause;
    return new EventsNetworkError('CONNECTION_LOST', `${name}: the connection to the broker was lost`, { cause });
  }

  private onSocketClose(): void {
    this.closed = true;
    this.reader.close();
    let cause = this.cause;
    if (cause === undefined) {
      const socketError = this.socketError;
      cause = this.tcpConnected
        ? new EventsNetworkError(
            'CONNECTION_LOST',
            socketError === undefined ? 'the broker closed the connection' : `connection lost: ${socketError.message}`,
            { cause: socketError },
          )
        : new EventsNetworkError('CONNECTION_FAILED', `cannot connect: ${socketError?.message ?? 'closed'}`, {
            cause: socketError,
          });
      this.cause = cause;
    }
    const pending = this.queue.slice(this.queueHead);
    this.queue = [];
    this.queueHead = 0;
    for (const command of pending) {
      if (command === undefined || command.settled) continue;
      command.settled = true;
      command.reject(this.lostError(command.name));
    }
    this.handlers.onClose(this, cause);
  }
}
