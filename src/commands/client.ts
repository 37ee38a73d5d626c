import type { Principal } from '../auth/principal.js';
import type { Protocol } from '../protocol/encode.js';
import type { ServerContext } from '../runtime/context.js';
import type { Session } from '../session/session.js';

/** One reply's place in request order; `fill` it exactly once. */
export interface ReplySlot {
  fill(bytes: Buffer): void;
}

/**
 * What a command handler needs of the RESP client that sent the command. The RESP connection
 * (src/connection/connection.ts) implements it; subscriptions, resume and output belong to its
 * transport-free `session`, shared with the SSE streams.
 */
export interface RespClient {
  readonly id: number;
  readonly remoteAddress: string;
  readonly createdAt: number;
  readonly context: ServerContext;
  readonly session: Session;
  protocol: Protocol;
  readonly principal: Principal | undefined;
  readonly authenticated: boolean;
  /** Authenticated through the ComputeSDK events client's `SUBSCRIBE <id> <jwt>` line. */
  compat: boolean;
  name: string | undefined;
  libName: string | undefined;
  libVersion: string | undefined;
  /** Set once the connection is closing: a command that awaited must not act on it. */
  readonly closed: boolean;
  readonly subscriptionCount: number;
  /** Sends a reply, after any replies that still wait for the store. */
  reply(bytes: Buffer): void;
  replyError(text: string): void;
  /**
   * A place in the reply order for a reply computed later (PUBLISH waiting for its event to be
   * durable): later replies wait behind it until it is filled.
   */
  replySlot(): ReplySlot;
  /** Authentication succeeded: lifts the pre-auth limits, arms the token's expiry. */
  setPrincipal(principal: Principal): void;
  /** RESET: unauthenticated again, with the pre-auth deadline. */
  clearPrincipal(): void;
  /** QUIT: pending replies go out, then the connection closes. */
  closeAfterReplies(): void;
}
