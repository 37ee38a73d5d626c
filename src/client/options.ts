import { exponentialBackoff, type ReconnectStrategy } from './backoff.js';
import type { HeartbeatOptions } from './heartbeat.js';
import type { PubSubClientConfig } from './types.js';

/** The client's timing and reconnect settings, with the defaults of docs/client.md, "Configuration". */
export interface ClientOptions {
  readonly autoReconnect: boolean;
  readonly strategy: ReconnectStrategy;
  readonly stableAfter: number;
  readonly connectTimeout: number;
  readonly heartbeat: HeartbeatOptions;
  readonly commandTimeout: number;
}

export function resolveClientOptions(config: PubSubClientConfig): ClientOptions {
  // ComputeSDK reads `config.reconnectDelay || 1000`: 0 means the default there too.
  const baseDelay = positive(config.reconnectDelay) ?? 1000;
  const maxDelay = Math.max(baseDelay, positive(config.maxReconnectDelay) ?? 30_000);
  return {
    autoReconnect: config.autoReconnect ?? true,
    strategy: config.reconnectStrategy ?? exponentialBackoff({ baseDelay, maxDelay }),
    stableAfter: config.stableAfter ?? 10_000,
    connectTimeout: positive(config.connectTimeout) ?? 10_000,
    heartbeat: {
      interval: config.heartbeatInterval ?? 10_000,
      timeout: positive(config.heartbeatTimeout) ?? 10_000,
    },
    commandTimeout: positive(config.commandTimeout) ?? 10_000,
  };
}

function positive(value: number | undefined): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : undefined;
}
