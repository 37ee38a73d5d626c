import { spawnSync } from 'node:child_process';

/**
 * Whether a system tool the tests drive is installed. Missing tools skip their tests loudly on
 * a developer's machine; in CI (SANDBOX_EVENTS_REQUIRE_ALL_TESTS=1, set by .ci/run) a missing
 * tool is an error, so nothing skips there.
 */
export function requireTool(command: string, debianPackage: string): boolean {
  const present = spawnSync(command, ['--version']).status === 0;
  if (!present) {
    const message = `${command} is not installed (apt-get install ${debianPackage})`;
    if (process.env.SANDBOX_EVENTS_REQUIRE_ALL_TESTS === '1') throw new Error(message);
    console.warn(`\n*** SKIPPING tests that need ${command}: ${message} ***\n`);
  }
  return present;
}
