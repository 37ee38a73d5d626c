import { MAX_TIMER_DELAY } from './backoff.js';
import { type EventsError, toEventsError } from './errors.js';
import { readTokenTiming, refreshDelay, resolveToken, type TokenTiming } from './token.js';

/**
 * Keeps one open connection's token fresh: shortly before the current token's `exp` it fetches
 * a new one from the token function and sends it with AUTH on that connection (RESP3 allows AUTH
 * while subscribed), so the broker never closes the connection for expiry (docs/client.md,
 * "Tokens"). A plain string token cannot be refreshed: the owner does not start one then, the
 * broker closes the connection at `exp`, and the reconnect fails with AUTH_FAILED.
 */

/** The connection whose token is refreshed (a `Link`). */
export interface RefreshableConnection {
  /** The token the broker accepted last on this connection. */
  token: string;
  readonly closed: boolean;
  command(args: string[]): Promise<unknown>;
}

export interface TokenRefreshHooks {
  /** Whether the connection is still the owner's current one (a replaced one is left alone). */
  isCurrent(): boolean;
  /** The broker accepted `token`; `expiresAt` in Unix ms when known. */
  refreshed(expiresAt: number | undefined): void;
  /** Fetching or sending a fresh token failed (it is tried again while the old one holds). */
  failed(error: EventsError): void;
}

/** While the current token still holds, a failed refresh is tried again this often (ms). */
const RETRY_EVERY = 1_000;

export class TokenRefresh {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly source: () => string | Promise<string>,
    private readonly connection: RefreshableConnection,
    private readonly hooks: TokenRefreshHooks,
  ) {}

  /** Arms the timer for the connection's current token (nothing when it is not a JWT with `exp`). */
  start(): void {
    this.stop();
    const timing = readTokenTiming(this.connection.token);
    if (timing === undefined) return;
    this.arm(timing, refreshDelay(timing, Date.now()));
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(timing: TokenTiming, delay: number): void {
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        void this.refresh(timing);
      },
      Math.min(delay, MAX_TIMER_DELAY),
    );
    this.timer.unref();
  }

  private async refresh(timing: TokenTiming): Promise<void> {
    const connection = this.connection;
    const open = (): boolean => this.hooks.isCurrent() && !connection.closed;
    const retry = (): void => {
      // Past exp the broker closes the connection, and the reconnect asks for a token anyway.
      if (open() && Date.now() + RETRY_EVERY < timing.expiresAt) this.arm(timing, RETRY_EVERY);
    };
    let token: string;
    try {
      token = await resolveToken(this.source);
    } catch (error) {
      if (this.hooks.isCurrent()) this.hooks.failed(toEventsError(error));
      retry();
      return;
    }
    if (!open()) return;
    if (token === connection.token) {
      retry();
      return;
    }
    try {
      await connection.command(['AUTH', 'default', token]);
    } catch (error) {
      if (!open()) return;
      this.hooks.failed(toEventsError(error));
      retry();
      return;
    }
    if (!open()) return;
    connection.token = token;
    this.start();
    this.hooks.refreshed(readTokenTiming(token)?.expiresAt);
  }
}

/**
 * After the broker refused `refused`, asks the token function once more. A different token is
 * worth a new attempt; the same one (or a failure) is not: retrying it would loop forever
 * (docs/client.md, "Tokens"). Undefined then.
 */
export async function freshTokenAfterRefusal(
  source: () => string | Promise<string>,
  refused: string,
): Promise<string | undefined> {
  try {
    const fresh = await resolveToken(source);
    return fresh === refused ? undefined : fresh;
  } catch {
    return undefined;
  }
}
