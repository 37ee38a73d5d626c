// @ts-check
// A subscriber for the micro-benchmarks: the broker's real WritePath over a socket that
// swallows the bytes (and counts them), so only the broker's side of a delivery is measured.
import { EventEmitter } from 'node:events';

class NullSocket extends EventEmitter {
  writableLength = 0;
  destroyed = false;
  bytes = 0;
  writes = 0;
  write(data) {
    this.bytes += data.length;
    this.writes++;
    return true;
  }
  end() {}
  destroy() {}
  cork() {}
  uncork() {}
}

/** `WritePath` is the class from the build under test (dist/session/write-path.js). */
export function nullSubscriberClass(WritePath) {
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
    );
    deliver(frame) {
      this.out.write(frame);
    }
  };
}
