import { setFlagsFromString } from 'node:v8';

/**
 * V8 (Node 20) optimizes a function once it has run about its interrupt budget's worth of
 * bytecode, and gives it a feedback vector (what the optimizer learns from) after a smaller
 * budget. With both at a quarter of their defaults (67,584 and 940 bytes), the connection path
 * reaches optimized code after a few hundred clients instead of a few thousand, and a fresh
 * daemon's first connection storm costs less: docs/performance.md, "Tenth round: V8 flags".
 * V8 reads both budgets each time it sets one, so setting them once at startup, before the
 * daemon's code has run hot, has the effect the same flags have on the command line (unlike
 * flags read when the heap is set up, such as `--single-threaded-gc`, which aborts the process
 * when set after startup).
 */
export const EARLY_TIER_UP_FLAGS: readonly string[] = [
  '--interrupt-budget=16384',
  '--interrupt-budget-for-feedback-allocation=235',
];

/** `--interrupt_budget=1` and `--interrupt-budget=1` name the same V8 flag. */
function flagName(arg: string): string {
  return arg.split('=')[0]!.replace(/_/g, '-');
}

/**
 * Sets the early tier-up flags that the process's own command line (`execArgv`) does not set:
 * a flag given to node explicitly wins. Node refuses these flags in NODE_OPTIONS, so the command
 * line is the only other place they can come from. Returns the flags set.
 */
export function applyEarlyTierUp(execArgv: readonly string[]): string[] {
  const given = new Set(execArgv.map(flagName));
  const applied = EARLY_TIER_UP_FLAGS.filter((flag) => !given.has(flagName(flag)));
  if (applied.length > 0) setFlagsFromString(applied.join(' '));
  return applied;
}
