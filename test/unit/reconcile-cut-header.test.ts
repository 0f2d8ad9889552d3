/**
 * A crash between creating a segment file and syncing its header leaves a file that
 * ends inside its header (found by the kill -9 crash test: an empty .mp4 left as an
 * "unreadable" orphan). Such a file holds no video, since fragments are appended only
 * after the header is synced, so repair removes it. A file that is not ours at all is
 * still left in place and reported.
 */
import test from 'ava';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { RecorderIndex } from '../../index/db.ts';
import { silentLogger } from '../../lib/log.ts';
import { reconcile } from '../../storage/reconcile.ts';
import { segmentRelPath } from '../../storage/layout.ts';
import { tempDir } from '../helpers/recorder.ts';

const T0 = Date.UTC(2026, 10, 25, 12);
const FTYP = Buffer.concat([Buffer.from([0, 0, 0, 16]), Buffer.from('ftypisom'), Buffer.alloc(4)]);

test('files cut inside their header are removed as empty by repair; check only reports; garbage stays', async (t) => {
  const dir = await tempDir(t);
  const files: { rel: string; bytes: Buffer; cut: boolean }[] = [
    { rel: segmentRelPath('default', 'cam', T0, 'mp4'), bytes: Buffer.alloc(0), cut: true },
    { rel: segmentRelPath('default', 'cam', T0 + 2000, 'mp4'), bytes: FTYP.subarray(0, 11), cut: true },
    { rel: segmentRelPath('default', 'cam', T0 + 4000, 'mp4'), bytes: FTYP, cut: true },
    { rel: segmentRelPath('default', 'cam', T0 + 6000, 'mp4'), bytes: Buffer.concat([FTYP, Buffer.from([0, 0, 0x10, 0]), Buffer.from('moov')]), cut: true },
    { rel: segmentRelPath('default', 'cam', T0 + 8000, 'ps'), bytes: Buffer.alloc(0), cut: true },
    { rel: segmentRelPath('default', 'cam', T0 + 10_000, 'ps'), bytes: Buffer.from([0, 0, 1]), cut: true },
    { rel: segmentRelPath('default', 'cam', T0 + 12_000, 'mp4'), bytes: Buffer.from('<html>not found</html>'), cut: false },
  ];
  for (const f of files) {
    await mkdir(dirname(join(dir, f.rel)), { recursive: true });
    await writeFile(join(dir, f.rel), f.bytes);
  }
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const exists = (rel: string) =>
    stat(join(dir, rel)).then(
      () => true,
      () => false,
    );

  const checked = await reconcile(index, dir, { mode: 'check', log: silentLogger });
  t.deepEqual(
    checked.removedEmpty.sort(),
    files
      .filter((f) => f.cut)
      .map((f) => f.rel)
      .sort(),
  );
  for (const f of files) t.true(await exists(f.rel), `check leaves ${f.rel}`);

  const repaired = await reconcile(index, dir, { mode: 'repair', log: silentLogger });
  t.deepEqual(repaired.removedEmpty.sort(), checked.removedEmpty);
  t.deepEqual(
    repaired.unreadable.map((u) => u.file),
    files.filter((f) => !f.cut).map((f) => f.rel),
  );
  for (const f of files) t.is(await exists(f.rel), !f.cut, f.rel);
  t.deepEqual([...index.segments.all()], [], 'nothing indexed');
});
