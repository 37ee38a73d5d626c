import path from 'node:path';
import { type Command, Option } from 'commander';
import { TokenVerifier } from '../auth/verifier.js';
import { type CommandLineLayer, type EffectiveConfig, resolveConfig } from '../config/load.js';
import { keySourcesFor } from '../config/runtime.js';
import {
  displayValue,
  envVariable,
  kebabName,
  SETTING_NAMES,
  type SettingName,
  settingSpec,
} from '../config/settings.js';
import { envName } from './options.js';

export const CONFIG_ENV = envName('--config');

/** `--config <file>` and one flag per setting (src/config/settings.ts), each also read from its env variable. */
export function addSettingOptions(command: Command): Command {
  command.addOption(
    new Option('--config <file>', 'config file: .toml, .yaml, .yml or .json (flags and env override it)').env(
      CONFIG_ENV,
    ),
  );
  for (const name of SETTING_NAMES) {
    const spec = settingSpec(name);
    const option = new Option(`--${kebabName(name)} ${spec.arg}`, spec.help).env(envVariable(name));
    if (spec.repeatable) {
      // Repeated flags add up; the environment variable holds one value.
      option.argParser((text: string, previous: unknown) => [
        ...(Array.isArray(previous) ? previous : []),
        ...(spec.parse(text) as unknown[]),
      ]);
    } else {
      option.argParser((text: string) => spec.parse(text));
    }
    // For --help: commander's defaults are not used as values (commandLineLayer skips them), as
    // the file comes between the environment and the defaults (resolveConfig).
    if (spec.defaultValue !== undefined) option.default(spec.defaultValue, spec.defaultText);
    command.addOption(option);
  }
  return command;
}

/** The values commander read from flags and the environment, and which it was. */
export function commandLineLayer(command: Command): CommandLineLayer {
  const layer: CommandLineLayer = { values: {}, sources: {} };
  for (const name of SETTING_NAMES) {
    const source = command.getOptionValueSource(name);
    if (source !== 'cli' && source !== 'env') continue;
    layer.values[name] = command.getOptionValue(name);
    layer.sources[name] = source === 'cli' ? 'flag' : 'env';
  }
  return layer;
}

/** Flags, environment and the `--config` file resolved, as `serve` and `config check` see them. */
export function effectiveConfig(command: Command): { commandLine: CommandLineLayer; config: EffectiveConfig } {
  const commandLine = commandLineLayer(command);
  const file = command.getOptionValue('config') as string | undefined;
  return { commandLine, config: resolveConfig(commandLine, file) };
}

/** One line per setting: `key = value  # source, live|restart`, secrets redacted. */
export function describeConfig(config: EffectiveConfig): string {
  const width = Math.max(...SETTING_NAMES.map((name) => kebabName(name).length));
  const lines = [`# sandbox-events configuration${config.file === undefined ? '' : ` from ${config.file}`}`];
  for (const name of SETTING_NAMES) {
    const source = config.sources[name as SettingName];
    const shown = source === undefined ? '(not set)' : displayValue(name, config.values[name]);
    const applies = settingSpec(name).applies === 'live' ? 'reloadable' : 'restart only';
    lines.push(`${kebabName(name).padEnd(width)} = ${shown}  # ${source ?? 'unset'}, ${applies}`);
  }
  return `${lines.join('\n')}\n`;
}

export function registerConfig(program: Command): void {
  const config = program.command('config').description('Inspect the daemon configuration');
  addSettingOptions(
    config
      .command('check')
      .description(
        'Print the effective configuration of `serve` with the same flags, environment and --config file: ' +
          'each value with where it came from, secrets redacted; exits 1 on errors',
      ),
  ).action((_options: unknown, command: Command) => {
    const { config: effective } = effectiveConfig(command);
    const keys = keySourcesFor(effective.values);
    // The verifier refuses what serve would refuse (a bad PEM, a public key with a JWKS URL).
    if (keys !== undefined) new TokenVerifier(keys);
    process.stdout.write(describeConfig(effective));
    if (keys === undefined) {
      process.stdout.write(
        `# no key source: serve would use the development secret in ${path.join(path.resolve(effective.values.dataDir), 'jwt-secret')}\n`,
      );
    }
  });
}
