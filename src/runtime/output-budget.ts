/**
 * Why a client was cut off for its unsent output: its own limit (`--max-output-buffer`, or a
 * paced reply it stopped reading), or the daemon-wide budget (`--max-output-total`).
 */
export type OutputCut = 'limit' | 'budget';

/** What the budget needs of one client's output: a write path (src/session/write-path.ts). */
export interface BudgetedOutput {
  /**
   * Re-reads what this output holds now (the socket's buffer shrinks as the peer reads, with
   * no event), corrects its share of `OutputBudget.total`, and returns that share.
   */
  measure(): number;
  /** Cuts the client off as over the daemon's budget; its share leaves the total at once. False if it was gone already. */
  cutForBudget(): boolean;
}

/**
 * A client holding less unsent output than this is never cut for the budget: a client that
 * reads keeps about one turn's frames queued, and cutting it would free next to nothing. The
 * part of the total the budget cannot cut is then at most `--max-clients` times this
 * (docs/operations.md, "Output budget"). It is the size of Redis's smallest client-eviction
 * bucket (`CLIENT_MEM_USAGE_BUCKET_MIN_LOG` in Redis's server.h), which Redis empties last;
 * here it is never emptied.
 */
export const NEVER_CUT_BELOW = 32 * 1024;

/**
 * A write path counts its output in the budget's total whenever it has grown by this much since
 * last counted (and whenever it writes to its socket or drains), not on every frame: the frame's
 * check is then the one comparison the output limit already makes. The total lags the truth
 * by at most this per client, what a client holding under NEVER_CUT_BELOW keeps anyway.
 */
export const COUNT_STEP = NEVER_CUT_BELOW;

/**
 * The daemon-wide output budget (`--max-output-total`), after Redis's `maxmemory-clients`: the
 * unsent output of every client together (the frames each write path queues, its socket's
 * buffer, and the live frames a resume holds back) is one counter, kept by the write paths as
 * their output grows (by COUNT_STEP), is written and drains, and is released. Past the budget,
 * the clients holding the most are cut off first, one after another, until the total is back
 * within it, as Redis evicts clients from its largest memory bucket down.
 *
 * The counter is approximate: a socket's buffer is re-read when a write path writes or drains
 * (in between the peer may have taken bytes), and a path's last COUNT_STEP of growth may not be
 * in it yet. So before anyone is cut, every output is measured afresh (O(clients), once per
 * crossing), and the next check waits until the total has grown by `recheckAfter` again: a
 * total hovering at the budget never costs a scan per frame.
 */
export class OutputBudget {
  /** Unsent output over every client in bytes; exact after `measure()`, approximate between. */
  total = 0;
  /** The `total` past which a write path that counts its output calls `enforce()`; Infinity with no budget. */
  trigger: number;
  /** Clients cut off for the budget (INFO `evicted_clients`). */
  cuts = 0;
  private budget: number;
  private readonly outputs = new Set<BudgetedOutput>();
  private enforcing = false;

  /** `budget` in bytes; 0: no budget (the total is still counted). */
  constructor(budget: number) {
    this.budget = budget;
    this.trigger = budget > 0 ? budget : Number.POSITIVE_INFINITY;
  }

  get limit(): number {
    return this.budget;
  }

  /** A reload changed `--max-output-total`: the next write past it is checked. */
  setLimit(budget: number): void {
    this.budget = budget;
    this.trigger = budget > 0 ? budget : Number.POSITIVE_INFINITY;
  }

  /** Clients with output: each write path adds itself when made and leaves when released. */
  add(output: BudgetedOutput): void {
    this.outputs.add(output);
  }

  remove(output: BudgetedOutput): void {
    this.outputs.delete(output);
  }

  /** The exact total, every output measured afresh: O(clients), for INFO, /metrics and `enforce`. */
  measure(): number {
    for (const output of this.outputs) output.measure();
    return this.total;
  }

  /** `total` passed `trigger`: measure, then cut off the largest until back within the budget. */
  enforce(): void {
    const budget = this.budget;
    if (budget <= 0 || this.enforcing) return;
    this.enforcing = true;
    try {
      const candidates: { bytes: number; output: BudgetedOutput }[] = [];
      for (const output of this.outputs) {
        const bytes = output.measure();
        if (bytes >= NEVER_CUT_BELOW) candidates.push({ bytes, output });
      }
      if (this.total > budget) {
        candidates.sort((a, b) => b.bytes - a.bytes);
        for (const { output } of candidates) {
          if (this.total <= budget) break;
          if (output.cutForBudget()) this.cuts += 1;
        }
      }
      this.trigger = Math.max(budget, this.total + recheckAfter(budget));
    } finally {
      this.enforcing = false;
    }
  }
}

/**
 * How far the total may grow past its last measure before it is measured again: 1/64 of the
 * budget, at least 64 KiB. It is also how far past the budget the total can get between checks.
 */
export function recheckAfter(budget: number): number {
  return Math.max(Math.floor(budget / 64), 64 * 1024);
}
