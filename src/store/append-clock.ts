/**
 * The wall clock as a run of appends reads it (docs/performance.md, "Ninth round: the append and
 * the frame"). `Date.now()` costs about 60 ns on the bench VM (a kvm-clock read), as much as
 * writing the event's whole line: a PUBLISH pipeline appends hundreds of events in one synchronous
 * run, so here one reading serves up to READS_SHARED appends of that run, and none outlives it
 * (a microtask ends it). An event's millisecond is then at most the few microseconds of those
 * appends older than a clock read for it alone would be; ids stay strictly increasing either way
 * (nextEventId), and Redis too stamps what one command adds with one reading of its clock
 * (`commandTimeSnapshot`).
 */
export class AppendClock {
  private reading = 0;
  /** Appends the current reading still serves (0: read the clock). */
  private left = 0;

  constructor(private readonly source: () => number = Date.now) {}

  now(): number {
    if (this.left === 0) {
      this.reading = this.source();
      this.left = READS_SHARED;
      queueMicrotask(this.expire);
    }
    this.left -= 1;
    return this.reading;
  }

  private readonly expire = (): void => {
    this.left = 0;
  };
}

/** Appends one clock reading serves at most: about 30 µs of publishing at the bench's rate. */
export const READS_SHARED = 16;
