import type { Principal } from '../auth/principal.js';
import type { Logger } from 'pino';
import type { TokenVerifier } from '../auth/verifier.js';
import type { Broker } from '../broker/broker.js';
import type { Publisher } from '../broker/publisher.js';
import type { Limits } from '../config.js';
import type { DecoderLimits } from '../protocol/request-decoder.js';
import type { EventStore } from '../store/types.js';
import type { OutputBudget, OutputCut } from './output-budget.js';

/** Counters that INFO (and later /metrics) report. */
export interface ServerStats {
  connectionsReceived: number;
  rejectedConnections: number;
  commandsProcessed: number;
  protocolErrors: number;
  slowConsumerDisconnects: number;
  /** Authentication failures by reason (AuthFailureReason, or a connection-level reason). */
  authFailures: Record<string, number>;
}

/**
 * What the daemon needs of a connected TCP client, beside the commands it runs: INFO and
 * /metrics count clients and their subscriptions, shutdown drains and closes them. The
 * connection layer implements it; this layer names only the interface, so the context sits
 * below every transport that reaches it.
 */
export interface ConnectedClient {
  /** Channel subscriptions (SUBSCRIBE, SSUBSCRIBE) held. */
  readonly channels: { readonly size: number };
  /** Pattern subscriptions (PSUBSCRIBE) held. */
  readonly patterns: { readonly size: number };
  /** Channels and patterns together, as a subscribe reply counts them. */
  readonly subscriptionCount: number;
  /** Stops reading commands; settles once no PUBLISH it sent still awaits its reply. */
  quiesce(): Promise<void>;
  /** Ends the connection once the replies already queued are written. */
  closeAfterReplies(): void;
  /** Cuts the connection now. */
  destroy(): void;
  readonly closed: boolean;
  /** Who authenticated, once AUTH succeeded. */
  readonly principal: Principal | undefined;
  /** Sends one error line, then closes (a key removed at a reload: the token-expired error). */
  abort(message: string, reason: string): void;
}

/**
 * Everything a connection, its commands and the HTTP handlers reach: one per running daemon.
 * It lives in runtime/, below connection/, http/ and server/, which all import it downward;
 * the daemon (src/daemon.ts) builds it. `Client` is what the registry holds: any ConnectedClient
 * for the code that only counts and drains clients, the concrete Connection for the daemon.
 */
export interface ServerContext<Client extends ConnectedClient = ConnectedClient> {
  readonly limits: Limits;
  readonly decoderLimits: DecoderLimits;
  readonly preAuthDecoderLimits: DecoderLimits;
  readonly clockToleranceMs: number;
  readonly broker: Broker;
  readonly publisher: Publisher;
  readonly store: EventStore;
  readonly verifier: TokenVerifier;
  readonly logger: Logger;
  readonly stats: ServerStats;
  /** The unsent output of every client together, and its budget (`--max-output-total`). */
  readonly outputBudget: OutputBudget;
  /** The connected TCP clients; a connection adds itself on accept and removes itself on close. */
  readonly connections: Set<Client>;
  readonly startedAt: number;
  /** The TCP port actually bound (port 0 picks one). */
  readonly port: () => number;
  /** CONFIG GET and CONFIG RELOAD; set when the daemon runs from settings (sandbox-events serve). */
  configControl?: ConfigControl;
}

/** What a config reload reports (CONFIG RELOAD's reply, the SIGHUP log line). */
export type ReloadOutcome = { ok: true; changed: string[]; restartNeeded: string[] } | { ok: false; error: string };

/**
 * What admins reach over RESP (CONFIG GET, CONFIG RELOAD; src/commands/config-commands.ts),
 * implemented by src/config/reload.ts above the transports.
 */
export interface ConfigControl {
  /** `[name, value]` of every setting whose kebab-case name matches the glob; secrets redacted. */
  get(pattern: string): [string, string][];
  reload(): ReloadOutcome;
}

export function createStats(): ServerStats {
  return {
    connectionsReceived: 0,
    rejectedConnections: 0,
    commandsProcessed: 0,
    protocolErrors: 0,
    slowConsumerDisconnects: 0,
    authFailures: {},
  };
}

/**
 * Counts and logs a client cut off for its unsent output (docs/operations.md, "Output budget"):
 * past its own limit, or, when the whole daemon held more than its output budget, as one of
 * the clients holding the most. Both count as slow consumers; the budget counts its own cuts.
 */
export function recordOutputCut(
  context: ServerContext,
  what: 'client' | 'stream' | 'response',
  cause: OutputCut,
  fields: Record<string, unknown>,
): void {
  context.stats.slowConsumerDisconnects += 1;
  if (cause === 'budget') {
    context.logger.warn(
      { ...fields, cause, budget: context.outputBudget.limit },
      `${what} output over the daemon output budget: disconnected`,
    );
  } else {
    context.logger.warn({ ...fields, cause }, `${what} output over the limit: disconnected`);
  }
}

export function decoderLimitsFor(limits: Limits, authenticated: boolean): DecoderLimits {
  if (authenticated) {
    return {
      maxArgs: limits.maxArgs,
      maxBulkBytes: limits.maxBulkBytes,
      maxInlineBytes: limits.maxInlineBytes,
      maxRequestBytes: limits.maxRequestBytes,
    };
  }
  // Before AUTH one whole command is capped at the pre-auth size (docs/protocol.md, "Authentication": 16 KiB, 10 args).
  return {
    maxArgs: limits.preAuthMaxArgs,
    maxBulkBytes: limits.preAuthMaxBulkBytes,
    maxInlineBytes: Math.min(limits.maxInlineBytes, limits.preAuthMaxBulkBytes),
    maxRequestBytes: limits.preAuthMaxBulkBytes,
  };
}
