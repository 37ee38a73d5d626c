import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../src/errors.js';

const root = path.resolve(import.meta.dirname, '../..');
const read = (file: string): string => readFileSync(path.join(root, file), 'utf8');
const entries = Object.entries(ERROR_CODES) as [ErrorCode, (typeof ERROR_CODES)[ErrorCode]][];
const RESP_PREFIXES = new Set(['ERR', 'NOAUTH', 'WRONGPASS', 'NOPERM', 'NOPROTO', 'LOADING']);

function sourceFiles(dir: string): string[] {
  return readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sourceFiles(path.join(dir, entry.name))
      : entry.name.endsWith('.ts')
        ? [path.join(dir, entry.name)]
        : [],
  );
}

/** docs/http.md's "Errors" table: status -> the codes listed in its row. */
function documentedHttpCodes(): Map<number, Set<string>> {
  const rows = new Map<number, Set<string>>();
  for (const match of read('docs/http.md').matchAll(/^\| (\d{3}) \| ([^|]+) \|/gm)) {
    const codes = [...match[2]!.matchAll(/`([A-Z_]+)`/g)].map((code) => code[1]!);
    rows.set(Number(match[1]), new Set(codes));
  }
  return rows;
}

describe('the error code table', () => {
  it('gives every code a RESP prefix and an HTTP status', () => {
    for (const [code, entry] of entries) {
      expect(RESP_PREFIXES.has(entry.resp), code).toBe(true);
      expect(entry.http >= 400 && entry.http <= 599, code).toBe(true);
    }
  });

  it('docs/http.md lists every code the HTTP API sends, under the status the table gives it', () => {
    const documented = documentedHttpCodes();
    expect(documented.size).toBeGreaterThan(5);
    for (const [code, entry] of entries) {
      const statuses = [entry.http, ...('alsoHttp' in entry ? entry.alsoHttp : [])];
      for (const status of statuses) {
        const listed = documented.get(status)?.has(code) ?? false;
        expect(listed, `${code} under ${status}`).toBe(entry.wire === 'http' || entry.wire === 'both');
      }
    }
    // And nothing is documented that the table does not answer with that status.
    for (const [status, codes] of documented) {
      for (const code of codes) {
        const entry = ERROR_CODES[code as ErrorCode];
        expect(entry, code).toBeDefined();
        expect([entry.http, ...('alsoHttp' in entry ? entry.alsoHttp : [])], code).toContain(status);
      }
    }
  });

  it('docs/protocol.md shows every RESP prefix the broker answers with', () => {
    const protocol = read('docs/protocol.md');
    const used = new Set(entries.filter(([, e]) => e.wire === 'resp' || e.wire === 'both').map(([, e]) => e.resp));
    for (const prefix of used) expect(protocol, prefix).toContain(`-${prefix} `);
  });

  it('every reply error written in src/ starts with the prefix its code maps to', () => {
    // ReplyError carries Redis's exact line (test/fixtures/redis7-replies.ts); its first word
    // must be the one the table gives the code, so the RESP and HTTP views of a code agree.
    let checked = 0;
    for (const file of sourceFiles('src')) {
      const text = read(file);
      for (const match of text.matchAll(/new ReplyError\(\s*'([A-Z_]+)',\s*['`]([A-Z]+) /g)) {
        const entry = ERROR_CODES[match[1] as ErrorCode];
        expect(entry, `${file}: ${match[1]}`).toBeDefined();
        expect(match[2], `${file}: ${match[1]}`).toBe(entry.resp);
        checked += 1;
      }
    }
    expect(checked).toBeGreaterThan(10);
  });
});
