import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EARLY_TIER_UP_FLAGS } from '../../src/cli/v8-flags.js';
import { type Daemon, killDaemons, spawnDaemon } from '../support/daemon.js';

/** `sandbox-events serve` as a user starts it (`node bin/sandbox-events.js serve`): its V8 flags. */
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'sandbox-events-v8-flags-'));
});
afterEach(() => killDaemons());
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

function serve(args: string[], env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<Daemon> {
  return spawnDaemon(
    ['--port', '0', '--http-port', '0', '--data-dir', dataDir, '--store', 'memory', ...args],
    env,
    nodeArgs,
  );
}

describe('serve --early-tier-up (docs/operations.md, "V8 flags")', () => {
  it('sets the early tier-up flags by default and says so in its listening line', async () => {
    const daemon = await serve([]);
    expect(daemon.listening.v8Flags).toBe(EARLY_TIER_UP_FLAGS.join(' '));
  });

  it('sets none when turned off by the flag or the environment', async () => {
    const byFlag = await serve(['--early-tier-up', 'false']);
    expect(byFlag.listening).not.toHaveProperty('v8Flags');
    const byEnv = await serve([], { SANDBOX_EVENTS_EARLY_TIER_UP: 'false' });
    expect(byEnv.listening).not.toHaveProperty('v8Flags');
  });

  it('leaves a flag given to node on the command line as given, in either spelling', async () => {
    const daemon = await serve([], {}, ['--interrupt_budget=67584']);
    expect(daemon.listening.v8Flags).toBe('--interrupt-budget-for-feedback-allocation=235');
    const both = await serve([], {}, ['--interrupt-budget=67584', '--interrupt-budget-for-feedback-allocation=940']);
    expect(both.listening).not.toHaveProperty('v8Flags');
  });
});
