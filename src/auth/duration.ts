import { SandboxEventsError } from '../errors.js';

const UNIT_MS: Record<string, number> = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1_000, ms: 1 };
const UNIT_ORDER = ['d', 'h', 'm', 's', 'ms'];
const BARE_SECONDS = /^\d+(?:\.\d+)?$/;
const PART = /(\d+(?:\.\d+)?)(ms|d|h|m|s)/y;

function invalid(text: unknown): SandboxEventsError {
  return new SandboxEventsError(
    'INVALID_ARGUMENT',
    `invalid duration ${JSON.stringify(String(text)).slice(0, 80)}: use e.g. 45s, 30m, 1h30m, 7d, 500ms or a number of seconds`,
  );
}

/**
 * '1h', '30m', '45s', '7d', '500ms', '1h30m' or a bare number of seconds, to milliseconds.
 * Units must come largest first, each at most once, so that typos such as '30m1h' are refused.
 */
export function parseDuration(text: string): number {
  if (typeof text !== 'string') throw invalid(text);
  const input = text.trim();
  let ms: number;
  if (BARE_SECONDS.test(input)) {
    ms = Number(input) * 1000;
  } else {
    if (input.length === 0) throw invalid(text);
    ms = 0;
    let lastUnit = -1;
    PART.lastIndex = 0;
    while (PART.lastIndex < input.length) {
      const match = PART.exec(input);
      if (match === null) throw invalid(text);
      const unit = UNIT_ORDER.indexOf(match[2]!);
      if (unit <= lastUnit) throw invalid(text);
      lastUnit = unit;
      ms += Number(match[1]) * UNIT_MS[match[2]!]!;
    }
  }
  ms = Math.round(ms);
  if (!Number.isSafeInteger(ms) || ms <= 0) throw invalid(text);
  return ms;
}
