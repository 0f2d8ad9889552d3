/**
 * Ingest of an H.264/H.265 camera without ffmpeg (`ingest: native`): our RTSP client
 * (rtsp/rtp-session.ts) sets up its video track and, when it sends AAC, its audio
 * track; media/rtp/rtp-fmp4.ts depacketizes them and makes an fMP4 init and one
 * fragment per GOP. The result is the same IngestSession as ffmpeg's ingest
 * (ffmpeg/ffmpeg-ingest.ts): `chunks`, `exited`, `stop()`, so the camera actor, segment
 * writers, pre-record, live view and the SEI scan do not change.
 *
 * Why: one ffmpeg per camera is most of what a recording node spends (bench/ingest.ts,
 * docs/design/ingest-shape.md). Which cameras come here is ingest/camera-ingest.ts's
 * choice (H.264/H.265 video, audio none or AAC, no data track, not tunnelled in HTTP);
 * the others stay on ffmpeg.
 *
 * Timing: audio is placed against video by the RTCP sender reports of both tracks
 * (media/rtp/rtcp.ts), until then by arrival (media/rtp/rtp-fmp4.ts says how).
 *
 * Failures end the session typed (the camera actor backs off and retries): the RTSP
 * client's (NativeIngestError RTSP_CONNECT, RTSP_RTSP, RTSP_TIMEOUT, RTSP_TRANSPORT,
 * RTSP_NO_STREAM; a refused login is the RtspAuthError every path gives), a camera
 * that sends nothing for `stallTimeoutMs` (NATIVE_STALLED), packets but no video frame
 * that goes into a GOP for `noVideoMs` (NATIVE_NO_VIDEO: no keyframe, no parameter
 * sets). A frame taken into the GOP being built is progress, not only a whole GOP: a
 * camera with a GOP longer than `noVideoMs` records. Corrupt input is skipped and
 * counted (`stats()`), never an error by itself. Which failures are our client's (the
 * camera goes to ffmpeg then) is nativeClientFault's call: not a busy camera's.
 *
 * Stopping: stop() (or the owner's `signal`) while the RTSP session is starting aborts
 * it at once (its socket and timers closed; rtsp/rtp-session.ts), not at its timeout.
 *
 * The end: however the session ends (stop, a stall, no video, the camera hanging up or
 * failing), the GOP held is written (RtpFmp4.end(): a frame is known whole only when
 * the next one starts, so the last GOP, and until the packet after the next keyframe
 * the one before, are still held), unless the muxer threw (our bug).
 *
 * Bounds: the depacketizer holds at most one GOP (its own bound); fragments not yet
 * taken by the consumer (a slow disk) pause the camera's socket past QUEUE_HIGH_BYTES
 * and resume it below QUEUE_LOW_BYTES. While paused the camera is not judged silent
 * (lib/silence-watch.ts): a slow disk is not a stalled camera.
 */
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import type { IngestExit, IngestSession } from '../ffmpeg/ffmpeg-ingest.ts';
import type { AudioStatus } from '../ffmpeg/audio-plan.ts';
import { startRtpSession, type RtpSession } from '../rtsp/rtp-session.ts';
import { isRtspAbort, type MakeRtspError } from '../rtsp/rtsp-connection.ts';
import { parseSdpTracks, type SdpTrack } from '../rtsp/sdp-tracks.ts';
import { RtspAuthError } from '../rtsp/rtsp-auth.ts';
import type { RtspTransport, TransportSetting } from '../rtsp/rtsp-transport.ts';
import { RtpFmp4, type RtpFmp4Counters } from '../media/rtp/rtp-fmp4.ts';
import { audioConfig, parseFmtp, videoConfig, type RtpAudioConfig, type RtpVideoConfig } from '../media/rtp/rtp-config.ts';
import { readSenderReport } from '../media/rtp/rtcp.ts';
import type { RtpPacket } from '../media/rtp/rtp-packet.ts';
import { SilenceWatch } from '../lib/silence-watch.ts';
import { ChunkQueue } from './chunk-queue.ts';
import { redactText } from '../lib/redact.ts';

export type NativeIngestErrorCode =
  'RTSP_CONNECT' | 'RTSP_RTSP' | 'RTSP_TIMEOUT' | 'RTSP_TRANSPORT' | 'RTSP_NO_STREAM' | 'NATIVE_BAD_CONFIG' | 'NATIVE_STALLED' | 'NATIVE_NO_VIDEO';

export class NativeIngestError extends Error {
  constructor(
    readonly code: NativeIngestErrorCode,
    message: string,
    /** The RTSP status of a refused request; null otherwise. */
    readonly status: number | null = null,
  ) {
    super(redactText(`${code}: ${message}`));
    this.name = 'NativeIngestError';
  }
}

const nativeError: MakeRtspError = (kind, message, status) =>
  kind === 'AUTH' ? new RtspAuthError(message) : new NativeIngestError(`RTSP_${kind}`, message, status);

/**
 * Statuses that say the camera is busy or has lost our session for now (RFC 2326
 * §7.1.1: 408 Request Timeout, 453 Not Enough Bandwidth, 454 Session Not Found), like
 * every 5xx: ffmpeg would meet them as well, so they are not our client's fault.
 */
const TRANSIENT_STATUS = new Set([408, 453, 454]);

/**
 * Whether a native attempt's failure, before any video, is our client's (ffmpeg may do
 * better with the camera): what it could not set up, parse or depacketize, and a 4xx
 * refusal of what it asked (a URL or header the camera does not take), except a login
 * (401) and the transient statuses. ingest/camera-ingest.ts asks it.
 */
export function nativeClientFault(err: Error | undefined): boolean {
  if (!(err instanceof NativeIngestError)) return false;
  if (err.code === 'RTSP_RTSP') return err.status !== null && err.status >= 400 && err.status < 500 && err.status !== 401 && !TRANSIENT_STATUS.has(err.status);
  return err.code === 'RTSP_NO_STREAM' || err.code === 'RTSP_TRANSPORT' || err.code === 'NATIVE_BAD_CONFIG' || err.code === 'NATIVE_NO_VIDEO';
}

/** Video and audio encodings the native client records (SDP names). */
export const NATIVE_VIDEO = new Set(['H264', 'H265']);
export const NATIVE_AUDIO = new Set(['MPEG4-GENERIC']);

export interface NativeIngestOptions {
  url: string;
  transport?: TransportSetting;
  memoryKey?: string;
  /** The camera sends nothing for this long: the session ends (NATIVE_STALLED). */
  stallTimeoutMs: number;
  /** Packets but no usable video frame for this long: NATIVE_NO_VIDEO (default 2 × stallTimeoutMs + 10 s). */
  noVideoMs?: number;
  /** The owner's signal: aborting it stops the session like stop(). */
  signal?: AbortSignal;
  /** What happens to the audio, once the tracks are set up. */
  onAudio?: (audio: AudioStatus, transport: RtspTransport) => void;
  /** Things worth a log line that are not failures (counters at the end of a session). */
  onNotice?: (level: 'info' | 'warn', message: string, details: Record<string, unknown>) => void;
  /** Fragments waiting for the consumer past this pause the camera (default QUEUE_HIGH_BYTES) … */
  queueHighBytes?: number;
  /** … until they are below this (default QUEUE_LOW_BYTES). */
  queueLowBytes?: number;
}

export interface NativeIngestStats {
  media: RtpFmp4Counters | null;
  lostPackets: number;
  /** Stray bytes between interleaved frames skipped to resynchronise. */
  skippedBytes: number;
  transport: RtspTransport | null;
}

export interface NativeIngestSession extends IngestSession {
  stats(): NativeIngestStats;
}

const QUEUE_HIGH_BYTES = 32 * 1024 * 1024;
const QUEUE_LOW_BYTES = 8 * 1024 * 1024;

interface Chosen {
  control: string;
  kind: 'video' | 'audio';
  track: SdpTrack;
}

/** The tracks to set up: the first H.264/H.265 video, and the first AAC audio (RFC 3640) if any. */
function chooseTracks(sdp: string, base: string): Chosen[] {
  const tracks = parseSdpTracks(sdp, base);
  const video = tracks.find((t) => t.media === 'video' && NATIVE_VIDEO.has(t.encoding));
  if (!video) {
    const has = tracks.map((t) => `${t.media} ${t.encoding || `payload ${t.payloadType}`}`).join(', ') || 'no media';
    throw new NativeIngestError('RTSP_NO_STREAM', `the camera's session has no H.264/H.265 video (${has})`);
  }
  const audio = tracks.find((t) => t.media === 'audio' && NATIVE_AUDIO.has(t.encoding));
  return [{ control: video.control, kind: 'video', track: video }, ...(audio ? [{ control: audio.control, kind: 'audio' as const, track: audio }] : [])];
}

export function startNativeIngest(opts: NativeIngestOptions): NativeIngestSession {
  let session: RtpSession<Chosen> | null = null;
  let media: RtpFmp4 | null = null;
  let requested = false;
  let finished = false;
  let failure: Error | undefined;
  /** The muxer threw (our bug): what it holds is not written at the end. */
  let muxerFailed = false;
  const noVideoMs = opts.noVideoMs ?? 2 * opts.stallTimeoutMs + 10_000;
  const silence = new SilenceWatch();
  /** When video last made progress: a frame taken into a GOP, or a fragment. */
  let lastVideoAt = Date.now();
  /** Aborted by finish(): a session still starting closes at once. */
  const stopper = new AbortController();
  let resolveExit!: (e: IngestExit) => void;
  const exited = new Promise<IngestExit>((r) => (resolveExit = r));
  /** Track index (as set up) → which it is; filled once the session is up. */
  let kinds: ('video' | 'audio')[] = [];

  const queue = new ChunkQueue({
    highBytes: opts.queueHighBytes ?? QUEUE_HIGH_BYTES,
    lowBytes: opts.queueLowBytes ?? QUEUE_LOW_BYTES,
    pause: () => {
      if (!session) return false;
      silence.hold();
      session.pause();
      return true;
    },
    resume: () => {
      silence.release();
      lastVideoAt = Date.now(); // time paused is not time without video either
      session?.resume();
    },
  });
  const enqueue = (chunks: Fmp4Chunk[]): void => {
    if (chunks.some((c) => c.kind === 'fragment')) lastVideoAt = Date.now();
    queue.push(chunks);
  };
  /**
   * One video packet. Progress is a frame taken into the GOP being built: access units
   * made beyond those dropped waiting for a keyframe (or lacking parameter sets). Whole
   * GOPs only would fail a camera whose GOP is longer than noVideoMs.
   */
  const video = (m: RtpFmp4, packet: RtpPacket, gap: boolean): void => {
    const taken = m.counters.units - m.counters.framesBeforeKeyframe;
    const chunks = m.video(packet.payload, packet.timestamp, packet.marker, gap, packet.ssrc);
    if (m.counters.units - m.counters.framesBeforeKeyframe > taken) lastVideoAt = Date.now();
    enqueue(chunks);
  };
  const stats = (): NativeIngestStats => ({
    media: media ? { ...media.counters } : null,
    lostPackets: session?.lostPackets ?? 0,
    skippedBytes: session?.skippedBytes ?? 0,
    transport: session?.transport ?? null,
  });
  const finish = (error?: Error): void => {
    if (finished) return;
    finished = true;
    clearInterval(watchdog);
    // However it ends (stop, stall, no video, the camera hanging up or failing), the GOP
    // held is whole up to its last packet (a frame is known whole only at the next
    // frame's first packet, a GOP one packet after the next keyframe): written, unless
    // the muxer itself threw (our bug: its state is not to be trusted).
    if (media && !muxerFailed) {
      try {
        enqueue(media.end());
      } catch (err) {
        failure ??= err as Error;
      }
    }
    opts.signal?.removeEventListener('abort', onAbort);
    session?.close();
    stopper.abort(); // after close(): a playing session says TEARDOWN first
    const s = stats();
    const trouble =
      s.lostPackets + s.skippedBytes + (s.media ? s.media.droppedNals + s.media.damagedUnits + s.media.skippedGops + s.media.unsupportedPackets : 0);
    if (trouble > 0)
      opts.onNotice?.('warn', 'native ingest: damaged input in this session (skipped and resynchronised)', {
        lostPackets: s.lostPackets,
        skippedBytes: s.skippedBytes,
        ...s.media,
      });
    resolveExit(requested ? { requested: true } : { requested: false, ...((failure ?? error) ? { error: failure ?? error } : {}) });
    queue.end();
  };
  const fail = (err: Error): void => {
    failure ??= err;
    finish(err);
  };

  const watchdog = setInterval(() => {
    if (!session) return; // connecting: the RTSP client times its own steps out
    const silentMs = silence.silentMs();
    const now = Date.now();
    if (silentMs > opts.stallTimeoutMs) fail(new NativeIngestError('NATIVE_STALLED', `no data from the camera for ${silentMs} ms`));
    else if (!queue.paused && now - lastVideoAt > noVideoMs) {
      const c = media?.counters;
      fail(new NativeIngestError('NATIVE_NO_VIDEO', `no video frame could be used in ${now - lastVideoAt} ms of RTP (${JSON.stringify(c ?? {})})`));
    }
  }, 1000);
  watchdog.unref();
  const onAbort = (): void => {
    requested = true;
    finish();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();

  void (async () => {
    try {
      const s = await startRtpSession<Chosen>(
        opts.url,
        opts.stallTimeoutMs,
        (sdp, base) => {
          const chosen = chooseTracks(sdp, base);
          kinds = chosen.map((c) => c.kind);
          media = makeMedia(chosen, opts);
          return chosen;
        },
        {
          onPacket(track, packet, gap) {
            if (finished || !media) return;
            silence.heard();
            try {
              if (kinds[track] === 'video') video(media, packet, gap);
              else media.audio(packet.payload, packet.timestamp, packet.marker, gap, packet.ssrc);
            } catch (err) {
              muxerFailed = true;
              fail(err as Error); // our bug, not the camera's: this attempt ends with it
            }
          },
          onRtcp(track, bytes) {
            const sr = readSenderReport(bytes);
            if (sr && media) media.anchor(kinds[track] ?? 'video', sr.rtpTimestamp, sr.ntpMs, sr.ssrc);
          },
        },
        {
          ...(opts.transport ? { transport: opts.transport } : {}),
          ...(opts.memoryKey ? { memoryKey: opts.memoryKey } : {}),
          fail: nativeError,
          signal: stopper.signal,
        },
      );
      session = s;
      if (finished) return void s.close();
      silence.heard();
      lastVideoAt = Date.now();
      // Made by `choose`, during the session's start (TypeScript cannot see that).
      const made = media as RtpFmp4 | null;
      const audioTrack = s.tracks.find((t) => t.kind === 'audio');
      opts.onAudio?.(audioStatus(audioTrack ?? null, made?.hasAudio ?? false), s.transport);
      opts.onNotice?.('info', 'camera read by our RTSP client (native ingest)', {
        transport: s.transport,
        tracks: s.tracks.map((t) => `${t.kind} ${t.track.encoding}`),
      });
      const why = await s.ended;
      if (finished) return;
      finish(why ?? new Error('camera stream ended'));
    } catch (err) {
      if (isRtspAbort(err) && finished) return; // stopped while starting: exited says so already
      fail(err as Error);
    }
  })();

  return {
    chunks: queue.chunks(),
    exited,
    stats,
    stop() {
      requested = true;
      finish();
    },
  };
}

/** The depacketizer and muxer of the chosen tracks; a video configuration that cannot be read fails typed. */
function makeMedia(chosen: Chosen[], opts: NativeIngestOptions): RtpFmp4 {
  const v = chosen.find((c) => c.kind === 'video')!.track;
  const a = chosen.find((c) => c.kind === 'audio')?.track;
  let video: RtpVideoConfig;
  try {
    video = videoConfig(v.encoding, v.clockRate, parseFmtp(v.fmtp));
  } catch (err) {
    throw new NativeIngestError('NATIVE_BAD_CONFIG', `video ${v.encoding}: ${(err as Error).message}`);
  }
  let audio: RtpAudioConfig | null = null;
  if (a) {
    try {
      audio = audioConfig(a.encoding, a.clockRate, parseFmtp(a.fmtp));
    } catch (err) {
      opts.onNotice?.('warn', "native ingest: the camera's AAC configuration does not parse; recorded without audio", { error: (err as Error).message });
    }
  }
  return new RtpFmp4(video, audio);
}

/** The camera status's `audio` for this session. */
function audioStatus(track: Chosen | null, kept: boolean): AudioStatus {
  if (!track) return { source: null, stored: 'none' };
  if (kept) return { source: 'aac', stored: 'copy' };
  return { source: 'aac', stored: 'none', reason: "the camera's AAC configuration could not be read" };
}
