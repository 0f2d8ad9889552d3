/**
 * Thinning and crash safety of the storage lifecycle with a real recorder process,
 * real camera, real files. Crashes are real SIGKILLs at named points
 * (RECORDER_CRASH_POINT, lib/crash-point.ts): after a deletion's intent is committed
 * but before the unlink, and after a thinned file was renamed over the original but
 * before its index entry was rebuilt. After a restart there must be no orphan file and
 * no entry whose file is missing or whose GOP offsets do not point at fragments.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { copyFile, readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { SimCamera } from '../sim/camera.ts';
import { RecorderIndex } from '../index/db.ts';
import { decodeGops } from '../index/gop-table.ts';
import { scanFmp4File } from '../media/mp4/fmp4-file.ts';
import { ffprobe } from './helpers/media.ts';
import { spawnRecorder, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';

const run = promisify(execFile);
const SECOND_IN_DAYS = 1 / 86_400;

async function put(http: string, path: string, body: unknown): Promise<void> {
  const res = await fetch(`${http}${path}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status !== 200) throw new Error(`PUT ${path}: ${res.status} ${await res.text()}`);
}

async function segmentFilesOnDisk(dataDir: string): Promise<string[]> {
  const entries = await readdir(join(dataDir, 'pools'), { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => relative(dataDir, join(e.parentPath, e.name)));
}

/** Every file has an entry, every entry a file, every GOP offset a fragment (invariants 1–2). */
async function assertConsistent(t: import('ava').ExecutionContext, dataDir: string): Promise<void> {
  const index = await RecorderIndex.open(dataDir);
  try {
    const entries = [...index.segments.all()];
    const files = new Set(await segmentFilesOnDisk(dataDir));
    const indexed = new Set(entries.map((e) => e.file));
    t.deepEqual(
      [...files].filter((f) => !indexed.has(f)),
      [],
      'no orphan files',
    );
    for (const e of entries) {
      t.true(files.has(e.file), `entry ${e.file} has its file`);
      const scan = await scanFmp4File(join(dataDir, e.file));
      const offsets = new Set(scan.fragments.map((f) => f.offset));
      for (const g of decodeGops(e.gops)) t.true(offsets.has(g.offset), `${e.file}: GOP at ${g.offset} is a fragment`);
      t.true(scan.validBytes >= e.bytes, `${e.file}: ${scan.validBytes} valid bytes ≥ ${e.bytes} indexed`);
    }
    t.deepEqual(index.intents.list(), [], 'no unfinished intents');
  } finally {
    await index.close();
  }
}

async function keyframeHashes(file: string, onlyKey: boolean): Promise<string[]> {
  const { stdout } = await run(
    'ffprobe',
    ['-v', 'error', '-select_streams', 'v', '-show_data_hash', 'MD5', '-show_entries', 'packet=flags,data_hash', '-of', 'json', file],
    { maxBuffer: 64 * 1024 * 1024 },
  );
  const packets = (JSON.parse(stdout) as { packets: { flags: string; data_hash: string }[] }).packets;
  return packets.filter((p) => !onlyKey || p.flags.includes('K')).map((p) => p.data_hash);
}

test('thinning keeps exactly the I-frames (byte-identical), shrinks the segment, keeps its time range, and it still plays and downloads', async (t) => {
  const sim = await SimCamera.start({ gop: 25, bitrateKbit: 600 });
  t.teardown(() => sim.stop());
  const n: TestNode = await startNode(t, { segmentSeconds: 4, retentionTickMs: 500 });
  const dir = await tempDir(t);
  t.true((await n.request('rec.v1.pool.put', { id: 'thin', capacityBytes: null, overwrite: 'capacity' })).ok);
  t.true((await n.request('rec.v1.camera.put', { id: 'c', pool: 'thin', streams: { main: sim.url('h264aac') } })).ok);
  const closed = await waitFor(
    '2 closed segments',
    () => {
      const segs = [...n.node.index.segments.all('c')].filter((s) => !s.open);
      return segs.length >= 2 ? segs : null;
    },
    60_000,
  );
  const original = closed[0]!;
  const copy = join(dir, 'original.mp4');
  await copyFile(join(n.dataDir, original.file), copy);

  // Thin what is older than 1 s: the closed segments go at the next pass.
  t.true((await n.request('rec.v1.pool.put', { id: 'thin', capacityBytes: null, overwrite: 'capacity', thinAfterDays: SECOND_IN_DAYS })).ok);
  const thinned = await waitFor(
    'the first segment thinned',
    () => {
      const s = n.node.index.segments.get('c', original.startMs);
      return s?.flags.iframesOnly ? s : null;
    },
    30_000,
  );
  t.is(thinned.startMs, original.startMs);
  t.is(thinned.endMs, original.endMs, 'same time range');
  t.deepEqual(thinned.types, original.types, 'record types kept');
  t.true(thinned.bytes < original.bytes * 0.6, `thinned ${thinned.bytes} bytes from ${original.bytes}`);

  const thinnedFile = join(n.dataDir, thinned.file);
  t.deepEqual(await keyframeHashes(thinnedFile, false), await keyframeHashes(copy, true), 'video is exactly the original I-frames');
  const before = await ffprobe(copy);
  const after = await ffprobe(thinnedFile);
  t.true(Math.abs(after.durationSec - before.durationSec) < 0.2, `duration ${after.durationSec} vs ${before.durationSec}`);

  // Download over the thinned range: plays, with the I-frames and the audio.
  const q = new URLSearchParams({ from: new Date(original.startMs).toISOString(), to: new Date(original.endMs).toISOString() });
  const res = await fetch(`${n.http}/api/cameras/c/video.mp4?${q.toString()}`);
  t.is(res.status, 200);
  const dl = join(dir, 'dl.mp4');
  await import('node:fs/promises').then((fs) => res.arrayBuffer().then((b) => fs.writeFile(dl, Buffer.from(b))));
  const p = await ffprobe(dl);
  t.true(p.durationSec > 1, `downloaded ${p.durationSec} s`);
  const pool = n.node.storage!.view(n.node.storage!.pool('thin')!);
  t.true(pool.thinnedSegments >= 1);
});

for (const point of ['delete.after-intent', 'thin.after-rename', 'thin.before-rename'] as const) {
  test(`kill -9 at ${point}: the restart leaves no orphan file and no dangling index entry`, async (t) => {
    const sim = await SimCamera.start({ gop: 25 });
    t.teardown(() => sim.stop());
    const dataDir = await tempDir(t);
    const env = { RECORDER_DATA_DIR: dataDir, RECORDER_HTTP: '127.0.0.1:0', RECORDER_SEGMENT_SECONDS: '2', RECORDER_RETENTION_TICK_MS: '300' };
    const first = spawnRecorder(t, { ...env, RECORDER_CRASH_POINT: point });
    const http = await first.http;
    await put(http, '/api/pools/p', {
      capacityBytes: point.startsWith('delete') ? 150_000 : null,
      overwrite: 'capacity',
      ...(point.startsWith('thin') ? { thinAfterDays: SECOND_IN_DAYS } : {}),
    });
    await put(http, '/api/cameras/c', { pool: 'p', streams: { main: sim.url('h264aac') } });
    const code = await Promise.race([first.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 90_000))]);
    t.not(code, 'timeout', 'the crash point was reached');

    // What was in flight at the kill.
    const index = await RecorderIndex.open(dataDir);
    const intents = index.intents.list();
    await index.close();
    t.is(intents.length, 1, 'one intent was pending at the kill');
    const intent = intents[0]!;
    if (point === 'delete.after-intent')
      t.true(
        intent.kind === 'delete' &&
          (await stat(join(intent.files[0]!)).then(
            () => true,
            () => false,
          )),
        'the file outlived its entry',
      );
    if (point === 'thin.before-rename')
      t.true(
        intent.kind === 'thin' &&
          (await stat(intent.tmp).then(
            () => true,
            () => false,
          )),
        'the tmp file exists',
      );

    // Restart without the crash point; then stop it and inspect.
    const second = spawnRecorder(t, env);
    await second.http;
    second.child.kill('SIGTERM');
    await second.exited;
    await assertConsistent(t, dataDir);
    const index2 = await RecorderIndex.open(dataDir);
    try {
      if (intent.kind === 'delete') {
        t.false(
          await stat(intent.files[0]!).then(
            () => true,
            () => false,
          ),
          'the deletion was finished',
        );
        t.is(index2.segments.get(intent.camera, intent.startMs), undefined);
      } else if (intent.kind === 'thin') {
        const seg = index2.segments.get(intent.camera, intent.startMs);
        t.truthy(seg, 'the segment is still indexed');
        if (point === 'thin.after-rename') t.true(seg!.flags.iframesOnly === true, 'the thinned file was re-indexed as iframes-only');
        t.false(
          await stat(intent.tmp).then(
            () => true,
            () => false,
          ),
          'no tmp file left',
        );
      }
    } finally {
      await index2.close();
    }
  });
}
