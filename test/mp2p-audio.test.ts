/**
 * G.711 of MP2P cameras (GB28181 / Hikvision MPEG-PS over RTP), issue 12: audio that
 * cannot be stored as it is never costs the video and is kept in a form players use.
 * End to end: sim/mp2p.py's H.264 + G.711 A-law camera, our MP2P ingest, the recorder's
 * ffmpeg encoder for AAC, LMDB, real HTTP and WebSocket.
 *
 * - Recorded as MP4: H.264 + AAC made from the G.711 (status `stored: "aac"` from
 *   `pcm_alaw`), the download's audio as long as its video (within 0.2 s) and starting
 *   with it (within 0.3 s), decoding cleanly; /play offers it to MSE with both tracks. The encoder
 *   killed: the video goes on, audio left out with the reason in the status.
 * - Recorded as PS: the PS download keeps the G.711; /play, a WebSocket playback
 *   session and live view send video only (`avc1` alone, which Chromium's MSE takes;
 *   `X-Audio-Left-Out: alaw`).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { liveChildCount } from '../lib/child-process.ts';
import { demuxPs } from '../media/ps/ps-demux.ts';
import { SimMp2pCamera } from '../sim/mp2p-camera.ts';
import { decodeErrors } from './helpers/media.ts';
import { getJson, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';

const run = promisify(execFile);

interface AudioView {
  source: string | null;
  stored: string;
  reason?: string;
}

async function cameraAudio(n: TestNode, id: string): Promise<{ status: string; audio: AudioView | null }> {
  const { body } = await getJson<{ camera: { status: string; audio?: AudioView | null } }>(`${n.http}/api/cameras/${id}`);
  return { status: body.camera.status, audio: body.camera.audio ?? null };
}

/** The first span of `id` since `sinceMs` that lasts `ms`. */
async function span(n: TestNode, id: string, sinceMs: number, ms: number): Promise<{ fromMs: number; toMs: number }> {
  return waitFor(
    `${ms} ms of ${id}`,
    async () => {
      const q = new URLSearchParams({ camera: id, from: new Date(sinceMs).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
      const { body } = await getJson<{ spans: { from: string; to: string }[] }>(`${n.http}/api/recordings?${q.toString()}`);
      const s = body.spans.map((x) => ({ fromMs: Date.parse(x.from), toMs: Date.parse(x.to) })).find((x) => x.toMs - x.fromMs >= ms);
      return s ?? null;
    },
    120_000,
    500,
  );
}

async function fetchTo(url: string, file: string): Promise<Response> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  await writeFile(file, Buffer.from(await res.arrayBuffer()));
  return res;
}

interface StreamProbe {
  codec: string;
  start: number;
  duration: number;
}

async function streams(file: string): Promise<StreamProbe[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name,start_time,duration', '-of', 'json', file]);
  const j = JSON.parse(stdout) as { streams: { codec_name: string; start_time?: string; duration?: string }[] };
  return j.streams.map((s) => ({ codec: s.codec_name, start: Number(s.start_time ?? NaN), duration: Number(s.duration ?? NaN) }));
}

/** Process ids of this process's children whose command line has every word of `words`. */
async function childrenWith(words: string[]): Promise<number[]> {
  const { stdout } = await run('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)]);
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && words.every((w) => l.includes(w)))
    .map((l) => Number(l.split(/\s+/)[0]));
}

/** The first init message of a WebSocket (live view or playback session) and the binary init after it. */
function wsInit(url: string, first?: string): Promise<{ text: Record<string, unknown>; init: Buffer }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['recorder.v1']);
    let text: Record<string, unknown> | null = null;
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`${url}: no init in 30 s`));
    }, 30_000);
    ws.once('open', () => first && ws.send(first));
    ws.on('message', (data, isBinary) => {
      if (!isBinary) {
        const m = JSON.parse((data as Buffer).toString()) as Record<string, unknown>;
        if (m.type === 'init') text = m;
        return;
      }
      if (!text) return;
      clearTimeout(timer);
      ws.close();
      resolve({ text, init: data as Buffer });
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Chromium's MSE takes these: H.264 alone, or with AAC (no G.711 in MP4). */
const MSE_VIDEO_ONLY = /^video\/mp4; codecs="avc1\.[0-9a-f]{6}"$/;
const MSE_WITH_AAC = /^video\/mp4; codecs="avc1\.[0-9a-f]{6},mp4a\.40\.2"$/;

test.serial('MP2P G.711 camera recording MP4: stored as H.264 + AAC made from the G.711, in sync; the encoder killed, the video goes on', async (t) => {
  const sim = await SimMp2pCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  const dir = await tempDir(t);
  const sinceMs = Date.now() - 5000;
  const id = 'alaw-mp4';
  const put = await n.request('rec.v1.camera.put', { id, streams: { main: sim.url('h264alaw') }, record: { format: 'mp4' } });
  t.true(put.ok, JSON.stringify(put));

  const s = await span(n, id, sinceMs, 12_000);
  const cam = await cameraAudio(n, id);
  t.is(cam.status, 'recording');
  t.like(cam.audio, { source: 'pcm_alaw', stored: 'aac' }, JSON.stringify(cam.audio));
  t.regex(cam.audio?.reason ?? '', /G\.711.*AAC/);
  t.is(liveChildCount('ffmpeg', 'g711-aac'), 1, 'one encoder for the camera');

  // A range inside the span: H.264 + AAC, the audio as long as the video and with it.
  const q = `from=${s.fromMs + 2000}&to=${s.fromMs + 10_000}`;
  const mp4 = join(dir, 'alaw.mp4');
  await fetchTo(`${n.http}/api/cameras/${id}/video.mp4?${q}`, mp4);
  const [v, a, ...rest] = await streams(mp4);
  t.is(rest.length, 0);
  t.is(v?.codec, 'h264');
  t.is(a?.codec, 'aac');
  t.true(Math.abs(a!.duration - v!.duration) <= 0.2, `audio ${a!.duration} s, video ${v!.duration} s`);
  // A GOP's fragment carries the AAC of its G.711 the encoder had made (all but ~2 frames,
  // 256 ms): the range's audio starts (and ends) up to that much before its video.
  t.true(Math.abs(a!.start - v!.start) <= 0.3, `audio starts at ${a!.start} s, video at ${v!.start} s`);
  t.is(await decodeErrors(mp4), '', 'decodes without errors');

  // What a browser gets: both tracks, in codecs MSE takes.
  const play = await fetch(`${n.http}/api/cameras/${id}/play?${q}`);
  t.is(play.status, 200);
  t.regex(play.headers.get('content-type') ?? '', MSE_WITH_AAC);
  t.is(play.headers.get('x-audio-left-out'), null);
  await play.arrayBuffer();

  // The encoder dies: audio goes (with the reason), the video does not.
  const pids = await childrenWith(['ffmpeg', '-f alaw', 'pipe:0']);
  t.is(pids.length, 1, `the encoder's process: ${JSON.stringify(pids)}`);
  const killedAt = Date.now();
  process.kill(pids[0]!, 'SIGKILL');
  const after = await waitFor(
    'the status to say the audio is left out',
    async () => {
      const c = await cameraAudio(n, id);
      return c.audio?.stored === 'none' ? c : null;
    },
    30_000,
  );
  t.is(after.audio?.source, 'pcm_alaw');
  t.regex(after.audio?.reason ?? '', /AAC.*fail|stopped/i, JSON.stringify(after.audio));
  t.is(after.status, 'recording');
  // Video recorded well after the kill (any span: the new init without audio may start one).
  const later = await span(n, id, killedAt, 6000);
  t.true(later.toMs > killedAt + 6000);
  const tail = join(dir, 'after.mp4');
  await fetchTo(`${n.http}/api/cameras/${id}/video.mp4?from=${later.toMs - 5000}&to=${later.toMs}`, tail);
  t.deepEqual(
    (await streams(tail)).map((x) => x.codec),
    ['h264'],
  );
  t.is(await decodeErrors(tail), '', 'video after the encoder died decodes');

  await n.node.stop();
  await waitFor('no encoder left', () => liveChildCount('ffmpeg', 'g711-aac') === 0, 10_000);
});

test.serial('MP2P G.711 camera recording PS: the PS download keeps G.711; /play, playback sessions and live view give browsers video only', async (t) => {
  const sim = await SimMp2pCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  const dir = await tempDir(t);
  const sinceMs = Date.now() - 5000;
  const id = 'alaw-ps';
  const put = await n.request('rec.v1.camera.put', { id, streams: { main: sim.url('h264alaw') }, record: { format: 'ps' } });
  t.true(put.ok, JSON.stringify(put));

  const s = await span(n, id, sinceMs, 10_000);
  const cam = await cameraAudio(n, id);
  t.like(cam.audio, { source: 'pcm_alaw', stored: 'copy' }, JSON.stringify(cam.audio));
  t.is(liveChildCount('ffmpeg', 'g711-aac'), 0, 'no AAC encoder for a PS recording');
  const q = `from=${s.fromMs + 2000}&to=${s.fromMs + 8000}`;

  // The PS download: G.711 A-law as the camera sent it.
  const ps = join(dir, 'alaw.ps');
  await fetchTo(`${n.http}/api/cameras/${id}/video.ps?${q}`, ps);
  const d = demuxPs(await readFile(ps));
  t.is(d.tracks.find((x) => x.streamId === 0xe0)?.codec, 'h264');
  const g711 = d.tracks.find((x) => x.streamId === 0xc0);
  t.is(g711?.codec, 'g711a');
  const g711Seconds = g711!.samples.reduce((sum, x) => sum + x.data.length, 0) / 8000;
  t.true(g711Seconds > 5, `${g711Seconds} s of G.711 in video.ps`);

  // /play: video only, named in a header, in a form MSE takes; the stream plays.
  const playFile = join(dir, 'play.mp4');
  const play = await fetchTo(`${n.http}/api/cameras/${id}/play?${q}`, playFile);
  t.regex(play.headers.get('content-type') ?? '', MSE_VIDEO_ONLY);
  t.is(play.headers.get('x-audio-left-out'), 'alaw');
  const played = await streams(playFile);
  t.deepEqual(
    played.map((x) => x.codec),
    ['h264'],
  );
  t.true(played[0]!.duration > 5, `${played[0]!.duration} s played`);
  t.is(await decodeErrors(playFile), '', '/play decodes');

  // A WebSocket playback session (the web UI's recorded view).
  const session = await wsInit(`${n.http.replace('http', 'ws')}/api/cameras/${id}/playback`, JSON.stringify({ cmd: 'play', from: s.fromMs + 2000 }));
  t.regex(String(session.text.mimeType), MSE_VIDEO_ONLY);
  t.deepEqual(session.text.audioLeftOut, ['alaw']);
  t.false(session.init.includes(Buffer.from('alaw')), 'no alaw sample entry in the session init');

  // Live view.
  const live = await wsInit(`${n.http.replace('http', 'ws')}/api/cameras/${id}/live`);
  t.regex(String(live.text.mimeType), MSE_VIDEO_ONLY);
  t.false(live.init.includes(Buffer.from('alaw')), 'no alaw sample entry in the live init');

  // video.mp4 (a download, not for MSE) keeps the G.711 as it is recorded.
  const mp4 = join(dir, 'alaw-ps.mp4');
  await fetchTo(`${n.http}/api/cameras/${id}/video.mp4?${q}`, mp4);
  t.deepEqual(
    (await streams(mp4)).map((x) => x.codec),
    ['h264', 'pcm_alaw'],
  );
});
