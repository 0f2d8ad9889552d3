/**
 * The progressive MP4 on real ffmpeg output (H.264 with B-frames + AAC): two segments
 * with a gap between them, an exact start inside the first GOP and an exact end inside
 * the last. ffprobe/ffmpeg read it cleanly with the right duration and every sample;
 * byte ranges are slices of the whole; a file removed mid-stream fails the stream.
 */
import test from 'ava';
import { copyFile, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { scanFmp4File } from '../../media/fmp4-file.ts';
import { buildProgressive, progressiveStream, type ProgressiveLayout } from '../../media/progressive-mp4.ts';
import { SampleTableCache, type SegmentTables } from '../../media/sample-table.ts';
import { segmentError } from '../../media/playback-stream.ts';
import { decodeErrors, probePackets, sharedInputs, tempDir } from './fixtures.ts';
import { ffprobe } from '../helpers/media.ts';

const input = sharedInputs(test);

async function tables(cache: SampleTableCache, path: string): Promise<SegmentTables> {
  const scan = await scanFmp4File(path);
  return cache.read(path, scan.initSize, scan.fragments.map((f) => ({ offset: f.offset, size: f.size })));
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function twoSegments(t: import('ava').ExecutionContext): Promise<{ dir: string; a: string; b: string }> {
  const dir = await tempDir(t);
  const a = join(dir, 'a.mp4');
  const b = join(dir, 'b.mp4');
  await copyFile(await input('a.mp4', { seconds: 6, gop: 25 }), a);
  await copyFile(await input('b.mp4', { seconds: 4, gop: 25 }), b);
  return { dir, a, b };
}

test('two segments and a gap: exact start and end, every sample, clean decode, stable bytes', async (t) => {
  const { dir, a, b } = await twoSegments(t);
  const cache = new SampleTableCache();
  const segs = [await tables(cache, a), await tables(cache, b)];
  const layout = buildProgressive({ segments: segs, skipMs: 500, trimEndMs: 300 });
  const whole = await collect(progressiveStream(layout));
  t.is(whole.length, layout.contentLength);
  const file = join(dir, 'out.mp4');
  await writeFile(file, whole);

  const probe = await ffprobe(file);
  t.deepEqual(probe.codecs, ['h264', 'aac']);
  // At the gap the next segment starts after the longer track of the previous one (AAC
  // runs a frame past the video), rounded up to the video frame grid: up to ~3 frames.
  t.true(probe.durationSec >= 9.19 && probe.durationSec < 9.35, `10 s recorded, 0.5 s skipped, 0.3 s trimmed: ${probe.durationSec}`);
  t.true(Math.abs(layout.durationSec - probe.durationSec) < 0.05);
  const packets = await probePackets(file);
  const video = packets.filter((p) => p.codecType === 'video');
  t.is(video.length, 250, 'every video sample is in the file');
  t.true(video.every((p, i) => i === 0 || p.dts > video[i - 1]!.dts), 'decode times increase across the gap');
  t.is(await decodeErrors(file), '');

  // The same request gives the same bytes; ranges are slices of them.
  const again = buildProgressive({ segments: [await tables(cache, a), await tables(cache, b)], skipMs: 500, trimEndMs: 300 });
  t.true(again.head.equals(layout.head));
  const mid = Math.floor(layout.contentLength / 2);
  const tail = await collect(progressiveStream(layout, mid));
  const piece = await collect(progressiveStream(layout, 10, layout.head.length + 100));
  t.true(tail.equals(whole.subarray(mid)));
  t.true(piece.equals(whole.subarray(10, layout.head.length + 101)));
});

test('without trims the file holds both segments back to back and ffprobe reads the gap as skipped', async (t) => {
  const { dir, a, b } = await twoSegments(t);
  const cache = new SampleTableCache();
  const layout = buildProgressive({ segments: [await tables(cache, a), await tables(cache, b)], skipMs: 0, trimEndMs: 0 });
  const file = join(dir, 'full.mp4');
  await writeFile(file, await collect(progressiveStream(layout)));
  const probe = await ffprobe(file, true);
  t.true(probe.durationSec >= 9.99 && probe.durationSec < 10.15, `${probe.durationSec}`);
  t.is(probe.videoFrames, 250);
});

test('a segment file removed while the body streams fails the stream with SEGMENT_GONE', async (t) => {
  const { a, b } = await twoSegments(t);
  const cache = new SampleTableCache();
  const layout: ProgressiveLayout = buildProgressive({ segments: [await tables(cache, a), await tables(cache, b)], skipMs: 0, trimEndMs: 0 });
  const stream = progressiveStream(layout, 0, layout.contentLength - 1, (err, part) => segmentError(err, part.path));
  const it = stream[Symbol.asyncIterator]();
  const first = await it.next();
  t.false(first.done);
  await rm(b);
  const err = await t.throwsAsync(async () => {
    for (let r = await it.next(); !r.done; r = await it.next());
  });
  t.is((err as { code?: string }).code, 'SEGMENT_GONE');
});

test('a segment rewritten smaller at the same path (thinned) after planning is never served from the old plan', async (t) => {
  const { dir, a, b } = await twoSegments(t);
  const cache = new SampleTableCache();
  const scanB = await scanFmp4File(b);
  const refsB = scanB.fragments.map((f) => ({ offset: f.offset, size: f.size }));
  const planned = [await tables(cache, a), await cache.read(b, scanB.initSize, refsB, scanB.fileBytes)];
  const layout = buildProgressive({ segments: planned, skipMs: 0, trimEndMs: 0 });
  // Retention renames another, smaller file over b (different bytes at b's offsets).
  const other = join(dir, 'other.tmp');
  await writeFile(other, (await readFile(a)).subarray(0, scanB.fileBytes - 1000));
  await rename(other, b);
  // Bytes from b's first part only: they exist in the new file, but are not b's.
  const bPart = layout.parts.find((p) => p.path === b)!;
  let at = layout.head.length;
  for (const p of layout.parts) {
    if (p === bPart) break;
    at += p.length;
  }
  const err = await t.throwsAsync(collect(progressiveStream(layout, at, at + 100, (e, part) => segmentError(e, part.path))));
  t.is((err as { code?: string }).code, 'SEGMENT_GONE');
  // Planned again with the index's new (smaller) size, the cache drops the old tables.
  const again = await cache.read(b, scanB.initSize, refsB, scanB.fileBytes - 1000).catch(() => null);
  t.true(again === null || again.fragments[0] !== planned[1]!.fragments[0], 'old tables are not reused');
});
