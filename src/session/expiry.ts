/**
 * The error line a connection gets when its token expires, or when the key that verified its
 * token is removed at a config reload (docs/protocol.md, "Authentication").
 */
export const TOKEN_EXPIRED_ERROR = 'ERR token expired: send AUTH with a fresh token before exp';

/** setTimeout's longest delay (2^31 - 1 ms, about 24.8 days); a longer one fires at once. */
const MAX_TIMEOUT_MS = 2_147_483_647;

/**
 * Calls `onExpired` once the wall clock reaches a deadline (a token's `exp` plus the clock
 * tolerance): what ends a connection or a stream whose token expires (docs/protocol.md, docs/http.md). A
 * single setTimeout is not enough. Node arms timers from the event loop's cached time and runs
 * them on the monotonic clock, so one can fire a few milliseconds before `Date.now()` reaches
 * the deadline; and a delay past 24.8 days has to be waited out in steps. Either way the timer
 * starts again for what is left.
 */
export class ExpiryTimer {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly onExpired: () => void) {}

  /** Starts (or restarts) the countdown to `deadline`, Unix milliseconds; none if infinite. */
  start(deadline: number): void {
    this.cancel();
    if (!Number.isFinite(deadline)) return;
    const delay = Math.min(Math.max(deadline - Date.now(), 0), MAX_TIMEOUT_MS);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (Date.now() < deadline) this.start(deadline);
      else this.onExpired();
    }, delay);
    this.timer.unref();
  }

  cancel(): void {
    if (this.timer === undefined) return;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
