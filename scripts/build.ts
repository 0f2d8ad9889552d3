/**
 * Builds the recorder that `npm start` and `npm run demo` run: the TypeScript sources
 * compiled to JavaScript (tsconfig.build.json: relative `.ts` imports rewritten to
 * `.js`, source maps for stack traces), plus the files the code reads beside itself at
 * run time (the web UI's static files, the simulated camera's Python for the demo).
 * Running compiled code instead of loading the sources through tsx saves ~40 MB of RSS
 * and a fifth of the live heap the garbage collector marks (bench/README.md, ingest).
 *
 * Usage: node --import tsx scripts/build.ts [outDir]   (default dist/; emptied first)
 * The output resolves its npm dependencies from the repository's node_modules, so an
 * outDir elsewhere needs node_modules and package.json ("type": "module") beside it.
 */
import { spawnSync } from 'node:child_process';
import { cp, mkdir, readdir, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const out = resolve(process.argv[2] ?? join(root, 'dist'));
if (out === root) throw new Error('refusing to build into the repository root');

await rm(out, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const built = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', out], { stdio: 'inherit' });
if (built.status !== 0) {
  process.stderr.write(`build: tsc failed (exit ${built.status ?? built.signal})\n`);
  process.exit(1);
}
// Run-time files that are not TypeScript: api/ui.ts serves web/ from the root beside api/,
// sim/camera.ts starts camera.py (and its modules) from beside itself.
await cp(join(root, 'web'), join(out, 'web'), { recursive: true });
await mkdir(join(out, 'sim'), { recursive: true });
for (const f of await readdir(join(root, 'sim'))) {
  if (f.endsWith('.py')) await cp(join(root, 'sim', f), join(out, 'sim', f));
}
process.stdout.write(`build: ${out}\n`);
