import { EventsNetworkError } from './errors.js';

/**
 * Dead-peer detection for one connection (the idea of nats.js `heartbeats.ts`: PINGs with a cap
 * on how many may be outstanding). After `interval` ms without a byte from the broker it sends
 * one PING; if still nothing has arrived `timeout` ms later, the connection is dead or half-open
 * (no FIN will ever come) and `onDead` is told. At most one PING is outstanding: a second one
 * would prove nothing the first does not.
 *
 * Proof of life is any byte, not the PONG: a PONG queued behind a long replay is late, but the
 * replay itself shows the peer is there (docs/client.md, "Reconnecting", dead peers).
 */

/** What the heartbeat watches: the connection's received-byte count and whether it is closed. */
export interface HeartbeatPeer {
  readonly bytesIn: number;
  readonly closed: boolean;
}

export interface HeartbeatHooks {
  /** Sends one PING on the connection (its reply is not awaited: any byte counts). */
  sendPing(): void;
  /** True while the owner stopped reading on purpose (back-pressure): silence proves nothing then. */
  readingPaused(): boolean;
  /** Nothing arrived within `timeout` of a PING: the owner tears the connection down (and stops this). */
  onDead(error: EventsNetworkError): void;
}

export interface HeartbeatOptions {
  /** Quiet ms before a PING; 0 or less turns heartbeats off. */
  interval: number;
  /** Ms after a PING within which something must arrive. */
  timeout: number;
}

export class Heartbeat {
  private tick: NodeJS.Timeout | undefined;
  /** The timer of the one outstanding PING, if any. */
  private deadline: NodeJS.Timeout | undefined;
  /** The deadline passed: the verdict waits for the bytes already received to be read. */
  private verdict: NodeJS.Immediate | undefined;
  private lastSeen = 0;
  private quietSince = 0;

  constructor(
    private readonly peer: HeartbeatPeer,
    private readonly options: HeartbeatOptions,
    private readonly hooks: HeartbeatHooks,
  ) {}

  /** Starts watching (a no-op when heartbeats are off or it already runs). */
  start(): void {
    const { interval, timeout } = this.options;
    if (interval <= 0 || this.tick !== undefined) return;
    this.sawLife();
    // Checking twice per period bounds how late a PING can go out to half the shorter period.
    this.tick = setInterval(() => this.check(), Math.max(1, Math.min(interval, timeout) / 2));
    this.tick.unref();
  }

  /** Stops both timers; the heartbeat never fires after this. */
  stop(): void {
    if (this.tick !== undefined) clearInterval(this.tick);
    if (this.deadline !== undefined) clearTimeout(this.deadline);
    if (this.verdict !== undefined) clearImmediate(this.verdict);
    this.tick = undefined;
    this.deadline = undefined;
    this.verdict = undefined;
  }

  private sawLife(): void {
    this.lastSeen = this.peer.bytesIn;
    this.quietSince = Date.now();
  }

  private check(): void {
    if (this.peer.closed || this.deadline !== undefined || this.verdict !== undefined) return;
    if (this.peer.bytesIn !== this.lastSeen || this.hooks.readingPaused()) {
      this.sawLife();
      return;
    }
    if (Date.now() - this.quietSince < this.options.interval) return;
    const mark = this.peer.bytesIn;
    this.hooks.sendPing();
    this.deadline = setTimeout(() => {
      this.deadline = undefined;
      // Timers run before the event loop polls the sockets: after this process was stalled
      // (GC, a starved CPU) the PONG may already sit in the socket, unread. The verdict waits
      // one turn, for setImmediate, which runs after that poll (Node.js event loop phases).
      this.verdict = setImmediate(() => {
        this.verdict = undefined;
        if (this.peer.closed) return;
        if (this.peer.bytesIn !== mark || this.hooks.readingPaused()) {
          this.sawLife();
          return;
        }
        this.hooks.onDead(
          new EventsNetworkError(
            'HEARTBEAT_TIMEOUT',
            `no reply from the broker within ${this.options.timeout} ms of a heartbeat PING`,
          ),
        );
      });
    }, this.options.timeout);
    this.deadline.unref();
  }
}
