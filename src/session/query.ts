import { type CodeWithStatus, SandboxEventsError } from '../errors.js';
import { type EventId, parseEventId } from '../event/event.js';
import { DEFAULT_HISTORY_LIMIT, type HistoryQuery, MAX_HISTORY_LIMIT, type SandboxRef } from '../store/types.js';

/**
 * The checks on what a client asks of history and resume, for every transport: HISTORY and
 * RESUME on RESP (docs/protocol.md, "History and resume"), `GET /events/<id>` and the SSE
 * resume point on HTTP (docs/http.md). Each transport reads its own syntax (RESP arguments,
 * query parameters, `Last-Event-ID`) and hands the values here; a refusal is a QueryError,
 * whose message RESP sends as `-ERR <message>` and HTTP as a 400 with the same code.
 */
export class QueryError extends SandboxEventsError<CodeWithStatus<400>> {}

/** Where a resume starts: after an event id, or from now (`$`). */
export type ResumeFrom = EventId | 'now';

/** Before every event: `0` resumes from the oldest retained one. */
const BEFORE_ALL: EventId = { ms: 0, seq: 0 };

/** An event id `<ms>-<seq>` as a client wrote it (RESP AFTER, HTTP `after=`). */
export function eventIdArgument(text: string): EventId {
  const id = parseEventId(text);
  if (id === undefined) {
    throw new QueryError('INVALID_EVENT_ID', `invalid event id '${text.slice(0, 64)}': expected <ms>-<seq>`);
  }
  return id;
}

/** A resume point: `$` from now, `0` from the oldest retained event, else after that id. */
export function resumePoint(text: string): ResumeFrom {
  if (text === '$') return 'now';
  if (text === '0') return BEFORE_ALL;
  return eventIdArgument(text);
}

/** Whether a client's text is a resume point (`$`, `0` or `<ms>-<seq>`), without refusing it. */
export function isResumePoint(text: string): boolean {
  return text === '$' || text === '0' || parseEventId(text) !== undefined;
}

/** A history page size; `undefined` or NaN when the client's text was not an integer. */
export function historyLimit(value: number | undefined): number {
  if (value === undefined || !Number.isSafeInteger(value) || value < 1 || value > MAX_HISTORY_LIMIT) {
    throw new QueryError('INVALID_LIMIT', `limit must be an integer from 1 to ${MAX_HISTORY_LIMIT}`);
  }
  return value;
}

/** A history start, Unix milliseconds; `undefined` or NaN when the text was not an integer. */
export function historySince(value: number | undefined): number {
  if (value === undefined || !Number.isSafeInteger(value) || value < 0) {
    throw new QueryError('INVALID_SINCE', 'since must be Unix milliseconds');
  }
  return value;
}

/** A history query of `target` with the defaults; the transport adds what the client asked. */
export function historyQuery(target: SandboxRef): HistoryQuery {
  return { workspaceId: target.workspaceId, sandboxId: target.sandboxId, limit: DEFAULT_HISTORY_LIMIT };
}
