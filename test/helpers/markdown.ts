/**
 * Reading the repository's Markdown the way the docs tests need it: every .md file,
 * its headings with their GitHub anchors, its relative links and the repository paths
 * it names in code spans. Fenced code blocks are neither headings nor links.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');

/** Not ours, or not Markdown anyone reads as the project's: dependencies, build output, run artifacts. */
const SKIP_DIRS = new Set(['node_modules', '.git', 'dist', 'data', 'test-artifacts']);

/** Every .md file of the repository, as paths relative to its root. */
export function markdownFiles(dir = ROOT): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) out.push(...markdownFiles(join(dir, e.name)));
    } else if (e.name.endsWith('.md')) out.push(relative(ROOT, join(dir, e.name)));
  }
  return out.sort();
}

export interface MarkdownLine {
  /** 1-based. */
  line: number;
  text: string;
}

/** The lines outside fenced code blocks (``` or ~~~). */
export function proseLines(source: string): MarkdownLine[] {
  const out: MarkdownLine[] = [];
  let fence: string | null = null;
  source.split('\n').forEach((text, i) => {
    const m = /^\s{0,3}(`{3,}|~{3,})/.exec(text);
    if (m) {
      if (fence === null) fence = m[1]![0]!.repeat(m[1]!.length);
      else if (m[1]!.startsWith(fence)) fence = null;
      return;
    }
    if (fence === null) out.push({ line: i + 1, text });
  });
  return out;
}

export interface Heading {
  line: number;
  level: number;
  text: string;
  anchor: string;
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
export function slug(text: string): string {
  return text
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** ATX headings (`#` to `######`) with their anchors; repeated anchors get -1, -2… as on GitHub. */
export function headings(source: string): Heading[] {
  const seen = new Map<string, number>();
  const out: Heading[] = [];
  for (const { line, text } of proseLines(source)) {
    const m = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(text);
    if (!m) continue;
    const base = slug(m[2]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.push({ line, level: m[1]!.length, text: m[2]!, anchor: n === 0 ? base : `${base}-${n}` });
  }
  return out;
}

/** A line with its inline code spans removed (links inside them are not links). */
function withoutCode(text: string): string {
  return text.replace(/(`+)[^`]*?\1/g, '');
}

export interface Link {
  line: number;
  target: string;
}

/** Inline links and images `[text](target)` outside code. */
export function links(source: string): Link[] {
  const out: Link[] = [];
  for (const { line, text } of proseLines(source)) {
    for (const m of withoutCode(text).matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ line, target: m[1]! });
  }
  return out;
}

/** Code spans that name a file of the repository by its path (`storage/segment-writer.ts`), outside fenced blocks. */
export function pathMentions(source: string, topDirs: ReadonlySet<string>): Link[] {
  const out: Link[] = [];
  for (const { line, text } of proseLines(source)) {
    for (const m of text.matchAll(/`([^`\s]+)`/g)) {
      const p = m[1]!.replace(/^\.\//, '');
      if (!/^[\w.-]+(\/[\w.-]+)+\.(ts|js|mjs|cjs|py|md|sh|json|html|css)$/.test(p)) continue;
      if (!topDirs.has(p.slice(0, p.indexOf('/')))) continue;
      out.push({ line, target: p });
    }
  }
  return out;
}

export function read(path: string): string {
  return readFileSync(join(ROOT, path), 'utf8');
}
