/**
 * Trick play on real ffmpeg output: two "segments" (fragmented MP4 files as the ingest
 * writes them, with B-frames and AAC) with a gap between them, played normally, at
 * speed, I-frames only and in reverse. The output is checked with ffprobe: decode
 * times strictly increase, the number and kind of frames is right, durations scale.
 */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { scanFmp4File } from '../../media/mp4/fmp4-file.ts';
import { fragmentHeader, Rescaler, singleTrackInit, trickMode, SYNC_FLAGS } from '../../media/mp4/fmp4-trick.ts';
import { parseInit } from '../../media/mp4/init-info.ts';
import { parseMoof } from '../../media/mp4/moof.ts';
import { PlaybackStream, type PlaybackSegment } from '../../playback/playback-stream.ts';
import { SampleTableCache } from '../../playback/sample-table.ts';
import { decodeErrors, encode, probePackets, sharedInputs, tempDir } from './fixtures.ts';
import { ffprobe } from '../helpers/media.ts';

const input = sharedInputs(test);

async function segment(path: string, startMs: number): Promise<PlaybackSegment> {
  const scan = await scanFmp4File(path);
  return {
    path,
    initSize: scan.initSize,
    codecKey: scan.info.codecKey,
    fragments: scan.fragments.map((f, i) => ({ offset: f.offset, size: f.size, timeMs: startMs + i * 1000 })),
  };
}

async function segments(): Promise<PlaybackSegment[]> {
  const a = await input('a.mp4', { seconds: 6, gop: 25 });
  const b = await input('b.mp4', { seconds: 4, gop: 25 });
  // b starts 60 s after a: a gap the output must skip.
  return [await segment(a, 0), await segment(b, 66_000)];
}

async function play(dir: string, name: string, segs: PlaybackSegment[], mode: ReturnType<typeof trickMode>): Promise<string> {
  const stream = await PlaybackStream.open(segs[Symbol.iterator](), mode, new SampleTableCache());
  if (!stream) throw new Error('no stream');
  const parts: Buffer[] = [stream.init];
  for (let p = await stream.next(); p; p = await stream.next()) parts.push(...p);
  const file = join(dir, name);
  await writeFile(file, Buffer.concat(parts));
  return file;
}

function dtsIncreasing(dts: number[]): boolean {
  return dts.every((d, i) => i === 0 || d > dts[i - 1]!);
}

test('trickMode: speed above the threshold, iframes and reverse send I-frames; speed 1 keeps every track', (t) => {
  t.deepEqual(trickMode(1, false, false), { kind: 'normal' });
  t.deepEqual(trickMode(2, false, false), { kind: 'frames', speed: 2 });
  t.deepEqual(trickMode(0.125, false, false), { kind: 'frames', speed: 0.125 });
  t.is(trickMode(8, false, false).kind, 'iframes');
  t.is(trickMode(1, true, false).kind, 'iframes');
  t.deepEqual(trickMode(1, false, true), { kind: 'iframes', speed: 1, reverse: true });
});

test('Rescaler never drifts and never emits a zero duration', (t) => {
  const r = new Rescaler(16);
  let sum = 0;
  for (let i = 0; i < 1000; i++) {
    const d = r.duration(1001);
    t.true(d >= 1);
    sum += d;
  }
  t.true(Math.abs(sum - (1000 * 1001) / 16) <= 0.5);
  const tiny = new Rescaler(16);
  t.is(tiny.duration(3), 1, 'a 3-tick sample at 16x still lasts a tick');
  t.is(new Rescaler(0.125).duration(512), 4096);
});

test('fragmentHeader writes a moof that parseMoof reads back, data offset past the mdat header', (t) => {
  const samples = [
    { duration: 512, size: 1000, flags: SYNC_FLAGS, compositionOffset: 1024 },
    { duration: 512, size: 20, flags: 0x01010000, compositionOffset: -512 },
  ];
  const head = fragmentHeader(7, 1, 5_000_000_000n, samples);
  const info = parseMoof(head, new Map());
  t.is(info.sequence, 7);
  const tr = info.tracks[0]!;
  t.is(tr.baseDecodeTime, 5_000_000_000n);
  t.deepEqual(tr.durations, [512, 512]);
  t.deepEqual(tr.sizes, [1000, 20]);
  t.deepEqual(tr.compositionOffsets, [1024, -512]);
  t.is(tr.dataOffset, head.length);
  t.is(head.readUInt32BE(head.length - 8), 8 + 1020, 'mdat size covers the samples');
  t.is(head.toString('latin1', head.length - 4), 'mdat');
});

test('singleTrackInit keeps the video track only', async (t) => {
  const segs = await segments();
  const scan = await scanFmp4File(segs[0]!.path);
  t.is(scan.info.tracks.length, 2);
  const video = singleTrackInit(scan.init, scan.info.videoTrackId!);
  const info = parseInit(video);
  t.deepEqual(
    info.tracks.map((x) => x.kind),
    ['video'],
  );
  t.is(info.trexDefaults.size, 1);
});

test('normal, speed 2, I-frames at 8x and reverse over two segments and a gap', async (t) => {
  const dir = await tempDir(t);
  const segs = await segments();
  const gops = segs.reduce((n, s) => n + s.fragments.length, 0);
  t.is(gops, 10);

  const normal = await play(dir, 'normal.mp4', segs, trickMode(1, false, false));
  const np = await probePackets(normal);
  const nv = np.filter((p) => p.codecType === 'video');
  t.is(nv.length, 250);
  t.true(
    np.some((p) => p.codecType === 'audio'),
    'audio kept at speed 1',
  );
  t.true(dtsIncreasing(nv.map((p) => p.dts)));
  const nprobe = await ffprobe(normal);
  t.true(nprobe.durationSec > 9.8 && nprobe.durationSec < 10.3, `gap skipped: ${nprobe.durationSec}`);
  t.is(await decodeErrors(normal), '');

  const double = await play(dir, 'x2.mp4', segs, trickMode(2, false, false));
  const dp = await probePackets(double);
  t.true(
    dp.every((p) => p.codecType === 'video'),
    'audio dropped at speed 2',
  );
  t.is(dp.length, 250);
  t.true(dtsIncreasing(dp.map((p) => p.dts)));
  const dprobe = await ffprobe(double);
  t.true(dprobe.durationSec > 4.9 && dprobe.durationSec < 5.2, `half the time: ${dprobe.durationSec}`);
  t.is(await decodeErrors(double), '');

  const fast = await play(dir, 'x8.mp4', segs, trickMode(8, false, false));
  const fp = await probePackets(fast);
  t.is(fp.length, gops, 'one I-frame per GOP');
  t.true(fp.every((p) => p.keyframe && p.codecType === 'video'));
  t.true(dtsIncreasing(fp.map((p) => p.dts)));
  const fprobe = await ffprobe(fast);
  t.true(fprobe.durationSec > 1.2 && fprobe.durationSec < 1.3, `10 s at 8x: ${fprobe.durationSec}`);
  t.is(await decodeErrors(fast), '');

  const reversed = segs.map((s) => ({ ...s, fragments: [...s.fragments].reverse() })).reverse();
  const back = await play(dir, 'rev.mp4', reversed, trickMode(1, false, true));
  const bp = await probePackets(back);
  t.is(bp.length, gops);
  t.true(bp.every((p) => p.keyframe));
  t.true(dtsIncreasing(bp.map((p) => p.dts)), 'output times increase while the GOPs go backwards');
  t.deepEqual(
    bp.map((p) => p.size),
    [...fp.map((p) => p.size)].reverse(),
    'the same I-frames, last first',
  );
  t.is(await decodeErrors(back), '');
});

test('a segment of another codec ends the stream with codec-change', async (t) => {
  const dir = await tempDir(t);
  const segs = await segments();
  const other = await encode(dir, 'hevc.mp4', { video: 'h265', seconds: 2 });
  const all = [segs[0]!, await segment(other, 10_000), segs[1]!];
  const stream = (await PlaybackStream.open(all[Symbol.iterator](), trickMode(1, false, false), new SampleTableCache()))!;
  let n = 0;
  while (await stream.next()) n++;
  t.is(n, 6);
  t.is(stream.endReason, 'codec-change');
});
