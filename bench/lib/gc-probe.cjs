// Preloaded into the broker by bench/sandboxes.js (`node --expose-gc --require <this> ...`), never
// by the daemon itself: on SIGUSR2 it runs a full garbage collection and prints the process's
// memory as one JSON line on stderr, so that the bench reads what live objects hold rather than
// what garbage the collector has not reached yet.
'use strict';

process.on('SIGUSR2', () => {
  if (typeof globalThis.gc === 'function') {
    globalThis.gc();
    globalThis.gc();
  }
  const usage = process.memoryUsage();
  process.stderr.write(
    `${JSON.stringify({
      msg: 'gc-probe',
      rss: usage.rss,
      heapUsed: usage.heapUsed,
      external: usage.external,
      arrayBuffers: usage.arrayBuffers,
    })}\n`,
  );
});
