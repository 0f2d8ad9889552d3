/**
 * Issue 18's camera matrix on the native ingest (`RECORDER_INGEST=native`, the default): the
 * H.264/H.265 cameras our own RTSP client takes (audio AAC or none) are read by it, with
 * every check of the ffmpeg matrix (camera-matrix.test.ts): recorded, downloaded,
 * decoded without an error, played through /play and HLS, status over HTTP and NATS.
 * Cameras it does not take (G.711 audio, Motion JPEG, RTSP tunnelled in HTTP) are read
 * by ffmpeg in the same recorder, and say so.
 *
 *   AAC · no audio · B-frames · H.265 + AAC · UDP-only (auto falls back at once, in the
 *   same attempt) · Basic and Digest login · AAC recorded as PS · and on ffmpeg: G.711 ·
 *   Motion JPEG · RTSP over HTTP.
 */
import test from 'ava';
import { cameraMatrix, type Kind } from './helpers/camera-matrix.ts';
import { SimCamera } from '../sim/camera.ts';
import { startNativeIngest } from '../ingest/native-ingest.ts';
import { startIngest, type IngestSession } from '../ffmpeg/ffmpeg-ingest.ts';

const KINDS: Kind[] = [
  { id: 'aac', sim: 'plain', mount: 'h264aac', video: 'h264', audio: { source: 'aac', stored: 'copy' }, transportInUse: 'tcp', ingest: 'native' },
  { id: 'noaudio', sim: 'plain', mount: 'h264', video: 'h264', audio: { source: null, stored: 'none' }, transportInUse: 'tcp', ingest: 'native' },
  { id: 'bframes', sim: 'plain', mount: 'h264bframes', video: 'h264', audio: { source: null, stored: 'none' }, transportInUse: 'tcp', ingest: 'native' },
  { id: 'h265', sim: 'plain', mount: 'h265aac', video: 'hevc', audio: { source: 'aac', stored: 'copy' }, transportInUse: 'tcp', ingest: 'native' },
  { id: 'udponly', sim: 'plain', mount: 'h264aacudp', video: 'h264', audio: { source: 'aac', stored: 'copy' }, transportInUse: 'udp', ingest: 'native' },
  { id: 'basic', sim: 'basic', mount: 'h264aac', video: 'h264', audio: { source: 'aac', stored: 'copy' }, transportInUse: 'tcp', ingest: 'native' },
  { id: 'digest', sim: 'digest', mount: 'h264', video: 'h264', audio: { source: null, stored: 'none' }, transportInUse: 'tcp', ingest: 'native' },
  {
    id: 'aac-ps',
    sim: 'plain',
    mount: 'h264aac',
    format: 'ps',
    video: 'h264',
    audio: { source: 'aac', stored: 'copy' },
    transportInUse: 'tcp',
    ingest: 'native',
  },
  // Not the native client's: read by ffmpeg in the same recorder.
  { id: 'pcma', sim: 'plain', mount: 'h264pcma', video: 'h264', audio: { source: 'pcm_alaw', stored: 'aac' }, transportInUse: 'tcp', ingest: 'ffmpeg' },
  { id: 'mjpeg', sim: 'plain', mount: 'mjpeg', video: 'mjpeg', audio: { source: null, stored: 'none' }, transportInUse: 'tcp', ingest: 'ffmpeg' },
  {
    id: 'http',
    sim: 'plain',
    mount: 'h264aac',
    transport: 'http',
    video: 'h264',
    audio: { source: 'aac', stored: 'copy' },
    transportInUse: 'http',
    ingest: 'ffmpeg',
  },
];

cameraMatrix('camera-matrix-native', KINDS, { ingest: 'native' });

async function firstInitKey(session: IngestSession): Promise<string> {
  try {
    for await (const c of session.chunks) if (c.kind === 'init') return c.info.codecKey;
    throw new Error(`no init: ${String((await session.exited).error)}`);
  } finally {
    session.stop();
    await session.exited;
  }
}

test("ffmpeg's init and ours of one camera are interchangeable (one codecKey): a download across both, as when a native camera is back-filled through ffmpeg, is one file", async (t) => {
  const sim = await SimCamera.start({ width: 320, height: 240, gop: 25 });
  t.teardown(() => sim.stop());
  for (const mount of ['h264aac', 'h265aac'] as const) {
    const url = sim.url(mount);
    const native = await firstInitKey(startNativeIngest({ url, stallTimeoutMs: 10_000 }));
    const ffmpeg = await firstInitKey(startIngest({ url, ffmpegPath: 'ffmpeg', stallTimeoutMs: 10_000 }));
    t.is(native, ffmpeg, mount);
  }
});
