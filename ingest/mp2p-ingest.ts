/**
 * Ingest of a camera that sends MPEG-PS over RTP (MP2P/90000, GB28181 / Hikvision),
 * without ffmpeg: rtsp/mp2p-bridge.ts pulls the program stream, media/ps/ps-gop-reader.ts
 * cuts it into GOPs at video keyframes, media/ps/ps-live-fmp4.ts makes an fMP4 init and
 * one fragment per GOP. The result is the same IngestSession as ffmpeg's ingest
 * (ffmpeg/ffmpeg-ingest.ts): `chunks` (Fmp4Chunk init/fragments), `exited`, `stop()`,
 * so the camera actor, segment writers, pre-record and live view do not change.
 *
 * Why not ffmpeg (`-f mpeg` on the bridge's bytes, as before): ffmpeg 5.1 probes a
 * program stream from its first bytes; with AAC it fails on the ADTS headers
 * (`Malformed AAC bitstream`), it takes G.711 (PSM type 0x90) and any audio whose PSM it
 * has not seen yet (a camera joined mid-GOP) for MPEG audio and then writes no header.
 * Our reader knows those streams, waits for a keyframe with its PSM, and costs no
 * process per camera.
 *
 * Failures end the session with an Mp2pIngestError (the camera actor backs off and
 * retries): the PSM names a video codec we do not record (MP2P_VIDEO_UNSUPPORTED),
 * bytes arrive but no GOP can be made of them for NO_VIDEO_MS (MP2P_NO_VIDEO: no
 * keyframe, no H.264/H.265, no parameter sets), nothing arrives for `stallTimeoutMs`
 * (MP2P_STALLED). The bridge's own errors (Mp2pBridgeError) pass as they are.
 * Corrupt input is skipped and counted (`stats()`), never an error by itself.
 *
 * Audio: G.711 of a camera recording MP4 segments (`g711: 'aac'`) becomes AAC made by
 * one ffmpeg child for the session (ffmpeg/g711-aac.ts, started at the first G.711,
 * killed with the session): each GOP's G.711 is fed to it, and its fragment waits for
 * the AAC it can make of that (at most AAC_WAIT_MS after the GOP was cut or, when it
 * waited in the queue, after its G.711 was fed; what is not
 * ready then goes with the next GOP, at its exact time; the first GOP waits up to
 * AAC_START_WAIT_MS for ffmpeg to start). GOPs are written in order,
 * one at a time. If the encoder fails the video goes on without audio (a new init;
 * the status says why) until the next session. A fragment carries how long it waited
 * here (`heldMs`): its time is when its GOP was complete, not when the AAC was ready.
 *
 * Bounds: the reader holds at most one GOP (plus its bound); fragments not yet taken
 * by the consumer (a slow disk) pause the camera's socket past QUEUE_HIGH_BYTES and
 * resume it below QUEUE_LOW_BYTES. While paused the camera is not judged silent
 * (lib/silence-watch.ts): a slow disk is not a stalled camera.
 */
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import type { IngestExit, IngestSession } from '../ffmpeg/ffmpeg-ingest.ts';
import { startMp2pBridge, type Mp2pBridge } from '../rtsp/mp2p-bridge.ts';
import type { RtspTransport, TransportSetting } from '../rtsp/rtsp-transport.ts';
import { PsGopReader, type PsGop, type PsGopReaderCounters } from '../media/ps/ps-gop-reader.ts';
import { PsLiveFmp4, VIDEO_TYPES, type PreparedGop, type PsAudioStatus, type PsLiveCounters } from '../media/ps/ps-live-fmp4.ts';
import { G711Aac } from '../ffmpeg/g711-aac.ts';
import { STREAM_TYPE } from '../media/ps/ps-mux.ts';
import { SilenceWatch } from '../lib/silence-watch.ts';
import { ChunkQueue } from './chunk-queue.ts';

export type Mp2pIngestErrorCode = 'MP2P_VIDEO_UNSUPPORTED' | 'MP2P_NO_VIDEO' | 'MP2P_STALLED';

export class Mp2pIngestError extends Error {
  constructor(
    readonly code: Mp2pIngestErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'Mp2pIngestError';
  }
}

export interface Mp2pIngestOptions {
  url: string;
  /** The camera's transport setting and what names it across attempts (rtsp/mp2p-bridge.ts). */
  transport?: TransportSetting;
  memoryKey?: string;
  /** The camera sends nothing for this long: the session ends (MP2P_STALLED). */
  stallTimeoutMs: number;
  /** G.711 A-law audio: kept (PS segments carry it), made into AAC (MP4 segments) or left out. Default keep. */
  g711?: 'keep' | 'aac' | 'drop';
  /** ffmpeg, for `g711: 'aac'`. */
  ffmpegPath?: string;
  /** The owner's signal: aborting it kills the AAC encoder (the session is stopped by its owner). */
  signal?: AbortSignal;
  maxGopBytes?: number;
  /** What happens to the audio, before the init it applies to (and whenever it changes). */
  onAudio?: (audio: PsAudioStatus) => void;
  /** Things worth a log line that are not failures (counters at the end of a session). */
  onNotice?: (level: 'info' | 'warn', message: string, details: Record<string, unknown>) => void;
  /** Fragments waiting for the consumer past this pause the camera (default QUEUE_HIGH_BYTES) … */
  queueHighBytes?: number;
  /** … until they are below this (default QUEUE_LOW_BYTES). */
  queueLowBytes?: number;
}

export interface Mp2pIngestStats {
  reader: PsGopReaderCounters;
  fmp4: PsLiveCounters;
  lostPackets: number;
  audio: PsAudioStatus;
  /** The lower transport the camera took; null before it answered SETUP. */
  transport: RtspTransport | null;
  /** The G.711 → AAC encoder, when one ran: encoders started, silence filled in holes, samples cut as overlapping. */
  aac: { started: number; filled: number; overlapped: number; failure: string | null } | null;
}

export interface Mp2pIngestSession extends IngestSession {
  stats(): Mp2pIngestStats;
}

/** Fragments waiting for the consumer past this pause the camera's socket … */
const QUEUE_HIGH_BYTES = 32 * 1024 * 1024;
/** … until they are below this. */
const QUEUE_LOW_BYTES = 8 * 1024 * 1024;
/** How long a GOP's fragment may wait for the AAC made of its G.711 … */
export const AAC_WAIT_MS = 500;
/** … and before the encoder's first frame (ffmpeg starting on a loaded machine). */
export const AAC_START_WAIT_MS = 3000;

export function startMp2pIngest(opts: Mp2pIngestOptions): Mp2pIngestSession {
  const reader = new PsGopReader(opts.maxGopBytes !== undefined ? { maxGopBytes: opts.maxGopBytes } : {});
  const g711 = opts.g711 ?? 'keep';
  const fmp4 = new PsLiveFmp4({ g711 });
  let aac: G711Aac | null = null;
  /** GOPs cut, waiting to be written in order (g711 'aac': each may wait for its AAC). */
  const gops: { gop: PsGop; cutAt: number }[] = [];
  let writing: Promise<void> | null = null;
  const noVideoMs = 2 * opts.stallTimeoutMs + 10_000;
  let bridge: Mp2pBridge | null = null;
  let requested = false;
  let finished = false;
  let failure: Error | undefined;
  const silence = new SilenceWatch();
  let lastFragmentAt = Date.now();
  let lastAudio = '';
  let resolveExit!: (e: IngestExit) => void;
  const exited = new Promise<IngestExit>((r) => (resolveExit = r));

  const queue = new ChunkQueue({
    highBytes: opts.queueHighBytes ?? QUEUE_HIGH_BYTES,
    lowBytes: opts.queueLowBytes ?? QUEUE_LOW_BYTES,
    pause: () => {
      if (!bridge) return false;
      silence.hold();
      bridge.pause();
      return true;
    },
    resume: () => {
      silence.release();
      // Time paused is not time without video either.
      lastFragmentAt = Date.now();
      bridge?.resume();
    },
  });
  const enqueue = (c: Fmp4Chunk): void => queue.push([c]);
  /** `cutAt`: when the GOP's last frame had arrived (its fragment is timed from then, however long it waited here). */
  const emit = (chunks: Fmp4Chunk[], cutAt: number): void => {
    for (let c of chunks) {
      if (c.kind === 'init') {
        const audio = JSON.stringify(fmp4.audio);
        if (audio !== lastAudio) {
          lastAudio = audio;
          opts.onAudio?.(fmp4.audio);
          opts.onNotice?.('info', 'MP2P audio', { ...fmp4.audio });
        }
      } else {
        lastFragmentAt = Date.now();
        c = { ...c, heldMs: Math.max(0, lastFragmentAt - cutAt) };
      }
      enqueue(c);
    }
  };
  /** Writes a GOP with the AAC made of its G.711 so far (see the module comment). */
  const writeWithAac = async (p: PreparedGop, cutAt: number): Promise<void> => {
    if (p.g711.length > 0 && !aac && opts.ffmpegPath) {
      aac = new G711Aac({ ffmpegPath: opts.ffmpegPath, ...(opts.signal ? { signal: opts.signal } : {}) });
    }
    if (!aac) return emit(fmp4.write(p, { frames: [], failure: opts.ffmpegPath ? null : 'no ffmpeg configured' }), cutAt);
    aac.push(p.g711);
    // Measured from the later of the cut and this push: a GOP that waited in the queue
    // (the one before it waiting for its audio) still gives the encoder its full time.
    await aac.settle(Math.max(cutAt, Date.now()) + (aac.framesOut > 0 ? AAC_WAIT_MS : AAC_START_WAIT_MS));
    if (finished) return;
    emit(fmp4.write(p, { frames: aac.take(), failure: aac.failure }), cutAt);
  };
  const writingNow = (): Promise<void> | null => writing;
  /** Writes the GOPs waiting, in order; one writer at a time (`writing` while it runs). */
  const drain = (): void => {
    if (writing) return;
    let done!: () => void;
    writing = new Promise<void>((r) => (done = r));
    void (async () => {
      try {
        for (let next = gops.shift(); next && !finished; next = gops.shift()) {
          const p = fmp4.prepare(next.gop);
          if (!p) continue;
          if (g711 === 'aac') await writeWithAac(p, next.cutAt);
          else emit(fmp4.write(p), next.cutAt);
        }
      } catch (err) {
        fail(err as Error); // our bug, not the camera's: this attempt ends with it
      } finally {
        writing = null;
        done();
      }
    })();
  };
  const convert = (gop: PsGop): void => {
    gops.push({ gop, cutAt: Date.now() });
    drain();
  };
  const stats = (): Mp2pIngestStats => ({
    reader: { ...reader.counters },
    fmp4: { ...fmp4.counters },
    lostPackets: bridge?.lostPackets ?? 0,
    audio: fmp4.audio,
    transport: bridge?.transport ?? null,
    aac: aac ? { started: aac.started, ...aac.feedCounters, failure: aac.failure } : null,
  });

  const finish = (error?: Error): void => {
    if (finished) return;
    finished = true;
    clearInterval(watchdog);
    bridge?.close();
    aac?.stop();
    gops.length = 0;
    const s = stats();
    const trouble =
      s.lostPackets +
      s.reader.resyncBytes +
      s.reader.droppedBytes +
      s.reader.oversizedGops +
      s.reader.droppedGops +
      s.fmp4.skippedGops +
      s.fmp4.truncatedPackets;
    if (trouble > 0)
      opts.onNotice?.('warn', 'MP2P: damaged input in this session (skipped and resynchronised)', { lostPackets: s.lostPackets, ...s.reader, ...s.fmp4 });
    resolveExit(requested ? { requested: true } : { requested: false, ...((failure ?? error) ? { error: failure ?? error } : {}) });
    queue.end();
  };
  const fail = (err: Error): void => {
    failure ??= err;
    finish(err);
  };

  /** The PSM names video, none of it H.264/H.265: nothing to record. */
  const checkVideoType = (): void => {
    if (reader.codec !== null) return;
    const video = [...reader.psm.entries()].filter(([id]) => id >= 0xe0 && id <= 0xef);
    if (video.length === 0 || video.some(([, t]) => t === STREAM_TYPE.H264 || t === STREAM_TYPE.H265)) return;
    const names = video.map(([, t]) => VIDEO_TYPES[t] ?? `stream type 0x${t.toString(16)}`);
    fail(new Mp2pIngestError('MP2P_VIDEO_UNSUPPORTED', `the camera sends ${names.join(', ')} in MPEG-PS; H.264 and H.265 are recorded`));
  };

  const watchdog = setInterval(() => {
    const now = Date.now();
    if (!bridge) return; // connecting: the bridge times its own steps out
    const silentMs = silence.silentMs();
    if (silentMs > opts.stallTimeoutMs) {
      fail(new Mp2pIngestError('MP2P_STALLED', `no data from the camera for ${silentMs} ms`));
    } else if (!queue.paused && now - lastFragmentAt > noVideoMs) {
      const r = reader.counters;
      const why = reader.codec === null ? 'no H.264/H.265 video found' : r.gops === 0 ? 'no keyframe with a PSM' : 'no GOP with readable video';
      fail(
        new Mp2pIngestError(
          'MP2P_NO_VIDEO',
          `${why} in ${now - lastFragmentAt} ms of MPEG-PS (${r.bytesIn} bytes, ${r.skippedBytes} skipped, ${r.resyncBytes} resynchronised)`,
        ),
      );
    }
  }, 1000);
  watchdog.unref();

  void (async () => {
    try {
      const bridgeOpts = { ...(opts.transport ? { transport: opts.transport } : {}), ...(opts.memoryKey ? { memoryKey: opts.memoryKey } : {}) };
      const b = await startMp2pBridge(
        opts.url,
        opts.stallTimeoutMs,
        {
          onBytes(bytes, gap) {
            if (finished) return;
            silence.heard();
            if (gap) reader.discontinuity();
            try {
              for (const gop of reader.push(bytes)) convert(gop);
              checkVideoType();
            } catch (err) {
              // Our bug, not the camera's: end this attempt with it rather than the process.
              fail(err as Error);
            }
          },
        },
        bridgeOpts,
      );
      bridge = b;
      if (finished) return void b.close();
      silence.heard();
      lastFragmentAt = Date.now();
      opts.onNotice?.('info', 'camera sends MPEG-PS over RTP (MP2P): read by our PS reader', { transport: b.transport });
      const why = await b.ended;
      if (finished) return;
      if (!requested) {
        // The camera hung up: its last GOP is whole up to the last packet.
        const last = reader.end();
        if (last) convert(last);
        for (let w = writingNow(); w; w = writingNow()) await w;
      }
      finish(why ?? new Error('camera stream ended'));
    } catch (err) {
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
