// @ts-check
// The fan-out shapes of bench cases 1-3 and how one closed-loop run of them is asked of the
// generator: shared by bench/run.js and the micro benches that replay a case against other
// servers (bench/micro/node-floor.mjs).

/** The event's size in every fan-out case unless a shape says otherwise (docs/performance.md). */
export const PAYLOAD_BYTES = 128;

/** `n` channel names, `sb-0` ... `sb-<n-1>`. */
export const channels = (/** @type {number} */ n) => Array.from({ length: n }, (_, i) => `sb-${i}`);

/**
 * @typedef {{ channels: string[], subsPerChannel: number, publishers: number, depth: number, batch: number,
 *   payloadSize?: number, channelsPerSubscriber?: number, label?: string }} FanoutShape
 */

/** The fan-out topologies of cases 1-4. @type {Record<1 | 2 | 3, FanoutShape>} */
export const TOPOLOGY = {
  1: { channels: channels(100), subsPerChannel: 10, publishers: 10, depth: 512, batch: 50 },
  2: { channels: channels(1), subsPerChannel: 10, publishers: 2, depth: 1024, batch: 64 },
  3: { channels: channels(5_000), subsPerChannel: 1, publishers: 50, depth: 400, batch: 100 },
};

/** Deliveries outstanding at most (closed loop): bounded in bytes too, for large payloads. */
const INFLIGHT_DELIVERIES = 16_384;
const INFLIGHT_BYTES = 8 * 2 ** 20;

/**
 * The generator's job for one closed-loop fan-out run of `shape` against the server at `port`
 * (process `pid`, whose CPU is read). The in-flight window is bounded in deliveries and in bytes,
 * and a batch never exceeds what the window lets each publisher have.
 * @param {FanoutShape} shape
 * @param {{ port: number, pid: number | undefined, clkTck: number, warmupMs: number, measureMs: number,
 *   auth: string, dialect?: string, luaSha?: string }} where
 */
export function fanoutJob(shape, { port, pid, clkTck, warmupMs, measureMs, auth, dialect, luaSha }) {
  const payloadSize = shape.payloadSize ?? PAYLOAD_BYTES;
  const inflightCap = Math.min(INFLIGHT_DELIVERIES, Math.floor(INFLIGHT_BYTES / payloadSize));
  const batch = Math.max(1, Math.min(shape.batch, Math.floor(inflightCap / shape.subsPerChannel / shape.publishers)));
  return {
    kind: 'fanout',
    port,
    pid,
    clkTck,
    auth,
    dialect,
    luaSha,
    payloadSize,
    inflightCap,
    warmupMs,
    measureMs,
    ...shape,
    batch,
    connectConcurrency: 256,
  };
}
