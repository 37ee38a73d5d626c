import { isPlainObject, type SandboxEvent } from '../event/event.js';
import { parseEvent } from '../event/parse-event.js';
import { EventsPubSubError } from './errors.js';
import type { RespValue } from './reply-reader.js';
import { checkName } from './subscription-registry.js';
import type { HistoryOptions } from './types.js';

/**
 * The request-reply commands of the client (the handshake, `publish()`, `history()`): their
 * arguments, checked before anything is sent, and the shapes of their replies
 * (docs/protocol.md, "Authentication", "Pub/sub" and "History and resume").
 */

/** RESP3 with the token (username `default`, as Redis 6 AUTH), and the connection's name. */
export function helloCommand(token: string, clientName: string | undefined): string[] {
  const hello = ['HELLO', '3', 'AUTH', 'default', token];
  if (clientName !== undefined) hello.push('SETNAME', clientName);
  return hello;
}

export function checkHelloReply(reply: RespValue): void {
  if (!Array.isArray(reply)) throw new EventsPubSubError('PROTOCOL_ERROR', 'HELLO: expected a map reply');
}

export function publishCommand(sandboxId: string, type: string, data: Record<string, unknown>): string[] {
  if (typeof type !== 'string' || type.length === 0) {
    throw new EventsPubSubError('INVALID_ARGUMENT', 'type must be a non-empty string');
  }
  if (!isPlainObject(data)) throw new EventsPubSubError('INVALID_ARGUMENT', 'data must be a plain object');
  return ['PUBLISH', checkName(sandboxId, 'sandboxId'), JSON.stringify({ type, data })];
}

/** `:<receivers>`: the number of subscriptions the event reached. */
export function readPublishReply(reply: RespValue): number {
  if (typeof reply !== 'number') throw new EventsPubSubError('PROTOCOL_ERROR', 'PUBLISH: expected an integer reply');
  return reply;
}

export function historyCommand(sandboxId: string, options: HistoryOptions): string[] {
  const args = ['HISTORY', checkName(sandboxId, 'sandboxId')];
  if (options.type !== undefined) args.push('TYPE', options.type);
  if (options.after !== undefined) args.push('AFTER', options.after);
  if (options.since !== undefined) args.push('SINCE', String(Math.floor(options.since)));
  if (options.limit !== undefined) args.push('LIMIT', String(options.limit));
  if (options.newest === true) args.push('NEWEST');
  return args;
}

/** An array of events, oldest first. */
export function readHistoryReply(reply: RespValue): SandboxEvent[] {
  if (!Array.isArray(reply)) throw new EventsPubSubError('PROTOCOL_ERROR', 'HISTORY: expected an array reply');
  return reply.map((item) => {
    const event = typeof item === 'string' ? parseEvent(item) : undefined;
    if (event === undefined) throw new EventsPubSubError('PROTOCOL_ERROR', 'HISTORY: an item is not an event');
    return event;
  });
}

/**
 * A delivery push: `message <channel> <event>`, `pmessage <pattern> <channel> <event>`, or with
 * `PRESUME ... WITHCURSOR` `pmessage <pattern> <channel> <event> <cursor|null>`.
 */
export interface MessagePush {
  channel: string;
  payload: string;
  pattern?: string;
  /** The event's store-order cursor (a WITHCURSOR pattern frame); null when it has none. */
  cursor?: string | null;
}

/** The message a push carries (docs/protocol.md, "Pub/sub"); undefined for any other push. */
export function readMessagePush(push: RespValue[]): MessagePush | undefined {
  const kind = push[0];
  if (kind === 'message' && push.length === 3) {
    const [, channel, payload] = push;
    return typeof channel === 'string' && typeof payload === 'string' ? { channel, payload } : undefined;
  }
  if (kind === 'pmessage' && (push.length === 4 || push.length === 5)) {
    const [, pattern, channel, payload, cursor] = push;
    if (typeof pattern !== 'string' || typeof channel !== 'string' || typeof payload !== 'string') return undefined;
    if (push.length === 4) return { channel, payload, pattern };
    return { channel, payload, pattern, cursor: typeof cursor === 'string' ? cursor : null };
  }
  return undefined;
}
