import { isPlainObject, parseEventId, type SandboxEvent } from './event.js';

/**
 * An event as the broker sends it (docs/protocol.md, "Pub/sub": one JSON object per message,
 * the same text as in `HISTORY` replies); undefined when the text is not one. Used by the
 * clients, which must not trust a payload's shape before handing it to an application.
 */
export function parseEvent(payload: string): SandboxEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (!isPlainObject(value)) return undefined;
  const { id, sandboxId, workspaceId, type, data, timestamp } = value;
  if (
    typeof id !== 'string' ||
    parseEventId(id) === undefined ||
    typeof sandboxId !== 'string' ||
    typeof workspaceId !== 'number' ||
    typeof type !== 'string' ||
    !isPlainObject(data) ||
    typeof timestamp !== 'number'
  ) {
    return undefined;
  }
  return { id, sandboxId, workspaceId, type, data, timestamp };
}
