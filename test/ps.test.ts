/**
 * MPEG-PS recording end to end (issue "MPEG-PS segments"): a real GStreamer RTSP
 * camera, ffmpeg ingest, `record.format: "ps"`, LMDB, real HTTP. PS segments pass
 * ffprobe with the right codecs, duration and frame count; the same range downloaded
 * as MP4 (both variants), played through /play, read over HLS and downloaded as PS has
 * the same decoded pictures; video.ps also serves an MP4 recording; frame.jpg works on
 * PS; an MP2P (PS over RTP) camera records.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PS_OUTPUT_VERSION } from '../playback/ps-range.ts';
import { RecorderIndex } from '../index/db.ts';
import { demuxPs } from '../media/ps/ps-demux.ts';
import { SimCamera } from '../sim/camera.ts';
import { decodeErrors } from './helpers/media.ts';
import { getJson, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';
import { readFile } from 'node:fs/promises';

const run = promisify(execFile);
const FPS = 25;

interface SearchBody {
  spans: { from: string; to: string }[];
}

async function fetchTo(url: string, file: string): Promise<Response> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  await writeFile(file, Buffer.from(await res.arrayBuffer()));
  return res;
}

/** Per video frame, the md5 of the decoded picture (order of decoding output). */
async function pictures(file: string, extra: string[] = []): Promise<string[]> {
  const { stdout } = await run('ffmpeg', ['-v', 'error', ...extra, '-i', file, '-map', '0:v', '-f', 'framemd5', '-'], { maxBuffer: 64 << 20 });
  return stdout
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(',').pop()!.trim());
}

async function streams(file: string): Promise<{ codec_name: string; nb_read_packets?: string }[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-count_packets', '-show_entries', 'stream=codec_name,nb_read_packets', '-of', 'json', file]);
  return (JSON.parse(stdout) as { streams: { codec_name: string; nb_read_packets?: string }[] }).streams;
}

/**
 * The frames a file's video timestamps place on the FPS grid (consecutive frames
 * one grid step apart count one each; a hole of n steps counts as n-1 frames the
 * camera dropped; frames on the same step count once).
 */
/**
 * The frames of a file on the 25 fps grid of its own timestamps, and the frames missing
 * from that grid. `connectSec`: in a segment that starts a recording (a connect), holes
 * in its first second are ffmpeg re-basing the video at the camera's first RTCP report
 * (a known limit, docs/cameras.md) and are counted apart as `steps`.
 */
async function gridFrames(file: string, connectSec: number): Promise<{ frames: number; dropped: number; holes: string[]; steps: string[] }> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time', '-of', 'csv=p=0', file], {
    maxBuffer: 16 << 20,
  });
  const pts = stdout
    .trim()
    .split('\n')
    .map(Number)
    .filter(Number.isFinite)
    .sort((a, b) => a - b);
  let frames = pts.length ? 1 : 0;
  let dropped = 0;
  const holes: string[] = [];
  const rebased: string[] = [];
  for (let i = 1; i < pts.length; i++) {
    const steps = Math.round((pts[i]! - pts[i - 1]!) * FPS);
    if (steps >= 1) frames++;
    if (steps <= 1) continue;
    const what = `${pts[i - 1]!.toFixed(3)}→${pts[i]!.toFixed(3)} s (frame ${i} of ${pts.length})`;
    if (pts[i - 1]! - pts[0]! < connectSec) rebased.push(what);
    else {
      dropped += steps - 1;
      holes.push(what);
    }
  }
  return { frames, dropped, holes, steps: rebased };
}

async function durationSec(file: string): Promise<number> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time,duration_time', '-of', 'csv=p=0', file], {
    maxBuffer: 16 << 20,
  });
  const pts = stdout
    .trim()
    .split('\n')
    .map((l) => Number(l.split(',')[0]))
    .filter(Number.isFinite);
  return Math.max(...pts) - Math.min(...pts) + 1 / FPS;
}

/** How many video frames of `file` are presented less than `sec` after its first. */
async function framesPresentedBefore(file: string, sec: number): Promise<number> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time', '-of', 'csv=p=0', file], {
    maxBuffer: 16 << 20,
  });
  const pts = stdout.trim().split('\n').map(Number).filter(Number.isFinite);
  const first = Math.min(...pts);
  return pts.filter((p) => p - first < sec - 1e-6).length;
}

/**
 * The first span of at least `ms` of continuous video. Not only the first span: an
 * attempt cut short on a loaded machine (a stall, a refused DESCRIBE) leaves a short
 * span before the one that grows. A timeout says what was recorded and the state.
 */
async function waitSpan(n: TestNode, camera: string, ms: number): Promise<{ fromMs: number; toMs: number }> {
  const t0 = Date.now() - 5000;
  let seen: SearchBody['spans'] = [];
  try {
    return await waitFor(
      `${ms} ms of ${camera}`,
      async () => {
        const q = new URLSearchParams({ camera, from: new Date(t0).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
        const { body } = await getJson<SearchBody>(`${n.http}/api/recordings?${q.toString()}`);
        seen = body.spans;
        const s = body.spans.find((x) => Date.parse(x.to) - Date.parse(x.from) >= ms);
        return s ? { fromMs: Date.parse(s.from), toMs: Date.parse(s.to) } : null;
      },
      90_000,
      1000,
    );
  } catch (err) {
    const cam = await getJson<{ camera: { status: string; lastError?: string } }>(`${n.http}/api/cameras/${camera}`);
    throw new Error(`${(err as Error).message}; spans ${JSON.stringify(seen.map((x) => [x.from, x.to]))}; camera ${JSON.stringify(cam.body.camera)}`);
  }
}

for (const [mount, videoCodec] of [
  ['h264aac', 'h264'],
  ['h265aac', 'hevc'],
] as const) {
  test(`PS recording of the ${mount} camera (${mount === 'h265aac' ? 'pool' : 'camera'} format "ps"): segments pass ffprobe; MP4, /play and PS of one range have the same frames`, async (t) => {
    const sim = await SimCamera.start({ reportHoles: true });
    t.teardown(() => sim.stop());
    const n = await startNode(t);
    const dir = await tempDir(t);
    // H.264: the camera says `format: "ps"`; H.265: its pool does (the camera sets none).
    if (mount === 'h265aac') t.true((await n.request('rec.v1.pool.put', { id: 'gb', capacityBytes: null, overwrite: 'capacity', format: 'ps' })).ok);
    const put = await n.request<{ camera: { record: { format?: string } } }>(
      'rec.v1.camera.put',
      mount === 'h265aac'
        ? { id: 'ps1', pool: 'gb', streams: { main: sim.url(mount) } }
        : { id: 'ps1', streams: { main: sim.url(mount) }, record: { format: 'ps' } },
    );
    t.true(put.ok, JSON.stringify(put));
    // The same camera recorded as MP4 too (GStreamer shares one encoder): video.ps of an MP4 recording.
    if (mount === 'h264aac') t.true((await n.request('rec.v1.camera.put', { id: 'mp4cam', streams: { main: sim.url(mount) } })).ok);

    const span = await waitSpan(n, 'ps1', 15_000);
    const fromMs = span.fromMs + 2500;
    const toMs = fromMs + 8000;
    const q = `from=${fromMs}&to=${toMs}`;

    // The same range four ways.
    const psFile = join(dir, 'range.ps');
    const psRes = await fetchTo(`${n.http}/api/cameras/ps1/video.ps?${q}`, psFile);
    t.is(psRes.headers.get('content-type'), 'video/MP2P');
    const fmp4File = join(dir, 'range-f.mp4');
    const fRes = await fetchTo(`${n.http}/api/cameras/ps1/video.mp4?${q}&format=fmp4`, fmp4File);
    const mp4File = join(dir, 'range.mp4');
    await fetchTo(`${n.http}/api/cameras/ps1/video.mp4?${q}`, mp4File);
    const playFile = join(dir, 'play.mp4');
    await fetchTo(`${n.http}/api/cameras/ps1/play?${q}`, playFile);
    t.is(psRes.headers.get('x-recording-from'), fRes.headers.get('x-recording-from'), 'both GOP-aligned the same way');

    const want = await pictures(fmp4File);
    t.true(want.length >= 8 * FPS, `${want.length} frames in the MP4`);
    t.deepEqual(await pictures(psFile), want, 'video.ps has the same frames');
    t.deepEqual(await pictures(playFile), want, '/play has the same frames');
    // The progressive variant cuts presentation to [from, to) with edit lists and leaves
    // out the samples presented at or after `to` (players ignore the edit list's end):
    // its samples are the ones of the GOP-aligned range presented before `to`.
    const recFromMs = Date.parse(fRes.headers.get('x-recording-from')!);
    const beforeTo = await framesPresentedBefore(fmp4File, (toMs - recFromMs) / 1000);
    t.true(beforeTo > want.length - 2 * FPS && beforeTo <= want.length, `${beforeTo} of ${want.length} frames before \`to\``);
    t.deepEqual(await pictures(mp4File, ['-ignore_editlist', '1']), want.slice(0, beforeTo), 'progressive video.mp4 has the same frames up to `to`');
    for (const f of [psFile, fmp4File])
      t.deepEqual(
        (await streams(f)).map((s) => s.codec_name),
        [videoCodec, 'aac'],
        f,
      );
    // PS adds no decode error of its own: whatever ffmpeg says about the PS it says about
    // the MP4 of the same range (a camera starved of CPU by a loaded host may send broken
    // slices; those show up in both).
    const errorLines = async (f: string) =>
      new Set(
        (await decodeErrors(f))
          .split('\n')
          .filter(Boolean)
          .map((l) => l.replace(/ @ 0x[0-9a-f]+/g, '')),
      );
    const mp4Errors = await errorLines(fmp4File);
    t.deepEqual(
      [...(await errorLines(psFile))].filter((l) => !mp4Errors.has(l)),
      [],
      'decode errors only the PS has',
    );
    const psFrames = demuxPs(await readFile(psFile)).tracks.find((x) => x.streamId === 0xe0)!.samples.length;
    t.is(psFrames, want.length);

    // frame.jpg decodes the I-frame of a PS GOP.
    const jpg = await fetch(`${n.http}/api/cameras/ps1/frame.jpg?at=${fromMs}&width=160`);
    t.is(jpg.status, 200);
    t.is(jpg.headers.get('content-type'), 'image/jpeg');
    t.true(
      Buffer.from(await jpg.arrayBuffer())
        .subarray(0, 2)
        .equals(Buffer.from([0xff, 0xd8])),
    );

    // video.ps: exact length, strong ETag, same bytes every time, Range/If-Range resume; stream=1 gives the same bytes.
    if (mount === 'h264aac') {
      const whole = await readFile(psFile);
      t.is(Number(psRes.headers.get('content-length')), whole.length);
      t.is(psRes.headers.get('accept-ranges'), 'bytes');
      const etag = psRes.headers.get('etag')!;
      t.regex(etag, new RegExp(`^"psv${PS_OUTPUT_VERSION}-[0-9a-f]{32}"$`));
      const part = await fetch(`${n.http}/api/cameras/ps1/video.ps?${q}`, { headers: { Range: 'bytes=1000-70000', 'If-Range': etag } });
      t.is(part.status, 206);
      t.is(part.headers.get('content-range'), `bytes 1000-70000/${whole.length}`);
      t.true(Buffer.from(await part.arrayBuffer()).equals(whole.subarray(1000, 70001)), 'a resumed part is the same bytes');
      const tail = await fetch(`${n.http}/api/cameras/ps1/video.ps?${q}`, { headers: { Range: 'bytes=-5000' } });
      t.true(Buffer.from(await tail.arrayBuffer()).equals(whole.subarray(whole.length - 5000)));
      const stale = await fetch(`${n.http}/api/cameras/ps1/video.ps?${q}`, { headers: { Range: 'bytes=0-99', 'If-Range': '"psv1-other"' } });
      t.is(stale.status, 200, 'If-Range with another ETag: the whole body');
      await stale.arrayBuffer();
      const beyond = await fetch(`${n.http}/api/cameras/ps1/video.ps?${q}`, { headers: { Range: `bytes=${whole.length}-` } });
      t.is(beyond.status, 416);
      t.is(beyond.headers.get('content-range'), `bytes */${whole.length}`);
      const streamed = await fetch(`${n.http}/api/cameras/ps1/video.ps?${q}&stream=1`);
      t.is(streamed.headers.get('accept-ranges'), 'none');
      t.is(streamed.headers.get('content-length'), null);
      t.true(Buffer.from(await streamed.arrayBuffer()).equals(whole), 'streamed and planned bodies are the same bytes');
    }

    // HLS: the playlist's byte ranges into a .ps segment read as fMP4; ffmpeg's HLS client decodes them.
    if (mount === 'h264aac') {
      // Trick play over PS: I-frames only, one per GOP.
      const trick = join(dir, 'iframes.mp4');
      await fetchTo(`${n.http}/api/cameras/ps1/play?${q}&iframes=1`, trick);
      const iframes = await pictures(trick);
      t.true(iframes.length >= 4 && iframes.length <= 6, `${iframes.length} I-frames over 8 s of 2 s GOPs`);
      t.true(want.includes(iframes[0]!), 'the first I-frame is the first picture of the range');
      const hls = join(dir, 'hls.mp4');
      await run('ffmpeg', ['-v', 'error', '-i', `${n.http}/api/cameras/ps1/video.m3u8?${q}`, '-map', '0:v', '-c', 'copy', '-f', 'mp4', '-y', hls]);
      t.deepEqual(await pictures(hls), want, 'HLS over PS segments has the same frames');
    }

    // video.ps serves an MP4 recording too, with the same frames as its MP4 download.
    if (mount === 'h264aac') {
      const other = await waitSpan(n, 'mp4cam', 12_000);
      const q2 = `from=${other.fromMs + 1000}&to=${other.fromMs + 7000}`;
      const a = join(dir, 'mp4cam.ps');
      const b = join(dir, 'mp4cam.mp4');
      await fetchTo(`${n.http}/api/cameras/mp4cam/video.ps?${q2}`, a);
      await fetchTo(`${n.http}/api/cameras/mp4cam/video.mp4?${q2}&format=fmp4`, b);
      t.deepEqual(
        (await streams(a)).map((s) => s.codec_name),
        ['h264', 'aac'],
      );
      t.deepEqual(await pictures(a), await pictures(b));
    }

    // Bad input: typed errors.
    t.is((await fetch(`${n.http}/api/cameras/ps1/video.ps?from=noon&to=${toMs}`)).status, 400);
    t.is((await fetch(`${n.http}/api/cameras/ps1/video.ps?from=${toMs}&to=${fromMs}`)).status, 400);
    const none = await getJson<{ error: { code: string } }>(`${n.http}/api/cameras/ps1/video.ps?from=2020-01-01T00:00:00Z&to=2020-01-01T00:01:00Z`);
    t.is(none.status, 404);
    t.is(none.body.error.code, 'NO_VIDEO');
    t.is((await fetch(`${n.http}/api/cameras/nope/video.ps?${q}`)).status, 404);
    const bad = await n.request('rec.v1.camera.put', { id: 'ps2', streams: { main: sim.url(mount) }, record: { format: 'ts' } });
    t.false(bad.ok);
    t.is(bad.error?.code, 'VALIDATION_FAILED');

    // Every .ps segment stands alone: ffprobe codecs, duration and frame count.
    await n.node.stop();
    const index = await RecorderIndex.open(n.dataDir);
    t.teardown(() => index.close());
    const segs = [...index.segments.all('ps1')];
    t.true(segs.length >= 2, `${segs.length} segments of 6 s`);
    /** Frames missing on the 25 fps grid of the segments' own timestamps. */
    let holes = 0;
    const where: string[] = [];
    for (const [i, seg] of segs.entries()) {
      t.regex(seg.file, /\.ps$/);
      t.false(seg.open);
      const file = join(n.dataDir, seg.file);
      const s = await streams(file);
      t.deepEqual(
        s.map((x) => x.codec_name),
        [videoCodec, 'aac'],
        seg.file,
      );
      const frames = Number(s[0]!.nb_read_packets);
      const sec = (seg.endMs - seg.startMs) / 1000;
      // Each frame on the 25 fps grid of its own timestamps: a camera starved of CPU
      // drops frames (a hole in its timestamps, not ours to fill), but frames squashed
      // onto the same instant (the old '207 frames in 7.999 s') or lost by us show.
      const startsRecording = i === 0 || seg.startMs > segs[i - 1]!.endMs + 100;
      const grid = await gridFrames(file, startsRecording ? 1 : 0);
      if (grid.steps.length > 0) t.log(`${seg.file}: timestamps re-based after the connect: ${grid.steps.join('; ')}`);
      t.true(Math.abs(frames - grid.frames) <= 2, `${seg.file}: ${frames} frames where its timestamps hold ${grid.frames} (${sec} s)`);
      t.true(grid.frames <= sec * FPS + 2, `${seg.file}: ${grid.frames} frames on the grid in ${sec} s`);
      holes += grid.dropped;
      where.push(...grid.holes.map((h) => `${seg.file}: ${h}`));
      t.true(Math.abs((await durationSec(file)) - sec) < 0.2, `${seg.file}: ffprobe duration vs index ${sec}`);
      const d = demuxPs(await readFile(file));
      t.true(d.startsWithPack && d.psmFirst, 'pack header and PSM first');
      t.is(d.tracks.find((x) => x.streamId === 0xe0)!.samples.length, frames);
    }
    // Holes in the recording are the camera's own (its encoder starved of CPU, which it
    // reports) and never more: a frame lost between the camera and the file fails here.
    t.true(holes <= sim.framesDropped(mount), `${holes} frames missing from the segments; the camera dropped ${sim.framesDropped(mount)}: ${where.join('; ')}`);
    if (holes > 0) t.log(`the camera dropped ${sim.framesDropped(mount)} frames; the segments miss ${holes}`);
  });
}

test('a GB28181-style camera sending MPEG-PS over RTP (MP2P/90000) records: segments, MP4 and PS downloads with every frame; it goes away and comes back', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  const dir = await tempDir(t);
  const put = await n.request('rec.v1.camera.put', { id: 'gb1', streams: { main: sim.url('h264ps') }, record: { format: 'ps' } });
  t.true(put.ok, JSON.stringify(put));
  const span = await waitSpan(n, 'gb1', 12_000);
  const q = `from=${span.fromMs + 1000}&to=${span.fromMs + 9000}`;
  const mp4 = join(dir, 'gb.mp4');
  const ps = join(dir, 'gb.ps');
  const res = await fetchTo(`${n.http}/api/cameras/gb1/video.mp4?${q}&format=fmp4`, mp4);
  await fetchTo(`${n.http}/api/cameras/gb1/video.ps?${q}`, ps);
  const seconds = (Date.parse(res.headers.get('x-recording-to')!) - Date.parse(res.headers.get('x-recording-from')!)) / 1000;
  const want = await pictures(mp4);
  t.true(Math.abs(want.length - seconds * FPS) <= 2, `${want.length} frames in ${seconds} s`);
  t.deepEqual(await pictures(ps), want);
  t.deepEqual(
    (await streams(mp4)).map((s) => s.codec_name),
    ['h264'],
  );
  t.is(await decodeErrors(mp4), '');

  // The camera goes away and comes back: the bridge fails the session (backoff), the
  // next attempt bridges again and recording resumes.
  const state = async () => (await getJson<{ camera: { status: string } }>(`${n.http}/api/cameras/gb1`)).body.camera.status;
  await sim.stop();
  await waitFor('backoff', async () => (await state()) === 'backoff', 30_000);
  await sim.restart();
  await waitFor(
    'recording again',
    async () => {
      const q2 = new URLSearchParams({ camera: 'gb1', from: new Date(span.fromMs).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
      const { body } = await getJson<SearchBody>(`${n.http}/api/recordings?${q2.toString()}`);
      const last = body.spans[body.spans.length - 1];
      return body.spans.length >= 2 && last && Date.parse(last.to) - Date.parse(last.from) >= 4000;
    },
    90_000,
    1000,
  );
  await n.node.stop();
  const index = await RecorderIndex.open(n.dataDir);
  t.teardown(() => index.close());
  for (const seg of [...index.segments.all('gb1')]) {
    const s = await streams(join(n.dataDir, seg.file));
    t.deepEqual(
      s.map((x) => x.codec_name),
      ['h264'],
      seg.file,
    );
    t.true(Math.abs(Number(s[0]!.nb_read_packets) - ((seg.endMs - seg.startMs) / 1000) * FPS) <= 2, seg.file);
  }
});
