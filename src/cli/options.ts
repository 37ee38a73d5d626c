import { InvalidArgumentError, Option } from 'commander';
import { parseDuration } from '../auth/duration.js';

/** Every flag `--some-name` can also come from the environment as SANDBOX_EVENTS_SOME_NAME. */
export function envName(flag: string): string {
  return `SANDBOX_EVENTS_${flag.replace(/^--/, '').replace(/-/g, '_').toUpperCase()}`;
}

export function option(flags: string, description: string): Option {
  const long = /--[a-z0-9-]+/.exec(flags)?.[0];
  const made = new Option(flags, description);
  return long === undefined ? made : made.env(envName(long));
}

export function integerArgument(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    }
    return value;
  };
}

/** A byte size: 8388608, 64kb, 8mb, 1gb (binary multiples). */
export function byteSizeArgument(text: string): number {
  const match = /^(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?$/i.exec(text.trim());
  if (match === null) throw new InvalidArgumentError('expected a size such as 65536, 64kb or 8mb');
  const unit = (match[2] ?? 'b').toLowerCase();
  const multiplier = unit.startsWith('k')
    ? 1024
    : unit.startsWith('m')
      ? 1024 ** 2
      : unit.startsWith('g')
        ? 1024 ** 3
        : 1;
  const value = Number(match[1]) * multiplier;
  if (!Number.isSafeInteger(value) || value <= 0) throw new InvalidArgumentError('size out of range');
  return value;
}

/** A size as `byteSizeArgument` takes it, or `0` for none (a budget turned off). */
export function optionalByteSizeArgument(text: string): number {
  return /^\s*0+\s*(b|kb|kib|mb|mib|gb|gib)?\s*$/i.test(text) ? 0 : byteSizeArgument(text);
}

export function durationArgument(text: string): number {
  try {
    return parseDuration(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

/** A switch given a value, so the environment can set it too: true/false, on/off, yes/no, 1/0. */
export function booleanArgument(text: string): boolean {
  const value = text.trim().toLowerCase();
  if (['true', 'on', 'yes', '1'].includes(value)) return true;
  if (['false', 'off', 'no', '0'].includes(value)) return false;
  throw new InvalidArgumentError('expected true or false');
}
