// @ts-check
/**
 * The collector's lines of a broker run with `--trace-gc`, counted: collections by kind (young
 * generation "scavenge", or "full"), their pauses, and why each ran. Shared by the benches that
 * read them (latency-gc.js, history-gc.js).
 */

/** `[pid:0x..]   1234 ms: Scavenge 5.1 (6.2) -> 4.0 (7.2) MB, pooled: 0 MB, 1.23 / 0.00 ms ... reason;` */
const GC_LINE =
  /\d+ ms: (Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Compact)[^,]*, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ ([\d.]+) ms.*\) ([^;(]+?);/;

export function gcTally() {
  /** @type {Record<string, { count: number, pauseMs: number, maxMs: number }>} */
  const gc = {};
  /** Why the collector ran ("allocation failure", "external memory pressure", ...), by kind. */
  /** @type {Record<string, number>} */
  const reasons = {};
  return {
    gc,
    reasons,
    /** Counts `line` if it is a collector's; returns whether it was. */
    read(/** @type {string} */ line) {
      const match = GC_LINE.exec(line);
      if (match === null) return false;
      const kind = match[1] === 'Scavenge' ? 'scavenge' : 'full';
      const entry = (gc[kind] ??= { count: 0, pauseMs: 0, maxMs: 0 });
      entry.count += 1;
      entry.pauseMs += Number(match[2]);
      entry.maxMs = Math.max(entry.maxMs, Number(match[2]));
      const why = `${kind}: ${match[4]}`;
      reasons[why] = (reasons[why] ?? 0) + 1;
      return true;
    },
  };
}
