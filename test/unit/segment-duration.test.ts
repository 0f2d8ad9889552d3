/**
 * Segment durations in the fMP4 header (issue 12 item 6c, media/mp4/init-duration.ts): the
 * segment writer on real ffmpeg output (H.264 with B-frames + AAC) writes each file's
 * init with a mehd of reserved size and fills mehd/mvhd/tkhd in at close. Closed files
 * say their media duration; an open one (a crash) says zero, still scans and plays, and
 * reconcile fills it in; files from before (no mehd) are read and left as they are.
 * What caches or hashes an init stays right: the sample-table cache takes the record of
 * a segment it first read open, the progressive ETag is the same open or closed, MSE
 * inits carry no durations, and an fmp4 download's init has the range's own.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { RecorderIndex } from '../../index/db.ts';
import { decodeGops } from '../../index/gop-table.ts';
import type { CameraConfig, SegmentRecord } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';
import { scanFmp4File } from '../../media/mp4/fmp4-file.ts';
import { planFmp4Range } from '../../playback/fmp4-range.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { MEHD_BYTES, initDurations, withoutDurations } from '../../media/mp4/init-duration.ts';
import { parseInit } from '../../media/mp4/init-info.ts';
import { PlaybackStream, type PlaybackSegment } from '../../playback/playback-stream.ts';
import { progressiveEtag } from '../../playback/progressive-mp4.ts';
import { encodeSampleTables } from '../../playback/sample-table-codec.ts';
import { SampleTableCache, readFileTables, type PersistedTableSource } from '../../playback/sample-table.ts';
import { reconcile } from '../../storage/reconcile.ts';
import { segmentRelPath } from '../../storage/layout.ts';
import { SegmentWriter } from '../../storage/segment-writer.ts';
import { ffprobe } from '../helpers/media.ts';
import { tempDir } from '../helpers/recorder.ts';

const run = promisify(execFile);
const camera: CameraConfig = { id: 'cam', pool: 'default', streams: { main: 'rtsp://x/y' }, record: { stream: 'main', format: 'mp4' } };
const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);

async function encode(dir: string, seconds: number): Promise<string> {
  const file = join(dir, `src-${seconds}.mp4`);
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
    '-bf',
    '2',
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
  return file;
}

async function chunksOf(file: string): Promise<Fmp4Chunk[]> {
  const out: Fmp4Chunk[] = [];
  for await (const c of Readable.from([await readFile(file)]).pipe(new Fmp4Splitter())) out.push(c as Fmp4Chunk);
  return out;
}

interface Setup {
  dir: string;
  index: RecorderIndex;
  writer: SegmentWriter;
  /** Feeds the next `n` chunks (fragments one second apart). */
  feed(n?: number): Promise<void>;
  segs(): SegmentRecord[];
}

async function setup(t: import('ava').ExecutionContext, seconds: number, segmentMs: number): Promise<Setup> {
  const dir = await tempDir(t);
  const chunks = await chunksOf(await encode(dir, seconds));
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  let now = T0;
  const writer = new SegmentWriter(camera, { index, dataDir: dir, clock: { nowMs: () => now }, log: silentLogger, segmentMs }, null);
  let next = 0;
  return {
    dir,
    index,
    writer,
    async feed(n = chunks.length - next) {
      for (const c of chunks.slice(next, next + n)) {
        if (c.kind === 'fragment') now += 1000;
        await writer.handle(c);
      }
      next += n;
    },
    segs: () => [...index.segments.all('cam')],
  };
}

/** What the header says, in seconds: mehd, mvhd, and each track's tkhd. */
function headerSeconds(init: Buffer): { mehd: number | null; mvhd: number; tracks: Map<number, number> } {
  const d = initDurations(init);
  const read = (f: { at: number; bytes: 4 | 8 }): number => (f.bytes === 8 ? Number(init.readBigUInt64BE(f.at)) : init.readUInt32BE(f.at)) / d.movieTimescale;
  return { mehd: d.mehd ? read(d.mehd) : null, mvhd: read(d.mvhd), tracks: new Map(d.tracks.map((x) => [x.id, read(x.tkhd)])) };
}

/** Each track's media duration in a file, from its fragments (seconds). */
async function mediaSeconds(path: string): Promise<Map<number, number>> {
  const scan = await scanFmp4File(path);
  const ts = new Map(scan.info.tracks.map((x) => [x.id, x.timescale]));
  const out = new Map<number, number>();
  for (const f of scan.fragments) for (const tr of f.moof.tracks) out.set(tr.trackId, (out.get(tr.trackId) ?? 0) + tr.durationTicks / ts.get(tr.trackId)!);
  return out;
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** The segment as /play looks it up (playback/playback-source.ts). */
function playbackSegment(path: string, seg: SegmentRecord): Iterator<PlaybackSegment> {
  const fragments = decodeGops(seg.gops).map((g) => ({ offset: g.offset, size: g.size, timeMs: seg.startMs + g.timeMs }));
  return [{ path, bytes: seg.bytes, initSize: seg.initSize, codecKey: seg.codecKey, fragments }][Symbol.iterator]();
}

async function initOf(path: string, seg: SegmentRecord): Promise<Buffer> {
  return (await readFile(path)).subarray(0, seg.initSize);
}

test('a closed segment says its duration: mehd, mvhd and tkhd match its fragments, and ffprobe the media', async (t) => {
  const s = await setup(t, 10, 6000);
  await s.feed();
  await s.writer.close();
  const segs = s.segs();
  t.is(segs.length, 2, segs.map((x) => `${x.startMs}-${x.endMs}`).join(' '));
  for (const seg of segs) {
    const path = join(s.dir, seg.file);
    const init = await initOf(path, seg);
    t.is(init.toString('latin1', 4, 8), 'ftyp');
    t.is(seg.initSize, (await scanFmp4File(path)).initSize, 'the index knows the init with its mehd');
    const media = await mediaSeconds(path);
    const head = headerSeconds(init);
    const longest = Math.max(...media.values());
    if (head.mehd === null) return t.fail('no mehd');
    t.true(Math.abs(head.mehd - longest) < 0.002, `mehd ${head.mehd} s, fragments ${longest} s`);
    t.is(head.mvhd, head.mehd);
    for (const [id, sec] of media) t.true(Math.abs(head.tracks.get(id)! - sec) < 0.002, `track ${id}: tkhd ${head.tracks.get(id)} s, fragments ${sec} s`);
    t.true(Math.abs(longest - (seg.endMs - seg.startMs) / 1000) < 0.1, `the index's ${seg.endMs - seg.startMs} ms`);
    // ffprobe reads a fragmented file's times from 0: a segment after the first of a
    // session starts at its session's decode time (start_time), and lasts the rest.
    const probe = await ffprobe(path);
    t.true(Math.abs(probe.durationSec - probe.startSec - longest) < 0.1, `ffprobe ${probe.durationSec} s from ${probe.startSec} s, fragments ${longest} s`);
    // The codec identity of the init is the same as the session's (rotation, reindex, HLS maps).
    t.is(parseInit(init).codecKey, seg.codecKey);
  }
  t.true(Math.abs(headerSeconds(await initOf(join(s.dir, segs[0]!.file), segs[0]!)).mehd! - 6) < 0.1);
  t.true(Math.abs(headerSeconds(await initOf(join(s.dir, segs[1]!.file), segs[1]!)).mehd! - 4) < 0.1);
});

test('an open segment (a crash before close) says zero, scans and plays; reconcile fills its durations in', async (t) => {
  const s = await setup(t, 5, 60_000);
  await s.feed(1 + 4); // init + 4 GOPs, never closed
  const path = join(s.dir, segmentRelPath('default', 'cam', T0 + 1000 - 1000, 'mp4'));
  const before = await readFile(path);
  const scan = await scanFmp4File(path);
  t.is(scan.fragments.length, 4);
  const open = headerSeconds(scan.init);
  t.deepEqual([open.mehd, open.mvhd, ...open.tracks.values()], [0, 0, 0, 0], 'zeros: not known yet');
  const probe = await ffprobe(path, true);
  t.true(Math.abs(probe.durationSec - 4) < 0.15, `ffprobe scans it: ${probe.durationSec} s`);
  t.is(probe.videoFrames, 100);
  // The entry (committed at the last sync) is open, as a crash leaves it.
  const entry = s.index.segments.get('cam', T0);
  t.true(entry?.open);
  const report = await reconcile(s.index, s.dir, { mode: 'repair', log: silentLogger });
  t.deepEqual(report.truncated, []);
  const after = await readFile(path);
  t.is(after.length, before.length, 'only header fields change');
  t.true(after.subarray(scan.initSize).equals(before.subarray(scan.initSize)), 'fragments untouched');
  const fixed = headerSeconds(after.subarray(0, scan.initSize));
  const media = await mediaSeconds(path);
  t.true(Math.abs(fixed.mehd! - Math.max(...media.values())) < 0.002, `${fixed.mehd}`);
  const closed = s.index.segments.get('cam', T0)!;
  t.false(closed.open);
  t.is(closed.initSize, scan.initSize);
  t.is(decodeGops(closed.gops).length, 4);
  // A second pass finds nothing to do.
  t.deepEqual((await reconcile(s.index, s.dir, { mode: 'check', log: silentLogger })).unreadable, []);
});

test('a file written before segments had a mehd is indexed as it is, bytes untouched', async (t) => {
  const dir = await tempDir(t);
  const src = await encode(dir, 3);
  const rel = segmentRelPath('default', 'cam', T0, 'mp4');
  await run('mkdir', ['-p', join(dir, rel, '..')]);
  await copyFile(src, join(dir, rel));
  const hash = async (): Promise<string> =>
    createHash('sha1')
      .update(await readFile(join(dir, rel)))
      .digest('hex');
  const h0 = await hash();
  t.is(initDurations((await scanFmp4File(join(dir, rel))).init).mehd, null);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const report = await reconcile(index, dir, { mode: 'repair', log: silentLogger });
  t.deepEqual(report.reindexed, [rel]);
  t.is(await hash(), h0);
  const seg = index.segments.get('cam', T0)!;
  t.true(Math.abs(seg.endMs - seg.startMs - 3000) < 100);
  // Its fmp4 download gets a mehd all the same: the range's duration.
  const body = await planFmp4Range([
    { path: join(dir, rel), initSize: seg.initSize, fragments: decodeGops(seg.gops).map((g) => ({ offset: g.offset, size: g.size })), bytes: seg.bytes },
  ]);
  const served = await collect(body.stream());
  t.is(served.length, body.contentLength);
  const head = headerSeconds(served);
  t.true(Math.abs(head.mehd! - 3) < 0.1, `${head.mehd}`);
  const fragments = decodeGops(seg.gops).reduce((n, g) => n + g.size, 0);
  t.is(served.length, seg.initSize + MEHD_BYTES + fragments, 'the stored init with a mehd, then the fragments');
});

test('what caches or hashes an init is the same for a segment read open and read closed', async (t) => {
  const s = await setup(t, 7, 60_000);
  await s.feed(1 + 4); // indexed at the writer's first sync (4 s)
  const path = join(s.dir, segmentRelPath('default', 'cam', T0, 'mp4'));
  const openEntry = s.index.segments.get('cam', T0)!;
  const openRefs = decodeGops(openEntry.gops).map((g) => ({ offset: g.offset, size: g.size }));
  // Read while open, as a download of the live edge would.
  const records = new Map<string, Uint8Array>();
  const calls: (string | null)[] = [];
  const source: PersistedTableSource = { get: (p) => records.get(p), missing: (_p, why) => void calls.push(why) };
  const cache = new SampleTableCache(undefined, source);
  const early = await cache.read(path, openEntry.initSize, openRefs, openEntry.bytes);
  t.is(headerSeconds(early.init).mehd, 0);
  const etagOpen = progressiveEtag(early.init, [{ path, fragments: openRefs }], 0, 0);
  const playOpen = (await PlaybackStream.open(playbackSegment(path, openEntry), { kind: 'normal' }, cache))!;

  await s.feed();
  await s.writer.close();
  const seg = s.index.segments.get('cam', T0)!;
  t.false(seg.open);
  const refs = decodeGops(seg.gops).map((g) => ({ offset: g.offset, size: g.size }));
  const closedInit = await initOf(path, seg);
  t.true(headerSeconds(closedInit).mehd! > 6);
  // The record written after close (with the filled-in init) serves the cache's entry from when it was open.
  records.set(path, encodeSampleTables(await readFileTables(path, seg.initSize, refs, seg.bytes)));
  calls.length = 0;
  const later = await cache.read(path, seg.initSize, refs, seg.bytes);
  t.deepEqual(calls, [], 'the record is taken, not refused as another init');
  t.is(later.fragments.length, refs.length);
  t.is(progressiveEtag(closedInit, [{ path, fragments: openRefs }], 0, 0), etagOpen, 'one ETag, open or closed');
  t.true(withoutDurations(closedInit).equals(withoutDurations(early.init)));
  // Players fed over MSE get no duration in the init, open or closed.
  const playClosed = (await PlaybackStream.open(playbackSegment(path, seg), { kind: 'normal' }, new SampleTableCache()))!;
  t.true(playClosed.init.equals(playOpen.init));
  t.is(headerSeconds(playClosed.init).mehd, 0);
  // An fmp4 download of two GOPs of the closed 7 s segment says 2 s, and ffprobe agrees.
  const body = await planFmp4Range([{ path, initSize: seg.initSize, fragments: refs.slice(2, 4), bytes: seg.bytes }]);
  const served = await collect(body.stream());
  const head = headerSeconds(served.subarray(0, seg.initSize));
  t.true(Math.abs(head.mehd! - 2) < 0.1, `${head.mehd}`);
  t.regex(body.etag, /^"fmp4v2-/);
  const file = join(s.dir, 'range.mp4');
  await writeFile(file, served);
  const probe = await ffprobe(file, true);
  t.true(Math.abs(probe.durationSec - 2) < 0.15, `${probe.durationSec}`);
  t.is(probe.videoFrames, 50);
});
