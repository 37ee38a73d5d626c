import { describeError, type EventsError, EventsPubSubError } from './errors.js';

/**
 * Decides what happens after a connection attempt failed or an open connection was lost.
 * `attempt` counts reconnect attempts since the last stable connection, from 1. Return the
 * delay in milliseconds before the next attempt, or `false` to stop (the client then fails
 * with `RECONNECT_STOPPED`). Authentication failures never reach the strategy: they stop the
 * client unless the token function hands out a new token.
 */
export type ReconnectStrategy = (attempt: number, cause: EventsError) => number | false;

export interface BackoffOptions {
  /** The smallest delay, and the unit the ceiling doubles from (ComputeSDK's `reconnectDelay`). */
  baseDelay: number;
  /** The largest delay. */
  maxDelay: number;
  /** A uniform random number in [0, 1). */
  random?: () => number;
}

/** Ceiling of the delay for an attempt: `baseDelay * 2^attempt`, capped at `maxDelay`. */
export function backoffCeiling(attempt: number, options: BackoffOptions): number {
  const { baseDelay, maxDelay } = options;
  // 2^attempt overflows to Infinity long after it passed any sane maxDelay; min() handles it.
  return Math.max(baseDelay, Math.min(maxDelay, baseDelay * 2 ** Math.max(1, attempt)));
}

/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"), with a floor: the delay is uniform in [baseDelay, min(maxDelay, baseDelay * 2^attempt)].
 * Attempt 1 already spreads over [base, 2 * base], so clients that lost the same broker at the
 * same moment do not come back in the same millisecond.
 */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const random = options.random ?? Math.random;
  const ceiling = backoffCeiling(attempt, options);
  return Math.round(options.baseDelay + random() * (ceiling - options.baseDelay));
}

/** The strategy the client uses unless given its own. */
export function exponentialBackoff(options: BackoffOptions): ReconnectStrategy {
  return (attempt) => backoffDelay(attempt, options);
}

/** The longest delay `setTimeout` honours (2^31 - 1 ms): Node fires a longer one at once. */
export const MAX_TIMER_DELAY = 2_147_483_647;

/**
 * Asks `strategy` for the delay before reconnect `attempt`. A RECONNECT_STOPPED error instead
 * when it says stop (`false`), returns something that is not a delay, or throws.
 */
export function reconnectDelay(
  strategy: ReconnectStrategy,
  attempt: number,
  cause: EventsError,
): number | EventsPubSubError {
  let delay: number | false;
  try {
    delay = strategy(attempt, cause);
  } catch (error) {
    return new EventsPubSubError('RECONNECT_STOPPED', `reconnectStrategy threw: ${describeError(error)}`, {
      cause: error,
    });
  }
  if (delay === false || typeof delay !== 'number' || !Number.isFinite(delay) || delay < 0) {
    return new EventsPubSubError(
      'RECONNECT_STOPPED',
      `gave up reconnecting after ${attempt - 1} attempts: ${cause.message}`,
      {
        cause,
      },
    );
  }
  return delay;
}
