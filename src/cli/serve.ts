import path from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { mintToken } from '../auth/mint.js';
import { loadOrCreateSecret } from '../auth/secret.js';
import type { VerifierConfig } from '../auth/verifier.js';
import { apiKeysPath } from '../auth/api-keys.js';
import type { CommandLineLayer, EffectiveConfig } from '../config/load.js';
import { ConfigReloader } from '../config/reload.js';
import { keySourcesFor, limitsFor, retentionFor } from '../config/runtime.js';
import { startServer } from '../daemon.js';
import { kernelBacklogCap } from '../server/server.js';
import { addSettingOptions, effectiveConfig } from './config.js';
import { LOG_SETTLE_MS, LogOutput } from './log-output.js';
import { applyEarlyTierUp } from './v8-flags.js';

export function registerServe(program: Command): void {
  addSettingOptions(
    program
      .command('serve')
      .description('Run the broker daemon (Redis protocol on TCP; HTTP, Server-Sent Events and metrics)'),
  ).action(async (_options: unknown, command: Command) => {
    const { commandLine, config } = effectiveConfig(command);
    await serve(commandLine, config);
  });
}

async function serve(commandLine: CommandLineLayer, config: EffectiveConfig): Promise<void> {
  const options = config.values;
  // Before any of the daemon's code runs hot (docs/operations.md, "V8 flags").
  const v8Flags = options.earlyTierUp ? applyEarlyTierUp(process.execArgv) : [];
  const logOutput = new LogOutput(1, (count) =>
    logger.warn({ dropped: count }, 'log lines dropped: standard output was not read fast enough'),
  );
  const logger = pino({ level: options.logLevel, base: { pid: process.pid } }, logOutput);
  // Nor may stderr end the daemon (the development banner, Node's own warnings): a write to a
  // stderr whose reader has gone fails with EPIPE, emitted as an 'error' that would throw.
  process.stderr.on('error', () => {});
  // Exits once the last log lines are written, or LOG_SETTLE_MS later (log-output.ts).
  const exitAfterLogs = (code: number): void => {
    void logOutput.settle(LOG_SETTLE_MS).then(() => process.exit(code));
  };
  // SIGHUP and CONFIG RELOAD re-read the config file (docs/operations.md, "Reloading"). The
  // handler is in place from the start: SIGHUP's default action would end the process.
  let reloader: ConfigReloader | undefined;
  let stopping = false;
  process.on('SIGHUP', () => {
    if (reloader === undefined) logger.warn('SIGHUP while starting: ignored; send it again once listening');
    else if (!stopping) reloader.reload();
  });
  const dataDir = path.resolve(options.dataDir);
  let devSecret: string | undefined;
  // Embedded defaults: a random secret kept in the data dir so tokens survive restarts. Also
  // when a reload leaves no key source configured.
  const developmentKeys = (): VerifierConfig => {
    const loaded = loadOrCreateSecret(dataDir);
    if (loaded.insecureMode)
      logger.warn({ path: loaded.path }, 'the secret file is readable by other users: chmod 600 it');
    logger.warn(
      { path: loaded.path, created: loaded.created },
      'no --jwt-secret configured: using the development secret from the data dir; configure a real secret or keys in production',
    );
    devSecret = loaded.secret;
    return { secret: loaded.secret };
  };
  const auth = keySourcesFor(options) ?? developmentKeys();
  const limits = limitsFor(options);
  const retention = retentionFor(options);
  const starting = startServer({
    host: options.host,
    port: options.port,
    backlog: options.tcpBacklog,
    auth,
    storeConfig: {
      store: options.store,
      engine: options.engine,
      dataDir,
      retention,
      synchronous: options.sqliteSynchronous,
      memoryMaxBytes: options.memoryStoreMax,
      // An address the engine cannot fully serve is never half served: the node stops.
      onEngineRefused: (error) => {
        logger.fatal({ engine: 'redis', code: error.code }, error.message);
        exitAfterLogs(1);
      },
    },
    limits,
    logger,
    warmUpClients: options.warmUp,
    httpPort: options.httpPort === 0 ? undefined : options.httpPort,
    http: {
      apiKeysFile: apiKeysPath(dataDir),
      corsOrigin: options.httpCorsOrigin,
      console: options.console,
      ...(options.hopxMetricsType === undefined ? {} : { metricsType: options.hopxMetricsType }),
      metricsToken: options.metricsToken,
    },
  });
  // In place before the listening line, which scripts and supervisors take as the moment the
  // daemon can be stopped. A signal that comes sooner stops it once the start is done (a start
  // cannot be abandoned half way: the store may be migrating).
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      process.exit(1); // a second signal: stop waiting
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    starting
      .then((started) => started.close())
      .then(
        () => {
          logger.info('stopped');
          exitAfterLogs(0);
        },
        (error: unknown) => {
          logger.error({ err: error }, 'error while shutting down');
          exitAfterLogs(1);
        },
      );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const server = await starting.catch(async (error: unknown) => {
    await logOutput.settle(LOG_SETTLE_MS); // the lines logged while starting outlive the exit
    throw error;
  });
  if (stopping) return; // stop() closes it
  const { store } = server.context;
  const { warmUp } = server;
  reloader = new ConfigReloader(commandLine, config, {
    context: server.context,
    http: server.http,
    logger,
    fallbackKeys: developmentKeys,
  });
  server.context.configControl = reloader;
  logger.info(
    {
      host: server.host,
      port: server.port,
      httpPort: server.httpPort,
      store: store.kind,
      ...(store.kind === 'sqlite' ? { synchronous: options.sqliteSynchronous } : {}),
      ...(v8Flags.length > 0 ? { v8Flags: v8Flags.join(' ') } : {}),
      ...(warmUp === undefined ? {} : { warmUp: warmUp instanceof Error ? 'failed' : warmUp }),
    },
    'sandbox-events listening',
  );
  if (warmUp instanceof Error) {
    // After the "listening" line, which scripts wait for as the first line.
    logger.warn({ code: warmUp.code, err: warmUp.cause }, `${warmUp.message}: the daemon started cold`);
  }
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
}
