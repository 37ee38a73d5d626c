// @ts-check
// CPU per event under light load, memory store against SQLite: events arrive one at a time and
// each is awaited before the next ("one append at a time"), and paced (one event per timer tick,
// about 1,000/s, never more than one waiting). CPU time of the whole process (all threads), so
// shared cores do not distort it. Not run by tests.
//
//   npm run build && [COMMIT_WINDOW_MS=5] node bench/store/light-load.mjs [buildDir=dist] [events=5000]
// (COMMIT_WINDOW_MS: the SQLite store's groupCommitWindowMs, off by default.)
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildModules } from '../lib/build.js';
import { eventData } from '../lib/event-data.js';

const [buildArg = 'dist', eventsArg = '5000'] = process.argv.slice(2);
const EVENTS = Number(eventsArg);
const modules = buildModules(buildArg);
const { MemoryStore } = await modules.memoryStore();
const { SqliteStore } = await modules.sqliteStore();
const retention = { maxCount: 10_000, maxAgeMs: 86_400_000 };
const dir = await mkdtemp(join(tmpdir(), 'light-load-'));

let counter = 0;
function input() {
  const n = counter++;
  return {
    workspaceId: 1,
    sandboxId: `sb-${n % 100}`,
    type: 'terminal.output',
    ...eventData(Buffer.from(JSON.stringify({ n, output: 'hello from the sandbox, line of output text' }))),
  };
}

function cpuMicros() {
  const { user, system } = process.cpuUsage();
  return user + system;
}

/** Each append awaited before the next. */
async function serial(store) {
  for (let i = 0; i < EVENTS; i++) await store.append(input());
}

/** One append per timer tick (about 1 ms apart): the light load of a few active sandboxes. */
async function paced(store) {
  for (let i = 0; i < EVENTS; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1));
    store.append(input());
  }
  await store.append(input());
}

const stores = {
  memory: () => new MemoryStore({ retention, pruneIntervalMs: 0 }),
  sqlite: (/** @type {string} */ name) =>
    SqliteStore.open({
      path: join(dir, `${name}.db`),
      retention,
      pruneIntervalMs: 0,
      groupCommitWindowMs: Number(process.env.COMMIT_WINDOW_MS ?? 0),
    }),
};

try {
  for (const [shape, run] of /** @type {const} */ ([
    ['one append at a time', serial],
    ['paced, one per timer tick', paced],
  ])) {
    for (const kind of /** @type {const} */ (['memory', 'sqlite'])) {
      const store = stores[kind](`${shape.length}-${kind}`);
      await run(store); // warm-up
      const c0 = cpuMicros();
      await run(store);
      const perEvent = (cpuMicros() - c0) / EVENTS;
      const stats = store.stats();
      const batches = 'batches' in stats ? ` (${(stats.appended / stats.batches).toFixed(2)} events per commit)` : '';
      console.log(`${shape.padEnd(26)} ${kind.padEnd(7)} ${perEvent.toFixed(1)} µs CPU per event${batches}`);
      await store.close();
    }
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
