import net from 'node:net';
import type { HttpSettings } from '../../src/http/host.js';
import { startTestServer, type TestServer, type TestServerOptions } from '../support/test-server.js';

export interface HttpTestServer extends TestServer {
  httpPort: number;
  /** http://127.0.0.1:<httpPort> */
  url: string;
}

export interface HttpTestServerOptions extends Omit<TestServerOptions, 'http'> {
  http?: HttpSettings;
}

/** The real daemon in process with HTTP on: TCP and HTTP both on 127.0.0.1, ports picked by the OS. */
export async function startHttpTestServer(options: HttpTestServerOptions = {}): Promise<HttpTestServer> {
  const broker = await startTestServer({ ...options, http: options.http ?? {} });
  const httpPort = broker.httpPort!;
  return { ...broker, httpPort, url: `http://127.0.0.1:${httpPort}` };
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
  return {
    status: response.status,
    body: (await response.json()) as Record<string, unknown>,
    headers: response.headers,
  };
}

export async function getJson(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const response = await fetch(url, { headers });
  return {
    status: response.status,
    body: (await response.json()) as Record<string, unknown>,
    headers: response.headers,
  };
}
