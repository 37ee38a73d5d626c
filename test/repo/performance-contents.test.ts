/**
 * docs/performance.md is long (a section per measured round); its contents list is how a reader
 * finds a round. Every section is listed there, and every link goes to a heading, with the
 * anchor GitHub's renderer gives it.
 */
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';

const text = readFileSync(new URL('../../docs/performance.md', import.meta.url), 'utf8');

/** GitHub's heading anchor: lower case, punctuation other than - and _ dropped, spaces to -. */
function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\- _]/gu, '')
    .replace(/ /g, '-');
}

it("docs/performance.md's contents list every section, each link to its heading", () => {
  const start = text.indexOf('## Contents\n');
  const end = text.indexOf('<!-- /contents -->', start);
  expect(start).toBeGreaterThan(0);
  expect(end).toBeGreaterThan(start);
  const contents = text.slice(start, end);
  const headings = [...text.matchAll(/^## (.+)$/gm)].map((match) => match[1]!).filter((h) => h !== 'Contents');
  const links = [...contents.matchAll(/^ {2}- \[(.+)\]\(#(.+)\)$/gm)].map((match) => ({
    title: match[1]!,
    anchor: match[2]!,
  }));
  expect(headings.length).toBeGreaterThan(30);
  expect(links.map((link) => link.title).sort()).toEqual([...headings].sort());
  for (const link of links) expect(link.anchor, link.title).toBe(anchorOf(link.title));
});
