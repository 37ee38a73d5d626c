import net from 'node:net';
import { once } from 'node:events';

/**
 * A TCP proxy in front of the broker that breaks things on purpose: it cuts every connection
 * (at once, or after a given number of bytes so the cut lands inside a frame), blackholes
 * (stops forwarding in both directions without closing anything: a half-open peer), and
 * splits what the broker sends into one-byte writes.
 */
export class FaultProxy {
  private readonly pairs = new Set<Pair>();
  private blackholed = false;
  private splitting = false;
  private cutBudget: { bytes: number; done: () => void } | undefined;
  private cutsHeld = false;
  /** Connections accepted since the proxy started. */
  accepted = 0;
  /** Bytes forwarded from the broker to clients. */
  bytesDown = 0;

  private constructor(
    private readonly server: net.Server,
    private targetPort: number,
    private readonly targetHost: string,
  ) {
    server.on('connection', (client) => this.onConnection(client));
  }

  static async start(targetPort: number, targetHost = '127.0.0.1'): Promise<FaultProxy> {
    const server = net.createServer({ noDelay: true });
    const proxy = new FaultProxy(server, targetPort, targetHost);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return proxy;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get connections(): number {
    return this.pairs.size;
  }

  /** Where new connections go (a broker restarted on another port). */
  retarget(port: number): void {
    this.targetPort = port;
  }

  /** Destroys every open connection, both sides, now. */
  cutAll(): void {
    for (const pair of [...this.pairs]) pair.destroy();
  }

  /**
   * Cuts every connection once `bytes` more bytes have gone from the broker to the clients,
   * forwarding only the part of the chunk before the cut: the client sees half a frame.
   * Resolves when the cut happened.
   */
  cutAfter(bytes: number): Promise<void> {
    return new Promise((resolve) => {
      this.cutBudget = { bytes, done: resolve };
    });
  }

  /** While held, a pending `cutAfter` does not count bytes (so it cannot fire). */
  holdCuts(on: boolean): void {
    this.cutsHeld = on;
  }

  /**
   * Stops forwarding without closing, in both directions, for existing and new connections:
   * bytes sent meanwhile are lost, as they would be on a dead path.
   */
  blackhole(on: boolean): void {
    this.blackholed = on;
  }

  /** Forwards what the broker sends one byte per write. */
  splitBytes(on: boolean): void {
    this.splitting = on;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(client: net.Socket): void {
    this.accepted += 1;
    client.setNoDelay(true);
    const upstream = net.connect({ port: this.targetPort, host: this.targetHost });
    upstream.setNoDelay(true);
    const pair = new Pair(client, upstream, this);
    this.pairs.add(pair);
    pair.onClose = () => this.pairs.delete(pair);
  }

  /** @internal decides what of a downstream chunk goes through before a pending cut. */
  takeDown(chunk: Buffer): { pass: Buffer; cut: boolean } {
    const budget = this.cutsHeld ? undefined : this.cutBudget;
    if (budget === undefined || chunk.length < budget.bytes) {
      if (budget !== undefined) budget.bytes -= chunk.length;
      return { pass: chunk, cut: false };
    }
    this.cutBudget = undefined;
    queueMicrotask(budget.done);
    return { pass: chunk.subarray(0, budget.bytes), cut: true };
  }

  /** @internal */
  get isBlackholed(): boolean {
    return this.blackholed;
  }

  /** @internal */
  get isSplitting(): boolean {
    return this.splitting;
  }
}

class Pair {
  onClose: () => void = () => {};
  private closed = false;

  constructor(
    private readonly client: net.Socket,
    private readonly upstream: net.Socket,
    private readonly proxy: FaultProxy,
  ) {
    client.on('data', (chunk: Buffer) => {
      if (this.proxy.isBlackholed) return; // dropped: the peer is gone as far as anyone can tell
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => this.down(chunk));
    for (const socket of [client, upstream]) {
      socket.on('error', () => {});
      socket.on('close', () => this.destroy());
    }
  }

  private down(chunk: Buffer): void {
    if (this.closed || this.proxy.isBlackholed) return;
    const { pass, cut } = this.proxy.takeDown(chunk);
    this.proxy.bytesDown += pass.length;
    if (this.proxy.isSplitting) {
      // One write per byte, each on its own turn of the event loop so TCP can't merge them.
      this.upstream.pause();
      let at = 0;
      const step = (): void => {
        if (this.closed) return;
        if (at >= pass.length) {
          if (cut) this.proxy.cutAll();
          else this.upstream.resume();
          return;
        }
        this.client.write(pass.subarray(at, at + 1));
        at += 1;
        setImmediate(step);
      };
      step();
      return;
    }
    if (pass.length > 0) this.client.write(pass);
    if (cut) this.proxy.cutAll();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
    this.upstream.destroy();
    this.onClose();
  }
}
