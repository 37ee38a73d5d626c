/**
 * The repository explains itself: no comment (nor test title) points at a document a reader of
 * this repository cannot open, such as a tracker issue, a design note kept elsewhere or a review.
 * Code cites `docs/...` pages or public specs (Redis documentation, RFCs, WHATWG HTML) instead;
 * docs/architecture.md says where each rule lives in the code.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCANNED = ['src', 'test', 'bench', 'scripts', 'bin', 'console', 'docs'];
/** Files at the top that a reader opens first. */
const SCANNED_FILES = ['README.md'];
const SKIPPED_DIRECTORIES = new Set(['node_modules', 'dist']);
const THIS_FILE = relative(ROOT, fileURLToPath(import.meta.url));

/** Phrases that send a reader outside the repository. */
const OUTSIDE_REFERENCES: readonly RegExp[] = [
  /\bissues? #?\d+/i, // "issue 5", "issue #12"
  /\(issue\b/i, // "(issue 5)", "(issue; ...)"
  /\bthe contract\b/i,
  /\bcontract(?:[,:)]|\.(?!test\.))/i, // "(contract: 64 KiB)", "contract, \"The event\"", not contract.test.ts
  /\bdesign\.md\b/i,
  /\bstyle\.md\b/i,
  /\bredis-replies\b/i,
  /\bfound in review\b/i,
  /\bfrom review\b/i,
  /\bseen in CI\b/i,
];

function filesUnder(directory: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      if (!SKIPPED_DIRECTORIES.has(entry.name)) found.push(...filesUnder(join(directory, entry.name)));
    } else if (entry.isFile()) {
      found.push(join(directory, entry.name));
    }
  }
  return found;
}

/** `line: text` of each line of `text` that names an outside document. */
function outsideReferences(text: string): string[] {
  const hits: string[] = [];
  for (const [index, line] of text.split('\n').entries()) {
    if (OUTSIDE_REFERENCES.some((pattern) => pattern.test(line))) hits.push(`${index + 1}: ${line.trim()}`);
  }
  return hits;
}

describe('a self-contained repository', () => {
  it('recognises each kind of outside reference, and leaves look-alikes alone', () => {
    for (const line of [
      '// see issue 5',
      '/** (issue 8, "Loss of Redis") */',
      '// (contract: 64 KiB)',
      '// as the contract says',
      '// design.md, "Limits"',
      '// style.md',
      '// redis-replies.md',
      '// (found in review)',
      '// a fix from review',
      '// seen in CI',
    ]) {
      expect(outsideReferences(line), line).toHaveLength(1);
    }
    for (const line of [
      'if (issuer !== undefined)',
      '// ids a restarted broker could reissue',
      '// docs/protocol.md',
      'the store contract suite (`test/store/contract.test.ts`)',
    ]) {
      expect(outsideReferences(line), line).toEqual([]);
    }
  });

  it('has no comment in src, test, bench, scripts, bin or console, and no line in docs or the README, that points outside the repository', () => {
    const files = [
      ...SCANNED.flatMap((directory) => filesUnder(join(ROOT, directory))),
      ...SCANNED_FILES.map((file) => join(ROOT, file)),
    ]
      .map((path) => relative(ROOT, path))
      .filter((path) => path !== THIS_FILE);
    // The walk found the tree (a wrong root would pass with nothing scanned).
    expect(files).toContain(join('src', 'daemon.ts'));
    const offending: string[] = [];
    for (const path of files) {
      const content = readFileSync(join(ROOT, path));
      if (content.includes(0)) continue; // binary (images)
      for (const hit of outsideReferences(content.toString('utf8'))) offending.push(`${path}:${hit}`);
    }
    expect(offending, 'cite docs/... or a public spec instead').toEqual([]);
  });
});
