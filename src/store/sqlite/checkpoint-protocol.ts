/*
 * What the writer's thread (checkpointer.ts) and the checkpoint worker (checkpoint-worker.ts)
 * send each other. Types only: the worker file must not load the writer's modules.
 */
import type { SynchronousMode } from './schema.js';

/** The worker's `workerData`. */
export interface CheckpointWorkerData {
  /** The database file. */
  path: string;
  /** The writer's setting, so that the worker's checkpoints fsync as the writer's commits do. */
  synchronous: SynchronousMode;
}

/** 'checkpoint': run one PASSIVE checkpoint and report. 'close': close the connection and exit. */
export type CheckpointRequest = 'checkpoint' | 'close';

/**
 * After each 'checkpoint': the WAL's length and how much of it is now in the database file (in
 * frames, as `PRAGMA wal_checkpoint` reports them), or why the checkpoint failed.
 */
export type CheckpointReport = { log: number; checkpointed: number } | { error: string };
