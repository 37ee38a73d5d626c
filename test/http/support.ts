import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { mintToken, type MintOptions } from '../../src/auth/mint.js';
import type { Limits } from '../../src/config.js';
import type { HttpSettings } from '../../src/http/host.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import type { EventStore } from '../../src/store/types.js';
import { RawClient } from '../support/raw-client.js';

type TokenOptions = Partial<Omit<MintOptions, 'secret'>>;

export interface HttpTestServer {
  server: RunningServer;
  /** TCP port. */
  port: number;
  httpPort: number;
  /** http://127.0.0.1:<httpPort> */
  url: string;
  secret: string;
  /** Default: workspace 1, role workspace, 1 h. */
  token(options?: TokenOptions): Promise<string>;
  /** A sandbox token for `sandboxId` in `workspaceId` (default 1). */
  sandboxToken(sandboxId: string, workspaceId?: number): Promise<string>;
  /** A raw TCP client that has sent AUTH and read +OK. */
  authed(options?: TokenOptions): Promise<RawClient>;
  /** Registers something for `close()` to close (EventSources, child processes, ...). */
  track<T extends { close(): void }>(thing: T): T;
  close(): Promise<void>;
}

export interface HttpTestServerOptions {
  limits?: Partial<Limits>;
  store?: EventStore;
  http?: HttpSettings;
  clockToleranceSeconds?: number;
}

/** The real daemon in process: TCP and HTTP both on 127.0.0.1, ports picked by the OS. */
export async function startHttpTestServer(options: HttpTestServerOptions = {}): Promise<HttpTestServer> {
  const secret = randomBytes(32).toString('base64url');
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    httpPort: 0,
    http: options.http,
    auth: { secret, clockToleranceSeconds: options.clockToleranceSeconds },
    limits: options.limits,
    store: options.store,
  });
  const tracked: { close(): void }[] = [];
  const token = (extra: TokenOptions = {}): Promise<string> =>
    mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600, ...extra });
  const track = <T extends { close(): void }>(thing: T): T => {
    tracked.push(thing);
    return thing;
  };
  return {
    server,
    port: server.port,
    httpPort: server.httpPort!,
    url: `http://127.0.0.1:${server.httpPort}`,
    secret,
    token,
    sandboxToken: (sandboxId, workspaceId = 1) => token({ workspaceId, sandboxId, role: 'sandbox' }),
    track,
    async authed(extra = {}) {
      const client = track(await RawClient.connect(server.port));
      client.send(`AUTH ${await token(extra)}\r\n`);
      const reply = await client.line();
      if (reply !== '+OK\r\n') throw new Error(`AUTH failed: ${reply}`);
      return client;
    },
    async close() {
      for (const thing of tracked.splice(0)) thing.close();
      await server.close();
    },
  };
}

/**
 * A TCP proxy in front of the HTTP port: `dropAll()` cuts every connection through it, which
 * is how a test makes "the server drop the connection" without reaching into the server.
 */
export interface DropProxy {
  port: number;
  url: string;
  /** Connections made through the proxy so far. */
  readonly connections: number;
  dropAll(): void;
  close(): void;
}

export async function startDropProxy(targetPort: number): Promise<DropProxy> {
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((client) => {
    connections += 1;
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => sockets.delete(socket));
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    dropAll() {
      for (const socket of sockets) socket.destroy();
    },
    close() {
      server.close();
      for (const socket of sockets) socket.destroy();
    },
  };
}

/** Resolves when `check` holds, polling each turn of the event loop (bounded). */
export async function until(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** POST /events with a token; returns status and parsed body. */
export async function postEvent(
  url: string,
  token: string | undefined,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const response = await fetch(`${url}/events`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown>, headers: response.headers };
}

export async function getJson(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const response = await fetch(url, { headers });
  return { status: response.status, body: (await response.json()) as Record<string, unknown>, headers: response.headers };
}
