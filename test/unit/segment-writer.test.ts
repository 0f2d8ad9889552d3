/**
 * The segment writer on real ffmpeg fragments with an injected clock: rotation at the
 * target length, a new segment on a timestamp jump and on a codec change, continuous
 * times across rotations, and every file valid alone.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { RecorderIndex } from '../../index/db.ts';
import { decodeGops } from '../../index/gop-table.ts';
import type { CameraConfig } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { rewriteMoof } from '../../media/mp4/moof.ts';
import { SegmentWriter } from '../../storage/segment-writer.ts';
import { ffprobe } from '../helpers/media.ts';
import { tempDir } from '../helpers/recorder.ts';

const run = promisify(execFile);
const camera: CameraConfig = { id: 'cam', pool: 'default', streams: { main: 'rtsp://x/y' }, record: { stream: 'main', format: 'mp4' } };

async function chunksOf(dir: string, name: string, size: string, seconds: number): Promise<Fmp4Chunk[]> {
  const file = join(dir, name);
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    `testsrc=size=${size}:rate=25`,
    '-t',
    String(seconds),
    '-c:v',
    'libx264',
    '-g',
    '25',
    '-pix_fmt',
    'yuv420p',
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

test('segments rotate at the target length, on a timestamp jump and on a codec change; times stay continuous', async (t) => {
  const dir = await tempDir(t);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const a = await chunksOf(dir, 'a.mp4', '160x120', 8); // 8 one-second GOPs
  const b = await chunksOf(dir, 'b.mp4', '176x144', 3); // another codec config
  let now = Date.UTC(2026, 10, 25, 12, 0, 0);
  const clock = { nowMs: () => now };
  const closed: number[] = [];
  const writer = new SegmentWriter(
    camera,
    { index, dataDir: dir, clock, log: silentLogger, segmentMs: 3000, onSegmentClosed: (s) => closed.push(s.startMs) },
    null,
  );

  // Fragments arrive one second apart, each when its GOP is complete.
  const feed = async (c: Fmp4Chunk, jumpTicks = 0n): Promise<void> => {
    if (c.kind === 'fragment') {
      now += 1000;
      if (jumpTicks) {
        const shifted = new Map(c.moof.tracks.map((tr) => [tr.trackId, tr.baseDecodeTime + jumpTicks]));
        const moof = rewriteMoof(c.bytes.subarray(0, c.moofSize), { baseDecodeTime: shifted });
        const bytes = Buffer.concat([moof, c.bytes.subarray(c.moofSize)]);
        c = { ...c, bytes, moof: { ...c.moof, tracks: c.moof.tracks.map((tr) => ({ ...tr, baseDecodeTime: tr.baseDecodeTime + jumpTicks })) } };
      }
    }
    await writer.handle(c);
  };
  for (const c of a.slice(0, 6)) await feed(c); // init + 5 GOPs: rotates after 3 s
  const jump = BigInt(a[0]!.kind === 'init' ? a[0]!.info.tracks[0]!.timescale * 30 : 0);
  for (const c of a.slice(6)) await feed(c, jump); // decode times jump 30 s ahead
  for (const c of b) await feed(c); // new init with another codecKey
  await writer.close();

  const segs = [...index.segments.all('cam')];
  t.is(segs.length, 4, segs.map((s) => `${s.startMs}-${s.endMs}`).join(' '));
  const [s1, s2, s3, s4] = segs as [(typeof segs)[0], (typeof segs)[0], (typeof segs)[0], (typeof segs)[0]];
  t.is(decodeGops(s1.gops).length, 3, 'rotated at 3 s');
  t.is(s2.startMs, s1.endMs, 'rotation keeps time continuous');
  t.is(decodeGops(s2.gops).length, 2);
  t.is(decodeGops(s3.gops).length, 3, 'after the jump: re-anchored');
  t.not(s4.codecKey, s3.codecKey, 'codec change starts a new segment');
  t.is(s4.width, 176);
  t.deepEqual(
    closed,
    segs.map((s) => s.startMs),
  );
  for (const s of segs) {
    t.false(s.open);
    t.true(s.startMs >= (segs[segs.indexOf(s) - 1]?.endMs ?? 0), 'no overlap');
    t.true((await ffprobe(join(dir, s.file))).durationSec > 0.5, s.file);
  }
});

test('a fragment its producer held after its last frame arrived is timed from that arrival, not from when it was handed on', async (t) => {
  const dir = await tempDir(t);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const a = await chunksOf(dir, 'a.mp4', '160x120', 3); // 3 one-second GOPs
  const start = Date.UTC(2026, 10, 25, 12, 0, 0);
  let now = start;
  const writer = new SegmentWriter(camera, { index, dataDir: dir, clock: { nowMs: () => now }, log: silentLogger, segmentMs: 60_000 }, null);
  // GOP i is complete at start + i s; the first waits 2.5 s for its AAC, and the ones
  // complete meanwhile wait behind it: each is handed on at max(complete, start + 3.5 s).
  let i = 0;
  for (const c of a) {
    if (c.kind !== 'fragment') {
      await writer.handle(c);
      continue;
    }
    const complete = start + ++i * 1000;
    now = Math.max(complete, start + 3500);
    await writer.handle({ ...c, heldMs: now - complete });
  }
  await writer.close();
  const [seg] = [...index.segments.all('cam')];
  t.is(seg?.startMs, start, 'the first frame came in at start, whatever the wait after');
  t.is(seg?.endMs, start + 3000);
});

test('appended GOPs are fdatasynced and indexed every syncMs of media, and everything at close', async (t) => {
  const dir = await tempDir(t);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const a = await chunksOf(dir, 'a.mp4', '160x120', 8); // init + 8 one-second GOPs
  let now = Date.UTC(2026, 10, 25, 12, 0, 0);
  const clock = { nowMs: () => now };
  const writer = new SegmentWriter(camera, { index, dataDir: dir, clock, log: silentLogger, segmentMs: 60_000, syncMs: 3000 }, null);
  const indexedGops = (): Promise<number> => {
    const seg = [...index.segments.all('cam')][0];
    return Promise.resolve(seg ? decodeGops(seg.gops).length : 0);
  };
  const seen: number[] = [];
  for (const c of a) {
    if (c.kind === 'fragment') now += 1000;
    await writer.handle(c);
    if (c.kind === 'fragment') seen.push(await indexedGops());
  }
  // With 1 s GOPs and syncMs 3000: a commit when one more GOP would leave over 3 s
  // unsynced, i.e. after GOPs 3 and 6; never an entry ahead of the synced bytes.
  t.deepEqual(seen, [0, 0, 3, 3, 3, 6, 6, 6]);
  await writer.close();
  t.is(await indexedGops(), 8, 'close commits the rest');
  t.false([...index.segments.all('cam')][0]!.open);

  // syncMs 0: every GOP as it comes.
  const dir2 = await tempDir(t);
  const index2 = await RecorderIndex.open(dir2);
  t.teardown(() => index2.close());
  const every = new SegmentWriter(camera, { index: index2, dataDir: dir2, clock, log: silentLogger, segmentMs: 60_000, syncMs: 0 }, null);
  const counts: number[] = [];
  for (const c of a.slice(0, 4)) {
    if (c.kind === 'fragment') now += 1000;
    await every.handle(c);
    if (c.kind === 'fragment') counts.push(decodeGops([...index2.segments.all('cam')][0]!.gops).length);
  }
  t.deepEqual(counts, [1, 2, 3]);
  await every.close();
});

test('reindex rebuilds the segment index from the files alone; check flags a damaged file', async (t) => {
  const dir = await tempDir(t);
  const a = await chunksOf(dir, 'a.mp4', '160x120', 7);
  let before;
  {
    const index = await RecorderIndex.open(dir);
    let now = Date.UTC(2026, 10, 25, 23, 59, 57); // crosses midnight: two day folders
    const writer = new SegmentWriter(camera, { index, dataDir: dir, clock: { nowMs: () => (now += 500) }, log: silentLogger, segmentMs: 2000 }, null);
    for (const c of a) await writer.handle(c);
    await writer.close();
    before = [...index.segments.all('cam')].map((s) => ({ startMs: s.startMs, endMs: s.endMs, file: s.file, gops: decodeGops(s.gops), bytes: s.bytes }));
    await index.close();
  }
  t.true(before.length >= 3);
  const cli = (cmd: string) =>
    run(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../../recorder.ts'), cmd], {
      env: { ...process.env, RECORDER_DATA_DIR: dir, RECORDER_LOG_LEVEL: 'silent' },
    }).then(
      (r) => ({ code: 0, out: r.stdout }),
      (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
    );
  await run('rm', ['-rf', join(dir, 'index')]);
  const re = await cli('reindex');
  t.is(re.code, 0, re.out);
  t.is((JSON.parse(re.out) as { reindexed: string[] }).reindexed.length, before.length);
  {
    const index = await RecorderIndex.open(dir);
    const after = [...index.segments.all('cam')].map((s) => ({ startMs: s.startMs, endMs: s.endMs, file: s.file, gops: decodeGops(s.gops), bytes: s.bytes }));
    await index.close();
    t.deepEqual(after, before);
  }
  t.is((await cli('check')).code, 0);
  await run('truncate', ['-s', '-100', join(dir, before[1]!.file)]);
  const bad = await cli('check');
  t.is(bad.code, 1);
  t.true(bad.out.includes(before[1]!.file));
});

test('pre-record: an event written after a held GOP starts at the last GOP that begins preSeconds before the event, wherever the event falls in a GOP', async (t) => {
  const a = await chunksOf(await tempDir(t), 'a.mp4', '160x120', 12); // init + 12 one-second GOPs
  const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
  // The event falls at several points of the GOP that is held when it arrives.
  for (const offsetMs of [0, 1, 300, 999, 1000]) {
    const dir = await tempDir(t);
    const index = await RecorderIndex.open(dir);
    t.teardown(() => index.close());
    let now = T0;
    let eventMs: number | null = null;
    const writer = new SegmentWriter(
      camera,
      {
        index,
        dataDir: dir,
        clock: { nowMs: () => now },
        log: silentLogger,
        segmentMs: 60_000,
        decide: (startMs) =>
          eventMs !== null && startMs >= eventMs ? { write: true, type: 'motion', preMs: 0, sinceMs: eventMs } : { write: false, type: 'event', preMs: 3000 },
      },
      null,
    );
    let held = 0;
    for (const c of a) {
      if (c.kind === 'fragment') now += 1000;
      await writer.handle(c);
      if (c.kind !== 'fragment') continue;
      // After the 8th GOP is held, the event comes inside that GOP (or at its end).
      if (++held === 8) eventMs = writer.lastSeenEndMs! - 1000 + offsetMs;
    }
    await writer.close();
    const segs = [...index.segments.all('cam')];
    t.is(segs.length, 1);
    const from = segs[0]!.startMs;
    const want = eventMs! - 3000;
    t.true(from <= want && want - from < 1000, `event +${offsetMs} ms into its GOP: clip starts ${want - from} ms before event − 3 s`);
  }
});
