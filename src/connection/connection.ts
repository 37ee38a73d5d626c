import type { Socket } from 'node:net';
import { ExpiryTimer, TOKEN_EXPIRED_ERROR } from '../auth/expiry.js';
import type { Principal } from '../auth/principal.js';
import type { Subscriber } from '../broker/broker.js';
import { type ChannelTarget, channelKey, type PatternScope } from '../broker/scope.js';
import type { EventId, StoredEvent } from '../event/event.js';
import { errorReply, type Protocol } from '../protocol/encode.js';
import { type DecodedCommand, type DecoderLimits, ProtocolError, RequestDecoder } from '../protocol/request-decoder.js';
import type { ServerContext } from '../server/context.js';
import { ReplaySeam } from '../store/replay.js';
import { WritePath } from './write-path.js';

/** A pattern subscription as this connection holds it. */
export interface PatternSubscription {
  pattern: string;
  scope: PatternScope;
}

/** Runs one command; a returned promise holds back the next command until it settles. */
export type CommandRunner = (connection: Connection, command: DecodedCommand) => void | Promise<void>;

/** A reply that waits for its turn behind replies of earlier, still-running PUBLISHes. */
interface ReplySlot {
  bytes: Buffer | undefined;
}

let nextConnectionId = 1;

/**
 * One client: its protocol state (auth, RESP version, subscriptions), its input decoding, and
 * its single write path. Commands run strictly in order; PUBLISH may be pipelined (its reply
 * waits for the store) while replies still leave in request order.
 */
export class Connection implements Subscriber {
  readonly id = nextConnectionId++;
  readonly remoteAddress: string;
  protocol: Protocol = 2;
  principal: Principal | undefined;
  /** Authenticated through the ComputeSDK client's `SUBSCRIBE <id> <jwt>` line (contract). */
  compat = false;
  name: string | undefined;
  libName: string | undefined;
  libVersion: string | undefined;
  readonly channels = new Map<string, ChannelTarget>();
  readonly patterns = new Map<string, PatternSubscription>();
  readonly createdAt = Date.now();
  closed = false;

  private readonly decoder = new RequestDecoder();
  private readonly output: WritePath;
  private blockedBy: 'command' | 'replies' | undefined;
  private heldCommand: DecodedCommand | undefined;
  private replySlots: ReplySlot[] = [];
  private authTimer: NodeJS.Timeout | undefined;
  private expiry: ExpiryTimer | undefined;
  /** The seams of resumed channels, until each is finished (see ReplaySeam). */
  private replaySeams: Map<string, ReplaySeam<Buffer>> | undefined;
  private heldReplayBytes = 0;
  /** Set by `quiesce`: no more commands are read; resolved once no PUBLISH awaits its reply. */
  private quiescing: (() => void) | undefined;

  constructor(
    private readonly socket: Socket,
    readonly context: ServerContext,
    private readonly runCommand: CommandRunner,
  ) {
    this.remoteAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    // The limit is read on every write: it grows from the pre-auth cap once AUTH succeeds.
    this.output = new WritePath(
      socket,
      () => this.outputLimit,
      (pending) => this.onOutputOverflow(pending),
      context.limits.closeGraceMs,
    );
    socket.setNoDelay(true);
    const keepAlive = context.limits.tcpKeepAliveMs;
    if (keepAlive > 0) socket.setKeepAlive(true, keepAlive);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) => this.context.logger.debug({ conn: this.id, err: error.message }, 'socket error'));
    socket.on('close', () => this.cleanUp());
    this.armAuthTimer();
  }

  /** An unauthenticated client gets a fixed time to authenticate (issue 7: 10 s), then is closed. */
  private armAuthTimer(): void {
    const timeoutMs = this.context.limits.authTimeoutMs;
    this.authTimer = setTimeout(() => {
      this.authTimer = undefined;
      if (this.principal === undefined) {
        this.abort(`ERR authentication timeout: send AUTH within ${timeoutMs / 1000} s`, 'auth_timeout');
      }
    }, timeoutMs);
    this.authTimer.unref();
  }

  get authenticated(): boolean {
    return this.principal !== undefined;
  }

  get subscriptionCount(): number {
    return this.channels.size + this.patterns.size;
  }

  /** Unsent output in bytes (queued here plus the socket's buffer). */
  get pendingOutputBytes(): number {
    return this.output.pendingBytes;
  }

  get outputLimit(): number {
    return this.principal === undefined
      ? this.context.limits.preAuthMaxOutputBytes
      : this.context.limits.maxOutputBytes;
  }

  /** Sends a reply, after any replies that are still waiting for the store. */
  reply(bytes: Buffer): void {
    if (this.replySlots.length === 0) this.output.write(bytes);
    else this.replySlots.push({ bytes });
  }

  replyError(text: string): void {
    this.reply(errorReply(text));
  }

  /**
   * A reply computed later (PUBLISH waiting for its event to be durable). The connection goes
   * on decoding and running further PUBLISHes meanwhile; their replies keep request order.
   */
  deferReply<T>(pending: Promise<T>, toReply: (value: T) => Buffer, onError: (error: unknown) => Buffer): void {
    const slot: ReplySlot = { bytes: undefined };
    this.replySlots.push(slot);
    pending.then(
      (value) => {
        slot.bytes = toReply(value);
        this.releaseReplies();
      },
      (error: unknown) => {
        slot.bytes = onError(error);
        this.releaseReplies();
      },
    );
  }

  /** Pub/sub delivery (Subscriber). */
  deliver(frame: Buffer, event: StoredEvent, viaPattern: boolean): void {
    if (this.closed) return;
    if (this.replaySeams === undefined || viaPattern) {
      this.output.write(frame);
      return;
    }
    const key = channelKey(event.workspaceId, event.sandboxId);
    const seam = this.replaySeams.get(key);
    if (seam === undefined) {
      this.output.write(frame);
      return;
    }
    const action = seam.admit(frame, event.id, frame.length);
    if (action === 'hold') {
      // Held frames count against the output limit like queued ones.
      this.heldReplayBytes += frame.length;
      this.output.checkLimit(this.heldReplayBytes);
    } else if (action === 'write') {
      this.output.write(frame);
      if (seam.finished) this.forgetReplay(key);
    }
  }

  /** Resume support: from now, live frames of this channel go through a ReplaySeam. */
  beginReplay(key: string): void {
    this.forgetReplay(key);
    this.replaySeams ??= new Map();
    this.replaySeams.set(key, new ReplaySeam());
  }

  /** The replay of this channel was written up to `lastReplayedId`: the held frames it did not cover follow. */
  endReplay(key: string, lastReplayedId: EventId | undefined): void {
    const seam = this.replaySeams?.get(key);
    if (seam === undefined) return;
    this.heldReplayBytes -= seam.heldBytes;
    for (const frame of seam.end(lastReplayedId)) this.output.write(frame);
    if (seam.finished) this.forgetReplay(key);
  }

  /** The channel was unsubscribed (or its resume restarted): its seam goes. */
  forgetReplay(key: string): void {
    const seam = this.replaySeams?.get(key);
    if (seam === undefined) return;
    this.heldReplayBytes -= seam.heldBytes;
    this.replaySeams!.delete(key);
    if (this.replaySeams!.size === 0) this.replaySeams = undefined;
  }

  /** Writes raw bytes now, bypassing reply order (replayed history frames). */
  writeFrame(frame: Buffer): void {
    this.output.write(frame);
  }

  /** Resolves once unsent output is at most `bytes` (or the connection closed). */
  outputBelow(bytes: number): Promise<void> {
    return this.output.whenBelow(bytes);
  }

  /** Called when authentication succeeds: lifts the pre-auth limits and arms the expiry. */
  setPrincipal(principal: Principal): void {
    this.principal = principal;
    if (this.authTimer !== undefined) {
      clearTimeout(this.authTimer);
      this.authTimer = undefined;
    }
    // A token that expires while its connection is open does not keep it alive (contract):
    // the client may AUTH again before exp; otherwise it is told why and closed.
    this.expiry ??= new ExpiryTimer(() => this.onTokenExpired());
    this.expiry.start(principal.expiresAt + this.context.clockToleranceMs);
  }

  /** RESET: back to a fresh, unauthenticated connection, with the pre-auth deadline again. */
  clearPrincipal(): void {
    this.principal = undefined;
    this.compat = false;
    this.expiry?.cancel();
    if (this.authTimer === undefined) this.armAuthTimer();
  }

  /**
   * Shutdown, first step: reads no more commands, and resolves once every PUBLISH already
   * read has its reply (its event is stored and delivered).
   */
  quiesce(): Promise<void> {
    this.socket.pause();
    return new Promise((resolve) => {
      this.quiescing = resolve;
      if (this.replySlots.length === 0) resolve();
    });
  }

  /** QUIT: the pending replies go out, then the connection closes. */
  closeAfterReplies(): void {
    this.closed = true;
    this.socket.pause();
    if (this.replySlots.length === 0) this.output.endAfterWrites();
  }

  /**
   * Sends one last error line (`message` starts with its code, e.g. `ERR ...`) and closes. The
   * line goes after the replies of PUBLISHes already read: their events are stored, and a
   * client matches replies to requests by order.
   */
  abort(message: string, reason: string): void {
    if (this.closed) return;
    this.context.logger.info({ conn: this.id, addr: this.remoteAddress, reason }, message);
    this.reply(errorReply(message));
    this.closeAfterReplies();
  }

  /** Closes at once, dropping queued output. */
  destroy(): void {
    this.closed = true;
    this.output.discard();
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.decoder.push(chunk);
    if (this.blockedBy === undefined) this.pump();
  }

  private decoderLimits(): DecoderLimits {
    return this.principal === undefined ? this.context.preAuthDecoderLimits : this.context.decoderLimits;
  }

  /** Decodes and runs commands until input runs out or a command must be waited for. */
  private pump(): void {
    while (!this.closed && this.blockedBy === undefined && this.quiescing === undefined) {
      let command = this.heldCommand;
      this.heldCommand = undefined;
      if (command === undefined) {
        try {
          command = this.decoder.next(this.decoderLimits());
        } catch (error) {
          if (!(error instanceof ProtocolError)) throw error;
          this.context.stats.protocolErrors += 1;
          this.context.logger.warn({ conn: this.id, addr: this.remoteAddress, err: error.message }, 'protocol error');
          this.reply(errorReply(`ERR ${error.message}`));
          this.closeAfterReplies();
          return;
        }
      }
      if (command === undefined) return;
      if (this.replySlots.length > 0 && !this.mayRunBehindPublishes(command)) {
        // Anything but PUBLISH waits for the PUBLISHes ahead of it, so that its effects
        // (say, a SUBSCRIBE confirmation) can't overtake their replies.
        this.heldCommand = command;
        this.block('replies');
        return;
      }
      this.context.stats.commandsProcessed += 1;
      const pending = this.runCommand(this, command);
      if (pending !== undefined) {
        this.block('command');
        pending.then(
          () => this.unblock('command'),
          (error: unknown) => {
            this.context.logger.error({ conn: this.id, err: error }, 'command failed');
            this.destroy();
          },
        );
        return;
      }
    }
  }

  private mayRunBehindPublishes(command: DecodedCommand): boolean {
    return (
      this.replySlots.length < this.context.limits.maxPipelinedPublishes &&
      command.args[0]!.length === 7 &&
      command.args[0]!.toLowerCase() === 'publish'
    );
  }

  private block(reason: 'command' | 'replies'): void {
    this.blockedBy = reason;
    // Stop reading: input waiting behind a slow command must not pile up without bound.
    this.socket.pause();
  }

  private unblock(reason: 'command' | 'replies'): void {
    if (this.blockedBy !== reason) return;
    this.blockedBy = undefined;
    if (this.closed || this.quiescing !== undefined) return;
    this.socket.resume();
    this.pump();
  }

  private releaseReplies(): void {
    const slots = this.replySlots;
    let ready = 0;
    while (ready < slots.length && slots[ready]!.bytes !== undefined) {
      this.output.write(slots[ready]!.bytes!);
      ready += 1;
    }
    if (ready === 0) return;
    this.replySlots = ready === slots.length ? [] : slots.slice(ready);
    if (this.replySlots.length === 0) this.quiescing?.();
    if (this.closed) {
      if (this.replySlots.length === 0) this.output.endAfterWrites();
      return;
    }
    if (this.blockedBy === 'replies') this.unblock('replies');
  }

  private onTokenExpired(): void {
    if (this.principal === undefined) return;
    this.context.stats.authFailures.expired_while_connected =
      (this.context.stats.authFailures.expired_while_connected ?? 0) + 1;
    this.abort(TOKEN_EXPIRED_ERROR, 'token_expired');
  }

  private onOutputOverflow(pendingBytes: number): void {
    this.context.stats.slowConsumerDisconnects += 1;
    this.context.logger.warn(
      { conn: this.id, addr: this.remoteAddress, pendingBytes, limit: this.outputLimit },
      'client output over the limit: disconnected',
    );
    this.destroy();
  }

  private cleanUp(): void {
    this.closed = true;
    this.output.discard();
    if (this.authTimer !== undefined) clearTimeout(this.authTimer);
    this.expiry?.cancel();
    this.authTimer = undefined;
    const broker = this.context.broker;
    for (const key of this.channels.keys()) broker.unsubscribe(this, key);
    for (const { pattern, scope } of this.patterns.values()) broker.punsubscribe(this, pattern, scope);
    this.channels.clear();
    this.patterns.clear();
    this.replaySeams = undefined;
    this.context.connections.delete(this);
    this.context.logger.debug({ conn: this.id, addr: this.remoteAddress }, 'connection closed');
  }
}
