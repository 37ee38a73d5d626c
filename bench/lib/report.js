// The one table of a bench run, as Markdown (it goes into docs/performance.md as printed).

const fmtInt = (n) => (n === undefined || Number.isNaN(n) ? '—' : Math.round(n).toLocaleString('en'));
const fmtMs = (n) => (n === undefined || Number.isNaN(n) ? '—' : n < 10 ? n.toFixed(3) : n.toFixed(1));
const fmtSec = (n) => (n === undefined || Number.isNaN(n) ? '—' : n.toFixed(2));
const fmtPct = (n) => (n === undefined || Number.isNaN(n) ? '–' : String(Math.round(n)));

export const formats = { int: fmtInt, ms: fmtMs, sec: fmtSec };

/**
 * rows: { id, name, unit, format, redis, brokers: { sqlite, memory }, better: 'higher'|'lower'|undefined,
 *         target: { text, check(value, redis, row) -> boolean }, gen: {redis, sqlite, memory}, srv: {...} }
 */
export function renderTable(rows, stores) {
  const header = ['case', 'metric', 'redis'];
  for (const store of stores) header.push(`broker ${store}`, 'ratio');
  header.push('target', `generator busy % (redis/${stores.join('/')})`, `server busy % (redis/${stores.join('/')})`);
  const lines = [header, header.map(() => '---')];
  for (const row of rows) {
    const format = formats[row.format];
    const mark = (target) => row.marks?.[target] ?? '';
    const cells = [row.id, `${row.name} (${row.unit})`, format(row.redis) + mark('redis')];
    for (const store of stores) {
      const value = row.brokers[store];
      cells.push(format(value) + mark(store));
      const ratio = row.redis && value !== undefined ? value / row.redis : undefined;
      let ratioText = ratio === undefined || !Number.isFinite(ratio) ? '—' : `${ratio.toFixed(2)}x`;
      if (row.target?.check && value !== undefined)
        ratioText += row.target.check(value, row.redis, row, store) ? ' ✓' : ' ✗';
      cells.push(ratioText);
    }
    cells.push(row.target?.text ?? '');
    cells.push(['redis', ...stores].map((name) => fmtPct(row.gen?.[name])).join(' / '));
    cells.push(['redis', ...stores].map((name) => fmtPct(row.srv?.[name])).join(' / '));
    lines.push(cells);
  }
  return lines.map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}
