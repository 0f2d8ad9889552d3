/**
 * The one module that runs ffmpeg for ingest (spawned through lib/child-process.ts,
 * like every child of the recorder). It pulls RTSP (over TCP unless
 * the camera's `transport` says otherwise or the camera refused TCP:
 * rtsp/rtsp-transport.ts) and writes fragmented MP4 to a pipe that Fmp4Splitter cuts
 * into init + one fragment per GOP (per second for Motion JPEG, where every frame is
 * a keyframe).
 *
 * Per attempt, before ffmpeg starts, a plan (`onPlan`) says the transport and what
 * happens to the audio: copied when it is AAC, transcoded to AAC otherwise, left out
 * after an attempt with audio got no video (ffmpeg/audio-plan.ts). Both learn from an
 * attempt that failed before any video, per URL, for the attempts after it.
 *
 * Child lifetime: ffmpeg is spawned through lib/child-process.ts, which kills it when
 * `stop()` is called, when the owner's `signal` aborts and when this process exits, so
 * a thrown exception or a failing test leaves no child. If this process dies by
 * SIGKILL, ffmpeg's next write to the pipe fails with EPIPE and it exits (at most one
 * GOP later); -nostdin keeps it from waiting on a terminal.
 *
 * Watchdog: a camera that sends nothing for `stallTimeoutMs` + 5 s ends the session.
 * Silence is judged by the bytes ffmpeg writes (lib/silence-watch.ts), counted only
 * while we read them: a segment writer that is behind (a slow disk) pauses the pipe,
 * and that pause is never taken for a silent camera (issue 14: the watchdog timed the
 * writer, so a disk that stalled restarted a camera that was streaming).
 *
 * Smart stream (data tracks): when `smart` is given and the camera's SDP announces a
 * data track (one DESCRIBE first, rtsp/rtsp-describe.ts; ffmpeg refuses an output
 * with no stream, so it is only added when there is one), the same ffmpeg gets a
 * second output: every data track copied into MPEG-TS (timestamps and packet
 * boundaries kept) on a private unix socket, plus the first video keyframe only
 * (`-frames:v 1`), whose DTS ties the TS times to the fMP4's (smart/smart-writer.ts).
 * The fMP4 output stays output #0: ffmpeg 5.1 ends the other streams of an output
 * file whose stream hit -frames only when it checks that file first. A camera
 * without a data track gets exactly the command it always got.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnChild, type Child } from '../lib/child-process.ts';
import { SilenceWatch } from '../lib/silence-watch.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { describeWithRetry, hasDataTrack, type SdpMedia } from '../rtsp/rtsp-describe.ts';
import { noteAudioOutcome, planAudio, type AudioPlan } from './audio-plan.ts';
import { chooseTransport, noteTransportOutcome, type RtspTransport, type TransportSetting } from '../rtsp/rtsp-transport.ts';

export interface IngestOptions {
  url: string;
  ffmpegPath: string;
  /** Kill the session if the camera sends nothing for this long. */
  stallTimeoutMs: number;
  onStderrLine?: (line: string) => void;
  /**
   * The camera's SDP media from a DESCRIBE the caller already made (ingest/camera-ingest.ts),
   * or null when that DESCRIBE failed; absent: this module describes the camera itself.
   * One DESCRIBE per attempt serves both the MP2P check and the data-track check.
   */
  described?: SdpMedia[] | null;
  /** The camera's RTSP transport setting (default `auto`). */
  transport?: TransportSetting;
  /**
   * Names the camera stream across attempts for what attempts learn (audio, transport);
   * default `url`. Edge replay passes the camera's replay URL (its own URL is a proxy's).
   */
  memoryKey?: string;
  /** This attempt's plan, once decided (before ffmpeg starts). */
  onPlan?: (plan: IngestPlan) => void;
  /** The owner's signal: aborting it stops the session like `stop()` (ffmpeg is killed). */
  signal?: AbortSignal;
  /** Receives the TS bytes of the camera's data tracks, if it has any. */
  smart?: {
    onBytes(bytes: Buffer): void;
    /** Whether this attempt splits off a data track, and if not, why (for one log line). */
    onDataTrack?(present: boolean, why: string): void;
  };
}

/** Output options of the data output (see the module comment). */
const SMART_OUTPUT_OPTIONS = [
  '-map',
  '0:v:0',
  '-map',
  '0:d',
  '-c',
  'copy',
  '-frames:v',
  '1',
  // A first packet without timestamps would make the TS muxer fail the whole ffmpeg.
  '-bsf:v',
  'setts=dts=if(eq(DTS\\,NOPTS)\\,0\\,DTS):pts=if(eq(PTS\\,NOPTS)\\,if(eq(DTS\\,NOPTS)\\,0\\,DTS)\\,PTS)',
  '-f',
  'mpegts',
  '-muxdelay',
  '0',
  '-muxpreload',
  '0',
  '-flush_packets',
  '1',
  // The video stream gets no packet after its first: without this the muxer holds the
  // data back waiting for one (up to its default 10 s) before interleaving.
  '-max_interleave_delta',
  '1',
];

/** A listening unix socket in a private temp dir for ffmpeg's data output. */
function openDataSocket(onBytes: (b: Buffer) => void): { url: string; close(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'rec-smart-'));
  const path = join(dir, 'ts.sock');
  const sockets = new Set<Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on('data', onBytes);
    sock.on('error', () => undefined); // ffmpeg's exit ends the stream; nothing to report
    sock.on('close', () => sockets.delete(sock));
  });
  server.maxConnections = 1;
  server.listen(path);
  return {
    url: `unix:${path}`,
    close() {
      server.close();
      for (const s of sockets) s.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Who reads the camera: ffmpeg, our own RTSP client (ingest/native-ingest.ts) or the MP2P path. */
export type IngestReader = 'ffmpeg' | 'native' | 'mp2p';

export interface IngestPlan {
  ingest: IngestReader;
  /** The RTSP lower transport asked for (the MP2P bridge: the one the camera took); null when not known. */
  transport: RtspTransport | null;
  audio: AudioPlan;
  /** `keyframe`: one fragment per GOP; `second`: one per second (Motion JPEG: every frame is a keyframe). */
  fragments: 'keyframe' | 'second';
}

export interface IngestExit {
  /** True when stop() was called: the exit was ours, not the camera's. */
  requested: boolean;
  /** ffmpeg's last stderr lines or the splitter's error, when it failed. */
  error?: Error;
}

export interface IngestSession {
  readonly chunks: AsyncIterable<Fmp4Chunk>;
  readonly exited: Promise<IngestExit>;
  stop(): void;
}

/**
 * URLs whose last attempt with a data output ended before any video: the next attempt
 * goes without it, so a smart-stream problem can never keep a camera's video down
 * (an offline camera just alternates, harmlessly).
 */
const smartAttemptFailed = new Set<string>();

/** The watchdog looks this often; a camera is silent after `stallTimeoutMs` + STALL_GRACE_MS. */
const WATCHDOG_EVERY_MS = 1000;
const STALL_GRACE_MS = 5000;

/** ffmpeg's arguments for one attempt: RTSP in, fMP4 on stdout (output #0), the data output after it. */
export function ingestArgs(url: string, stallTimeoutMs: number, p: IngestPlan, dataUrl: string | null): string[] {
  return [
    '-nostdin',
    '-hide_banner',
    '-loglevel',
    'warning',
    '-rtsp_transport',
    p.transport ?? 'tcp',
    // RTSP socket I/O timeout in microseconds: a vanished camera ends the session.
    '-timeout',
    String(stallTimeoutMs * 1000),
    '-i',
    url,
    ...p.audio.outputOptions,
    '-f',
    'mp4',
    ...(p.fragments === 'second'
      ? ['-movflags', 'empty_moov+default_base_moof', '-frag_duration', '1000000']
      : ['-movflags', 'frag_keyframe+empty_moov+default_base_moof']),
    'pipe:1',
    ...(dataUrl ? [...SMART_OUTPUT_OPTIONS, dataUrl] : []),
  ];
}

export function startIngest(opts: IngestOptions): IngestSession {
  const splitter = new Fmp4Splitter();
  let requested = false;
  const silence = new SilenceWatch();
  let resolveExit!: (exit: IngestExit) => void;
  const exited = new Promise<IngestExit>((r) => (resolveExit = r));
  const stderrTail: string[] = [];

  let dataSocket: { url: string; close(): void } | null = null;
  let child: Child | null = null;
  let splitterError: Error | undefined;
  let stallNote: string | null = null;
  let finished = false;
  let gotVideo = false;
  let plan: IngestPlan | null = null;
  const memoryKey = opts.memoryKey ?? opts.url;
  const transportSetting = opts.transport ?? 'auto';
  const finish = (error?: Error): void => {
    if (finished) return;
    finished = true;
    clearInterval(watchdog);
    opts.signal?.removeEventListener('abort', onAbort);
    dataSocket?.close();
    if (dataSocket && !gotVideo && !requested) smartAttemptFailed.add(opts.url);
    if (plan) {
      const outcome = { gotVideo, requested, stderr: stderrTail };
      if (plan.transport) noteTransportOutcome(memoryKey, transportSetting, plan.transport, outcome);
      noteAudioOutcome(memoryKey, plan.audio, outcome);
    }
    resolveExit(requested ? { requested } : { requested, error: splitterError ?? error });
  };
  const kill = (): void => {
    void child?.stop();
  };

  const launch = (dataUrl: string | null, p: IngestPlan): void => {
    let c: Child;
    try {
      c = spawnChild({
        command: 'ffmpeg',
        purpose: 'ingest',
        file: opts.ffmpegPath,
        args: ingestArgs(opts.url, opts.stallTimeoutMs, p, dataUrl),
        ...(opts.signal ? { signal: opts.signal } : {}),
        onStderrLine: (line) => {
          stderrTail.push(line);
          if (stderrTail.length > 20) stderrTail.shift();
          opts.onStderrLine?.(line);
        },
      });
    } catch (err) {
      // Out of descriptors, or the owner stopped: a failed attempt, never an uncaught error.
      finish(err as Error);
      splitter.end();
      return;
    }
    child = c;
    silence.heard();
    const stdout = c.stdout!;
    // Our own pipe into the splitter, so the watchdog knows when we hold ffmpeg back.
    stdout.on('data', (bytes: Buffer) => {
      silence.heard();
      if (splitter.write(bytes)) return;
      stdout.pause();
      silence.hold();
      splitter.once('drain', () => {
        silence.release();
        stdout.resume();
      });
    });
    stdout.once('end', () => splitter.end());
    stdout.on('error', () => undefined); // the exit says what happened
    void c.exited.then((exit) => {
      if (exit.requested) return finish();
      if (stallNote !== null)
        return finish(
          new Error(
            `ffmpeg was killed with signal SIGKILL: ${stderrTail
              .filter((l) => l.trim() !== '')
              .slice(-5)
              .join(' | ')}`,
          ),
        );
      finish(exit.error ?? new Error('camera stream ended'));
    });
  };
  splitter.on('error', (err: Error) => {
    splitterError = err;
    kill();
  });
  const smart = opts.smart;
  // One DESCRIBE per attempt, made by the caller (ingest/camera-ingest.ts) or here when
  // the smart stream needs one; a failed DESCRIBE only means less is known: ffmpeg then
  // reports the real problem.
  let describeError: string | null = opts.described === null ? 'no answer' : null;
  const described: Promise<SdpMedia[] | null | undefined> =
    opts.described !== undefined
      ? Promise.resolve(opts.described)
      : smart
        ? describeWithRetry(opts.url, opts.stallTimeoutMs).catch((err: Error) => {
            describeError = err.message;
            return null;
          })
        : Promise.resolve(undefined);
  void described.then((media) => {
    if (requested) {
      finish();
      splitter.end();
      return;
    }
    const video = media?.find((m) => m.media === 'video');
    plan = {
      ingest: 'ffmpeg',
      transport: chooseTransport(memoryKey, transportSetting),
      audio: planAudio(memoryKey, media),
      fragments: video?.encodings[0] === 'JPEG' ? 'second' : 'keyframe',
    };
    if (smart) {
      let why = 'no data track in the SDP';
      if (smartAttemptFailed.delete(opts.url)) {
        why = 'the previous attempt with a data output got no video';
      } else if (!media) {
        why = `DESCRIBE failed: ${describeError ?? 'no answer'}`;
      } else if (hasDataTrack(media)) {
        try {
          dataSocket = openDataSocket((b) => smart.onBytes(b));
        } catch (err) {
          dataSocket = null; // no socket, no smart stream: the video goes on
          why = `no socket for the data output: ${(err as Error).message}`;
        }
      }
      smart.onDataTrack?.(dataSocket !== null, why);
    }
    opts.onPlan?.(plan);
    launch(dataSocket?.url ?? null, plan);
  });

  // Judges the camera, not the writer: see the module comment.
  const watchdog = setInterval(() => {
    const silentMs = silence.silentMs();
    if (child?.running && stallNote === null && silentMs > opts.stallTimeoutMs + STALL_GRACE_MS) {
      stallNote = `no data from the camera for ${silentMs} ms`;
      stderrTail.push(stallNote);
      kill();
    }
  }, WATCHDOG_EVERY_MS);
  watchdog.unref();

  function stop(): void {
    requested = true;
    kill();
  }
  function onAbort(): void {
    stop();
  }
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) stop();

  async function* chunks(): AsyncGenerator<Fmp4Chunk> {
    for await (const chunk of splitter as AsyncIterable<Fmp4Chunk>) {
      gotVideo = true;
      yield chunk;
    }
  }

  return {
    chunks: chunks(),
    exited,
    stop,
  };
}
