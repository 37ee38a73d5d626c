// @ts-check
// The broker's modules as the benchmarks load them: from a compiled build directory (dist/, or
// a copy of an older one for before/after runs). Each path sits beside the type of the src/
// module it is compiled from, so `npm run typecheck` (bench/tsconfig.json) fails when a module
// moves, and test/bench/build-modules.test.ts checks that each path names that module.
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * @param {string} buildDir the compiled package's directory (default dist/)
 */
export function buildModules(buildDir = 'dist') {
  const dir = resolve(buildDir);
  const load = (/** @type {string} */ file) => import(pathToFileURL(join(dir, file)).href);
  return {
    dir,
    /** @returns {Promise<typeof import('../../src/broker/broker.js')>} */
    broker: () => load(BUILD_PATHS.broker),
    /** @returns {Promise<typeof import('../../src/broker/publisher.js')>} */
    publisher: () => load(BUILD_PATHS.publisher),
    /** @returns {Promise<typeof import('../../src/store/memory-store.js')>} */
    memoryStore: () => load(BUILD_PATHS.memoryStore),
    /** @returns {Promise<typeof import('../../src/store/sqlite-store.js')>} */
    sqliteStore: () => load(BUILD_PATHS.sqliteStore),
    /** @returns {Promise<typeof import('../../src/store/sqlite/schema.js')>} */
    sqliteSchema: () => load(BUILD_PATHS.sqliteSchema),
    /** @returns {Promise<typeof import('../../src/store/sqlite/statements.js')>} */
    sqliteStatements: () => load(BUILD_PATHS.sqliteStatements),
    /** @returns {Promise<typeof import('../../src/store/sqlite/event-rows.js')>} */
    sqliteEventRows: () => load(BUILD_PATHS.sqliteEventRows),
    /** @returns {Promise<typeof import('../../src/session/write-path.js')>} */
    writePath: () => load(BUILD_PATHS.writePath),
    /** @returns {Promise<typeof import('../../src/runtime/output-budget.js')>} */
    outputBudget: () => load(BUILD_PATHS.outputBudget),
    /** @returns {Promise<typeof import('../../src/config.js')>} */
    config: () => load(BUILD_PATHS.config),
    /** @returns {Promise<typeof import('../../src/event/event.js')>} */
    event: () => load(BUILD_PATHS.event),
    /** @returns {Promise<typeof import('../../src/event/payload-scan.js')>} */
    payloadScan: () => load(BUILD_PATHS.payloadScan),
    /** @returns {Promise<typeof import('../../src/auth/mint.js')>} */
    mint: () => load(BUILD_PATHS.mint),
    /** @returns {Promise<typeof import('../../src/auth/verifier.js')>} */
    verifier: () => load(BUILD_PATHS.verifier),
    /** @returns {Promise<typeof import('../../src/protocol/request-decoder.js')>} */
    requestDecoder: () => load(BUILD_PATHS.requestDecoder),
  };
}

/** Where each module is, relative to the build directory (and, with .ts, to src/). */
export const BUILD_PATHS = {
  broker: 'broker/broker.js',
  publisher: 'broker/publisher.js',
  memoryStore: 'store/memory-store.js',
  sqliteStore: 'store/sqlite-store.js',
  sqliteSchema: 'store/sqlite/schema.js',
  sqliteStatements: 'store/sqlite/statements.js',
  sqliteEventRows: 'store/sqlite/event-rows.js',
  writePath: 'session/write-path.js',
  outputBudget: 'runtime/output-budget.js',
  event: 'event/event.js',
  payloadScan: 'event/payload-scan.js',
  config: 'config.js',
  mint: 'auth/mint.js',
  verifier: 'auth/verifier.js',
  requestDecoder: 'protocol/request-decoder.js',
};
