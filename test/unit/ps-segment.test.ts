/**
 * The segment writer with `record.format: "ps"` on real ffmpeg fragments (injected
 * clock): `.ps` files that stand alone (pack header + PSM first, ffprobe reads the
 * codecs and every frame), GOP table offsets that point at GOP starts in the PS file,
 * and crash recovery on `.ps` files: a partial trailing GOP is truncated, files without
 * entries are re-indexed with the same GOP tables.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { appendFile, open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { RecorderIndex } from '../../index/db.ts';
import { decodeGops } from '../../index/gop-table.ts';
import type { CameraConfig, SegmentRecord } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { demuxPs } from '../../media/ps/ps-demux.ts';
import { openSegmentFile } from '../../playback/segment-source.ts';
import { reconcile } from '../../storage/reconcile.ts';
import { SegmentWriter } from '../../storage/segment-writer.ts';
import { tempDir } from '../helpers/recorder.ts';

const run = promisify(execFile);
const camera: CameraConfig = { id: 'cam', pool: 'default', streams: { main: 'rtsp://x/y' }, record: { stream: 'main', format: 'ps' } };

async function chunksOf(dir: string, seconds: number): Promise<Fmp4Chunk[]> {
  const file = join(dir, 'src.mp4');
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc=size=160x120:rate=25',
    '-f',
    'lavfi',
    '-i',
    'sine=r=48000',
    '-t',
    String(seconds),
    '-c:v',
    'libx264',
    '-g',
    '25',
    '-pix_fmt',
    'yuv420p',
    '-c:a',
    'aac',
    '-ac',
    '1',
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    file,
  ]);
  const out: Fmp4Chunk[] = [];
  for await (const c of Readable.from([await readFile(file)]).pipe(new Fmp4Splitter())) out.push(c as Fmp4Chunk);
  return out;
}

async function writeAll(dir: string, index: RecorderIndex, chunks: Fmp4Chunk[]): Promise<SegmentRecord[]> {
  let now = Date.UTC(2026, 10, 25, 12, 0, 0);
  const writer = new SegmentWriter(camera, { index, dataDir: dir, clock: { nowMs: () => now }, log: silentLogger, segmentMs: 3000 }, null);
  for (const c of chunks) {
    if (c.kind === 'fragment') now += 1000;
    await writer.handle(c);
  }
  await writer.close();
  return [...index.segments.all('cam')];
}

const view = (s: SegmentRecord) => ({
  startMs: s.startMs,
  endMs: s.endMs,
  file: s.file,
  format: s.format,
  bytes: s.bytes,
  gops: decodeGops(s.gops),
  codecKey: s.codecKey,
  mimeType: s.mimeType,
  width: s.width,
  initSize: s.initSize,
});

test('format "ps": .ps segments that stand alone, GOP offsets into the PS file, rebuilt alike from the files', async (t) => {
  const dir = await tempDir(t);
  const chunks = await chunksOf(dir, 7);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const segs = await writeAll(dir, index, chunks);
  t.is(segs.length, 3, 'rotated at 3 s: 3 + 3 + 1 GOPs');
  let frames = 0;
  for (const s of segs) {
    t.regex(s.file, /\.ps$/);
    t.is(s.format, 'ps');
    t.regex(s.mimeType, /avc1\.64000b,mp4a\.40\.2/);
    t.is(s.width, 160);
    const bytes = await readFile(join(dir, s.file));
    t.is(bytes.length, s.bytes);
    const d = demuxPs(bytes);
    t.true(d.startsWithPack && d.psmFirst, 'invariant 1: pack header and PSM first');
    for (const g of decodeGops(s.gops)) {
      const gop = demuxPs(bytes.subarray(g.offset, g.offset + g.size));
      t.true(gop.startsWithPack && gop.psmFirst, `GOP at ${g.offset} stands alone`);
      t.is(gop.gopInfos[0]!.gopBytes, g.size);
      t.true(gop.tracks.find((x) => x.codec === 'h264')!.samples[0]!.keyframe);
    }
    const { stdout } = await run('ffprobe', [
      '-v',
      'error',
      '-count_packets',
      '-show_entries',
      'stream=codec_name,nb_read_packets',
      '-of',
      'csv=p=0',
      join(dir, s.file),
    ]);
    const lines = stdout.trim().split('\n');
    t.deepEqual(
      lines.map((l) => l.split(',')[0]),
      ['h264', 'aac'],
      s.file,
    );
    frames += Number(lines[0]!.split(',')[1]);
  }
  t.is(frames, 175, 'every frame of 7 s at 25 fps');
  t.is(segs[1]!.startMs, segs[0]!.endMs, 'continuous across rotation');

  // Rebuild from the files alone: same records.
  const before = segs.map(view);
  const report = await reconcile(index, dir, { mode: 'rebuild', log: silentLogger });
  t.is(report.reindexed.length, 3);
  t.deepEqual(report.unreadable, []);
  const after = [...index.segments.all('cam')].map(view);
  t.deepEqual(
    after.map((s) => ({ ...s, endMs: 0 })),
    before.map((s) => ({ ...s, endMs: 0 })),
  );
  after.forEach((s, i) => t.true(Math.abs(s.endMs - before[i]!.endMs) <= 1, 'end within a millisecond (90 kHz rounding)'));
});

test('a .ps segment read through openSegmentFile is an fMP4 file with moofs at the GOP offsets and the same pictures', async (t) => {
  const dir = await tempDir(t);
  const chunks = await chunksOf(dir, 5);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const segs = await writeAll(dir, index, chunks);
  for (const s of segs) {
    const fh = await openSegmentFile(join(dir, s.file));
    const view = Buffer.alloc(s.bytes);
    try {
      const { bytesRead } = await fh.read(view, 0, s.bytes, 0);
      t.is(bytesRead, s.bytes);
      for (const g of decodeGops(s.gops)) {
        t.is(view.toString('latin1', g.offset + 4, g.offset + 8), 'moof', `moof at ${g.offset}`);
        // A read in the middle of a GOP gives the same bytes as the whole view.
        const part = Buffer.alloc(100);
        await fh.read(part, 0, 100, g.offset + 50);
        t.true(part.equals(view.subarray(g.offset + 50, g.offset + 150)));
      }
    } finally {
      await fh.close();
    }
    t.is(view.toString('latin1', 4, 8), 'ftyp');
    const mp4 = join(dir, 'view.mp4');
    await writeFile(mp4, view);
    const frames = async (f: string) =>
      (await run('ffmpeg', ['-v', 'error', '-i', f, '-map', '0:v', '-f', 'framemd5', '-'], { maxBuffer: 1 << 26 })).stdout
        .split('\n')
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => l.split(',').pop());
    const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name', '-of', 'csv=p=0', mp4]);
    t.deepEqual(stdout.trim().split('\n'), ['h264', 'aac']);
    const want = await frames(join(dir, s.file));
    t.true(want.length >= 25);
    t.deepEqual(await frames(mp4), want);
  }
});

test('crash mid-GOP in a .ps segment: repair truncates the partial GOP, keeps the rest; a garbage .ps is reported, not indexed', async (t) => {
  const dir = await tempDir(t);
  const chunks = await chunksOf(dir, 4);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const segs = await writeAll(dir, index, chunks);
  const last = segs[segs.length - 1]!;
  const abs = join(dir, last.file);
  const whole = await readFile(abs);
  const gops = decodeGops(last.gops);
  // The recorder died while appending one more GOP: half of a copy of the first GOP is on disk.
  await appendFile(abs, whole.subarray(gops[0]!.offset, gops[0]!.offset + Math.floor(gops[0]!.size / 2)));
  await index.segments.put({ ...last, open: true });
  const report = await reconcile(index, dir, { mode: 'repair', log: silentLogger });
  t.deepEqual(report.truncated, [{ file: last.file, bytes: Math.floor(gops[0]!.size / 2) }]);
  t.is((await stat(abs)).size, whole.length);
  const fixed = index.segments.get('cam', last.startMs)!;
  t.false(fixed.open);
  t.deepEqual(decodeGops(fixed.gops), gops);

  // A .ps file that is not a program stream: left in place and reported.
  const junk = join(dir, 'pools/default/cam/2026-11-25', `${Date.UTC(2026, 10, 25, 13)}.ps`);
  const fh = await open(junk, 'w');
  await fh.write('this is not video');
  await fh.close();
  const r2 = await reconcile(index, dir, { mode: 'repair', log: silentLogger });
  t.is(r2.unreadable.length, 1);
  t.true(r2.unreadable[0]!.file.endsWith('.ps'));
  t.is(index.segments.get('cam', Date.UTC(2026, 10, 25, 13)), undefined);
});
