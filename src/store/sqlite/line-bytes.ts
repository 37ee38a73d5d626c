import { eventLine, eventLineMiddle } from '../../event/event.js';

/** The UTF-8 bytes of a value as SQLite keeps it (a column of TEXT or BLOB; NUL counts too). */
const utf8Bytes = (column: string): string => `length(CAST(${column} AS BLOB))`;

/**
 * The bytes of an event line that are the same in every line: the line of the smallest parts
 * (ids and timestamp 0, sandbox, type and data empty) less what EVENT_LINE_BYTES_SQL counts
 * for those parts (one digit each, two quotes each for the JSON strings).
 */
const FIXED_LINE_BYTES =
  Buffer.byteLength(eventLine({ ms: 0, seq: 0 }, eventLineMiddle(0, ''), JSON.stringify(''), '', 0)) - 4 * 1 - 2 * 2;

/**
 * The UTF-8 bytes of an `events` row's event line, the line `toStoredEvents` rebuilds and the
 * writer counts at append (`Buffer.byteLength(event.json)`), which is what byte retention counts
 * (docs/operations.md, "Retention"), as plain SQL: it adds up the parts of the line instead of
 * building it (the byte length of a concatenation is the sum of its parts'). Integers are their
 * decimal text (`length` of an integer), `json_quote` escapes a string as JSON.stringify does
 * (quotes, backslash and control characters, nothing else). A version-1 row keeps its whole line
 * in `json`. Retention runs it over every event it deletes: a JavaScript function called per row
 * cost about 1.2 µs of CPU a row, this a fifth of that (docs/performance.md, "Eighth round:
 * SQLite per appended event"). The schema migration counts with it too; appends never do.
 */
export const EVENT_LINE_BYTES_SQL = `(CASE WHEN json != '' THEN ${utf8Bytes('json')} ELSE ${FIXED_LINE_BYTES}
  + length(ms) + length(seq) + length(timestamp) + length(workspace_id) + ${utf8Bytes('json_quote(sandbox_id)')}
  + ${utf8Bytes('json_quote(type)')} + ${utf8Bytes('data')} END)`;
