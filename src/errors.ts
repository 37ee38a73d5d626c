/**
 * Base class of every error the package raises on purpose. `code` is stable and meant for
 * programs (switch on it, count it, alert on it); `message` is for people and may change.
 * Shaped after undici's lib/core/errors.js: one class per condition, `cause` kept.
 */
export class SandboxEventsError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
