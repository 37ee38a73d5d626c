import { eventLine, eventLineMiddle, setEventOrder, type StoredEvent, StoredEventRecord } from '../../event/event.js';
import type { SandboxRef } from '../types.js';
import type { EventRow, OrderedEventRow } from './statements.js';

/**
 * Rows keep only `data`; the line is rebuilt with the event module's own builder, from parts
 * that are the same for the whole read (the sandbox, quoted once) or often repeat (types, quoted
 * once each): a third of the cost of eventJson per row.
 */
/** Events of a workspace replay, from their rows, each with its store order (docs/protocol.md, "Pattern resume"). */
export function toOrderedEvents(rows: OrderedEventRow[]): StoredEvent[] {
  return rows.map(([workspaceId, sandboxId, order, ...row]) => {
    const [event] = toStoredEvents({ workspaceId, sandboxId }, [row]) as [StoredEventRecord];
    setEventOrder(event, order);
    return event;
  });
}

export function toStoredEvents(ref: SandboxRef, rows: EventRow[]): StoredEventRecord[] {
  const events = new Array<StoredEventRecord>(rows.length);
  const { workspaceId, sandboxId } = ref;
  let middle: string | undefined;
  for (let i = 0; i < rows.length; i++) {
    const [ms, seq, type, timestamp, line, data] = rows[i] as EventRow;
    const id = { ms, seq };
    let json = line;
    if (json === '') {
      middle ??= eventLineMiddle(workspaceId, sandboxId);
      json = eventLine(id, middle, quotedType(type), data as string, timestamp);
    }
    events[i] = new StoredEventRecord(id, workspaceId, sandboxId, type, timestamp, json);
  }
  return events;
}

/** Types as JSON text; a few hundred distinct types at most are expected, the cache is bounded. */
const quotedTypes = new Map<string, string>();
function quotedType(type: string): string {
  let quoted = quotedTypes.get(type);
  if (quoted === undefined) {
    if (quotedTypes.size >= 1024) quotedTypes.clear();
    quoted = JSON.stringify(type);
    quotedTypes.set(type, quoted);
  }
  return quoted;
}
