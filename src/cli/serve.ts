import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { mintToken } from '../auth/mint.js';
import { loadOrCreateSecret } from '../auth/secret.js';
import type { VerifierConfig } from '../auth/verifier.js';
import { DEFAULT_HOST, DEFAULT_LIMITS, DEFAULT_PORT, type Limits } from '../config.js';
import { apiKeysPath } from '../auth/api-keys.js';
import { DEFAULT_HTTP_PORT } from '../http/host.js';
import { startServer } from '../daemon.js';
import { DEFAULT_BACKLOG, kernelBacklogCap } from '../server/server.js';
import { DEFAULT_RETENTION_BYTES, defaultMemoryStoreMax } from '../store/open-store.js';
import { booleanArgument, byteSizeArgument, durationArgument, integerArgument, option } from './options.js';

interface ServeOptions {
  host: string;
  port: number;
  httpPort: number;
  httpCorsOrigin?: string;
  console: boolean;
  jwtSecret?: string;
  jwtPublicKey?: string;
  jwksUrl?: string;
  jwtIssuer?: string;
  jwtAudience?: string;
  logLevel: string;
  dataDir: string;
  store: string;
  sqliteSynchronous: 'normal' | 'full';
  engine?: string;
  retentionCount: number;
  retentionAge: number;
  retentionBytes: number;
  ephemeralTypes?: string[];
  hopxMetricsType?: string;
  memoryStoreMax: number;
  maxClients: number;
  maxOutputBuffer: number;
  maxEventSize: number;
  publishRate: number;
  publishBurst: number;
  tcpKeepalive: number;
  tcpBacklog: number;
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('Run the broker daemon (Redis protocol on TCP; HTTP, Server-Sent Events and metrics)')
    .addOption(option('--host <address>', 'address to listen on; 0.0.0.0 exposes it').default(DEFAULT_HOST))
    .addOption(
      option('--port <port>', 'TCP port (0 picks a free one)')
        .default(DEFAULT_PORT)
        .argParser(integerArgument(0, 65535)),
    )
    .addOption(
      option('--http-port <port>', 'HTTP port: REST, event streams, /metrics (0 turns HTTP off)')
        .default(DEFAULT_HTTP_PORT)
        .argParser(integerArgument(0, 65535)),
    )
    .addOption(
      option(
        '--http-cors-origin <origins>',
        'origins (comma-separated, or *) that browsers may call the HTTP API from',
      ),
    )
    .addOption(
      option('--console <bool>', 'serve the browser console at /console on the HTTP port (docs/console.md)')
        .default(true)
        .argParser(booleanArgument),
    )
    .addOption(option('--jwt-secret <secret>', 'HS256 secret that tokens are signed with'))
    .addOption(
      option(
        '--jwt-public-key <file>',
        'PEM public key (RS256, ES256 or EdDSA); with --jwt-secret too, both kinds of token',
      ),
    )
    .addOption(
      option(
        '--jwks-url <url>',
        'JWKS endpoint with the public keys (not with --jwt-public-key); with --jwt-secret too, both kinds',
      ),
    )
    .addOption(option('--jwt-issuer <iss>', 'required `iss` claim'))
    .addOption(option('--jwt-audience <aud>', 'required `aud` claim'))
    .addOption(option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent').default('info'))
    .addOption(option('--data-dir <dir>', 'where the dev secret and the event store live').default('./data'))
    .addOption(option('--store <spec>', 'sqlite (<data-dir>/events.db), sqlite:<path> or memory').default('sqlite'))
    .addOption(
      option(
        '--sqlite-synchronous <mode>',
        'normal: an acknowledged event survives the process dying; full: power loss too (an fsync per commit)',
      )
        .choices(['normal', 'full'])
        .default('normal'),
    )
    .addOption(
      option('--engine <url>', 'share events with other nodes through Redis: redis://host:port (replaces --store)'),
    )
    .addOption(option('--retention-count <n>', 'events kept per sandbox').default(10_000).argParser(integerArgument(1)))
    .addOption(
      option('--retention-age <duration>', 'events older than this are pruned (e.g. 24h)')
        .default(24 * 3600 * 1000, '24h')
        .argParser(durationArgument),
    )
    .addOption(
      option(
        '--hopx-metrics-type <type>',
        'the event type GET /v1/sandboxes/<id>/metrics/stream carries (default sandbox.metrics)',
      ),
    )
    .addOption(
      option(
        '--ephemeral-types <globs>',
        'event types delivered live but never stored, comma-separated globs (e.g. sandbox.metrics,terminal.*)',
      ).argParser((value: string) => value.split(',').filter((glob) => glob !== '')),
    )
    .addOption(
      option('--retention-bytes <size>', 'bytes of events kept per sandbox; the oldest go first (e.g. 64mb)')
        .default(DEFAULT_RETENTION_BYTES, '64mb')
        .argParser(byteSizeArgument),
    )
    .addOption(
      option(
        '--memory-store-max <size>',
        'bytes of events the memory store keeps in all; the least recently active sandboxes lose their oldest first',
      )
        .default(defaultMemoryStoreMax(), 'a quarter of the RAM')
        .argParser(byteSizeArgument),
    )
    .addOption(
      option('--max-clients <n>', 'open connections at most')
        .default(DEFAULT_LIMITS.maxClients)
        .argParser(integerArgument(1)),
    )
    .addOption(
      option('--max-output-buffer <size>', "one client's unsent output before it is disconnected")
        .default(DEFAULT_LIMITS.maxOutputBytes, '8mb')
        .argParser(byteSizeArgument),
    )
    .addOption(
      option('--max-event-size <size>', 'largest event a publisher may send')
        .default(DEFAULT_LIMITS.maxEventBytes, '64kb')
        .argParser(byteSizeArgument),
    )
    .addOption(
      option('--publish-rate <n>', 'publishes per second of one sandbox token')
        .default(DEFAULT_LIMITS.publishRatePerSecond)
        .argParser(integerArgument(1)),
    )
    .addOption(
      option('--tcp-keepalive <seconds>', 'idle time before probing a silent client (0 turns it off)')
        .default(DEFAULT_LIMITS.tcpKeepAliveMs / 1000)
        .argParser(integerArgument(0, 7200)),
    )
    .addOption(
      option(
        '--tcp-backlog <n>',
        'queue of connections the kernel holds until they are accepted (Linux caps it at net.core.somaxconn)',
      )
        .default(DEFAULT_BACKLOG)
        .argParser(integerArgument(1, 65535)),
    )
    .addOption(
      option('--publish-burst <n>', 'publishes one sandbox token may make at once')
        .default(DEFAULT_LIMITS.publishBurst)
        .argParser(integerArgument(1)),
    )
    .action(async (options: ServeOptions) => {
      await serve(options);
    });
}

async function serve(options: ServeOptions): Promise<void> {
  const logger = pino({ level: options.logLevel, base: { pid: process.pid } });
  const dataDir = path.resolve(options.dataDir);
  const auth: VerifierConfig = {
    issuer: options.jwtIssuer,
    audience: options.jwtAudience,
  };
  let devSecret: string | undefined;
  // Every key source given goes to the verifier: a secret may sit beside a public key or a JWKS
  // (HS256 tokens and the others), and the verifier refuses a public key with a JWKS.
  if (options.jwtPublicKey !== undefined) auth.publicKeyPem = readFileSync(options.jwtPublicKey, 'utf8');
  if (options.jwksUrl !== undefined) auth.jwksUrl = options.jwksUrl;
  if (options.jwtSecret !== undefined) auth.secret = options.jwtSecret;
  if (auth.publicKeyPem === undefined && auth.jwksUrl === undefined && auth.secret === undefined) {
    // Embedded defaults: a random secret kept in the data dir so tokens survive restarts.
    const loaded = loadOrCreateSecret(dataDir);
    auth.secret = devSecret = loaded.secret;
    if (loaded.insecureMode)
      logger.warn({ path: loaded.path }, 'the secret file is readable by other users: chmod 600 it');
    logger.warn(
      { path: loaded.path, created: loaded.created },
      'no --jwt-secret configured: using the development secret from the data dir; configure a real secret or keys in production',
    );
  }
  const limits: Partial<Limits> = {
    maxClients: options.maxClients,
    maxOutputBytes: options.maxOutputBuffer,
    maxEventBytes: options.maxEventSize,
    publishRatePerSecond: options.publishRate,
    publishBurst: options.publishBurst,
    tcpKeepAliveMs: options.tcpKeepalive * 1000,
  };
  const server = await startServer({
    host: options.host,
    port: options.port,
    backlog: options.tcpBacklog,
    auth,
    storeConfig: {
      store: options.store,
      engine: options.engine,
      dataDir,
      retention: {
        maxCount: options.retentionCount,
        maxAgeMs: options.retentionAge,
        maxBytes: options.retentionBytes,
        ephemeralTypes: options.ephemeralTypes ?? [],
      },
      synchronous: options.sqliteSynchronous,
      memoryMaxBytes: options.memoryStoreMax,
    },
    limits,
    logger,
    httpPort: options.httpPort === 0 ? undefined : options.httpPort,
    http: {
      apiKeysFile: apiKeysPath(dataDir),
      corsOrigin: options.httpCorsOrigin,
      console: options.console,
      ...(options.hopxMetricsType === undefined ? {} : { metricsType: options.hopxMetricsType }),
    },
  });
  const store = server.context.store;
  logger.info(
    {
      host: server.host,
      port: server.port,
      httpPort: server.httpPort,
      store: store.kind,
      ...(store.kind === 'sqlite' ? { synchronous: options.sqliteSynchronous } : {}),
    },
    'sandbox-events listening',
  );
  const somaxconn = kernelBacklogCap();
  if (somaxconn !== undefined && somaxconn < options.tcpBacklog) {
    // Redis warns the same way at startup (checkTcpBacklogSettings): the kernel lowers the
    // backlog silently, and the first connection storm finds out (clients retry after 1 s).
    // After the "listening" line, which scripts wait for as the first line.
    logger.warn(
      { backlog: options.tcpBacklog, somaxconn },
      `the TCP backlog of ${options.tcpBacklog} cannot be enforced because /proc/sys/net/core/somaxconn is set to the lower value of ${somaxconn}`,
    );
  }

  if (devSecret !== undefined) {
    const token = await mintToken({ secret: devSecret, workspaceId: 1, role: 'workspace', ttlSeconds: 24 * 3600 });
    const host = server.host === '0.0.0.0' || server.host === '::' ? '127.0.0.1' : server.host;
    process.stderr.write(
      `\nsandbox-events is running in development mode (secret in ${path.join(dataDir, 'jwt-secret')}).\n` +
        `Try it with a workspace token for workspace 1, valid for 24 hours:\n\n` +
        `  redis-cli -h ${host} -p ${server.port} --no-auth-warning -a ${token}\n\n` +
        (server.httpPort === undefined
          ? ''
          : `  curl -N -H "Authorization: Bearer ${token}" http://${host}:${server.httpPort}/events/stream\n\n` +
            (options.console ? `  open http://${host}:${server.httpPort}/console#token=${token}\n\n` : '')) +
        `Mint more with: sandbox-events token --data-dir ${options.dataDir} --workspace 1 --sandbox sb-1\n\n`,
    );
  }

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      process.exit(1); // a second signal: stop waiting
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server.close().then(
      () => {
        logger.info('stopped');
        logger.flush();
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
