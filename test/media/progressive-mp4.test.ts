/**
 * The progressive MP4 on real ffmpeg output (H.264 with B-frames + AAC): two segments
 * with a gap between them, an exact start inside the first GOP and an exact end inside
 * the last. ffprobe/ffmpeg read it cleanly with the right duration and every sample up
 * to `to` (the decode-order tail presented from `to` on is left out, and only it);
 * byte ranges are slices of the whole; a file removed mid-stream fails the stream.
 */
import test from 'ava';
import { copyFile, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { scanFmp4File } from '../../media/mp4/fmp4-file.ts';
import { childBoxes, findAll, findBox, fullBoxBody } from '../../media/mp4/boxes.ts';
import { buildProgressive, progressiveStream, type ProgressiveLayout } from '../../playback/progressive-mp4.ts';
import { SampleTableCache, type SegmentTables } from '../../playback/sample-table.ts';
import { segmentError } from '../../playback/playback-stream.ts';
import { decodeErrors, probePackets, sharedInputs, tempDir, type Packet } from './fixtures.ts';
import { ffprobe } from '../helpers/media.ts';

const input = sharedInputs(test);

async function tables(cache: SampleTableCache, path: string): Promise<SegmentTables> {
  const scan = await scanFmp4File(path);
  return cache.read(
    path,
    scan.initSize,
    scan.fragments.map((f) => ({ offset: f.offset, size: f.size })),
  );
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
  const cut = tailOf(await probePackets(b), 300);
  t.true(cut.video >= 6 && cut.video <= 8, `7.5 frames presented after \`to\`: ${cut.video} left out`);
  t.is(video.length, 250 - cut.video, 'every video sample up to `to` is in the file');
  t.true(
    video.every((p, i) => i === 0 || p.dts > video[i - 1]!.dts),
    'decode times increase across the gap',
  );
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

/** Sample sizes per handler (`vide`, `soun`) in a built head's moov. */
function stszOf(head: Buffer): Map<string, number[]> {
  // The head ends with the mdat's header: its boxes are ftyp and moov.
  const ftyp = head.readUInt32BE(0);
  const moov = childBoxes(head, ftyp, ftyp + head.readUInt32BE(ftyp))[0]!;
  const out = new Map<string, number[]>();
  for (const trak of findAll(head, 'trak', moov)) {
    const hdlr = fullBoxBody(head, findBox(head, 'mdia/hdlr', trak)!, 8).body;
    const handler = head.toString('latin1', hdlr + 4, hdlr + 8);
    const { body } = fullBoxBody(head, findBox(head, 'mdia/minf/stbl/stsz', trak)!, 8);
    const fixed = head.readUInt32BE(body);
    const n = head.readUInt32BE(body + 4);
    out.set(
      handler,
      Array.from({ length: n }, (_, i) => fixed || head.readUInt32BE(body + 8 + i * 4)),
    );
  }
  return out;
}

/**
 * What the rule leaves out of a segment cut `trimMs` before its video's end, from
 * ffprobe's own packet list of the stored file (independent of our tables): video, the
 * decode-order tail presented at or after the cut down to the first sample presented
 * before it; audio, the packets starting at or after it.
 */
function tailOf(src: Packet[], trimMs: number, ts = { video: 12800, audio: 48000 }): { video: number; audio: number; cutSec: number } {
  const video = src.filter((p) => p.codecType === 'video');
  const audio = src.filter((p) => p.codecType === 'audio');
  const last = video[video.length - 1]!;
  const ptsZero = video[0]!.pts - video[0]!.dts;
  const cutSec = (last.dts + last.duration) / ts.video - trimMs / 1000;
  // `to` on a frame's time (the usual case: whole ms against a 40 ms grid) drops it.
  const atOrAfter = (sec: number): boolean => sec >= cutSec - 1e-9;
  let keep = video.length;
  while (keep > 0 && atOrAfter((video[keep - 1]!.pts - ptsZero) / ts.video)) keep--;
  return { video: video.length - keep, audio: audio.filter((p) => atOrAfter(p.pts / ts.audio)).length, cutSec };
}

test('the tail presented at or after `to` is left out, and only it: the kept samples are the stored ones in decode order, with their bytes only', async (t) => {
  const { dir, b } = await twoSegments(t);
  const cache = new SampleTableCache();
  const segs = [await tables(cache, b)];
  const info = segs[0]!.info;
  const ts = { video: info.tracks.find((x) => x.kind === 'video')!.timescale, audio: info.tracks.find((x) => x.kind === 'audio')!.timescale };
  const src = await probePackets(b);
  const srcVideo = src.filter((p) => p.codecType === 'video').map((p) => p.size);
  const srcAudio = src.filter((p) => p.codecType === 'audio').map((p) => p.size);
  const v = src.filter((p) => p.codecType === 'video');
  t.true(
    v.some((p) => p.pts - p.dts !== v[0]!.pts - v[0]!.dts),
    'B-frames (varying composition offsets) in the input',
  );
  for (const trimMs of [0, 1, 40, 300, 700, 990]) {
    const expected = tailOf(src, trimMs, ts);
    const layout = buildProgressive({ segments: segs, skipMs: 0, trimEndMs: trimMs });
    const sizes = stszOf(layout.head);
    t.deepEqual(sizes.get('vide'), srcVideo.slice(0, srcVideo.length - expected.video), `video at ${trimMs} ms`);
    t.deepEqual(sizes.get('soun'), srcAudio.slice(0, srcAudio.length - expected.audio), `audio at ${trimMs} ms`);
    const kept = [...sizes.values()].flat().reduce((n, x) => n + x, 0);
    t.is(layout.contentLength - layout.head.length, kept, `only the kept samples' bytes are served (${trimMs} ms)`);
    t.true(Math.abs(layout.durationSec - (4 - trimMs / 1000)) < 0.05, `${layout.durationSec}`);
    if (trimMs === 700) {
      // 17.5 frames are presented in the last 0.7 s; one of them is a reference a kept B-frame needs.
      t.true(expected.video >= 16 && expected.audio >= 32, JSON.stringify(expected));
      const file = join(dir, 'trimmed.mp4');
      await writeFile(file, await collect(progressiveStream(layout)));
      t.is(await decodeErrors(file), '');
      const probe = await ffprobe(file);
      t.true(Math.abs(probe.durationSec - layout.durationSec) < 0.05, `${probe.durationSec}`);
    }
  }
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

/**
 * A destination like a slow socket: each write is acknowledged a few ms later, and a
 * chunk whose bytes change before its acknowledgement (a reused buffer) is counted.
 */
class SlowSink extends Writable {
  readonly got: Buffer[] = [];
  changed = 0;
  held = 0;
  maxHeld = 0;
  constructor(private readonly holdMs: () => number) {
    super({ highWaterMark: 16 * 1024 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const copy = Buffer.from(chunk);
    this.held += chunk.length;
    this.maxHeld = Math.max(this.maxHeld, this.held);
    setTimeout(() => {
      if (!chunk.equals(copy)) this.changed++;
      this.held -= chunk.length;
      this.got.push(copy);
      cb();
    }, this.holdMs());
  }
}

function pipeInto(stream: NodeJS.ReadableStream, sink: SlowSink): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    stream.once('error', reject);
    sink.once('finish', () => resolve(Buffer.concat(sink.got)));
    stream.pipe(sink);
  });
}

/**
 * Several-MB copies of the shared big inputs in a temp dir (so a body spans many read
 * buffers and a test may remove them), with the layout of the whole of them.
 */
async function bigLayout(
  t: import('ava').ExecutionContext,
  names: readonly ('a' | 'b')[],
  trim = { skipMs: 0, trimEndMs: 0 },
): Promise<{ paths: string[]; layout: ProgressiveLayout }> {
  const dir = await tempDir(t);
  const seconds = { a: 8, b: 6 };
  const cache = new SampleTableCache();
  const paths: string[] = [];
  const segments: SegmentTables[] = [];
  for (const n of names) {
    const path = join(dir, `${n}.mp4`);
    await copyFile(await input(`big-${n}.mp4`, { seconds: seconds[n], gop: 25, bitrate: '3M', noise: true }), path);
    paths.push(path);
    segments.push(await tables(cache, path));
  }
  return { paths, layout: buildProgressive({ segments, ...trim }) };
}

test('piped into a slow destination: the same bytes, no buffer reused before its write is done, two read buffers at most in flight', async (t) => {
  // Several MB per file, so a body is many read buffers and parts span them.
  const { layout } = await bigLayout(t, ['a', 'b'], { skipMs: 300, trimEndMs: 200 });
  const whole = await collect(progressiveStream(layout));
  t.is(whole.length, layout.contentLength);
  t.true(layout.contentLength > 4 * 1024 * 1024, `${layout.contentLength} bytes`);
  for (const [start, end] of [
    [0, layout.contentLength - 1],
    [layout.head.length - 5, layout.contentLength - 1000],
    [layout.head.length + 300_001, layout.head.length + 2_000_000],
  ] as const) {
    const sink = new SlowSink(() => Math.random() * 3);
    const body = await pipeInto(progressiveStream(layout, start, end), sink);
    t.true(body.equals(whole.subarray(start, end + 1)), `bytes ${start}-${end}`);
    t.is(sink.changed, 0, 'no chunk changed before its write completed');
    t.true(sink.maxHeld <= layout.head.length + 2 * 256 * 1024, `held at most the head and two read buffers: ${sink.maxHeld}`);
  }
});

test('piped: a file removed mid-body fails the body with SEGMENT_GONE and the destination is never ended', async (t) => {
  const {
    paths: [, b],
    layout,
  } = await bigLayout(t, ['a', 'b']);
  const stream = progressiveStream(layout, 0, layout.contentLength - 1, (err, part) => segmentError(err, part.path));
  const sink = new SlowSink(() => 20);
  let removed = false;
  const origWrite = sink._write.bind(sink);
  sink._write = (chunk, enc, cb) => {
    if (!removed) {
      removed = true;
      void rm(b!);
    }
    origWrite(chunk, enc, cb);
  };
  const err = await t.throwsAsync(pipeInto(stream, sink));
  t.is((err as { code?: string }).code, 'SEGMENT_GONE');
  t.false(sink.writableEnded, 'a short body is never ended as if complete');
});

test('piped: a destination that goes away (client gone) stops the body and closes it', async (t) => {
  const { layout } = await bigLayout(t, ['a']);
  const stream = progressiveStream(layout);
  const sink = new SlowSink(() => 1000);
  stream.pipe(sink);
  await new Promise((r) => setTimeout(r, 50));
  // What fastify does when the response closes early.
  stream.destroy();
  await new Promise((r) => stream.once('close', r));
  t.true(stream.destroyed);
  t.true(sink.held <= 2 * 256 * 1024 + layout.head.length);
});
