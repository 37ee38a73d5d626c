import { randomBytes } from 'node:crypto';
import { mintToken, type MintOptions } from '../../src/auth/mint.js';
import type { Limits } from '../../src/config.js';
import type { HttpSettings } from '../../src/http/host.js';
import { startServer, type RunningServer } from '../../src/daemon.js';
import type { EventStore } from '../../src/store/types.js';
import { RawClient } from './raw-client.js';

export type TokenOptions = Partial<Omit<MintOptions, 'secret'>>;

export interface TestServer {
  server: RunningServer;
  /** TCP port. */
  port: number;
  /** HTTP port, when the server was started with `http`. */
  httpPort: number | undefined;
  secret: string;
  /** Mints a token with the server's secret (default: workspace 1, role workspace, 1 h). */
  token(options?: TokenOptions): Promise<string>;
  /** A sandbox token for `sandboxId` in `workspaceId` (default 1). */
  sandboxToken(sandboxId: string, workspaceId?: number): Promise<string>;
  /** A raw client, closed automatically by `close()`. */
  raw(): Promise<RawClient>;
  /** A raw client that has already sent AUTH with a token and read +OK. */
  authed(options?: TokenOptions): Promise<RawClient>;
  /** Registers something for `close()` to close (EventSources, child processes, ...). */
  track<T extends { close(): void }>(thing: T): T;
  close(): Promise<void>;
}

export interface TestServerOptions {
  limits?: Partial<Limits>;
  store?: EventStore;
  issuer?: string;
  audience?: string;
  clockToleranceSeconds?: number;
  /** Serve HTTP too (on a port the OS picks), with these settings. */
  http?: HttpSettings;
}

/** The real server, in process, on 127.0.0.1 and ports the OS picks. */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const secret = randomBytes(32).toString('base64url');
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    httpPort: options.http === undefined ? undefined : 0,
    http: options.http,
    auth: {
      secret,
      issuer: options.issuer,
      audience: options.audience,
      clockToleranceSeconds: options.clockToleranceSeconds,
    },
    limits: options.limits,
    store: options.store,
  });
  const tracked: { close(): void }[] = [];
  const track = <T extends { close(): void }>(thing: T): T => {
    tracked.push(thing);
    return thing;
  };
  const token = (extra: TokenOptions = {}): Promise<string> =>
    mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600, ...extra });
  const raw = async (): Promise<RawClient> => track(await RawClient.connect(server.port));
  return {
    server,
    port: server.port,
    httpPort: server.httpPort,
    secret,
    token,
    sandboxToken: (sandboxId, workspaceId = 1) => token({ workspaceId, sandboxId, role: 'sandbox' }),
    raw,
    track,
    async authed(extra = {}) {
      const client = await raw();
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
