import { compileGlob } from '../protocol/glob.js';
import { QueryError } from './query.js';

/** At most this many type globs per subscription (a filter is checked once per delivered event). */
export const MAX_TYPE_GLOBS = 32;

/**
 * The event types one subscription takes: an event is delivered (live or replayed) only when
 * its type matches one of the globs, with the glob rules of PSUBSCRIBE (docs/protocol.md,
 * "Type filters"; docs/http.md, `?type=`). One filter serves RESP and SSE subscriptions alike.
 */
export class TypeFilter {
  private readonly matchers: ((type: string) => boolean)[];

  private constructor(readonly globs: readonly string[]) {
    this.matchers = globs.map((glob) => compileGlob(glob));
  }

  /**
   * A filter from what the client wrote; undefined when it gave none. Each value may itself
   * be a comma-separated list (`?type=a,b` as `?type=a&type=b`); empty items are ignored.
   */
  static from(values: readonly string[]): TypeFilter | undefined {
    const globs: string[] = [];
    for (const value of values) for (const item of value.split(',')) if (item !== '') globs.push(item);
    if (globs.length === 0) return undefined;
    if (globs.length > MAX_TYPE_GLOBS) {
      throw new QueryError('INVALID_TYPE', `at most ${MAX_TYPE_GLOBS} type globs per subscription`);
    }
    for (const glob of globs) {
      if (glob.length > 128) throw new QueryError('INVALID_TYPE', 'a type glob is at most 128 characters');
    }
    return new TypeFilter([...new Set(globs)]);
  }

  matches(type: string): boolean {
    for (const matcher of this.matchers) if (matcher(type)) return true;
    return false;
  }
}
