/**
 * MP2P cameras (GB28181 / Hikvision MPEG-PS over RTP) with audio, end to end (issue 12
 * item 3): sim/mp2p.py's camera (its own PS writer), our RTSP bridge + PS reader +
 * fMP4 writer (no ffmpeg in ingest), LMDB, real HTTP. Variants: H.264 + AAC starting
 * at an I-frame, H.264 + G.711 A-law (PSM type 0x90), joined mid-GOP (no PSM before the
 * next I-frame), a 33-bit PTS wrap a few seconds in, and H.265 + AAC. Each is recorded
 * as MP4 and as PS segments; each must give one long span (no flapping), a download
 * that ffprobe reads with the video and the audio as decided (AAC kept; G.711 kept in
 * PS recordings, made AAC in MP4 ones, as the camera's status says), that
 * decodes without errors, with every frame and no hole (across the wrap too), and that
 * plays (`/play` and the HLS playlist decode with the video and the same audio; G.711
 * of a PS recording is left out of `/play`, which browsers play, and said so).
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RecorderIndex } from '../index/db.ts';
import { liveChildCount } from '../lib/child-process.ts';
import { demuxPs } from '../media/ps/ps-demux.ts';
import { SimMp2pCamera, WRAP_AFTER_SECONDS, type Mp2pMount } from '../sim/mp2p-camera.ts';
import { decodeErrors } from './helpers/media.ts';
import { checkPlays } from './helpers/play.ts';
import { getJson, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';

const run = promisify(execFile);
const FPS = 25;
/** Long enough to hold the wrap (WRAP_AFTER_SECONDS in) with seconds on both sides. */
const SPAN_MS = 15_000;

interface CameraView {
  status: string;
  lastError: string | null;
  audio?: { source: string | null; stored: string; reason?: string } | null;
}

async function camera(n: TestNode, id: string): Promise<CameraView> {
  return (await getJson<{ camera: CameraView }>(`${n.http}/api/cameras/${id}`)).body.camera;
}

/** The spans of `id` since `sinceMs`; waits until one lasts `ms`, says what there was if none does. */
async function waitSpan(
  n: TestNode,
  id: string,
  sinceMs: number,
  ms: number,
): Promise<{ spans: { fromMs: number; toMs: number }[]; span: { fromMs: number; toMs: number } }> {
  let seen: { fromMs: number; toMs: number }[] = [];
  try {
    return await waitFor(
      `${ms} ms of ${id}`,
      async () => {
        const q = new URLSearchParams({ camera: id, from: new Date(sinceMs).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
        const { body } = await getJson<{ spans: { from: string; to: string }[] }>(`${n.http}/api/recordings?${q.toString()}`);
        seen = body.spans.map((s) => ({ fromMs: Date.parse(s.from), toMs: Date.parse(s.to) }));
        const span = seen.find((s) => s.toMs - s.fromMs >= ms);
        return span ? { spans: seen, span } : null;
      },
      120_000,
      1000,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; spans ${JSON.stringify(seen.map((s) => s.toMs - s.fromMs))}; camera ${JSON.stringify(await camera(n, id))}`);
  }
}

async function fetchTo(url: string, file: string): Promise<Response> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  await writeFile(file, Buffer.from(await res.arrayBuffer()));
  return res;
}

async function codecs(file: string): Promise<string[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name', '-of', 'csv=p=0', file]);
  return stdout.split('\n').filter(Boolean);
}

/** Presentation times (s) of the video packets, in file order. */
async function videoPts(file: string): Promise<number[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time', '-of', 'csv=p=0', file], {
    maxBuffer: 16 << 20,
  });
  return stdout.split('\n').filter(Boolean).map(Number);
}

interface Variant {
  mount: Mp2pMount;
  what: string;
  video: 'h264' | 'hevc';
  /** What an MP4 / a PS recording's download carries besides the video. */
  audio: { mp4: string[]; ps: string[] };
  /** Camera status `audio.stored` for the MP4 / PS camera. */
  stored: { mp4: string; ps: string };
}

const VARIANTS: Variant[] = [
  { mount: 'h264aac', what: 'H.264 + AAC starting at an I-frame', video: 'h264', audio: { mp4: ['aac'], ps: ['aac'] }, stored: { mp4: 'copy', ps: 'copy' } },
  {
    mount: 'h264alaw',
    what: 'H.264 + G.711 A-law (PSM type 0x90)',
    video: 'h264',
    audio: { mp4: ['aac'], ps: ['pcm_alaw'] },
    stored: { mp4: 'aac', ps: 'copy' },
  },
  {
    mount: 'h264aac-midgop',
    what: 'H.264 + AAC joined mid-GOP (no PSM before the next I-frame)',
    video: 'h264',
    audio: { mp4: ['aac'], ps: ['aac'] },
    stored: { mp4: 'copy', ps: 'copy' },
  },
  {
    mount: 'h264aac-wrap',
    what: `H.264 + AAC whose PTS passes 2^33 ${WRAP_AFTER_SECONDS} s in`,
    video: 'h264',
    audio: { mp4: ['aac'], ps: ['aac'] },
    stored: { mp4: 'copy', ps: 'copy' },
  },
  { mount: 'h265aac', what: 'H.265 + AAC', video: 'hevc', audio: { mp4: ['aac'], ps: ['aac'] }, stored: { mp4: 'copy', ps: 'copy' } },
];

async function checkCamera(t: ExecutionContext, n: TestNode, dir: string, v: Variant, format: 'mp4' | 'ps', sinceMs: number): Promise<void> {
  const id = `${v.mount}-${format}`;
  const { spans, span } = await waitSpan(n, id, sinceMs, SPAN_MS);
  t.is(spans.length, 1, `${id}: one span, no flapping: ${JSON.stringify(spans.map((s) => s.toMs - s.fromMs))}`);
  const cam = await camera(n, id);
  t.is(cam.status, 'recording', id);
  t.is(cam.audio?.stored, v.stored[format], `${id}: audio ${JSON.stringify(cam.audio)}`);
  if (v.stored[format] === 'none') t.regex(cam.audio?.reason ?? '', /G\.711/, `${id}: the status says why`);

  // The range holds the wrap of the -wrap camera (it records from its first I-frame, ~0 s in).
  const fromMs = span.fromMs + 2000;
  const toMs = span.fromMs + 13_000;
  const q = `from=${fromMs}&to=${toMs}`;
  const mp4 = join(dir, `${id}.mp4`);
  await fetchTo(`${n.http}/api/cameras/${id}/video.mp4?${q}`, mp4);
  t.deepEqual(await codecs(mp4), [v.video, ...v.audio[format]], `${id}: video.mp4 tracks`);
  t.is(await decodeErrors(mp4), '', `${id}: video.mp4 decodes`);

  // Every frame, no hole: the fragmented variant is GOP-aligned, its headers say the range.
  const frag = join(dir, `${id}-f.mp4`);
  const res = await fetchTo(`${n.http}/api/cameras/${id}/video.mp4?${q}&format=fmp4`, frag);
  const seconds = (Date.parse(res.headers.get('x-recording-to')!) - Date.parse(res.headers.get('x-recording-from')!)) / 1000;
  const pts = (await videoPts(frag)).sort((a, b) => a - b);
  t.true(Math.abs(pts.length - seconds * FPS) <= 2, `${id}: ${pts.length} frames in ${seconds} s`);
  const steps = pts.slice(1).map((p, i) => p - pts[i]!);
  t.true(Math.max(...steps) < 1.5 / FPS, `${id}: largest step between frames ${Math.max(...steps)} s`);
  t.is(await decodeErrors(frag), '', `${id}: fragmented video.mp4 decodes`);

  // Plays (/play and HLS; a PS recording is read as the fMP4 it converts to, G.711 kept).
  await checkPlays(t, n.http, id, fromMs, toMs, dir, { video: v.video, audio: v.audio[format][0] ?? null });

  if (format === 'ps') {
    const ps = join(dir, `${id}.ps`);
    await fetchTo(`${n.http}/api/cameras/${id}/video.ps?${q}`, ps);
    const d = demuxPs(await readFile(ps));
    const video = d.tracks.find((x) => x.streamId === 0xe0)!;
    t.is(video.codec, v.video === 'hevc' ? 'h265' : 'h264');
    t.is(d.tracks.find((x) => x.streamId === 0xc0)?.codec, v.audio.ps[0] === 'pcm_alaw' ? 'g711a' : 'aac', `${id}: video.ps audio`);
    t.true(Math.abs(video.samples.length - seconds * FPS) <= 2, `${id}: ${video.samples.length} frames in video.ps`);
  }
}

/** Two variants at a time: each runs two encoders and a recorder on a shared 2-core box. */
let running = 0;
const waiting: (() => void)[] = [];
async function slot(t: ExecutionContext): Promise<void> {
  while (running >= 2) await new Promise<void>((r) => waiting.push(r));
  running++;
  t.teardown(() => {
    running--;
    waiting.shift()?.();
  });
}

for (const v of VARIANTS) {
  test(`MP2P ${v.what}: recorded as MP4 and as PS, one long span, downloads and plays with the video and the audio as decided, every frame`, async (t) => {
    await slot(t);
    const sim = await SimMp2pCamera.start();
    t.teardown(() => sim.stop());
    const n = await startNode(t);
    const dir = await tempDir(t);
    const sinceMs = Date.now() - 5000;
    for (const format of ['mp4', 'ps'] as const) {
      const put = await n.request('rec.v1.camera.put', { id: `${v.mount}-${format}`, streams: { main: sim.url(v.mount) }, record: { format } });
      t.true(put.ok, JSON.stringify(put));
    }
    await Promise.all((['mp4', 'ps'] as const).map((f) => checkCamera(t, n, dir, v, f, sinceMs)));

    // Stored segments: PS files read back with both streams; every file is whole.
    await n.node.stop();
    await waitFor('no ingest child left', () => liveChildCount('ffmpeg', 'ingest') === 0, 10_000);
    const index = await RecorderIndex.open(n.dataDir);
    t.teardown(() => index.close());
    for (const seg of [...index.segments.all(`${v.mount}-ps`)]) {
      const d = demuxPs(await readFile(join(n.dataDir, seg.file)));
      t.true(d.startsWithPack && d.psmFirst, seg.file);
      t.is(d.tracks.find((x) => x.streamId === 0xe0)?.codec, v.video === 'hevc' ? 'h265' : 'h264', seg.file);
      t.is(d.tracks.find((x) => x.streamId === 0xc0)?.codec, v.audio.ps[0] === 'pcm_alaw' ? 'g711a' : 'aac', seg.file);
    }
    for (const seg of [...index.segments.all(`${v.mount}-mp4`)]) {
      t.deepEqual(await codecs(join(n.dataDir, seg.file)), [v.video, ...v.audio.mp4], seg.file);
    }
  });
}
