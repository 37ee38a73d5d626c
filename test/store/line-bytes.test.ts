import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { createStoredEvent } from '../../src/event/event.js';
import { EVENT_LINE_BYTES_SQL } from '../../src/store/sqlite/line-bytes.js';

/**
 * Byte retention counts a row's event line in SQL (line-bytes.ts); these rows have every part
 * that JSON escapes or writes in more than one byte, so a count of characters, or of the
 * unescaped text, would differ from the line the store hands out.
 */
describe('EVENT_LINE_BYTES_SQL', () => {
  let db: Database.Database | undefined;
  afterEach(() => db?.close());

  const parts: { workspaceId: number; sandboxId: string; type: string; data: string; ms: number; seq: number }[] = [
    { workspaceId: 1, sandboxId: 'sb-1', type: 'terminal.output', data: '{"n":1}', ms: 1_765_000_000_000, seq: 0 },
    { workspaceId: 42, sandboxId: 'sb-é😀', type: 't.é😀', data: '{"text":"ü\\n😀"}', ms: 9, seq: 123_456 },
    { workspaceId: 7, sandboxId: 'a"b\\c', type: 'q"\\\n\t\b\f\r\u0001\u001f\u007f\u2028', data: '{}', ms: 1, seq: 10 },
    { workspaceId: 0, sandboxId: 'nul\u0000x', type: 'nul\u0000y', data: '{"k":"\\u0000"}', ms: 0, seq: 0 },
  ];

  it('is the UTF-8 size of the line the event module builds, for rows of data and of whole lines', () => {
    db = new Database(':memory:');
    db.exec(`CREATE TABLE events (workspace_id INTEGER, sandbox_id TEXT, ms INTEGER, seq INTEGER, type TEXT,
      timestamp INTEGER, json TEXT, data TEXT)`);
    const insert = db.prepare('INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    const expected: number[] = [];
    for (const p of parts) {
      const timestamp = p.ms + 5;
      const line = createStoredEvent(p, p.data, { ms: p.ms, seq: p.seq }, timestamp).json;
      // A row of this schema (json ''), then one as a version-1 file wrote it (the whole line).
      insert.run(p.workspaceId, p.sandboxId, p.ms, p.seq, p.type, timestamp, '', p.data);
      insert.run(p.workspaceId, p.sandboxId, p.ms, p.seq, p.type, timestamp, line, null);
      expected.push(Buffer.byteLength(line), Buffer.byteLength(line));
    }
    const counted = db
      .prepare(`SELECT ${EVENT_LINE_BYTES_SQL} AS bytes FROM events ORDER BY rowid`)
      .all()
      .map((row) => (row as { bytes: number }).bytes);
    expect(counted).toEqual(expected);
  });
});
