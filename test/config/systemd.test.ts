import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN } from '../support/daemon.js';
import { requireTool } from '../support/tools.js';
import { tempDir } from './support.js';

const OPERATIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs/operations.md');

/** The ```ini block of docs/operations.md's "Running under systemd" section. */
function documentedUnit(): string {
  const page = readFileSync(OPERATIONS, 'utf8');
  const section = page.slice(page.indexOf('## Running under systemd'));
  const unit = /```ini\n([\s\S]*?)```/.exec(section)?.[1];
  if (unit === undefined) throw new Error('docs/operations.md has no ini block under "Running under systemd"');
  return unit;
}

describe('the systemd unit in docs/operations.md', () => {
  const temp = tempDir();
  afterAll(() => temp.remove());

  it('reloads with SIGHUP and stops with SIGTERM', () => {
    const unit = documentedUnit();
    expect(unit).toMatch(/^ExecReload=\/bin\/kill -s HUP \$MAINPID$/m);
    expect(unit).toMatch(/^ExecStart=\S+ serve --config \S+$/m);
    expect(unit).not.toMatch(/^KillSignal=/m); // the default, SIGTERM: the daemon's clean stop
  });

  // Where systemd-analyze is missing this skips, saying so (an error in CI: test/support/tools.ts).
  it.runIf(requireTool('systemd-analyze', 'systemd'))('passes systemd-analyze verify', () => {
    // The binary the unit names must exist for verify: this package's own bin stands in for
    // the installed /usr/local/bin/sandbox-events.
    const unit = documentedUnit().replace(/^ExecStart=\S+/m, `ExecStart=${BIN}`);
    const file = path.join(temp.dir, 'sandbox-events.service');
    writeFileSync(file, unit);
    const run = spawnSync('systemd-analyze', ['verify', '--man=no', file], { encoding: 'utf8' });
    // verify reports unknown settings and bad values as warnings on stderr, with status 0.
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});
