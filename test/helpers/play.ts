/**
 * Plays a recorded range the ways players do (issue 12: every camera kind must *play*,
 * not only download): `GET /api/cameras/:id/play` (the fMP4 stream an MSE player or
 * the UI appends) and the HLS playlist `video.m3u8` (its segments fetched by ffmpeg's
 * HLS demuxer, as hls.js or Safari would), each decoded to the last frame.
 */
import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface DecodedStream {
  type: string;
  codec: string;
  /** Frames decoded (ffprobe -count_frames). */
  frames: number;
}

/** Decodes every frame of `input` (a file or URL): its streams with frame counts, and ffprobe's errors (empty when clean). */
export async function decodeAll(input: string): Promise<{ streams: DecodedStream[]; errors: string }> {
  try {
    const { stdout, stderr } = await run(
      'ffprobe',
      ['-v', 'repeat+error', '-count_frames', '-show_entries', 'stream=codec_type,codec_name,nb_read_frames', '-of', 'json', input],
      { maxBuffer: 16 * 1024 * 1024 },
    );
    const j = JSON.parse(stdout) as { streams?: { codec_type: string; codec_name: string; nb_read_frames?: string }[] };
    return {
      streams: (j.streams ?? []).map((s) => ({ type: s.codec_type, codec: s.codec_name, frames: Number(s.nb_read_frames ?? 0) })),
      errors: stderr.trim(),
    };
  } catch (err) {
    return { streams: [], errors: (err as { stderr?: string }).stderr || String(err) };
  }
}

/** The codec in a `video/mp4; codecs="…"` MIME type for an ffprobe codec name. */
const MIME_CODEC: Record<string, RegExp> = {
  h264: /^avc1\./,
  hevc: /^(hvc1|hev1)\./,
  // Motion JPEG in MP4 is an `mp4v` entry (object type 0x6C); the MIME type names the
  // entry alone. No browser's MSE takes it either way; ffmpeg-based players do.
  mjpeg: /^mp4v(\.6c)?$/i,
  aac: /^mp4a\.40\./,
  pcm_alaw: /^alaw$/,
};

export interface PlayExpect {
  /** ffprobe's name of the video codec. */
  video: string;
  /** ffprobe's name of the stored audio codec, null: no audio. */
  audio: string | null;
}

/**
 * `/play` of [fromMs, toMs): 200, the MIME type naming the stored codecs (but audio no
 * browser plays, left out and said so), normal mode,
 * and bytes that decode without errors with video frames and, where audio is stored,
 * audio frames. Then the same range through the HLS playlist. `dir` keeps the played
 * bytes for a failure's post-mortem.
 */
export async function checkPlays(t: ExecutionContext, http: string, id: string, fromMs: number, toMs: number, dir: string, expect: PlayExpect): Promise<void> {
  const q = `from=${fromMs}&to=${toMs}`;
  const res = await fetch(`${http}/api/cameras/${id}/play?${q}`);
  const body = Buffer.from(await res.arrayBuffer());
  t.is(res.status, 200, `${id}: /play ${res.status} ${res.status === 200 ? '' : body.toString()}`);
  const type = res.headers.get('content-type') ?? '';
  const codecs = /^video\/mp4; codecs="([^"]*)"$/.exec(type)?.[1]?.split(',') ?? [];
  // Audio a browser's MSE refuses (G.711 of PS recordings) is left out of /play, and said
  // so; HLS serves the stored tracks as they are (docs/mpeg-ps.md).
  const leftOut = expect.audio === 'pcm_alaw';
  const playAudio = leftOut ? null : expect.audio;
  t.is(res.headers.get('x-audio-left-out'), leftOut ? 'alaw' : null, `${id}: X-Audio-Left-Out`);
  const want = [expect.video, ...(playAudio ? [playAudio] : [])];
  t.is(codecs.length, want.length, `${id}: /play Content-Type ${type}`);
  want.forEach((c, i) => t.regex(codecs[i] ?? '', MIME_CODEC[c] ?? /^$/, `${id}: /play Content-Type ${type} names ${c}`));
  t.is(res.headers.get('x-playback-mode'), 'normal', id);
  const file = join(dir, `${id}-play.mp4`);
  await writeFile(file, body);
  checkDecoded(t, `${id}: /play`, await decodeAll(file), { video: expect.video, audio: playAudio });

  const hls = await fetch(`${http}/api/cameras/${id}/video.m3u8?${q}`);
  t.is(hls.status, 200, `${id}: video.m3u8`);
  t.regex(hls.headers.get('content-type') ?? '', /^application\/vnd\.apple\.mpegurl\b/, `${id}: video.m3u8`);
  await hls.arrayBuffer();
  checkDecoded(t, `${id}: HLS`, await decodeAll(`${http}/api/cameras/${id}/video.m3u8?${q}`), expect);
}

function checkDecoded(t: ExecutionContext, what: string, d: { streams: DecodedStream[]; errors: string }, expect: PlayExpect): void {
  const ctx = `${what}: ${JSON.stringify(d)}`;
  t.is(d.errors, '', ctx);
  const video = d.streams.filter((s) => s.type === 'video');
  const audio = d.streams.filter((s) => s.type === 'audio');
  t.deepEqual(
    video.map((s) => s.codec),
    [expect.video],
    ctx,
  );
  t.true((video[0]?.frames ?? 0) > 0, `${ctx}: video frames`);
  t.deepEqual(
    audio.map((s) => s.codec),
    expect.audio ? [expect.audio] : [],
    ctx,
  );
  if (expect.audio) t.true((audio[0]?.frames ?? 0) > 0, `${ctx}: audio frames`);
}
