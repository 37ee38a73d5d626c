import { readFileSync } from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import { lastArgumentAsBytes, runCommand } from '../commands/dispatch.js';
import { Connection } from '../connection/connection.js';
import { destroyAfterGrace } from '../session/write-path.js';
import { errorReply } from '../protocol/encode.js';
import type { ServerContext } from '../runtime/context.js';

export interface TcpListenOptions {
  host: string;
  /** 0 picks a free port; read it back from `TcpListener.port`. */
  port: number;
  /**
   * Length of the kernel's queue of connections not yet accepted (Redis's `tcp-backlog`).
   * Linux silently caps it at net.core.somaxconn.
   */
  backlog: number;
}

const MAX_CLIENTS_REACHED = errorReply('ERR max number of clients reached');
/** How long a client refused at --max-clients has to read its error line. */
const REFUSED_GRACE_MS = 2_000;

/**
 * Node's (and Redis's) default backlog is 511. When thousands of clients connect at once
 * (every sandbox watcher reconnecting after a restart) and the event loop is busy verifying
 * the first ones' tokens, a queue of 511 overflows: Linux then drops the SYN or the final ACK
 * (TcpExtListenOverflows) and the client retransmits after its 1 s initial RTO, so a few
 * milliseconds of work become a second or three of waiting. 4096 is the kernel's default cap
 * (net.core.somaxconn since Linux 5.4); a larger queue costs kernel memory only while full.
 */
export const DEFAULT_BACKLOG = 4096;

/** Linux's cap on listen backlogs (net.core.somaxconn); undefined elsewhere or when unreadable. */
export function kernelBacklogCap(): number | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const value = Number.parseInt(readFileSync('/proc/sys/net/core/somaxconn', 'latin1'), 10);
    return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  } catch {
    return undefined;
  }
}

/** What node's TCP handle offers (the `_handle` of a net.Server or net.Socket: a libuv uv_tcp_t). */
interface TcpHandle {
  setNoDelay?(enable: boolean): number;
  setKeepAlive?(enable: boolean, initialDelaySeconds: number): number;
}

/**
 * TCP_NODELAY and keepalive (Redis's `tcp-keepalive`) for every accepted socket. Linux copies
 * a listening socket's options into each socket it accepts (tcp_create_openreq_child clones
 * the listener): TCP_NODELAY, SO_KEEPALIVE and libuv's TCP_KEEPIDLE, TCP_KEEPINTVL and
 * TCP_KEEPCNT. Set once on the listener, they save five setsockopt calls per connection
 * (docs/performance.md, "Sixth round: per-connection cost"). Elsewhere, or without node's
 * handle calls, each socket gets them as it is accepted. When the listener's keepalive changes
 * (at start, at a reload of `tcp-keepalive`: seen at the next accept), the sockets the kernel
 * queued before get them one by one: libuv accepts until the queue is empty in each poll
 * phase, so every socket accepted once a whole poll phase has passed was cloned from the
 * changed listener.
 */
class AcceptedSocketOptions {
  private handle: TcpHandle | undefined;
  /** The keepalive (ms, 0 off) the listener carries. */
  private listenerKeepAliveMs: number | undefined;
  /** The listener's options changed less than a whole poll phase ago. */
  private changing = false;

  /** Called once the server listens: from here on the listener carries the options. */
  listening(tcp: net.Server, keepAliveMs: number): void {
    const handle = (tcp as net.Server & { _handle?: TcpHandle })._handle;
    if (
      process.platform === 'linux' &&
      handle?.setNoDelay !== undefined &&
      handle.setKeepAlive !== undefined &&
      handle.setNoDelay(true) === 0
    ) {
      this.handle = handle;
      this.changeListener(keepAliveMs);
    }
  }

  /** Called for each accepted socket. */
  apply(socket: net.Socket, keepAliveMs: number): void {
    if (this.handle !== undefined && keepAliveMs !== this.listenerKeepAliveMs) this.changeListener(keepAliveMs);
    if (this.handle !== undefined && !this.changing) return;
    socket.setNoDelay(true);
    if (keepAliveMs > 0) socket.setKeepAlive(true, keepAliveMs);
    // Off, but maybe inherited from the listener as it was: node's setKeepAlive(false) does
    // nothing on a socket it never turned keepalive on for, so the handle is told directly.
    else if (this.handle !== undefined)
      (socket as net.Socket & { _handle?: TcpHandle })._handle?.setKeepAlive?.(false, 0);
  }

  private changeListener(keepAliveMs: number): void {
    if (this.handle!.setKeepAlive!(keepAliveMs > 0, Math.floor(keepAliveMs / 1000)) !== 0) {
      this.handle = undefined;
      return;
    }
    this.listenerKeepAliveMs = keepAliveMs;
    if (this.changing) return;
    this.changing = true;
    // Two check phases from now, at least one whole poll phase has run in between.
    setImmediate(() =>
      setImmediate(() => {
        this.changing = false;
      }),
    );
  }
}

/**
 * The Redis-protocol listener: accepts sockets, refuses those past `--max-clients`, and turns
 * each other one into a Connection registered in the context. What the daemon builds around
 * it (store, broker, HTTP) and the order of shutdown are src/daemon.ts's.
 */
export class TcpListener {
  private constructor(private readonly tcp: net.Server) {}

  static async listen(context: ServerContext<Connection>, options: TcpListenOptions): Promise<TcpListener> {
    const { limits, logger } = context;
    const tcp = net.createServer();
    const socketOptions = new AcceptedSocketOptions();
    tcp.once('listening', () => socketOptions.listening(tcp, limits.tcpKeepAliveMs));
    tcp.on('connection', (socket) => {
      context.stats.connectionsReceived += 1;
      if (context.connections.size >= limits.maxClients) {
        context.stats.rejectedConnections += 1;
        logger.warn({ addr: `${socket.remoteAddress}:${socket.remotePort}` }, 'max number of clients reached');
        socket.on('error', () => {});
        socket.end(MAX_CLIENTS_REACHED);
        // Past the limit, a peer that never closes its side must not hold a descriptor, nor keep
        // shutdown waiting for ever.
        destroyAfterGrace(socket, Math.min(limits.closeGraceMs, REFUSED_GRACE_MS));
        return;
      }
      socketOptions.apply(socket, limits.tcpKeepAliveMs);
      const connection = new Connection(socket, context, runCommand, lastArgumentAsBytes);
      context.connections.add(connection);
      // Not built unless logged: the address costs a getpeername call (Connection.remoteAddress).
      if (logger.isLevelEnabled('debug')) {
        logger.debug({ conn: connection.id, addr: connection.remoteAddress }, 'connection opened');
      }
    });
    tcp.on('error', (error) => logger.error({ err: error }, 'server socket error'));
    const listener = new TcpListener(tcp);
    tcp.listen({ port: options.port, host: options.host, backlog: options.backlog });
    await once(tcp, 'listening');
    return listener;
  }

  /** The port actually bound (port 0 picks one); 0 once closed. */
  get port(): number {
    const address = this.tcp.address();
    return typeof address === 'object' && address !== null ? address.port : 0;
  }

  /**
   * Stops accepting. Settles once every accepted connection has ended as well (net.Server
   * 'close'): the caller drains and closes them meanwhile.
   */
  close(): Promise<void> {
    return new Promise<void>((resolve) => this.tcp.close(() => resolve()));
  }
}
