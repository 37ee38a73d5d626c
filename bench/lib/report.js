// @ts-check
// The one table of a bench run, as Markdown (it goes into docs/performance.md as printed).

/** @param {number | undefined} n */
const fmtInt = (n) => (n === undefined || Number.isNaN(n) ? '—' : Math.round(n).toLocaleString('en'));
/** @param {number | undefined} n */
const fmtMs = (n) => (n === undefined || Number.isNaN(n) ? '—' : n < 10 ? n.toFixed(3) : n.toFixed(1));
/** @param {number | undefined} n */
const fmtSec = (n) => (n === undefined || Number.isNaN(n) ? '—' : n.toFixed(2));
/** @param {number | undefined} n CPU figures: µs per message, ms per client */
const fmtCpu = (n) => (n === undefined || Number.isNaN(n) ? '—' : n < 10 ? n.toFixed(2) : n.toFixed(1));
/** @param {number | undefined} n */
const fmtPct = (n) => (n === undefined || Number.isNaN(n) ? '–' : String(Math.round(n)));

export const formats = { int: fmtInt, ms: fmtMs, sec: fmtSec, cpu: fmtCpu };

/**
 * @typedef {{ name: string, label: string, vs?: string }} Column a server; a broker column has
 *   `vs`, the peer its ratio is taken against (Redis PUBLISH when that peer has no figure)
 * @typedef {{
 *   id: string, name: string, unit: string, format: keyof typeof formats,
 *   values: Record<string, number | undefined>, marks?: Record<string, string>,
 *   gen?: Record<string, number | undefined>, srv?: Record<string, number | undefined>,
 *   target?: { text: string, check?: (value: number, peer: number | undefined, row: Row, column: string) => boolean | undefined },
 * }} Row
 */

/**
 * Value cells for every server, and for each broker the ratio broker / its peer (so for a
 * throughput ≥ 1.0x is as good, for a time or a CPU cost ≤ 1.0x is), with ✓/✗ for a target.
 * @param {Row[]} rows
 * @param {Column[]} columns
 */
export function renderTable(rows, columns) {
  const present = columns.filter((c) => rows.some((row) => row.values[c.name] !== undefined));
  const names = present.map((c) => c.name).join('/');
  const header = ['case', 'metric'];
  for (const column of present) {
    header.push(column.label);
    if (column.vs !== undefined)
      header.push(`ratio (vs ${columns.find((c) => c.name === column.vs)?.label ?? column.vs})`);
  }
  header.push('target', `generator busy % (${names})`, `server busy % (${names})`);
  /** @type {string[][]} */
  const lines = [header, header.map(() => '---')];
  for (const row of rows) {
    const format = formats[row.format];
    const cells = [row.id, `${row.name} (${row.unit})`];
    for (const column of present) {
      const value = row.values[column.name];
      cells.push(format(value) + (row.marks?.[column.name] ?? ''));
      if (column.vs === undefined) continue;
      const peer = row.values[column.vs] ?? row.values.redis;
      const ratio = peer && value !== undefined ? value / peer : undefined;
      let ratioText = ratio === undefined || !Number.isFinite(ratio) ? '—' : `${ratio.toFixed(2)}x`;
      // A check judges some columns only: undefined for the others (no mark).
      const verdict =
        row.target?.check && value !== undefined && ratio !== undefined
          ? row.target.check(value, peer, row, column.name)
          : undefined;
      if (verdict !== undefined) ratioText += verdict ? ' ✓' : ' ✗';
      cells.push(ratioText);
    }
    cells.push(row.target?.text ?? '');
    cells.push(present.map((c) => fmtPct(row.gen?.[c.name])).join(' / '));
    cells.push(present.map((c) => fmtPct(row.srv?.[c.name])).join(' / '));
    lines.push(cells);
  }
  return lines.map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}
