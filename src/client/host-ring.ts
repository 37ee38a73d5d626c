import { EventsPubSubError } from './errors.js';
import type { BrokerAddress } from './types.js';

/**
 * The broker nodes a client may use, and the order it fails over in (the idea of nats.js
 * `servers.ts`: the server list lives apart from the protocol). Nodes that share one engine
 * issue the same ids, so resuming at the next one is exact (docs/scaling.md; docs/client.md,
 * "Several broker nodes").
 *
 * The first `connect()` tries each node once, in order, before it gives up; after that every
 * reconnect goes to the next node, round robin.
 */

const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_PORT = 6380;

export interface HostAddress {
  readonly host: string;
  readonly port: number;
}

/** Where the ring's nodes come from (the client's config; the environment fills the gaps). */
export interface HostRingConfig {
  host?: string;
  port?: number;
  hosts?: BrokerAddress[];
}

export class HostRing {
  /** The nodes, in order: `hosts`, or the single `host`/`port`. */
  private readonly addresses: readonly HostAddress[];
  /** The node in use: the one connected, or the one the current or next attempt goes to. */
  private index = 0;
  /** Nodes the first `connect()` may still try before it gives up. */
  private untried = 0;

  /**
   * `hosts` (when non-empty) takes precedence over `host`/`port`. A missing port is
   * `COMPUTESDK_PUBSUB_PORT`, else 6380; a missing host `COMPUTESDK_PUBSUB_HOST`, else 127.0.0.1.
   * Throws INVALID_ARGUMENT for a malformed entry of `hosts`.
   */
  constructor(config: HostRingConfig, env: NodeJS.ProcessEnv = process.env) {
    const envPort = validPort(Number(env.COMPUTESDK_PUBSUB_PORT));
    if (config.hosts !== undefined && config.hosts.length > 0) {
      this.addresses = config.hosts.map((address, i) => {
        if (
          address === null ||
          typeof address !== 'object' ||
          typeof address.host !== 'string' ||
          address.host.length === 0
        ) {
          throw new EventsPubSubError('INVALID_ARGUMENT', `hosts[${i}] must be { host: string, port?: number }`);
        }
        if (address.port !== undefined && validPort(address.port) === undefined) {
          throw new EventsPubSubError('INVALID_ARGUMENT', `hosts[${i}].port must be an integer from 1 to 65535`);
        }
        return { host: address.host, port: validPort(address.port) ?? envPort ?? DEFAULT_PORT };
      });
    } else {
      this.addresses = [
        {
          host: config.host || env.COMPUTESDK_PUBSUB_HOST || DEFAULT_HOST,
          port: validPort(config.port) ?? envPort ?? DEFAULT_PORT,
        },
      ];
    }
  }

  /** The node in use (connected, or being tried). */
  get current(): HostAddress {
    return this.addresses[this.index]!;
  }

  /** The number of nodes. */
  get size(): number {
    return this.addresses.length;
  }

  /** A fresh `connect()`: back to the first node, every other node still untried. */
  restart(): void {
    this.index = 0;
    this.untried = this.addresses.length - 1;
  }

  /** Moves to the next node (round robin, wrapping around); a no-op with one node. */
  advance(): void {
    this.index = (this.index + 1) % this.addresses.length;
  }

  /**
   * Before the first connection: moves to the next node the first `connect()` has not tried
   * yet, or returns false when every node was tried once.
   */
  advanceToUntried(): boolean {
    if (this.untried <= 0) return false;
    this.untried -= 1;
    this.advance();
    return true;
  }
}

function validPort(port: number | undefined): number | undefined {
  return typeof port === 'number' && Number.isInteger(port) && port > 0 && port <= 65535 ? port : undefined;
}
