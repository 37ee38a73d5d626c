import type { Logger } from 'pino';
import type { TokenVerifier } from '../auth/verifier.js';
import type { Broker } from '../broker/broker.js';
import type { Publisher } from '../broker/publisher.js';
import type { Limits } from '../config.js';
import type { ConfigControl } from '../config/reload.js';
import type { Connection } from '../connection/connection.js';
import type { DecoderLimits } from '../protocol/request-decoder.js';
import type { EventStore } from '../store/types.js';

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

/** Everything a connection and its commands reach: one per running server. */
export interface ServerContext {
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
  readonly connections: Set<Connection>;
  readonly startedAt: number;
  /** The TCP port actually bound (port 0 picks one). */
  readonly port: () => number;
  /** CONFIG GET and CONFIG RELOAD; set when the daemon runs from settings (sandbox-events serve). */
  configControl?: ConfigControl;
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

export function decoderLimitsFor(limits: Limits, authenticated: boolean): DecoderLimits {
  if (authenticated) {
    return {
      maxArgs: limits.maxArgs,
      maxBulkBytes: limits.maxBulkBytes,
      maxInlineBytes: limits.maxInlineBytes,
      maxRequestBytes: limits.maxRequestBytes,
    };
  }
  // Before AUTH one whole command is capped at the pre-auth size (contract: 16 KiB, 10 args).
  return {
    maxArgs: limits.preAuthMaxArgs,
    maxBulkBytes: limits.preAuthMaxBulkBytes,
    maxInlineBytes: Math.min(limits.maxInlineBytes, limits.preAuthMaxBulkBytes),
    maxRequestBytes: limits.preAuthMaxBulkBytes,
  };
}
