import { SandboxEventsError } from '../../errors.js';

/** STORE_UNAVAILABLE: the file could not be opened, read or written (`doing` says which). */
export function storeUnavailable(doing: string, cause: unknown): SandboxEventsError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new SandboxEventsError('STORE_UNAVAILABLE', `${doing}: ${detail}`, { cause });
}
