/**
 * End to end through the real interfaces: a GStreamer RTSP camera, ffmpeg ingest,
 * segment files, LMDB, HTTP download, NATS control. How each claim is tried is in the
 * test's name and its comments.
 */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { SimCamera } from '../sim/camera.ts';
import { RecorderIndex } from '../index/db.ts';
import { decodeErrors, ffprobe } from './helpers/media.ts';
import { readClockSeconds, secondsOfDayUtc, clockDiffSeconds } from './helpers/ocr.ts';
import { getJson, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';

const run = promisify(execFile);
const GOP_SEC = 2; // the sim camera's key-int-max 50 at 25 fps

interface SearchBody {
  spans: { from: string; to: string; types: { type: string }[] }[];
  gaps: { from: string; to: string; state: string }[];
}

async function searchHttp(n: TestNode, camera: string, fromMs: number, toMs: number): Promise<SearchBody> {
  const q = new URLSearchParams({ camera, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() });
  const { status, body } = await getJson<SearchBody>(`${n.http}/api/recordings?${q.toString()}`);
  if (status !== 200) throw new Error(`search ${status}: ${JSON.stringify(body)}`);
  return body;
}

async function download(n: TestNode, camera: string, fromMs: number, toMs: number, dir: string): Promise<{ file: string; headers: Headers; bytes: Buffer }> {
  const q = new URLSearchParams({ from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() });
  const res = await fetch(`${n.http}/api/cameras/${camera}/video.mp4?${q.toString()}`);
  if (res.status !== 200) throw new Error(`download ${res.status}: ${await res.text()}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  const file = join(dir, `${camera}-${fromMs}.mp4`);
  await writeFile(file, bytes);
  return { file, headers: res.headers, bytes };
}

for (const [mount, codecs] of [
  ['h264aac', ['h264', 'aac']],
  ['h265aac', ['hevc', 'aac']],
] as const) {
  test(`records the ${mount} camera and downloads exactly [t+3 s, t+13 s) with the right codecs and clock`, async (t) => {
    const sim = await SimCamera.start();
    t.teardown(() => sim.stop());
    const n = await startNode(t);
    const dir = await tempDir(t);
    const put = await n.request('rec.v1.camera.put', { id: 'cam1', name: mount, streams: { main: sim.url(mount) } });
    t.true(put.ok, JSON.stringify(put));

    // Wait for ~18 s of continuous video.
    const t0 = Date.now() - 5000;
    const span = await waitFor(
      '18 s of video',
      async () => {
        const r = await searchHttp(n, 'cam1', t0, Date.now() + 60_000);
        // Any span: an attempt cut short leaves a short span before the one that grows.
        return r.spans.find((s) => Date.parse(s.to) - Date.parse(s.from) >= 18_000) ?? null;
      },
      60_000,
      1000,
    );
    t.is(span.types[0]?.type, 'timing');

    const fromMs = Date.parse(span.from) + 3000;
    const toMs = fromMs + 10_000;
    const { file, headers, bytes } = await download(n, 'cam1', fromMs, toMs, dir);
    t.is(Number(headers.get('content-length')), bytes.length);
    t.is(headers.get('accept-ranges'), 'bytes');
    const servedFrom = Date.parse(headers.get('x-recording-from')!);
    const servedTo = Date.parse(headers.get('x-recording-to')!);
    // GOP-aligned: starts at the GOP holding `from`, ends with the GOP holding `to`.
    t.true(servedFrom <= fromMs && fromMs - servedFrom <= GOP_SEC * 1000 + 200, `served from ${servedFrom - fromMs} ms`);
    t.true(servedTo >= toMs && servedTo - toMs <= GOP_SEC * 1000 + 200, `served to ${servedTo - toMs} ms`);

    const probe = await ffprobe(file, true);
    t.deepEqual([...probe.codecs].sort(), [...codecs].sort());
    // The GOPs are served whole, but the edit lists present exactly [from, to).
    t.true(Math.abs(probe.durationSec - 10) < 0.2, `ffprobe duration ${probe.durationSec}, presented range 10 s`);
    t.is(await decodeErrors(file), '');

    // The camera burns the wall clock into the picture: the first frame shows `from`.
    const shown = await readClockSeconds(file, 0);
    t.not(shown, null, 'clock overlay readable');
    const diff = clockDiffSeconds(shown!, secondsOfDayUtc(fromMs));
    t.true(Math.abs(diff) <= GOP_SEC + 1, `overlay ${shown} vs from ${secondsOfDayUtc(fromMs)} (${diff} s)`);

    // The I-frame at `from` as JPEG: the GOP's first picture, clock and size right.
    const frameRes = await fetch(`${n.http}/api/cameras/cam1/frame.jpg?at=${fromMs}`);
    t.is(frameRes.status, 200);
    t.is(frameRes.headers.get('content-type'), 'image/jpeg');
    const frameAt = Date.parse(frameRes.headers.get('x-frame-time')!);
    t.is(frameAt, servedFrom, 'the I-frame that starts the GOP holding `from`');
    const jpeg = join(dir, 'frame.jpg');
    await writeFile(jpeg, Buffer.from(await frameRes.arrayBuffer()));
    t.deepEqual((await ffprobe(jpeg)).codecs, ['mjpeg']);
    const frameClock = await readClockSeconds(jpeg, 0);
    t.true(frameClock !== null && Math.abs(clockDiffSeconds(frameClock, secondsOfDayUtc(frameAt))) <= 1, `frame clock ${frameClock}`);
    const thumb = await fetch(`${n.http}/api/cameras/cam1/frame.jpg?at=${fromMs}&width=160`);
    const thumbFile = join(dir, 'thumb.jpg');
    await writeFile(thumbFile, Buffer.from(await thumb.arrayBuffer()));
    t.is((await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=width,height', '-of', 'csv=p=0', thumbFile])).stdout.trim(), '160,120');
    // A thumbnail strip over the download range: distinct GOPs, each URL a JPEG.
    const strip = await getJson<{ thumbnails: { at: string; url: string }[] }>(
      `${n.http}/api/cameras/cam1/thumbnails?from=${fromMs}&to=${toMs}&count=20&width=80`,
    );
    t.is(strip.status, 200);
    const ats = strip.body.thumbnails.map((x) => Date.parse(x.at));
    t.true(ats.length >= 5 && ats.length <= 7, `${ats.length} thumbnails for 10 s of 2 s GOPs`);
    t.deepEqual(
      ats,
      [...new Set(ats)].sort((a, b) => a - b),
      'distinct and in time order',
    );
    const first = await fetch(`${n.http}${strip.body.thumbnails[0]!.url}`);
    t.is(first.headers.get('content-type'), 'image/jpeg');
    await first.arrayBuffer();
    t.is((await getJson(`${n.http}/api/cameras/cam1/thumbnails?from=${fromMs}&to=${toMs}&count=0`)).status, 400);
    t.is((await fetch(`${n.http}/api/cameras/cam1/frame.jpg?at=2020-01-01T00:00:00Z`)).status, 404);
    t.is((await fetch(`${n.http}/api/cameras/cam1/frame.jpg?at=noon`)).status, 400);
    t.is((await fetch(`${n.http}/api/cameras/cam1/frame.jpg?at=${fromMs}&width=5`)).status, 400);

    // Same request, same bytes (a resumed download must match).
    const again = await download(n, 'cam1', fromMs, toMs, dir);
    t.true(again.bytes.equals(bytes));

    // Every segment file on disk is a valid MP4 by itself (invariant 1).
    await n.node.stop();
    const index = await RecorderIndex.open(n.dataDir);
    t.teardown(() => index.close());
    const segs = [...index.segments.all('cam1')];
    t.true(segs.length >= 3, `${segs.length} segments of 6 s`);
    for (const seg of segs) {
      const p = await ffprobe(join(n.dataDir, seg.file));
      t.deepEqual([...p.codecs].sort(), [...codecs].sort(), seg.file);
      t.true(p.durationSec > 0.5, `${seg.file} ${p.durationSec}`);
      t.false(seg.open);
    }
  });
}
