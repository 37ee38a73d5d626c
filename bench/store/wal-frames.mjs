// @ts-check
// What a commit writes, by table: the SQLite store's WAL frames (one per page a commit changed)
// per commit, split by the table or index each page belongs to. Appends of a 128-byte event go to
// <sandboxes> streams (a stride through them, 1,000 in flight, so each commit holds about 1,000
// events), after 4 events per stream so that their rows exist. A second connection holds a read
// transaction over the measured window, so the checkpoint worker cannot start the WAL over and
// every frame of the window stays in it; its pages are named with SQLite's dbstat table. Not run
// by tests.
//
//   npm run build && node bench/store/wal-frames.mjs [buildDir=dist] [sandboxes=5000] [events=50000]
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { buildModules } from '../lib/build.js';
import { stridedAppends } from './strided-appends.mjs';

const [buildArg = 'dist', sandboxesArg = '5000', eventsArg = '50000'] = process.argv.slice(2);
const SANDBOXES = Number(sandboxesArg);
const EVENTS = Number(eventsArg);
const IN_FLIGHT = 1_000;
const { SqliteStore } = await buildModules(buildArg).sqliteStore();
const dir = await mkdtemp(join(tmpdir(), 'wal-frames-'));
const path = join(dir, 'events.db');
const store = SqliteStore.open({ path, retention: { maxCount: 1_000_000, maxAgeMs: 86_400_000 } });
const data = Buffer.from(JSON.stringify({ output: 'x'.repeat(100) }));

const appendMany = stridedAppends(store, SANDBOXES, IN_FLIGHT, data);

/** The WAL's current frames (those with the header's salts), as their page numbers. */
async function walPages() {
  const wal = await readFile(`${path}-wal`);
  const pageSize = wal.readUInt32BE(8);
  const salt = wal.readBigUInt64BE(16);
  const pages = [];
  for (let at = 32; at + 24 + pageSize <= wal.length; at += 24 + pageSize) {
    if (wal.readBigUInt64BE(at + 8) !== salt) break;
    pages.push(wal.readUInt32BE(at));
  }
  return pages;
}

await appendMany(4 * SANDBOXES);
const reader = new Database(path, { readonly: true });
reader.exec('BEGIN');
reader.prepare('SELECT count(*) FROM high_water').get(); // the read transaction starts here
const before = (await walPages()).length;
const batches = store.stats().batches;
await appendMany(EVENTS);
const commits = store.stats().batches - batches;
const pages = (await walPages()).slice(before);
reader.exec('COMMIT');
const names = new Map(
  /** @type {{ name: string; pageno: number }[]} */ (reader.prepare('SELECT name, pageno FROM dbstat').all()).map(
    (row) => [row.pageno, row.name],
  ),
);
/** @type {Map<string, number>} */
const byTable = new Map();
for (const page of pages) {
  const name = names.get(page) ?? 'other';
  byTable.set(name, (byTable.get(name) ?? 0) + 1);
}
reader.close();
await store.close();
await rm(dir, { recursive: true, force: true });

console.log(
  `${SANDBOXES} sandboxes, ${EVENTS} events in ${commits} commits (${(EVENTS / commits).toFixed(0)} per commit)`,
);
console.log(`WAL frames per commit: ${(pages.length / commits).toFixed(1)}`);
for (const [name, count] of [...byTable].sort((a, b) => b[1] - a[1])) {
  console.log(`  ${name}: ${(count / commits).toFixed(1)} (${((100 * count) / pages.length).toFixed(1)} %)`);
}
