// @ts-check
/** The command-line options of the bench scripts: `--name value` pairs, and flags. */

const argv = process.argv.slice(2);

/**
 * The value after `name` on the command line, or `fallback` when `name` is absent.
 * @template {string | undefined} [F=undefined]
 * @param {string} name
 * @param {F} [fallback]
 * @returns {string | F}
 */
export function option(name, fallback) {
  const at = argv.indexOf(name);
  return at >= 0 ? /** @type {string} */ (argv[at + 1]) : /** @type {F} */ (fallback);
}

/** Whether `name` is on the command line. */
export function flag(/** @type {string} */ name) {
  return argv.includes(name);
}
