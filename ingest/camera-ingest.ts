/**
 * Starts the ingest of one camera session whatever its RTSP payload: most cameras go
 * straight to ffmpeg (ffmpeg/ffmpeg-ingest.ts); with `ingest: 'native'`, an H.264/H.265
 * camera whose audio is AAC or none, without a data track and not tunnelled in HTTP, is
 * read by our own RTSP client instead (ingest/native-ingest.ts, no process per camera;
 * the DESCRIBE decides, and without an answer ffmpeg reads it; a camera the client
 * failed on before any video, in a way of its own, is read by ffmpeg from then on:
 * ingest/native-ingest.ts nativeClientFault); a camera whose session carries MPEG-PS
 * over RTP (MP2P/90000, GB28181 style) is recognised by one DESCRIBE and read without
 * ffmpeg (ingest/mp2p-ingest.ts: our RTSP bridge, PS reader and fMP4 writer), giving the
 * same fMP4 chunks, so segment writing, indexing and playback do not change.
 * A DESCRIBE that fails is not an error here: the camera is taken for what its last
 * answer said (MP2P or not), else ffmpeg reports the camera's problem. Except a refused
 * login (RtspAuthError, RTSP_AUTH): the attempt ends with it at once, since the stream
 * would be asked with the same credentials (and an MP2P camera refused so could not
 * even be recognised as one).
 * The returned session behaves as startIngest's.
 */
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { startIngest, type IngestExit, type IngestOptions, type IngestSession } from '../ffmpeg/ffmpeg-ingest.ts';
import { startMp2pIngest } from './mp2p-ingest.ts';
import { NATIVE_AUDIO, NATIVE_VIDEO, nativeClientFault, startNativeIngest } from './native-ingest.ts';
import { describeWithRetry, type SdpMedia } from '../rtsp/rtsp-describe.ts';
import type { TransportSetting } from '../rtsp/rtsp-transport.ts';
import { RtspAuthError } from '../rtsp/rtsp-auth.ts';

const DESCRIBE_TIMEOUT_MS = 5000;
/** URL → whether its last DESCRIBE answer had an MP2P stream (for attempts whose DESCRIBE gets none). */
const knownMp2p = new Map<string, boolean>();

export interface CameraIngestOptions extends IngestOptions {
  /** Things worth a log line that are not failures (MP2P in use, RTP packets lost). */
  onNotice?: (level: 'info' | 'warn', message: string, details: Record<string, unknown>) => void;
  /**
   * The segment format the chunks are written as. Only MP2P cameras look at it: their
   * G.711 audio is kept for PS segments (which carry it) and made into AAC for MP4 ones
   * (MP4 cannot carry G.711 and browsers cannot play it), as the RTSP path does.
   */
  recordFormat?: 'mp4' | 'ps';
  /** Who reads the H.264/H.265 cameras the native client can take (default ffmpeg). */
  ingest?: 'ffmpeg' | 'native';
}

/**
 * Whether our own RTSP client records this camera as ffmpeg would: H.264/H.265 video,
 * audio AAC (RFC 3640) or none, no data track (the smart stream's data tracks are split
 * off by ffmpeg), and a transport it speaks (not HTTP tunnelling).
 */
export function nativeFits(media: SdpMedia[], transport: TransportSetting | undefined): boolean {
  if (transport === 'http') return false;
  const video = media.filter((m) => m.media === 'video');
  const audio = media.filter((m) => m.media === 'audio');
  if (video.length === 0 || !NATIVE_VIDEO.has(video[0]!.encodings[0] ?? '')) return false;
  if (media.some((m) => m.media === 'application')) return false;
  return audio.every((m) => NATIVE_AUDIO.has(m.encodings[0] ?? ''));
}

/**
 * Cameras (by memory key) the native client failed on in a way ffmpeg may not: their
 * next attempts use ffmpeg, for as long as this process runs. A camera that is off,
 * silent or refuses the login is not one of them (ffmpeg would fail the same way).
 */
const nativeFailed = new Set<string>();

/** Forgets which cameras fell back to ffmpeg (tests). */
export function resetNativeFallback(): void {
  nativeFailed.clear();
}

/** An attempt that ended before it began (no chunks), with `error`. */
function failedSession(error: Error): IngestSession {
  return { chunks: (async function* (): AsyncGenerator<Fmp4Chunk> {})(), exited: Promise.resolve({ requested: false, error }), stop: () => undefined };
}

export function startCameraIngest(opts: CameraIngestOptions): IngestSession {
  let inner: IngestSession | null = null;
  let stopped = false;
  let resolveExit!: (e: IngestExit) => void;
  const exited = new Promise<IngestExit>((r) => (resolveExit = r));
  const ready = (async (): Promise<IngestSession | null> => {
    const timeout = Math.min(opts.stallTimeoutMs, DESCRIBE_TIMEOUT_MS);
    // One DESCRIBE per attempt: MP2P here, the data-track check in startIngest.
    let refused: RtspAuthError | null = null;
    const described = await describeWithRetry(opts.url, timeout).catch((err: unknown) => {
      if (err instanceof RtspAuthError) refused = err;
      return null;
    });
    if (stopped) return null;
    if (refused) return failedSession(refused);
    // No answer this time (a busy camera): what the last answer said, since ffmpeg
    // cannot read MP2P at all and the bridge makes its own DESCRIBE anyway.
    const mp2p = described ? described.some((m) => m.encodings.includes('MP2P')) : (knownMp2p.get(opts.url) ?? false);
    if (described) knownMp2p.set(opts.url, mp2p);
    const key = opts.memoryKey ?? opts.url;
    if (!mp2p && opts.ingest === 'native' && described && nativeFits(described, opts.transport) && !nativeFailed.has(key)) {
      const session = startNativeIngest({
        url: opts.url,
        stallTimeoutMs: opts.stallTimeoutMs,
        ...(opts.transport ? { transport: opts.transport } : {}),
        ...(opts.memoryKey ? { memoryKey: opts.memoryKey } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        onAudio: (audio, transport) => opts.onPlan?.({ ingest: 'native', transport, audio: { ...audio, outputOptions: [] }, fragments: 'keyframe' }),
        ...(opts.onNotice ? { onNotice: opts.onNotice } : {}),
      });
      void session.exited.then((exit) => {
        if (fragments > 0 || !nativeClientFault(exit.error)) return;
        nativeFailed.add(key);
        opts.onNotice?.('warn', 'native ingest failed on this camera before any video: its next attempts use ffmpeg', { error: exit.error?.message });
      });
      return session;
    }
    if (!mp2p) return startIngest({ ...opts, described });
    const session = startMp2pIngest({
      url: opts.url,
      stallTimeoutMs: opts.stallTimeoutMs,
      // G.711 is stored as is where the segment format carries it (PS), else as AAC made of it.
      g711: opts.recordFormat === 'ps' ? 'keep' : 'aac',
      ffmpegPath: opts.ffmpegPath,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.transport ? { transport: opts.transport } : {}),
      ...(opts.memoryKey ? { memoryKey: opts.memoryKey } : {}),
      // Called with an init, so after SETUP: the transport the camera took is known.
      onAudio: (audio) =>
        opts.onPlan?.({ ingest: 'mp2p', transport: session.stats().transport, audio: { ...audio, outputOptions: [] }, fragments: 'keyframe' }),
      ...(opts.onNotice ? { onNotice: opts.onNotice } : {}),
    });
    return session;
  })();
  void ready.then((s) => {
    inner = s;
    if (!s) {
      if (stopped) resolveExit({ requested: true });
      return;
    }
    void s.exited.then(resolveExit);
    if (stopped) s.stop();
  });

  let fragments = 0;
  async function* chunks(): AsyncGenerator<Fmp4Chunk> {
    const s = await ready;
    if (!s) return;
    for await (const c of s.chunks) {
      if (c.kind === 'fragment') fragments++;
      yield c;
    }
  }

  return {
    chunks: chunks(),
    exited,
    stop() {
      stopped = true;
      inner?.stop();
    },
  };
}
