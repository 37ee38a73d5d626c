import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import type { CheckpointReport, CheckpointRequest, CheckpointWorkerData } from './checkpoint-protocol.js';
import { type SynchronousMode, WAL_FILE_LIMIT_BYTES } from './schema.js';

/** What every write transaction owes the WAL: a word before it and one after it. */
export interface WalWrites {
  /** Before a write transaction: finish a checkpoint here if the worker cannot keep up. */
  beforeWrite(): void;
  /**
   * After a write transaction (committed or not), with the events it committed (0 for other
   * writes): a checkpoint within CHECKPOINT_INTERVAL_MS, sooner after many events.
   */
  afterWrite(events?: number): void;
}

export interface CheckpointerOptions {
  /** The database file, for the worker's own connection. */
  path: string;
  /** The file's page size: the limits below are in bytes, SQLite counts pages. */
  pageSize: number;
  synchronous: SynchronousMode;
  /** Checkpoint on a worker thread; false: SQLite's automatic checkpoint, inside commits. */
  worker: boolean;
}

/**
 * Ask the checkpoint worker for a run this long after the first write since its last run. Each
 * run has a cost of its own (two fsyncs, a message each way) and copies each page once,
 * however many commits rewrote it since the last: at 1,000 one-event commits a second
 * over 100 streams, a run every 100 ms was 5–6 % of the process's CPU, once a second 1–2 %
 * (docs/performance.md, "Seventh round: SQLite at light load"). It is not what keeps the WAL
 * short under steady writes (WAL_BYTES_LIMIT is), and it does not decide what an acknowledged
 * event survives: the WAL is in the OS's page cache as soon as a commit returns.
 */
const CHECKPOINT_INTERVAL_MS = 1_000;
/**
 * Heavier writes ask sooner: once the commits since the last run hold this many events, the run
 * comes CHECKPOINT_SOON_MS later. An event adds at most about 3 pages to the WAL (one-event
 * commits; 0.8 in 1,000-event commits), so a run is never much more than 3,000 pages behind.
 */
const CHECKPOINT_AFTER_EVENTS = 1_000;
const CHECKPOINT_SOON_MS = 100;
/**
 * Past this much WAL (in frames: 6,144 of 8 KiB pages) the writer finishes a checkpoint itself,
 * after which the WAL starts over. Under steady writes that is the only way it does (a commit
 * during each of the worker's runs leaves the WAL never wholly copied, and SQLite starts it over
 * only once it was), and the worker's report that asks for it comes up to a run's interval late: a
 * quarter of the file's limit is the room for the writes of that while, so that the WAL starts
 * over inside the file it has. Past the limit SQLite cuts the file back as it starts over, and
 * each cycle would grow it again, into new page-cache pages the kernel zeroes first.
 */
const WAL_BYTES_LIMIT = (WAL_FILE_LIMIT_BYTES / 4) * 3;
/**
 * Without the worker, SQLite checkpoints inside the commit that makes the WAL this long (its own
 * default, 1,000 pages, is 4 MiB of 4 KiB pages).
 */
const INLINE_CHECKPOINT_BYTES = 4 * 1024 * 1024;

const WORKER_FILE = 'checkpoint-worker.js';

/**
 * The compiled worker file. Beside this module in the build (dist/store/sqlite/). When this
 * module itself runs from its TypeScript source (vitest runs tests against src/ in-process),
 * Node 20's Worker cannot load the worker's .ts: then it is the build's copy, in dist/ at the
 * same place under the package root. `npm test` builds first; after changing the worker, run
 * `npm run build` before running a test file alone.
 */
function checkpointWorkerFile(): string {
  const beside = new URL(WORKER_FILE, import.meta.url).href;
  if (!import.meta.url.endsWith('.ts')) return fileURLToPath(beside);
  const src = beside.lastIndexOf('/src/');
  if (src < 0) throw new Error(`cannot find the package's src/ in ${beside}`);
  const built = fileURLToPath(`${beside.slice(0, src)}/dist/${beside.slice(src + '/src/'.length)}`);
  if (!existsSync(built)) throw new Error(`the checkpoint worker ${built} is missing: run \`npm run build\``);
  return built;
}

/**
 * Keeps the WAL short. With the worker (the default), WAL checkpoints run on a worker thread
 * with its own connection, so the event loop never waits for them (with synchronous = NORMAL
 * they are the only fsyncs); the writer asks for one CHECKPOINT_INTERVAL_MS after a write, or
 * sooner after many events. If the worker cannot run, SQLite checkpoints inline again: slower,
 * never wrong.
 */
export class Checkpointer implements WalWrites {
  /** WAL checkpoints done by the worker thread. */
  checkpoints = 0;
  private worker: Worker | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The timer is the short one (CHECKPOINT_SOON_MS). */
  private timerSoon = false;
  /** Events committed since the last run was asked for. */
  private eventsSinceRun = 0;
  private running = false;
  private stopped = false;
  /** The worker could not keep the WAL short: the writer checkpoints before its next commit. */
  private walTooLong = false;
  /** WAL_BYTES_LIMIT in frames of this file's page size. */
  private readonly walFramesLimit: number;
  /** INLINE_CHECKPOINT_BYTES in pages of this file's page size. */
  private readonly inlineCheckpointPages: number;

  /** Sets the connection's automatic checkpoint; start() then starts the worker. */
  constructor(
    private readonly db: Database.Database,
    private readonly options: CheckpointerOptions,
  ) {
    this.walFramesLimit = Math.ceil(WAL_BYTES_LIMIT / options.pageSize);
    this.inlineCheckpointPages = Math.ceil(INLINE_CHECKPOINT_BYTES / options.pageSize);
    db.pragma(`wal_autocheckpoint = ${options.worker ? 0 : this.inlineCheckpointPages}`);
  }

  start(): void {
    if (!this.options.worker) return;
    const worker = new Worker(checkpointWorkerFile(), {
      workerData: { path: this.options.path, synchronous: this.options.synchronous } satisfies CheckpointWorkerData,
    });
    worker.unref();
    worker.on('message', (report: CheckpointReport) => {
      this.running = false;
      if ('error' in report) return;
      this.checkpoints++;
      // Under constant writes the worker never catches up with the last frame, and SQLite
      // only rewinds the WAL once a checkpoint did: then the writer finishes one itself.
      if (report.log > this.walFramesLimit) this.walTooLong = true;
    });
    const fallBack = (): void => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      this.running = false;
      if (!this.stopped) this.db.pragma(`wal_autocheckpoint = ${this.inlineCheckpointPages}`);
    };
    worker.on('error', fallBack);
    worker.on('exit', fallBack);
    this.worker = worker;
  }

  beforeWrite(): void {
    if (!this.walTooLong) return;
    this.walTooLong = false;
    try {
      this.db.pragma('wal_checkpoint(PASSIVE)');
    } catch {
      // Busy with the worker's checkpoint: its next report asks again.
    }
  }

  /** At most one checkpoint at a time, one per CHECKPOINT_SOON_MS. */
  afterWrite(events = 0): void {
    if (this.worker === undefined) return;
    this.eventsSinceRun += events;
    if (this.eventsSinceRun >= CHECKPOINT_AFTER_EVENTS) {
      if (this.timerSoon) return;
      clearTimeout(this.timer);
      this.schedule(CHECKPOINT_SOON_MS);
    } else if (this.timer === undefined) {
      this.schedule(CHECKPOINT_INTERVAL_MS);
    }
  }

  private schedule(delayMs: number): void {
    this.timerSoon = delayMs === CHECKPOINT_SOON_MS;
    this.timer = setTimeout(this.onTimer, delayMs);
    this.timer.unref();
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerSoon = false;
    if (this.worker === undefined || this.stopped) return;
    if (this.running) {
      // The run asked for is still owed: ask again once this one has had time to end.
      this.schedule(CHECKPOINT_SOON_MS);
      return;
    }
    this.running = true;
    this.eventsSinceRun = 0;
    post(this.worker, 'checkpoint');
  };

  /** Ends the worker as a crash would: SQLite checkpoints inline from then on. */
  terminate(): Promise<number> {
    return this.worker?.terminate() ?? Promise.resolve(0);
  }

  /**
   * Asks the worker to close its connection and waits until it has, so that the writer's own
   * close is the last one, which checkpoints the WAL and removes it.
   */
  stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const worker = this.worker;
    if (worker === undefined) return Promise.resolve();
    this.worker = undefined;
    worker.ref(); // keep the process alive until the worker has closed its connection
    return new Promise<void>((resolve) => {
      worker.once('exit', () => resolve());
      post(worker, 'close');
    });
  }
}

function post(worker: Worker, request: CheckpointRequest): void {
  worker.postMessage(request);
}
