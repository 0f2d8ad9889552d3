/**
 * The tree's layering (.dependency-cruiser.cjs, each folder's README.md): no folder
 * imports a folder above it, schedule/ reads only the index's record types, the product
 * never imports tests or benches, and no module import circle exists. Runs the
 * dependency-cruiser CLI over every source folder, as a person would.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..');

interface Violation {
  from: string;
  to: string;
  rule: { name: string };
  cycle?: { name: string }[];
}

test('no import goes against the layering and no module import circle exists', async (t) => {
  const folders = readdirSync(root).filter((f) => !f.startsWith('.') && f !== 'node_modules' && f !== 'dist' && statSync(join(root, f)).isDirectory());
  t.true(folders.includes('index') && folders.includes('api'), folders.join(' '));
  const args = ['--config', '.dependency-cruiser.cjs', '--output-type', 'json', ...folders, 'node.ts', 'recorder.ts'];
  // depcruise exits non-zero when it finds violations; its JSON says which.
  const { stdout } = await run(join(root, 'node_modules', '.bin', 'depcruise'), args, { cwd: root, maxBuffer: 256 << 20 }).catch(
    (err: Error & { stdout?: string; stderr?: string }) => {
      if (!err.stdout) throw new Error(`depcruise failed: ${err.stderr ?? String(err)}`);
      return { stdout: err.stdout };
    },
  );
  const result = JSON.parse(stdout) as { summary: { violations: Violation[]; totalCruised: number } };
  t.true(result.summary.totalCruised > 200, `${result.summary.totalCruised} modules cruised`);
  const lines = result.summary.violations.map((v) => `${v.rule.name}: ${v.from} → ${v.cycle?.length ? v.cycle.map((c) => c.name).join(' → ') : v.to}`);
  t.deepEqual(lines, []);
});
