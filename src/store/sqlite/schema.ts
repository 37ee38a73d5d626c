import type Database from 'better-sqlite3';
import { EVENT_LINE_BYTES_SQL } from './line-bytes.js';

/**
 * 1: events.json held each event's whole JSON line. 2 (see MIGRATIONS): events.data holds only
 * its `data` text, and json is '' for the rows written so (rows from version 1 keep theirs).
 * 3: events.ord, the store order over every sandbox (docs/protocol.md, "Pattern resume"), with
 * its index, and pruned_order; rows of earlier versions have no order (a pattern resume replays
 * only events written since). sandboxes.bytes, the bytes of the stream's retained event lines
 * (byte retention), counted once from the events when an older file is opened.
 * 4: pruned_types and pruned_order_types, what per-type retention pruned of each type (see
 * below), started from trimmed_ms/seq and pruned_order as a mark of every type.
 * 5: rows_synced; from here on a commit may leave a `sandboxes` row behind its stream's events
 * (row-sync.ts), and an opening build brings such rows in step. An older build would take them
 * as they are.
 * A build that knows an older version refuses a newer file instead of misreading it.
 */
const SCHEMA_VERSION = 5;

/*
 * events: one row per event, clustered on (workspace, sandbox, id), so history and replay are
 * one range read of adjacent rows. A row keeps the event's `data` text, not its whole JSON line:
 * everything else in the line is in the row's other columns, and reads rebuild the very same
 * line with the event module's builder (json is '', or the whole line in rows a version-1 file had).
 * That halves the row (about 125 bytes instead of 260 for a small event), so commits split and
 * rewrite fewer pages. The type filter reads that same range and skips other types:
 * there is no index on type (see MIGRATIONS), because every index is one more page per sandbox
 * (per sandbox and type, for that one) rewritten by every commit.
 * sandboxes: per stream, the last id issued (ids stay increasing across restarts, also after
 * every event was pruned), what is retained (count, bytes of its event lines and oldest id, for
 * retention; the writer and retention keep them, so an append reads nothing to count; a commit
 * may leave a row behind its stream's events until the next row sync, see rows_synced), what was
 * pruned (trimmed through), and when it was last appended to (to forget idle empty streams).
 * high_water: at least the last id of every stream that was forgotten. With the last ids in
 * sandboxes it gives the highest id ever issued (so a forgotten or new stream starts above
 * it), without a write to it in every commit.
 * events.ord: the store order (docs/protocol.md, "Pattern resume"), indexed per workspace: a
 * pattern resume reads one workspace in that order (an admin's, over every workspace, sorts
 * what follows the cursor), and the highest order at open is one index read per workspace.
 * The index grows at each workspace's right edge, about one more page per workspace and commit.
 * pruned_order: per workspace, the highest order retention deleted, so that a cursor below it
 * is answered `trimmed`; with max(events.ord) it gives the last order ever issued.
 * pruned_types, pruned_order_types: with `--retention` rules each class of types is pruned on
 * its own, so a resume is judged by what was pruned of the types its reader takes: per sandbox
 * the highest id, per workspace the highest order, pruned of each type (docs/protocol.md,
 * "History and resume"). Type '' is every type: where marks folded (at most 64 types are
 * kept apart, retention.ts) and what pruning without rules removed, so the marks stay complete
 * when rules are added later. Retention writes them; appends never do.
 * rows_synced: the store order through which every `sandboxes` row counts its stream's events.
 * Commits leave the rows of streams that only gained events behind, and a row sync about once
 * a second writes them, spread over the commits that follow (row-sync.ts); after a crash, the streams with events above that order are counted
 * again from their events at open. No row: every row is in step (files of version 4 and
 * before, whose commits wrote every row).
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  workspace_id INTEGER NOT NULL,
  sandbox_id   TEXT    NOT NULL,
  ms           INTEGER NOT NULL,
  seq          INTEGER NOT NULL,
  type         TEXT    NOT NULL,
  timestamp    INTEGER NOT NULL,
  json         TEXT    NOT NULL,
  data         TEXT,
  PRIMARY KEY (workspace_id, sandbox_id, ms, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sandboxes (
  workspace_id INTEGER NOT NULL,
  sandbox_id   TEXT    NOT NULL,
  last_ms      INTEGER NOT NULL,
  last_seq     INTEGER NOT NULL,
  retained     INTEGER NOT NULL,
  first_ms     INTEGER,
  first_seq    INTEGER,
  trimmed_ms   INTEGER,
  trimmed_seq  INTEGER,
  active_at    INTEGER NOT NULL,
  bytes        INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (workspace_id, sandbox_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sandboxes_by_first ON sandboxes (first_ms) WHERE first_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS sandboxes_idle ON sandboxes (active_at) WHERE retained = 0;
CREATE TABLE IF NOT EXISTS pruned_order (
  workspace_id INTEGER PRIMARY KEY,
  ord          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pruned_types (
  workspace_id INTEGER NOT NULL,
  sandbox_id   TEXT    NOT NULL,
  type         TEXT    NOT NULL,
  ms           INTEGER NOT NULL,
  seq          INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, sandbox_id, type)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pruned_order_types (
  workspace_id INTEGER NOT NULL,
  type         TEXT    NOT NULL,
  ord          INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, type)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows_synced (
  only INTEGER PRIMARY KEY CHECK (only = 0),
  ord  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS high_water (
  only INTEGER PRIMARY KEY CHECK (only = 0),
  ms   INTEGER NOT NULL,
  seq  INTEGER NOT NULL
);
`;

/*
 * Changes to files written by earlier builds, run at every open (each is a no-op once done);
 * none rewrites the events already there. events.data and sandboxes.bytes are added by migrate
 * (ALTER TABLE has no IF NOT EXISTS).
 *
 * events_by_type, an index on (workspace, sandbox, type, id), served the type filter. Each
 * append also inserted into it, at one place per sandbox and type, so a commit over 100
 * sandboxes rewrote about 270 more pages (812 WAL frames per 1,000 events instead of 544), and
 * a one-event commit 4.7 pages instead of 3.4. A type filter now reads the sandbox's events in id
 * order and skips other types: as fast for a type among the recent events, and at worst one
 * pass over what the sandbox retains (about 2.5 ms for 10,000 events) for a type it never had.
 */
const MIGRATIONS = `
DROP INDEX IF EXISTS events_by_type;
`;

/**
 * Page size of new files (SQLite's default is 4 KiB; a file keeps the size it was created with).
 * A commit writes every page it changed to the WAL, two syscalls each, and the checkpoint copies
 * them again: with 8 KiB pages a commit over 100 sandboxes writes about a quarter fewer pages
 * (an append into the middle of the events tree splits a page half as often), which cost 5–9 %
 * less CPU per event from one-event to 1,000-event commits. 16 KiB pages gained nothing more.
 */
const NEW_FILE_PAGE_SIZE = 8192;

/**
 * The WAL file is cut back to this size when it starts over, and no further (SQLite's
 * journal_size_limit): a WAL that starts over within it writes into pages the OS already has.
 */
export const WAL_FILE_LIMIT_BYTES = 64 * 1024 * 1024;

export type SynchronousMode = 'NORMAL' | 'FULL';

export interface ConnectionSetup {
  /** This file's page size (a file keeps the size it was created with). */
  pageSize: number;
  /** Whether the file is in WAL mode (it is not, for example, on a file system without shared memory). */
  wal: boolean;
}

/**
 * Sets up the writer's connection: page size (new files), WAL, synchronous and caches. Runs
 * first, because the page size only takes effect on a new, empty file, so before anything (the
 * journal mode too) writes it. The WAL checkpoint mode is the checkpointer's (checkpointer.ts).
 */
export function configureConnection(db: Database.Database, synchronous: SynchronousMode): ConnectionSetup {
  db.pragma(`page_size = ${NEW_FILE_PAGE_SIZE}`);
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const journal = db.pragma('journal_mode = WAL', { simple: true });
  db.pragma(`synchronous = ${synchronous}`);
  db.pragma('cache_size = -32768'); // 32 MiB of pages: history hits memory, not the OS
  db.pragma(`journal_size_limit = ${WAL_FILE_LIMIT_BYTES}`);
  return { pageSize, wal: journal === 'wal' };
}

/**
 * Creates the tables of a new file, or brings a file of an earlier schema version to this one
 * without rewriting its events. Refuses a file of a newer version.
 */
export function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new Error(`schema version ${version} is newer than this broker's (${SCHEMA_VERSION})`);
  }
  db.exec(SCHEMA);
  const hasColumn = (table: string, name: string): boolean =>
    db
      .prepare<[string], { name: string }>('SELECT name FROM pragma_table_info(?)')
      .all(table)
      .some((c) => c.name === name);
  db.transaction(() => {
    if (!hasColumn('events', 'data')) db.exec('ALTER TABLE events ADD COLUMN data TEXT');
    if (!hasColumn('events', 'ord')) db.exec('ALTER TABLE events ADD COLUMN ord INTEGER');
    db.exec('CREATE INDEX IF NOT EXISTS events_by_order ON events (workspace_id, ord) WHERE ord IS NOT NULL');
    if (!hasColumn('sandboxes', 'bytes')) {
      // One pass over the events of a file from before byte retention; from here on the writer
      // and retention keep the figure.
      db.exec('ALTER TABLE sandboxes ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0');
      db.exec(`UPDATE sandboxes SET bytes = coalesce((SELECT sum(${EVENT_LINE_BYTES_SQL}) FROM events
        WHERE events.workspace_id = sandboxes.workspace_id AND events.sandbox_id = sandboxes.sandbox_id), 0)`);
    }
    if (version < 4) {
      // What earlier builds pruned, as a mark of every type (a no-op on a new file).
      db.exec(`INSERT OR IGNORE INTO pruned_types (workspace_id, sandbox_id, type, ms, seq)
        SELECT workspace_id, sandbox_id, '', trimmed_ms, trimmed_seq FROM sandboxes WHERE trimmed_ms IS NOT NULL`);
      db.exec(`INSERT OR IGNORE INTO pruned_order_types (workspace_id, type, ord)
        SELECT workspace_id, '', ord FROM pruned_order`);
    }
    db.exec(MIGRATIONS);
  }).immediate();
  db.pragma(`user_version = ${SCHEMA_VERSION}`);
}
