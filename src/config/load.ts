import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { parse as parseYaml } from 'yaml';
import { SandboxEventsError } from '../errors.js';
import { kebabName, SETTING_NAMES, type SettingName, type Settings, settingSpec } from './settings.js';

/** Where an effective value came from, highest precedence first (docs/operations.md). */
export type Source = 'flag' | 'env' | 'file' | 'default';

/** Values given on the command line or in the environment (commander reads both). */
export interface CommandLineLayer {
  values: Partial<Record<SettingName, unknown>>;
  sources: Partial<Record<SettingName, 'flag' | 'env'>>;
}

export interface EffectiveConfig {
  values: Settings;
  /** Absent for a setting with no value at all (no default, not given). */
  sources: Partial<Record<SettingName, Source>>;
  /** The config file, resolved, when there is one. */
  file: string | undefined;
}

/** A config file or value that cannot be used; the message lists every problem, one a line. */
export class ConfigError extends SandboxEventsError {
  constructor(readonly problems: string[]) {
    super('CONFIG_INVALID', problems.join('\n'));
  }
}

const FORMATS: Record<string, (text: string) => unknown> = {
  '.toml': parseToml,
  '.yaml': parseYaml,
  '.yml': parseYaml,
  '.json': JSON.parse,
};

/** The file's top-level table, whatever the format. Throws ConfigError when unreadable. */
function readConfigFile(file: string): Record<string, unknown> {
  const parser = FORMATS[path.extname(file).toLowerCase()];
  if (parser === undefined) {
    throw new ConfigError([`${file}: unknown config format (use .toml, .yaml, .yml or .json)`]);
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([`${file}: cannot read it: ${(error as Error).message}`]);
  }
  let parsed: unknown;
  try {
    parsed = parser(text);
  } catch (error) {
    throw new ConfigError([
      `${file}: not valid ${path.extname(file).slice(1).toUpperCase()}: ${(error as Error).message}`,
    ]);
  }
  // An empty YAML file is null: no settings.
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError([`${file}: the top level must be a table of settings`]);
  }
  return parsed as Record<string, unknown>;
}

const KEYS = new Map(SETTING_NAMES.map((name) => [kebabName(name), name]));

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

export function nearestKey(key: string): string {
  let best = '';
  let bestDistance = Infinity;
  for (const known of KEYS.keys()) {
    const d = distance(key, known);
    if (d < bestDistance) {
      best = known;
      bestDistance = d;
    }
  }
  return best;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (value instanceof Date) return 'a date';
  return typeof value === 'object' ? 'a table' : `a ${typeof value}`;
}

/** A table whose every value is a number (`[retention]` with `"sandbox.metrics" = 100`). */
function isNumberTable(raw: unknown): raw is Record<string, number> {
  return (
    typeof raw === 'object' &&
    raw !== null &&
    !Array.isArray(raw) &&
    !(raw instanceof Date) &&
    Object.values(raw).every((value) => typeof value === 'number')
  );
}

/** One file value, checked against the setting's type and parsed as the flag's text would be. */
function fileValue(name: SettingName, raw: unknown): unknown {
  const spec = settingSpec(name);
  const expected =
    spec.fileShape === 'list'
      ? 'a string or a list of strings'
      : spec.fileShape === 'table'
        ? 'a string, a list of strings or a table of numbers'
        : spec.fileShape === 'number'
          ? 'a number or a string'
          : spec.fileShape === 'boolean'
            ? 'true, false or a string'
            : 'a string';
  const texts =
    typeof raw === 'string'
      ? [raw]
      : (typeof raw === 'number' && spec.fileShape === 'number') ||
          (typeof raw === 'boolean' && spec.fileShape === 'boolean')
        ? [String(raw)]
        : (spec.fileShape === 'list' || spec.fileShape === 'table') &&
            Array.isArray(raw) &&
            raw.every((item) => typeof item === 'string')
          ? (raw as string[])
          : spec.fileShape === 'table' && isNumberTable(raw)
            ? Object.entries(raw).map(([key, count]) => `${key}=${count}`)
            : undefined;
  if (texts === undefined) throw new Error(`expected ${expected}, got ${describe(raw)}`);
  if (spec.repeatable) {
    if (texts.length === 0) throw new Error('expected at least one value');
    return texts.flatMap((item) => spec.parse(item) as unknown[]);
  }
  return spec.parse(texts[0]!);
}

/** The settings a config file holds, keyed kebab-case or snake_case; every problem is reported. */
export function readSettingsFile(file: string): Partial<Record<SettingName, unknown>> {
  const table = readConfigFile(file);
  const problems: string[] = [];
  const values: Partial<Record<SettingName, unknown>> = {};
  const seenAs = new Map<SettingName, string>();
  for (const [key, raw] of Object.entries(table)) {
    const name = KEYS.get(key.replace(/_/g, '-'));
    if (name === undefined) {
      problems.push(`${file}: unknown key "${key}" (did you mean "${nearestKey(key.replace(/_/g, '-'))}"?)`);
      continue;
    }
    const earlier = seenAs.get(name);
    if (earlier !== undefined) {
      problems.push(`${file}: "${key}" and "${earlier}" are the same setting`);
      continue;
    }
    seenAs.set(name, key);
    try {
      values[name] = fileValue(name, raw);
    } catch (error) {
      problems.push(`${file}: "${key}": ${(error as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return values;
}

/** Flags, then the environment, then the file, then defaults. */
export function resolveConfig(commandLine: CommandLineLayer, file: string | undefined): EffectiveConfig {
  const resolvedFile = file === undefined ? undefined : path.resolve(file);
  const fromFile = resolvedFile === undefined ? {} : readSettingsFile(resolvedFile);
  const values: Record<string, unknown> = {};
  const sources: Partial<Record<SettingName, Source>> = {};
  for (const name of SETTING_NAMES) {
    const given = commandLine.sources[name];
    if (given !== undefined) {
      values[name] = commandLine.values[name];
      sources[name] = given;
    } else if (fromFile[name] !== undefined) {
      values[name] = fromFile[name];
      sources[name] = 'file';
    } else if (settingSpec(name).defaultValue !== undefined) {
      values[name] = settingSpec(name).defaultValue;
      sources[name] = 'default';
    }
  }
  return { values: values as Settings, sources, file: resolvedFile };
}
