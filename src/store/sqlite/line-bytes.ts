import type Database from 'better-sqlite3';
import { eventLine, eventLineMiddle } from '../../event/event.js';

/**
 * The SQL function `event_line_bytes(json, workspace_id, sandbox_id, ms, seq, type, data,
 * timestamp)`: the UTF-8 bytes of a row's event line, the line `toStoredEvents` rebuilds and
 * the writer counts at append (`Buffer.byteLength(event.json)`), which is what byte retention
 * counts (docs/operations.md, "Retention"). It adds up the parts of the line instead of building
 * it: the byte length of a concatenation of valid UTF-16 strings is the sum of theirs. Retention
 * and the schema migration call it; appends never do.
 */
export function registerEventLineBytes(db: Database.Database): void {
  let middleKey: { workspaceId: number; sandboxId: string } | undefined;
  let middleBytes = 0;
  db.function(
    'event_line_bytes',
    { deterministic: true, varargs: false },
    (
      json: unknown,
      workspaceId: unknown,
      sandboxId: unknown,
      ms: unknown,
      seq: unknown,
      type: unknown,
      data: unknown,
      timestamp: unknown,
    ) => {
      if (typeof json === 'string' && json !== '') return Buffer.byteLength(json); // a version-1 row: the whole line
      const ws = Number(workspaceId);
      const sb = String(sandboxId);
      if (middleKey === undefined || middleKey.workspaceId !== ws || middleKey.sandboxId !== sb) {
        middleKey = { workspaceId: ws, sandboxId: sb };
        middleBytes = Buffer.byteLength(eventLineMiddle(ws, sb));
      }
      const empty = eventLine({ ms: Number(ms), seq: Number(seq) }, '', '', '', Number(timestamp));
      return (
        Buffer.byteLength(empty) +
        middleBytes +
        Buffer.byteLength(JSON.stringify(String(type))) +
        Buffer.byteLength(String(data))
      );
    },
  );
}

/** The call of `event_line_bytes` on an `events` row, for statements. */
export const EVENT_LINE_BYTES_SQL = 'event_line_bytes(json, workspace_id, sandbox_id, ms, seq, type, data, timestamp)';
