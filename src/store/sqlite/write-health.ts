import type Database from 'better-sqlite3';
import type { StoreReadiness } from '../types.js';
import type { WalWrites } from './checkpointer.js';

/** How often a store whose last commit failed tries a probe write, until one succeeds. */
export const WRITE_PROBE_INTERVAL_MS = 1_000;

/**
 * Whether the file takes writes (docs/operations.md, "Readiness"): `unavailable` from a failed
 * commit (a full disk, a lock held past the busy timeout, an I/O error) until a commit succeeds.
 * So that readiness comes back without anyone publishing, a failed commit starts a probe every
 * second: a one-page write transaction (it rewrites the schema version with its own value,
 * which changes nothing but must reach the write-ahead log like any commit), until one works.
 */
export class WriteHealth {
  private failing = false;
  private probeTimer: NodeJS.Timeout | undefined;
  private readonly probeTx: Database.Transaction<() => void>;

  constructor(
    db: Database.Database,
    private readonly wal: WalWrites,
  ) {
    const version = db.pragma('user_version', { simple: true }) as number;
    const rewriteVersion = db.prepare(`PRAGMA user_version = ${version}`);
    this.probeTx = db.transaction(() => {
      rewriteVersion.run();
    });
  }

  readiness(): StoreReadiness {
    return this.failing ? 'unavailable' : 'ready';
  }

  /** A commit succeeded: the file takes writes. */
  readonly committed = (): void => {
    if (!this.failing) return;
    this.failing = false;
    clearInterval(this.probeTimer);
    this.probeTimer = undefined;
  };

  /** A commit failed: unavailable, and probing until a write succeeds. */
  readonly failed = (): void => {
    this.failing = true;
    if (this.probeTimer !== undefined) return;
    this.probeTimer = setInterval(this.probe, WRITE_PROBE_INTERVAL_MS);
    this.probeTimer.unref();
  };

  /** No more probes (the store closes). */
  stop(): void {
    clearInterval(this.probeTimer);
    this.probeTimer = undefined;
  }

  private readonly probe = (): void => {
    this.wal.beforeWrite();
    try {
      this.probeTx.immediate();
    } catch {
      return; // still failing: the next tick tries again
    } finally {
      this.wal.afterWrite(); // a full disk may be a WAL waiting to be checkpointed
    }
    this.committed();
  };
}
