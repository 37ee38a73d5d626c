// @ts-check
// A subscriber for the micro-benchmarks: the broker's real WritePath over a socket that
// swallows the bytes (and counts them), so only the broker's side of a delivery is measured.
import { EventEmitter } from 'node:events';

const nop = () => {};

class NullSocket extends EventEmitter {
  writableLength = 0;
  destroyed = false;
  bytes = 0;
  writes = 0;
  /**
   * Node calls a write's callback on the next tick when the kernel took it at once, and queues
   * that tick even for a write without one: so does this socket (a build whose write path
   * gives slab views back in the callback pays for it here as it would on a real socket).
   * @param {Buffer} data
   * @param {() => void} [done]
   */
  write(data, done) {
    this.bytes += data.length;
    this.writes++;
    process.nextTick(done ?? nop);
    return true;
  }
  end() {}
  destroy() {}
  cork() {}
  uncork() {}
}

/**
 * The output budget a daemon with default settings has (an eighth of the RAM), from the build
 * under test; undefined for a build from before the budget existed.
 * @param {ReturnType<typeof import('../lib/build.js').buildModules>} modules
 */
export async function outputBudget(modules) {
  try {
    const [{ OutputBudget }, { defaultMaxOutputTotal }] = await Promise.all([modules.outputBudget(), modules.config()]);
    return new OutputBudget(defaultMaxOutputTotal());
  } catch {
    return undefined;
  }
}

/**
 * `WritePath` is the class from the build under test (dist/session/write-path.js); `budget`
 * the daemon-wide output budget its paths share, when the build has one (older builds do not).
 */
export function nullSubscriberClass(
  WritePath,
  /** @type {import('../../src/runtime/output-budget.js').OutputBudget | undefined} */ budget = undefined,
) {
  return class NullSubscriber {
    /** @type {2} RESP2 */
    protocol = 2;
    socket = new NullSocket();
    out = new WritePath(
      this.socket,
      () => 8 * 1024 * 1024,
      () => {
        throw new Error('overflow');
      },
      10_000,
      budget,
    );
    deliver(frame) {
      this.out.write(frame);
    }
    /**
     * A frame that opens a channel's run (builds whose broker has runs call it; a session with
     * no filter, seam or SSE framing does the same).
     * @param {Buffer} frame
     * @param {unknown} _event
     * @param {unknown} run
     */
    deliverInRun(frame, _event, run) {
      return this.out.writeInRun(frame, run);
    }
  };
}
