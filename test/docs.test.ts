/**
 * docs/ is the reference of the interfaces, so it must name what the code serves:
 * - every HTTP route the running app registers (Fastify's onRoute, read through
 *   RecorderNode.httpRoutes) has a `### METHOD /path` heading in docs/api/http-*.md whose
 *   `Access:` line names the action the route declares, and every such heading is a
 *   registered route;
 * - every NATS endpoint the running service registers (its $SRV.INFO, from the
 *   registration table of api/nats.ts) and every subject api/nats.ts publishes has a
 *   `### rec.v1.…` heading in docs/api/nats.md, and nothing more;
 * - every error code of lib/errors.ts is in docs/api/errors.md with its HTTP status;
 * - every setting (`recorder --help`) is in docs/settings.md.
 * The node is started as every integration test starts one (test/helpers/recorder.ts).
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { helpText } from '../lib/config.ts';
import { RecorderError, type ErrorCode } from '../lib/errors.ts';
import { ROOT, headings, markdownFiles, proseLines, read } from './helpers/markdown.ts';
import { startNode } from './helpers/recorder.ts';

interface Section {
  file: string;
  line: number;
  title: string;
  body: string;
}

/** Level-3 sections of the given pages: heading text and the prose up to the next heading of level 1-3. */
function sections(files: string[]): Section[] {
  const out: Section[] = [];
  for (const file of files) {
    const source = read(file);
    const lines = source.split('\n');
    const hs = headings(source).filter((h) => h.level <= 3);
    hs.forEach((h, i) => {
      if (h.level !== 3) return;
      const end = i + 1 < hs.length ? hs[i + 1]!.line - 1 : lines.length;
      out.push({ file, line: h.line, title: h.text, body: lines.slice(h.line, end).join('\n') });
    });
  }
  return out;
}

const apiPages = readdirSync(join(ROOT, 'docs', 'api')).map((f) => `docs/api/${f}`);
const httpPages = apiPages.filter((f) => /\/http-[\w-]+\.md$/.test(f));

test('every registered HTTP route is in docs/api/http-*.md with the access it declares, and every documented route is registered', async (t) => {
  const { node } = await startNode(t);
  const registered = node.httpRoutes();
  t.true(registered.length > 40, `${registered.length} routes registered`);
  // HEAD is answered for every GET (Fastify's exposeHeadRoutes): docs/api/README.md says so once.
  const gets = new Set(registered.filter((r) => r.method === 'GET').map((r) => r.url));
  const routes = registered.filter((r) => !(r.method === 'HEAD' && gets.has(r.url)));

  t.true(httpPages.length > 0, 'docs/api/http-*.md exist');
  const documented = new Map<string, Section>();
  const problems: string[] = [];
  for (const s of sections(httpPages)) {
    const m = /^(GET|HEAD|POST|PUT|PATCH|DELETE) (\/\S*)(?: \(WebSocket\))?$/.exec(s.title);
    if (!m) continue;
    const key = `${m[1]} ${m[2]}`;
    if (documented.has(key)) problems.push(`${s.file}:${s.line}: ${key} is documented twice`);
    documented.set(key, s);
  }
  for (const r of routes) {
    const key = `${r.method} ${r.url}`;
    const s = documented.get(key);
    if (!s) {
      problems.push(`${key} is registered but has no "### ${key}" heading in docs/api/http-*.md`);
      continue;
    }
    const declared = r.access?.action ?? 'admin';
    const said = /^Access: `(\w+)`/m.exec(s.body)?.[1];
    if (said !== declared)
      problems.push(`${s.file}:${s.line}: ${key} says Access: ${said === undefined ? '(no Access: line)' : `\`${said}\``}, the route declares \`${declared}\``);
  }
  const keys = new Set(routes.map((r) => `${r.method} ${r.url}`));
  for (const [key, s] of documented) if (!keys.has(key)) problems.push(`${s.file}:${s.line}: ${key} is documented but not registered`);
  t.deepEqual(problems, []);
});

/** `rec.v1.event.<camera>` → `rec.v1.event.*`, as the service registers wildcards. */
function subjectPattern(documented: string): string {
  return documented.replace(/<[^>]+>/g, '*');
}

test('every NATS endpoint the service registers and every subject it publishes is in docs/api/nats.md, and nothing else', async (t) => {
  const { nc } = await startNode(t);
  const infos = [];
  for await (const info of await nc.services.client().info('recorder')) infos.push(info);
  t.is(infos.length, 1, 'one recorder service answers');
  const endpoints = new Set(infos[0]!.endpoints.map((e) => e.subject));
  t.true(endpoints.size > 15 && endpoints.has('rec.v1.camera.put'), [...endpoints].join(' '));
  // Published subjects: the `subject(\`kind.${…}\`)` calls of api/nats.ts.
  const source = readFileSync(join(ROOT, 'api', 'nats.ts'), 'utf8');
  const published = new Set([...source.matchAll(/subject\(`([a-z.]+)\.\$\{/g)].map((m) => `rec.v1.${m[1]}.*`));
  t.true(published.has('rec.v1.status.*') && published.has('rec.v1.alarm.*'), [...published].join(' '));

  const problems: string[] = [];
  const seen = new Map<string, Section>();
  for (const s of sections(['docs/api/nats.md'])) {
    const m = /^(rec\.v1\.\S+)( \(published\))?$/.exec(s.title);
    if (!m) continue;
    const subject = subjectPattern(m[1]!);
    const isPublished = m[2] !== undefined;
    if (seen.has(subject)) problems.push(`docs/api/nats.md:${s.line}: ${m[1]} is documented twice`);
    seen.set(subject, s);
    if (isPublished ? !published.has(subject) : !endpoints.has(subject)) {
      problems.push(
        `docs/api/nats.md:${s.line}: ${m[1]}${isPublished ? ' (published)' : ''} is documented but the recorder does not ${isPublished ? 'publish' : 'serve'} it`,
      );
    }
    if (!/^Access: `/m.test(s.body)) problems.push(`docs/api/nats.md:${s.line}: ${m[1]} has no Access: line`);
  }
  for (const e of endpoints) if (!seen.has(e)) problems.push(`NATS endpoint ${e} is registered but has no heading in docs/api/nats.md`);
  for (const p of published) if (!seen.has(p)) problems.push(`${p} is published (api/nats.ts) but has no "(published)" heading in docs/api/nats.md`);
  t.deepEqual(problems, []);
});

test('every error code of lib/errors.ts is in docs/api/errors.md with the HTTP status it maps to', (t) => {
  const source = readFileSync(join(ROOT, 'lib', 'errors.ts'), 'utf8');
  const union = /export type ErrorCode =([^;]+);/.exec(source)?.[1] ?? '';
  const codes = [...union.matchAll(/'([A-Z_]+)'/g)].map((m) => m[1]! as ErrorCode);
  t.true(codes.length > 30 && codes.includes('CAMERA_NOT_FOUND'), `codes read: ${codes.join(' ')}`);
  const rows = new Map<string, number>();
  for (const { text } of proseLines(read('docs/api/errors.md'))) {
    const m = /^\|\s*`([A-Z_]+)`\s*\|\s*(\d{3})\s*\|/.exec(text);
    if (m) rows.set(m[1]!, Number(m[2]));
  }
  const problems: string[] = [];
  for (const code of codes) {
    const status = new RecorderError(code, '').status;
    if (!rows.has(code)) problems.push(`${code} (${status}) has no row "| \`${code}\` | ${status} |" in docs/api/errors.md`);
    else if (rows.get(code) !== status) problems.push(`${code}: docs/api/errors.md says ${rows.get(code)}, lib/errors.ts maps it to ${status}`);
  }
  for (const code of rows.keys())
    if (!codes.includes(code as ErrorCode)) problems.push(`docs/api/errors.md lists ${code}, which lib/errors.ts does not define`);
  t.deepEqual(problems, []);
});

test('every setting is in docs/settings.md, and the docs name no RECORDER_ variable the code does not read', (t) => {
  const envs = [...new Set([...helpText().matchAll(/\bRECORDER_[A-Z0-9_]+\b/g)].map((m) => m[0]))];
  t.true(envs.length > 30, envs.join(' '));
  const settings = read('docs/settings.md');
  const missing = envs.filter((e) => !new RegExp(`\\b${e}\\b`).test(settings));
  t.deepEqual(missing, [], 'settings of `recorder --help` missing from docs/settings.md');

  // What the code reads besides the settings (test hooks): the literal names in the sources.
  const sourceText = ['lib', 'node.ts', 'recorder.ts', 'actors', 'storage', 'test/helpers']
    .flatMap((p) => {
      const full = join(ROOT, p);
      return p.endsWith('.ts')
        ? [full]
        : readdirSync(full, { recursive: true, encoding: 'utf8' })
            .filter((f) => f.endsWith('.ts'))
            .map((f) => join(full, f));
    })
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
  const unknown: string[] = [];
  for (const file of markdownFiles().filter((f) => f === 'README.md' || f.startsWith('docs/'))) {
    for (const { line, text } of proseLines(read(file))) {
      for (const m of text.matchAll(/\bRECORDER_[A-Z0-9_]*[A-Z0-9](_\*)?/g)) {
        const name = m[0];
        const known = name.endsWith('_*') ? envs.some((e) => e.startsWith(name.slice(0, -1))) : envs.includes(name) || sourceText.includes(name);
        if (!known) unknown.push(`${file}:${line}: ${name}`);
      }
    }
  }
  t.deepEqual(unknown, [], 'RECORDER_ names in the docs that nothing reads');
});
