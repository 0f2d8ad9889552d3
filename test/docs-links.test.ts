/**
 * The docs hold together: every relative link in every .md of the repository reaches a
 * file that exists (and its #anchor a heading there), and every repository file a page
 * names in a code span (`storage/segment-writer.ts`) exists, so a move or a rename
 * that forgets the docs fails here. Code comments cite the repository's own docs, by
 * paths that exist, never a file outside it. The README stays a guide (docs/ holds the
 * rest).
 */
import test from 'ava';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { ROOT, headings, links, markdownFiles, pathMentions, read } from './helpers/markdown.ts';

const README_MAX_LINES = 250;

const topDirs = new Set(
  readdirSync(ROOT, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.') && e.name !== 'node_modules')
    .map((e) => e.name),
);

function anchorsOf(path: string): Set<string> {
  return new Set(headings(read(path)).map((h) => h.anchor));
}

test('every relative link in the Markdown of the repository resolves, #anchors included', (t) => {
  const files = markdownFiles();
  t.true(files.includes('README.md') && files.some((f) => f.startsWith('docs/api/')), `Markdown found: ${files.join(', ')}`);
  const broken: string[] = [];
  let checked = 0;
  for (const file of files) {
    for (const { line, target } of links(read(file))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      checked++;
      const hash = target.indexOf('#');
      const pathPart = decodeURIComponent(hash < 0 ? target : target.slice(0, hash));
      const anchor = hash < 0 ? null : target.slice(hash + 1);
      const resolved = pathPart === '' ? file : normalize(join(dirname(file), pathPart));
      const where = `${file}:${line} → ${target}`;
      if (resolved.startsWith('..') || !existsSync(join(ROOT, resolved))) {
        broken.push(`${where}: no file ${resolved}`);
        continue;
      }
      if (anchor === null || anchor === '') continue;
      if (!resolved.endsWith('.md') || statSync(join(ROOT, resolved)).isDirectory()) {
        broken.push(`${where}: an anchor into ${resolved}, which has no headings`);
        continue;
      }
      if (!anchorsOf(resolved).has(anchor)) broken.push(`${where}: ${resolved} has no heading with anchor #${anchor}`);
    }
  }
  t.true(checked > 50, `only ${checked} relative links found: is the link parser reading the docs?`);
  t.deepEqual(broken, [], `broken links:\n${broken.join('\n')}`);
});

test('every repository file the docs name in a code span exists', (t) => {
  const missing: string[] = [];
  let checked = 0;
  for (const file of markdownFiles()) {
    for (const { line, target } of pathMentions(read(file), topDirs)) {
      checked++;
      if (!existsSync(join(ROOT, target))) missing.push(`${file}:${line}: \`${target}\` does not exist`);
    }
  }
  t.true(checked > 50, `only ${checked} path mentions found`);
  t.deepEqual(missing, [], `stale paths:\n${missing.join('\n')}`);
});

/** Source files of the repository (not dependencies, build output or run artifacts). */
function sourceFiles(dir = ROOT): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      if (!['node_modules', '.git', 'dist', 'data', 'test-artifacts'].includes(e.name)) out.push(...sourceFiles(join(dir, e.name)));
    } else if (/\.(ts|js|mjs|cjs|py|sh)$/.test(e.name)) out.push(relative(ROOT, join(dir, e.name)));
  }
  return out;
}

test('code cites the docs of the repository by paths that exist, never a file outside it', (t) => {
  // Files that were never part of the repository (the brief it started from), spelled so this file does not match.
  const outside = new RegExp(`\\b(${['CONTRACT', 'DESIGN', 'RECIPES', 'STYLE'].join('|')})\\.md\\b|(^|[^\\w./-])(${['shared', 'reference'].join('|')})/`);
  const problems: string[] = [];
  let cited = 0;
  for (const file of sourceFiles()) {
    readFileSync(join(ROOT, file), 'utf8')
      .split('\n')
      .forEach((text, i) => {
        if (outside.test(text)) problems.push(`${file}:${i + 1}: cites a file outside the repository: ${text.trim()}`);
        for (const m of text.matchAll(/\bdocs\/[\w./-]*[\w-]\.md\b/g)) {
          cited++;
          if (!existsSync(join(ROOT, m[0]))) problems.push(`${file}:${i + 1}: ${m[0]} does not exist`);
        }
      });
  }
  t.true(cited > 20, `only ${cited} citations of docs/ found in the code`);
  t.deepEqual(problems, []);
});

test(`the README is a guide of at most ${README_MAX_LINES} lines that links into docs/`, (t) => {
  const readme = read('README.md');
  const lines = readme.split('\n').length;
  t.true(lines <= README_MAX_LINES, `README.md has ${lines} lines: move detail to the right page under docs/`);
  const targets = links(readme).map((l) => l.target);
  for (const page of ['docs/api/README.md', 'docs/changelog.md', 'docs/settings.md']) {
    t.true(
      targets.some((x) => normalize(x.split('#')[0]!) === page),
      `README.md links to ${page}`,
    );
  }
  // Every page of docs/ is reachable from the README or from a page it links to.
  const reached = new Set<string>();
  const walk = (file: string): void => {
    if (reached.has(file)) return;
    reached.add(file);
    for (const { target } of links(read(file))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
      const p = target.split('#')[0]!;
      if (!p.endsWith('.md')) continue;
      const next = normalize(join(dirname(file), decodeURIComponent(p)));
      if (existsSync(join(ROOT, next))) walk(next);
    }
  };
  walk('README.md');
  const orphans = markdownFiles().filter((f) => f.startsWith('docs/') && !reached.has(f));
  t.deepEqual(orphans, [], `docs pages no link leads to from README.md: ${orphans.map((f) => relative('.', f)).join(', ')}`);
});
