import { isValidSandboxId, type Principal } from '../auth/principal.js';
import { SandboxEventsError } from '../errors.js';
import type { SandboxRef } from '../store/types.js';

/**
 * Channel names and what a token may reach (docs/protocol.md, "Channels and permissions").
 *
 * Clients name a channel by its sandbox id, which means "that sandbox in my token's workspace".
 * Inside the broker every channel is keyed by workspace *and* sandbox, so equal names in two
 * workspaces never meet. An admin reaches other workspaces with the qualified form
 * `{<workspaceId>}<sandboxId>`; sandbox ids may not start with `{`, so the two forms never
 * collide.
 */

export class PermissionError extends SandboxEventsError {
  constructor(message = 'this user has no permissions to access one of the channels used as arguments') {
    // Redis 7's ACL_DENIED_CHANNEL text, so Redis clients show the familiar error.
    super('NO_PERMISSION', message);
  }
}

export class InvalidChannelError extends SandboxEventsError {
  constructor(name: string) {
    super('INVALID_CHANNEL', `invalid sandbox id '${name.slice(0, 64)}'`);
  }
}

/** A resolved channel: which stream it is, and the name this client calls it by. */
export interface ChannelTarget extends SandboxRef {
  key: string;
  /** The name as the client wrote it; message frames to this client carry it. */
  displayName: string;
}

export function channelKey(workspaceId: number, sandboxId: string): string {
  return `{${workspaceId}}${sandboxId}`;
}

/** The workspace and sandbox of a key channelKey built; undefined for any other text. */
export function parseChannelKey(key: string): SandboxRef | undefined {
  const end = key.indexOf('}');
  if (key.charCodeAt(0) !== 123 /* { */ || end < 2) return undefined;
  const workspaceId = Number(key.slice(1, end));
  return Number.isSafeInteger(workspaceId) ? { workspaceId, sandboxId: key.slice(end + 1) } : undefined;
}

const QUALIFIED = /^\{([1-9]\d{0,15})\}(.*)$/s;

/**
 * A resolved channel. Its key is built when asked for: a SUBSCRIBE of one name never needs it
 * (docs/performance.md, "Seventh round: per-connection cost").
 */
class ResolvedChannel implements ChannelTarget {
  constructor(
    readonly workspaceId: number,
    readonly sandboxId: string,
    readonly displayName: string,
  ) {}

  get key(): string {
    return channelKey(this.workspaceId, this.sandboxId);
  }
}

/** Resolves a channel name for a principal, enforcing isolation. Throws on refusal. */
export function resolveChannel(principal: Principal, name: string): ChannelTarget {
  const { workspaceId, sandboxId } = resolveSandbox(principal, name);
  return new ResolvedChannel(workspaceId, sandboxId, name);
}

/**
 * resolveChannel without the channel's key and name, for PUBLISH, which needs only the sandbox:
 * no key string is built per published event.
 */
export function resolveSandbox(principal: Principal, name: string): SandboxRef {
  let workspaceId = principal.workspaceId;
  let sandboxId = name;
  if (name.startsWith('{')) {
    const match = QUALIFIED.exec(name);
    if (match === null) throw new InvalidChannelError(name);
    workspaceId = Number(match[1]);
    sandboxId = match[2] ?? '';
  }
  if (!isValidSandboxId(sandboxId) || !Number.isSafeInteger(workspaceId)) {
    throw new InvalidChannelError(name);
  }
  if (!mayAccess(principal, workspaceId, sandboxId)) throw new PermissionError();
  return { workspaceId, sandboxId };
}

export function mayAccess(principal: Principal, workspaceId: number, sandboxId: string): boolean {
  switch (principal.role) {
    case 'admin':
      return true;
    case 'workspace':
      return workspaceId === principal.workspaceId;
    case 'sandbox':
      return workspaceId === principal.workspaceId && sandboxId === principal.sandboxId;
  }
}

/**
 * Which sandboxes a pattern subscription ranges over: one workspace (the pattern is matched
 * against sandbox ids), or, for an admin's qualified pattern starting with `{`, every workspace
 * (matched against qualified names).
 */
export type PatternScope = number | 'all';

export const MAX_PATTERN_LENGTH = 1024;

export function resolvePatternScope(principal: Principal, pattern: string): PatternScope {
  if (principal.role === 'sandbox') throw new PermissionError();
  if (pattern.length === 0 || pattern.length > MAX_PATTERN_LENGTH) {
    throw new SandboxEventsError('INVALID_PATTERN', `pattern must be 1 to ${MAX_PATTERN_LENGTH} characters`);
  }
  if (pattern.startsWith('{')) {
    if (principal.role !== 'admin') throw new PermissionError();
    return 'all';
  }
  return principal.workspaceId;
}

/** The name a principal sees for a channel in listings (PUBSUB CHANNELS). */
export function visibleName(principal: Principal, ref: SandboxRef): string | undefined {
  if (!mayAccess(principal, ref.workspaceId, ref.sandboxId)) return undefined;
  return ref.workspaceId === principal.workspaceId ? ref.sandboxId : channelKey(ref.workspaceId, ref.sandboxId);
}
