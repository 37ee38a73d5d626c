import { h } from 'preact';
import htm from 'htm';

const html = htm.bind(h);

/**
 * A small live line chart in SVG: a few series of at most a few hundred points each. Drawn
 * here rather than with a chart library: it is about sixty lines, needs no canvas sizing, and
 * keeps the page within its Content-Security-Policy (no inline styles: colours are classes).
 *
 * @param {{title: string, series: {label: string, values: number[], className: string}[], unit?: string}} props
 */
export function LineChart({ title, series, unit = '' }) {
  const width = 600;
  const height = 160;
  const pad = { left: 44, right: 8, top: 10, bottom: 18 };
  const count = Math.max(2, ...series.map((s) => s.values.length));
  const max = niceMax(Math.max(1, ...series.flatMap((s) => s.values)));
  const x = (i, n) => pad.left + ((width - pad.left - pad.right) * (count - n + i)) / (count - 1);
  const y = (v) => pad.top + (height - pad.top - pad.bottom) * (1 - v / max);
  const latest = series.map((s) => `${s.label} ${format(s.values.at(-1) ?? 0)}${unit}`).join(', ');
  const samples = series[0]?.values.length ?? 0;
  const peak = Math.max(0, ...(series[0]?.values ?? []));
  return html`<figure class="chart" data-samples=${samples} data-peak=${peak}>
    <figcaption>${title}</figcaption>
    <svg viewBox="0 0 ${width} ${height}" role="img" aria-label="${title}: ${latest}" preserveAspectRatio="none">
      ${[0, 0.5, 1].map(
        (f) => html`<g key=${f}>
          <line class="grid" x1=${pad.left} x2=${width - pad.right} y1=${y(max * f)} y2=${y(max * f)} />
          <text class="axis" x=${pad.left - 6} y=${y(max * f) + 4} text-anchor="end">${format(max * f)}</text>
        </g>`,
      )}
      ${series.map((s) =>
        s.values.length < 2
          ? null
          : html`<polyline
              key=${s.label}
              class=${`line ${s.className}`}
              fill="none"
              points=${s.values.map((v, i) => `${x(i, s.values.length).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}
            />`,
      )}
    </svg>
    <ul class="legend">
      ${series.map(
        (s) =>
          html`<li key=${s.label}><span class=${`swatch ${s.className}`} aria-hidden="true"></span>${s.label}:
            <strong>${format(s.values.at(-1) ?? 0)}${unit}</strong></li>`,
      )}
    </ul>
  </figure>`;
}

function niceMax(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function format(value) {
  if (value >= 1000) return `${(value / 1000).toFixed(1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
