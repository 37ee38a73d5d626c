import { describe, expect, it } from 'vitest';
import { SandboxEventsError } from '../../src/errors.js';
import { parseDuration } from '../../src/auth/duration.js';

describe('parseDuration', () => {
  it.each<[string, number]>([
    ['1h', 3_600_000],
    ['30m', 1_800_000],
    ['45s', 45_000],
    ['7d', 604_800_000],
    ['500ms', 500],
    ['1h30m', 5_400_000],
    ['1d2h3m4s5ms', 93_784_005],
    ['2m30s', 150_000],
    ['90', 90_000],
    ['0.5', 500],
    ['1.5h', 5_400_000],
    [' 10s ', 10_000],
    ['1ms', 1],
  ])('%j -> %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    '',
    ' ',
    '0',
    '0s',
    '0h0m',
    '-5s',
    '-1',
    '1x',
    '1H',
    'h',
    '1 h',
    '30m1h',
    '1h1h',
    '5s500',
    '1e3',
    '.5s',
    'Infinity',
    'NaN',
    '0.0001s',
    '99999999999999999999d',
  ])('refuses %j', (text) => {
    let caught: unknown;
    try {
      parseDuration(text);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(SandboxEventsError);
    expect((caught as SandboxEventsError).code).toBe('INVALID_ARGUMENT');
  });
});
