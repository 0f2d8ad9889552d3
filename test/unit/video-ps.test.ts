/**
 * video.ps's conversion over a recording with a break in time (a new ingest session:
 * decode times jump 30 s): MP4 and PS segments alike become one program stream whose
 * video and audio timestamps only go forward, with no hole, that ffmpeg decodes without
 * a complaint, holding every recorded frame.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { pickGops, walk } from '../../playback/ps-range.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { CameraConfig } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { rewriteMoof } from '../../media/mp4/moof.ts';
import { SegmentWriter } from '../../storage/segment-writer.ts';
import { decodeErrors } from '../helpers/media.ts';
import { tempDir } from '../helpers/recorder.ts';

const run = promisify(execFile);

async function chunksOf(dir: string): Promise<Fmp4Chunk[]> {
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
    '6',
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

/** Decode times of the later fragments moved 30 s ahead, in every track (a new session). */
function jumped(c: Fmp4Chunk, seconds: number, scales: Map<number, number>): Fmp4Chunk {
  if (c.kind !== 'fragment') return c;
  const shifted = new Map(c.moof.tracks.map((tr) => [tr.trackId, tr.baseDecodeTime + BigInt(seconds * scales.get(tr.trackId)!)]));
  const moof = rewriteMoof(c.bytes.subarray(0, c.moofSize), { baseDecodeTime: shifted });
  return {
    ...c,
    bytes: Buffer.concat([moof, c.bytes.subarray(c.moofSize)]),
    moof: { ...c.moof, tracks: c.moof.tracks.map((tr) => ({ ...tr, baseDecodeTime: shifted.get(tr.trackId)! })) },
  };
}

async function packets(file: string, stream: string): Promise<number[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', stream, '-show_entries', 'packet=dts_time', '-of', 'csv=p=0', file], {
    maxBuffer: 1 << 24,
  });
  return stdout.split('\n').filter(Boolean).map(Number);
}

for (const format of ['mp4', 'ps'] as const) {
  test(`${format} segments across a 30 s timestamp jump become one PS with forward-only, hole-free times and every frame`, async (t) => {
    const dir = await tempDir(t);
    const chunks = await chunksOf(dir);
    const init = chunks[0]!;
    if (init.kind !== 'init') throw new Error('no init');
    const scales = new Map(init.info.tracks.map((x) => [x.id, x.timescale]));
    const index = await RecorderIndex.open(dir);
    t.teardown(() => index.close());
    const camera: CameraConfig = { id: 'cam', pool: 'default', streams: { main: 'rtsp://x/y' }, record: { stream: 'main', format } };
    let now = Date.UTC(2026, 10, 25, 12, 0, 0);
    const writer = new SegmentWriter(camera, { index, dataDir: dir, clock: { nowMs: () => now }, log: silentLogger, segmentMs: 60_000 }, null);
    for (const [i, c] of chunks.entries()) {
      if (c.kind === 'fragment') now += i === 4 ? 31_000 : 1000; // the wall clock jumps with the media time
      await writer.handle(i >= 4 ? jumped(c, 30, scales) : c);
    }
    await writer.close();
    const segs = [...index.segments.all('cam')];
    t.is(segs.length, 2, 'the jump started a new segment');

    const picks = pickGops({ index }, 'cam', segs[0]!.startMs, segs[1]!.endMs);
    const parts: Buffer[] = [];
    const outBytes: number[] = [];
    for await (const g of walk({ dataDir: dir }, picks)) {
      parts.push(g.bytes);
      outBytes.push(g.planned.outBytes);
    }
    t.deepEqual(
      outBytes,
      parts.map((p) => p.length),
    );
    const file = join(dir, 'out.ps');
    await writeFile(file, Buffer.concat([...parts, Buffer.from([0, 0, 1, 0xb9])]));

    t.is(await decodeErrors(file), '');
    const video = await packets(file, 'v:0');
    t.is(video.length, 150, 'every frame of 6 s');
    t.true(video[0]! < 0.05, `starts at ${video[0]}`);
    for (let i = 1; i < video.length; i++) {
      const step = video[i]! - video[i - 1]!;
      t.true(step > 0 && step < 0.1, `video dts step ${step} at ${i}`);
    }
    const audio = await packets(file, 'a:0');
    t.true(audio.length >= 270, `${audio.length} AAC frames`);
    for (let i = 1; i < audio.length; i++) t.true(audio[i]! > audio[i - 1]!, `audio dts ${audio[i - 1]} then ${audio[i]}`);
  });
}

test('after a break in time the next GOP starts one frame after the last frame, even when its session ended on a near-zero last sample', async (t) => {
  // The PS twin of the fMP4 range's frame grid (playback/fmp4-range.ts): walk put the GOP
  // after a break where the output so far ended, and a session whose last video sample
  // lasts 1 tick (ffmpeg may close a session so) ended there, so the next frame came
  // 1 tick after the last one: the same time for anything counting in frames.
  const dir = await tempDir(t);
  const src = join(dir, 'src.mp4');
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc=size=160x120:rate=25',
    '-t',
    '2',
    '-c:v',
    'libx264',
    '-g',
    '25',
    '-pix_fmt',
    'yuv420p',
    '-f',
    'mp4',
    src,
  ]);
  const cut = join(dir, 'cut.mp4');
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-i',
    src,
    '-c',
    'copy',
    '-bsf:v',
    "setts=duration='if(eq(N\\,49)\\,1\\,DURATION)'",
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    cut,
  ]);
  const chunks: Fmp4Chunk[] = [];
  for await (const c of Readable.from([await readFile(cut)]).pipe(new Fmp4Splitter())) chunks.push(c as Fmp4Chunk);
  const init = chunks[0]!;
  if (init.kind !== 'init') throw new Error('no init');
  const last = chunks[chunks.length - 1]!;
  if (last.kind !== 'fragment') throw new Error('no fragment');
  t.is(last.moof.tracks[0]!.durations.at(-1), 1, 'the session ends on a 1-tick sample');
  const scales = new Map(init.info.tracks.map((x) => [x.id, x.timescale]));

  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const camera: CameraConfig = { id: 'cam', pool: 'default', streams: { main: 'rtsp://x/y' }, record: { stream: 'main', format: 'ps' } };
  let now = Date.UTC(2026, 10, 25, 12, 0, 0);
  const writer = new SegmentWriter(camera, { index, dataDir: dir, clock: { nowMs: () => now }, log: silentLogger, segmentMs: 60_000 }, null);
  const fragments = chunks.slice(1);
  const feed = [init, ...fragments, ...fragments.map((c) => jumped(c, 30, scales))];
  for (const [i, c] of feed.entries()) {
    if (c.kind === 'fragment') now += i === 1 + fragments.length ? 31_000 : 1000; // the wall clock jumps with the media time
    await writer.handle(c);
  }
  await writer.close();
  const segs = [...index.segments.all('cam')];
  t.is(segs.length, 2, 'the break started a new segment');

  const parts: Buffer[] = [];
  for await (const g of walk({ dataDir: dir }, pickGops({ index }, 'cam', segs[0]!.startMs, segs[1]!.endMs))) parts.push(g.bytes);
  const file = join(dir, 'out.ps');
  await writeFile(file, Buffer.concat([...parts, Buffer.from([0, 0, 1, 0xb9])]));
  const video = await packets(file, 'v:0');
  t.is(video.length, 100);
  const steps = video.slice(1).map((d, i) => Number((d - video[i]!).toFixed(5)));
  t.deepEqual(
    steps.filter((s) => s < 0.039 || s > 0.041),
    [],
    'every video DTS step is one frame (40 ms)',
  );
});
