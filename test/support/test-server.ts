import { randomBytes } from 'node:crypto';
import { mintToken, type MintOptions } from '../../src/auth/mint.js';
import type { Limits } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import type { EventStore } from '../../src/store/types.js';
import { RawClient } from './raw-client.js';

export interface TestServer {
  server: RunningServer;
  port: number;
  secret: string;
  /** Mints a token with the server's secret (default: workspace 1, role workspace, 1 h). */
  token(options?: Partial<Omit<MintOptions, 'secret'>>): Promise<string>;
  /** A raw client, closed automatically by `close()`. */
  raw(): Promise<RawClient>;
  /** A raw client that has already sent AUTH with a token and read +OK. */
  authed(options?: Partial<Omit<MintOptions, 'secret'>>): Promise<RawClient>;
  close(): Promise<void>;
}

export interface TestServerOptions {
  limits?: Partial<Limits>;
  store?: EventStore;
  issuer?: string;
  audience?: string;
  clockToleranceSeconds?: number;
}

/** The real server, in process, on 127.0.0.1 and a port the OS picks. */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const secret = randomBytes(32).toString('base64url');
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    auth: {
      secret,
      issuer: options.issuer,
      audience: options.audience,
      clockToleranceSeconds: options.clockToleranceSeconds,
    },
    limits: options.limits,
    store: options.store,
  });
  const clients: RawClient[] = [];
  const token = (extra: Partial<Omit<MintOptions, 'secret'>> = {}): Promise<string> =>
    mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600, ...extra });
  const raw = async (): Promise<RawClient> => {
    const client = await RawClient.connect(server.port);
    clients.push(client);
    return client;
  };
  return {
    server,
    port: server.port,
    secret,
    token,
    raw,
    async authed(extra = {}) {
      const client = await raw();
      client.send(`AUTH ${await token(extra)}\r\n`);
      const reply = await client.line();
      if (reply !== '+OK\r\n') throw new Error(`AUTH failed: ${reply}`);
      return client;
    },
    async close() {
      for (const client of clients) client.close();
      await server.close();
    },
  };
}
