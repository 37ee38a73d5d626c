import type { Socket } from 'node:net';
import type { Principal } from '../auth/principal.js';
import type { ReplySlot, RespClient } from '../commands/client.js';
import type { StoredEvent } from '../event/event.js';
import { cursorDeliveryFrame, deliveryFrame, errorReply, type Protocol } from '../protocol/encode.js';
import {
  type DecodedCommand,
  type DecoderLimits,
  type LastArgumentAsBytes,
  ProtocolError,
  RequestDecoder,
  type RequestDecoderOptions,
} from '../protocol/request-decoder.js';
import { recordOutputCut, type ServerContext } from '../runtime/context.js';
import type { OutputCut } from '../runtime/output-budget.js';
import { DeadlineQueue, TOKEN_EXPIRED_ERROR } from '../session/expiry.js';
import {
  type ChannelSubscription,
  type PatternSubscription,
  Session,
  type SessionTransport,
} from '../session/session.js';

/** Runs one command; a returned promise holds back the next command until it settles. */
export type CommandRunner = (connection: Connection, command: DecodedCommand) => void | Promise<void>;

/** A reply that waits for its turn behind replies of earlier, still-running PUBLISHes. */
interface QueuedReply {
  bytes: Buffer | undefined;
}

/** A reply to fill later (PUBLISH), at its place in the reply order. */
class PendingReply implements ReplySlot, QueuedReply {
  bytes: Buffer | undefined = undefined;

  constructor(private readonly connection: Connection) {}

  fill(bytes: Buffer): void {
    this.bytes = bytes;
    this.connection.releaseReplies();
  }
}

let nextConnectionId = 1;

/**
 * The reply order of a connection with no PUBLISH awaiting its reply, as most are: shared, and
 * replaced by an array of its own at the first `replySlot`. A `[]` per connection would be one
 * more object each, and V8 moves an array literal's allocation site to the old generation once
 * most of what it allocates survives, as in a connection storm, discarding the optimized code
 * that allocates there (docs/performance.md, "Tenth round: the first storm"). Frozen: a write
 * to it would be a bug, and throws.
 */
const NO_REPLIES: QueuedReply[] = Object.freeze([]) as unknown as QueuedReply[];

/**
 * A command is done with before `pump` asks for the next one (a held command runs first), and no
 * handler keeps a command or its arrays: the decoder may hand out the same ones again. One object
 * for every connection's decoder, not one per connection.
 */
const DECODER_OPTIONS: RequestDecoderOptions = Object.freeze({ reuseCommands: true });

/** The connection a socket belongs to, for the socket listeners that every connection shares. */
const CONNECTION = Symbol('connection');

/** A client's socket, carrying its connection: `this` in the shared listeners. */
interface ConnectionSocket extends Socket {
  [CONNECTION]: Connection;
}

/**
 * Auth deadlines are rounded up to this: the connections accepted within it share one entry of
 * the deadline queue, and a client is closed at most this much after its deadline.
 */
const AUTH_DEADLINE_STEP_MS = 100;

/**
 * The RESP transport of one client: its input decoding, command order and reply order, and
 * its RESP framing. Subscriptions, resume, output and token expiry are its `session`'s (the
 * same layer the SSE streams use). Commands run strictly in order; PUBLISH may be pipelined
 * (its reply waits for the store) while replies still leave in request order.
 */
export class Connection implements RespClient, SessionTransport {
  /** Every unauthenticated connection's deadline, on one timer (DeadlineQueue). */
  private static readonly authDeadlines = new DeadlineQueue<Connection>(
    (connection) => connection.authDeadlinePassed(),
    AUTH_DEADLINE_STEP_MS,
  );

  readonly id = nextConnectionId++;
  principal: Principal | undefined;
  /** Authenticated through the ComputeSDK events client's `SUBSCRIBE <id> <jwt>` line. */
  compat = false;
  name: string | undefined;
  libName: string | undefined;
  libVersion: string | undefined;
  readonly createdAt = Date.now();
  readonly session: Session;

  private readonly decoder: RequestDecoder;
  private blockedBy: 'command' | 'replies' | undefined;
  private heldCommand: DecodedCommand | undefined;
  private replySlots: QueuedReply[] = NO_REPLIES;
  /** Where this connection is filed in `authDeadlines`, until it authenticates or closes. */
  private authDeadline: number | undefined = undefined;
  private peer: string | undefined;
  /** Set by `quiesce`: no more commands are read; resolved once no PUBLISH awaits its reply. */
  private quiescing: (() => void) | undefined;

  constructor(
    private readonly socket: Socket,
    readonly context: ServerContext,
    private readonly runCommand: CommandRunner,
    /** The commands that take their last argument as the bytes received (RequestDecoder). */
    lastArgumentAsBytes: LastArgumentAsBytes,
  ) {
    this.decoder = new RequestDecoder(lastArgumentAsBytes, DECODER_OPTIONS);
    this.session = new Session(
      context,
      socket,
      2,
      // The limit is read on every write: it grows from the pre-auth cap once AUTH succeeds.
      () => this.outputLimit,
      // The connection is its session's transport: no object and closures of its own per client.
      this,
    );
    (socket as ConnectionSocket)[CONNECTION] = this;
    socket.on('data', onSocketData);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
    this.armAuthDeadline();
  }

  /** An unauthenticated client gets a fixed time to authenticate (10 s by default), then is closed. */
  private armAuthDeadline(): void {
    this.authDeadline = Connection.authDeadlines.add(this, Date.now() + this.context.limits.authTimeoutMs);
  }

  private cancelAuthDeadline(): void {
    if (this.authDeadline === undefined) return;
    Connection.authDeadlines.delete(this, this.authDeadline);
    this.authDeadline = undefined;
  }

  private authDeadlinePassed(): void {
    this.authDeadline = undefined;
    if (this.principal === undefined) {
      const timeoutMs = this.context.limits.authTimeoutMs;
      this.abort(`ERR authentication timeout: send AUTH within ${timeoutMs / 1000} s`, 'auth_timeout');
    }
  }

  // --- SessionTransport ---------------------------------------------------------------------

  /** @internal SessionTransport: a replayed event's frame. */
  replayFrame(event: StoredEvent, channel: string, pattern?: string): Buffer {
    return deliveryFrame(this.protocol, pattern, channel, event.json);
  }

  /** @internal SessionTransport: an event's frame through a pattern that carries cursors. */
  cursorFrame(event: StoredEvent, channel: string, pattern: string, cursor: string | undefined): Buffer {
    return cursorDeliveryFrame(this.protocol, pattern, channel, event.json, cursor);
  }

  /** @internal SessionTransport */
  isOpen(): boolean {
    return !this.closed;
  }

  /** @internal SessionTransport: unsent output passed the limit, or the daemon's budget. */
  overflow(pendingBytes: number, cause: OutputCut): void {
    recordOutputCut(this.context, 'client', cause, {
      conn: this.id,
      addr: this.remoteAddress,
      pendingBytes,
      limit: this.outputLimit,
    });
    this.destroy();
  }

  /** @internal SessionTransport: the token's deadline passed. */
  expired(): void {
    if (this.principal === undefined) return;
    this.context.stats.authFailures.expired_while_connected =
      (this.context.stats.authFailures.expired_while_connected ?? 0) + 1;
    this.abort(TOKEN_EXPIRED_ERROR, 'token_expired');
  }

  /** @internal SessionTransport: events this client should have had are lost. */
  eventsLost(message: string): void {
    this.abort(message, 'events_lost');
  }

  /**
   * The client's `ip:port`, read from the socket when first asked for (logs, CLIENT LIST): a
   * getpeername call that most connections never need (docs/performance.md, "Sixth round:
   * per-connection cost"). Once the socket is closed it can no longer be read.
   */
  get remoteAddress(): string {
    this.peer ??= `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? 0}`;
    return this.peer;
  }

  get authenticated(): boolean {
    return this.principal !== undefined;
  }

  /** The RESP version (HELLO switches it); the broker frames deliveries to match. */
  get protocol(): Protocol {
    return this.session.protocol as Protocol;
  }

  set protocol(protocol: Protocol) {
    this.session.protocol = protocol;
  }

  get closed(): boolean {
    return this.session.closed;
  }

  get channels(): ReadonlyMap<string, ChannelSubscription> {
    return this.session.channels;
  }

  get patterns(): ReadonlyMap<string, PatternSubscription> {
    return this.session.patterns;
  }

  get subscriptionCount(): number {
    return this.session.subscriptionCount;
  }

  /** Unsent output in bytes (queued here plus the socket's buffer). */
  get pendingOutputBytes(): number {
    return this.session.pendingBytes;
  }

  get outputLimit(): number {
    return this.principal === undefined
      ? this.context.limits.preAuthMaxOutputBytes
      : this.context.limits.maxOutputBytes;
  }

  /** Sends a reply, after any replies that are still waiting for the store. */
  reply(bytes: Buffer): void {
    if (this.replySlots.length === 0) this.session.write(bytes);
    else this.replySlots.push({ bytes });
  }

  replyError(text: string): void {
    this.reply(errorReply(text));
  }

  /**
   * A reply computed later (PUBLISH waiting for its event to be durable). The connection goes
   * on decoding and running further PUBLISHes meanwhile; their replies keep request order.
   */
  replySlot(): ReplySlot {
    const slot = new PendingReply(this);
    if (this.replySlots === NO_REPLIES) this.replySlots = [slot];
    else this.replySlots.push(slot);
    return slot;
  }

  /** Called when authentication succeeds: lifts the pre-auth limits and arms the expiry. */
  setPrincipal(principal: Principal): void {
    this.principal = principal;
    this.cancelAuthDeadline();
    // A token that expires while its connection is open does not keep it alive
    // (docs/protocol.md): the client may AUTH again before exp; otherwise it is told why and closed.
    this.session.expireWith(principal);
  }

  /** RESET: back to a fresh, unauthenticated connection, with the pre-auth deadline again. */
  clearPrincipal(): void {
    this.principal = undefined;
    this.compat = false;
    this.session.cancelExpiry();
    if (this.authDeadline === undefined) this.armAuthDeadline();
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
    this.session.closed = true;
    this.socket.pause();
    if (this.replySlots.length === 0) this.session.endAfterWrites();
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
    this.session.closed = true;
    this.session.discard();
    this.socket.destroy();
  }

  /** @internal the socket's input (onSocketData). */
  onData(chunk: Buffer): void {
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

  /** @internal writes the replies at the head of the order that are filled. */
  releaseReplies(): void {
    const slots = this.replySlots;
    let ready = 0;
    while (ready < slots.length && slots[ready]!.bytes !== undefined) {
      this.session.write(slots[ready]!.bytes!);
      ready += 1;
    }
    if (ready === 0) return;
    if (ready === slots.length) slots.length = 0;
    else this.replySlots = slots.slice(ready);
    if (this.replySlots.length === 0) this.quiescing?.();
    if (this.closed) {
      if (this.replySlots.length === 0) this.session.endAfterWrites();
      return;
    }
    if (this.blockedBy === 'replies') this.unblock('replies');
  }

  /** @internal the socket closed (onSocketClose). */
  cleanUp(): void {
    this.session.close();
    this.cancelAuthDeadline();
    this.context.connections.delete(this);
    const { logger } = this.context;
    // Not built unless logged: the address of a closed socket is known only if read before.
    if (logger.isLevelEnabled('debug')) logger.debug({ conn: this.id, addr: this.remoteAddress }, 'connection closed');
  }
}

// The socket's listeners: one function each for every connection, `this` being the socket,
// which names its connection, instead of three closures per client (docs/performance.md,
// "Eighth round: per-connection cost").

function onSocketData(this: ConnectionSocket, chunk: Buffer): void {
  this[CONNECTION].onData(chunk);
}

/** A reset, or a write to a peer gone: 'close' follows and cleans up. */
function onSocketError(this: ConnectionSocket, error: Error): void {
  const connection = this[CONNECTION];
  const { logger } = connection.context;
  if (logger.isLevelEnabled('debug')) logger.debug({ conn: connection.id, err: error.message }, 'socket error');
}

function onSocketClose(this: ConnectionSocket): void {
  this[CONNECTION].cleanUp();
}
