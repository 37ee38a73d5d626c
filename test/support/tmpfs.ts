import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** A small tmpfs, to fill up as a real full disk. */
export interface Tmpfs {
  dir: string;
  /** False without root: the test is skipped, loudly (or fails with SANDBOX_EVENTS_REQUIRE_ALL_TESTS=1, as in CI). */
  mounted: boolean;
  /** Unmounts and removes the directory. */
  remove(): void;
}

/** Mounts a tmpfs of `size` (mount(8) syntax: `4m`) on a new temporary directory. */
export function mountTmpfs(size: string, purpose: string): Tmpfs {
  const dir = mkdtempSync(path.join(tmpdir(), 'sandbox-events-full-disk-'));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]).status === 0;
  if (!mounted) {
    const message = `cannot mount a tmpfs (needs root) for ${purpose}`;
    if (process.env.SANDBOX_EVENTS_REQUIRE_ALL_TESTS === '1') throw new Error(message);
    console.warn(`\n*** SKIPPING ${purpose}: ${message} ***\n`);
  }
  return {
    dir,
    mounted,
    remove: () => {
      if (mounted) execFileSync('umount', [dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
