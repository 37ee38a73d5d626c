/**
 * A small parser of the Prometheus text exposition format (version 0.0.4): `# HELP`, `# TYPE`,
 * and samples `name{label="value",...} value [timestamp]`, with the format's escapes in label
 * values (`\\`, `\"`, `\n`). Enough to check what a scraper would read, strictly: a line it
 * can't parse fails the test.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string | undefined;
  help: string | undefined;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** As Prometheus reads values (Go's ParseFloat): NaN and Inf in any case (prom-client writes `Nan`). */
function parseValue(text: string): number {
  const lower = text.toLowerCase();
  if (lower === '+inf' || lower === 'inf' || lower === '+infinity' || lower === 'infinity')
    return Number.POSITIVE_INFINITY;
  if (lower === '-inf' || lower === '-infinity') return Number.NEGATIVE_INFINITY;
  if (lower === 'nan') return Number.NaN;
  const value = Number(text);
  if (text === '' || Number.isNaN(value)) throw new Error(`bad sample value ${JSON.stringify(text)}`);
  return value;
}

function parseSample(line: string): Sample {
  const nameMatch = METRIC_NAME.exec(line);
  if (nameMatch === null) throw new Error(`bad sample line ${JSON.stringify(line)}`);
  const name = nameMatch[0];
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith('{')) {
    rest = rest.slice(1);
    for (;;) {
      rest = rest.trimStart();
      if (rest.startsWith('}')) {
        rest = rest.slice(1);
        break;
      }
      const labelMatch = LABEL_NAME.exec(rest);
      if (labelMatch === null || rest[labelMatch[0].length] !== '=' || rest[labelMatch[0].length + 1] !== '"') {
        throw new Error(`bad label in ${JSON.stringify(line)}`);
      }
      rest = rest.slice(labelMatch[0].length + 2);
      let value = '';
      for (;;) {
        const char = rest[0];
        if (char === undefined) throw new Error(`unterminated label value in ${JSON.stringify(line)}`);
        rest = rest.slice(1);
        if (char === '"') break;
        if (char === '\\') {
          const escaped = rest[0];
          rest = rest.slice(1);
          value += escaped === 'n' ? '\n' : escaped === '\\' ? '\\' : escaped === '"' ? '"' : `\\${escaped}`;
        } else {
          value += char;
        }
      }
      labels[labelMatch[0]] = value;
      rest = rest.trimStart();
      if (rest.startsWith(',')) rest = rest.slice(1);
    }
  }
  const fields = rest.trim().split(/\s+/);
  if (fields.length < 1 || fields.length > 2) throw new Error(`bad sample line ${JSON.stringify(line)}`);
  return { name, labels, value: parseValue(fields[0]!) };
}

export function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string): Family => {
    let found = families.get(name);
    if (found === undefined) {
      found = { name, type: undefined, help: undefined, samples: [] };
      families.set(name, found);
    }
    return found;
  };
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const match = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
      if (match === null) continue; // a plain comment
      if (match[1] === 'HELP') family(match[2]!).help = match[3];
      else family(match[2]!).type = match[3];
      continue;
    }
    const sample = parseSample(line);
    // Histogram and summary samples belong to their family: `x_bucket`, `x_sum`, `x_count`.
    const base = sample.name.replace(/_(bucket|sum|count)$/, '');
    const owner = families.has(sample.name) ? sample.name : families.has(base) ? base : sample.name;
    family(owner).samples.push(sample);
  }
  return families;
}

/** The value of one sample: `name` with exactly these labels (0 when absent). */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const base = name.replace(/_(bucket|sum|count)$/, '');
  const family = families.get(name) ?? families.get(base);
  const wanted = JSON.stringify(Object.entries(labels).sort());
  const sample = family?.samples.find(
    (candidate) => candidate.name === name && JSON.stringify(Object.entries(candidate.labels).sort()) === wanted,
  );
  return sample?.value ?? 0;
}
