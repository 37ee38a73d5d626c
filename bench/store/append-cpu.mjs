// @ts-check
// CPU per appended event of the SQLite store alone, no sockets: rounds of `perCommit` appends
// (each round is one commit, answered before the next round starts) to `sandboxes` sandboxes in
// turn. CPU time of the whole process (all threads: the checkpoint worker too), so shared cores
// do not distort it. With `prune`, retention runs after every 10,000 events on a store whose
// sandboxes are held at 10,000 events each: the steady state of a busy sandbox (bench case 2),
// where every event is also deleted once (retention's own CPU per deleted event is printed too).
// Not run by tests.
//
//   npm run build && node bench/store/append-cpu.mjs [buildDir=dist] [perCommit=100] [sandboxes=1]
//     [events=200000] [prune|noprune]
// Compare builds by alternating runs: for d in /tmp/before dist /tmp/before dist; do ...; done
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildModules } from '../lib/build.js';
import { eventData } from '../lib/event-data.js';

const [buildArg = 'dist', perCommitArg = '100', sandboxesArg = '1', eventsArg = '200000', pruneArg = 'prune'] =
  process.argv.slice(2);
const PER_COMMIT = Number(perCommitArg);
const SANDBOXES = Number(sandboxesArg);
const EVENTS = Number(eventsArg);
const PRUNE = pruneArg === 'prune';
const RETAINED = 10_000;

const { SqliteStore } = await buildModules(buildArg).sqliteStore();
const dir = await mkdtemp(join(tmpdir(), 'append-cpu-'));

let counter = 0;
/** @param {number} sandbox */
function input(sandbox) {
  const n = counter++;
  return {
    workspaceId: 1,
    sandboxId: `sb-${sandbox}`,
    type: 'terminal.output',
    ...eventData(Buffer.from(JSON.stringify({ n, output: 'hello from the sandbox, line of output text' }))),
  };
}

function cpuMicros() {
  const { user, system } = process.cpuUsage();
  return user + system;
}

const store = SqliteStore.open({
  path: join(dir, 'events.db'),
  retention: { maxCount: RETAINED, maxAgeMs: 86_400_000 },
  pruneIntervalMs: 0,
});

/** Events retention deleted and the CPU time of its runs (µs), since the last reset. */
const pruned = { events: 0, cpu: 0 };

/** Appends `total` events in rounds of PER_COMMIT, each round committed before the next. */
async function appendRounds(/** @type {number} */ total) {
  let sandbox = 0;
  for (let done = 0; done < total; ) {
    const round = Math.min(PER_COMMIT, total - done);
    // Inputs are built before the CPU of the round counts as the store's: not the store's work.
    const inputs = [];
    for (let i = 0; i < round; i++) {
      inputs.push(input(sandbox));
      sandbox = (sandbox + 1) % SANDBOXES;
    }
    await new Promise((resolve, reject) => {
      let answered = 0;
      const receipt = {
        appended: () => {
          if (++answered === round) resolve(undefined);
        },
        refused: reject,
      };
      for (const each of inputs) store.appendWith(each, receipt);
    });
    done += round;
    if (PRUNE && Math.floor(done / 10_000) !== Math.floor((done - round) / 10_000)) {
      const c0 = cpuMicros();
      pruned.events += await store.prune();
      pruned.cpu += cpuMicros() - c0;
    }
  }
}

try {
  // Warm-up: the JIT, and (with prune) every sandbox at the retention limit.
  await appendRounds(Math.max(20_000, PRUNE ? RETAINED * SANDBOXES + 10_000 : 0));
  pruned.events = 0;
  pruned.cpu = 0;
  const c0 = cpuMicros();
  await appendRounds(EVENTS);
  const perEvent = (cpuMicros() - c0) / EVENTS;
  const stats = store.stats();
  console.log(
    `${perEvent.toFixed(2)} µs CPU per event (${PER_COMMIT} per commit, ${SANDBOXES} sandbox(es), ` +
      `${PRUNE ? 'pruned' : 'not pruned'}, ${stats.appended} appended in ${stats.batches} commits)` +
      (PRUNE ? `; retention ${(pruned.cpu / pruned.events).toFixed(2)} µs CPU per deleted event` : ''),
  );
} finally {
  await store.close();
  await rm(dir, { recursive: true, force: true });
}
