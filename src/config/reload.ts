import type { Logger } from 'pino';
import { TOKEN_EXPIRED_ERROR } from '../session/expiry.js';
import type { Principal } from '../auth/principal.js';
import type { VerifierConfig } from '../auth/verifier.js';
import type { HttpServer } from '../http/http-server.js';
import { compileGlob } from '../protocol/glob.js';
import { withRoomForEvents } from '../daemon.js';
import { decoderLimitsFor, type ServerContext } from '../runtime/context.js';
import { type CommandLineLayer, type EffectiveConfig, resolveConfig } from './load.js';
import { keySourcesFor, limitsFor, retentionFor } from './runtime.js';
import { displayValue, kebabName, SETTING_NAMES, type SettingName, settingSpec } from './settings.js';

/** What a reload did: applied (with the names of the settings that changed), or why not. */
import type { ConfigControl, ReloadOutcome } from '../runtime/context.js';

export type { ConfigControl, ReloadOutcome };

/** The running daemon's parts that reloadable settings live in. */
export interface LiveTargets {
  context: ServerContext;
  http: HttpServer | undefined;
  logger: Logger;
  /** Where the verifier's keys come from when none is configured: the development secret. */
  fallbackKeys: () => VerifierConfig;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Re-reads the config file (on SIGHUP or CONFIG RELOAD) and applies what may change live:
 * keys and claim checks, limits, rate limits, retention, CORS origins, log level. Flags and
 * environment variables keep their precedence over the file. A file that does not parse or
 * validate changes nothing; a changed restart-only setting is logged and left as it is
 * (docs/operations.md, "Reloading").
 */
export class ConfigReloader implements ConfigControl {
  constructor(
    private readonly commandLine: CommandLineLayer,
    /** The configuration in force (restart-only settings as at start). */
    private current: EffectiveConfig,
    private readonly targets: LiveTargets,
  ) {}

  get(pattern: string): [string, string][] {
    const matches = compileGlob(pattern.toLowerCase());
    return SETTING_NAMES.filter((name) => matches(kebabName(name))).map((name) => [
      kebabName(name),
      displayValue(name, this.current.values[name]),
    ]);
  }

  reload(): ReloadOutcome {
    const { logger } = this.targets;
    let next: EffectiveConfig;
    let keys: VerifierConfig;
    try {
      next = resolveConfig(this.commandLine, this.current.file);
      keys = {
        ...(keySourcesFor(next.values) ?? this.targets.fallbackKeys()),
        clockToleranceSeconds: this.targets.context.clockToleranceMs / 1000,
      };
      // The verifier checks the keys in full and changes nothing when it refuses them; it goes
      // first, and nothing after it can fail (every value passed its setting's parser).
      this.targets.context.verifier.reconfigure(keys);
    } catch (error) {
      const message = (error as Error).message;
      logger.error({ file: this.current.file, err: message }, 'config reload failed: nothing changed');
      return { ok: false, error: message };
    }

    const changed: SettingName[] = [];
    const restartNeeded: string[] = [];
    const values = { ...this.current.values } as Record<string, unknown>;
    const sources = { ...this.current.sources };
    for (const name of SETTING_NAMES) {
      if (same(next.values[name], this.current.values[name])) continue;
      if (settingSpec(name).applies === 'restart') {
        restartNeeded.push(kebabName(name));
        continue;
      }
      changed.push(name);
      values[name] = next.values[name];
      sources[name] = next.sources[name] as (typeof sources)[SettingName];
    }
    for (const name of restartNeeded) {
      logger.warn({ setting: name }, `config reload: ${name} changed, but takes effect only at a restart`);
    }
    const applied: EffectiveConfig = { values: values as EffectiveConfig['values'], sources, file: this.current.file };
    this.apply(applied);
    this.current = applied;
    logger.info(
      {
        file: this.current.file,
        changed: Object.fromEntries(changed.map((name) => [kebabName(name), displayValue(name, values[name])])),
      },
      'config reloaded',
    );
    return { ok: true, changed: changed.map(kebabName), restartNeeded };
  }

  private apply(config: EffectiveConfig): void {
    const { context, http, logger } = this.targets;
    const settings = config.values;
    // Limits are read where they are used (each connection, write and publish), so changing
    // the shared objects is enough; a raised event size raises the RESP caps with it.
    const limits = withRoomForEvents({ ...context.limits, ...limitsFor(settings) });
    Object.assign(context.limits, limits);
    context.outputBudget.setLimit(limits.maxOutputTotalBytes);
    Object.assign(context.decoderLimits, decoderLimitsFor(limits, true));
    Object.assign(context.preAuthDecoderLimits, decoderLimitsFor(limits, false));
    context.publisher.setRateLimit({ perSecond: limits.publishRatePerSecond, burst: limits.publishBurst });
    context.store.setRetention(retentionFor(settings));
    http?.setCorsOrigin(settings.httpCorsOrigin);
    http?.setMetricsToken(settings.metricsToken);
    logger.level = settings.logLevel;
    this.closeRemovedKeys();
  }

  /**
   * Connections and event streams whose token was verified with a key that is no longer
   * configured end as if their token expired (docs/protocol.md): their owner re-authenticates
   * with a token signed by a key still in force.
   */
  private closeRemovedKeys(): void {
    const { context, http } = this.targets;
    const removed = (principal: Principal | undefined): boolean =>
      principal !== undefined && context.verifier.verifiedWithRemovedKey(principal);
    let closed = 0;
    for (const connection of context.connections) {
      if (connection.closed || !removed(connection.principal)) continue;
      connection.abort(TOKEN_EXPIRED_ERROR, 'key_removed');
      closed += 1;
    }
    for (const stream of http?.streams ?? []) {
      if (!removed(stream.principal)) continue;
      stream.end('token_expired');
      closed += 1;
    }
    if (closed > 0) {
      context.stats.authFailures.key_removed = (context.stats.authFailures.key_removed ?? 0) + closed;
      this.targets.logger.info(
        { closed },
        'config reload: closed the clients whose token was signed with a removed key',
      );
    }
  }
}
