/**
 * The one module that runs ffmpeg for ingest (through fluent-ffmpeg, which is
 * unmaintained upstream, so nothing else imports it). It pulls RTSP (over TCP unless
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
 * Child lifetime: every ffmpeg we start is in `live` until it exits; `stop()` kills
 * it, and a process 'exit' hook kills whatever is left, so a thrown exception or a
 * failing test leaves no child. If this process dies by SIGKILL, ffmpeg's next write
 * to the pipe fails with EPIPE and it exits (at most one GOP later); -nostdin keeps it
 * from waiting on a terminal.
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
import ffmpeg from 'fluent-ffmpeg';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertSpawnHeadroom } from './spawn-headroom.ts';
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
  /** Receives the TS bytes of the camera's data tracks, if it has any. */
  smart?: {
    onBytes(bytes: Buffer): void;
    /** Whether this attempt splits off a data track, and if not, why (for one log line). */
    onDataTrack?(present: boolean, why: string): void;
  };
}

/** Output options of the data output (see the module comment). */
const SMART_OUTPUT_OPTIONS = [
  '-map', '0:v:0',
  '-map', '0:d',
  '-c', 'copy',
  '-frames:v', '1',
  // A first packet without timestamps would make the TS muxer fail the whole ffmpeg.
  '-bsf:v', 'setts=dts=if(eq(DTS\\,NOPTS)\\,0\\,DTS):pts=if(eq(PTS\\,NOPTS)\\,if(eq(DTS\\,NOPTS)\\,0\\,DTS)\\,PTS)',
  '-f', 'mpegts',
  '-muxdelay', '0',
  '-muxpreload', '0',
  '-flush_packets', '1',
  // The video stream gets no packet after its first: without this the muxer holds the
  // data back waiting for one (up to its default 10 s) before interleaving.
  '-max_interleave_delta', '1',
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

export interface IngestPlan {
  /** The RTSP lower transport asked for; null when the input is not RTSP (the MP2P bridge). */
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

const live = new Set<ChildProcess>();
/**
 * URLs whose last attempt with a data output ended before any video: the next attempt
 * goes without it, so a smart-stream problem can never keep a camera's video down
 * (an offline camera just alternates, harmlessly).
 */
const smartAttemptFailed = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/** Number of ffmpeg children alive in this process (for tests and metrics). */
export function liveIngestCount(): number {
  return live.size;
}

export function startIngest(opts: IngestOptions): IngestSession {
  installExitHook();
  const splitter = new Fmp4Splitter();
  let requested = false;
  let lastDataAt = Date.now();
  let resolveExit!: (exit: IngestExit) => void;
  const exited = new Promise<IngestExit>((r) => (resolveExit = r));
  const stderrTail: string[] = [];

  let command: ffmpeg.FfmpegCommand | null = null;
  let dataSocket: { url: string; close(): void } | null = null;
  let child: ChildProcess | undefined;
  let splitterError: Error | undefined;
  let finished = false;
  let gotVideo = false;
  let plan: IngestPlan | null = null;
  const memoryKey = opts.memoryKey ?? opts.url;
  const transportSetting = opts.transport ?? 'auto';
  const finish = (error?: Error): void => {
    if (finished) return;
    finished = true;
    clearInterval(watchdog);
    if (child) live.delete(child);
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
    command?.kill('SIGKILL');
  };

  const launch = (dataUrl: string | null, p: IngestPlan): void => {
    try {
      assertSpawnHeadroom(); // out of descriptors: a failed attempt, never fluent-ffmpeg's uncaught TypeError
    } catch (err) {
      finish(err as Error);
      splitter.end();
      return;
    }
    const cmd = ffmpeg({ stdoutLines: 0 })
      .setFfmpegPath(opts.ffmpegPath)
      .input(opts.url)
      .inputOptions([
        '-nostdin',
        '-hide_banner',
        '-loglevel', 'warning',
        '-rtsp_transport', p.transport ?? 'tcp',
        // RTSP socket I/O timeout in microseconds: a vanished camera ends the session.
        '-timeout', String(opts.stallTimeoutMs * 1000),
      ])
      // fluent-ffmpeg pipes ffmpeg's stdout (output #0) into the splitter.
      .output(splitter, { end: true })
      .outputOptions([
        ...p.audio.outputOptions,
        '-f', 'mp4',
        ...(p.fragments === 'second'
          ? ['-movflags', 'empty_moov+default_base_moof', '-frag_duration', '1000000']
          : ['-movflags', 'frag_keyframe+empty_moov+default_base_moof']),
      ]);
    if (dataUrl) cmd.output(dataUrl).outputOptions(SMART_OUTPUT_OPTIONS);
    command = cmd;
    cmd.on('start', () => {
      child = (cmd as unknown as { ffmpegProc?: ChildProcess }).ffmpegProc;
      if (child) live.add(child);
      // fluent-ffmpeg spawns asynchronously: a stop() that came first could not kill it.
      if (requested) cmd.kill('SIGKILL');
    });
    cmd.on('stderr', (line: string) => {
      stderrTail.push(line);
      if (stderrTail.length > 20) stderrTail.shift();
      opts.onStderrLine?.(line);
    });
    cmd.on('end', () => finish(new Error('camera stream ended')));
    cmd.on('error', (err: Error) => {
      const tail = stderrTail.filter((l) => l.trim() !== '').slice(-5).join(' | ');
      finish(new Error(tail ? `${err.message.split('\n')[0]}: ${tail}` : err.message));
    });
    cmd.run();
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

  const watchdog = setInterval(() => {
    if (Date.now() - lastDataAt > opts.stallTimeoutMs + 5000) {
      stderrTail.push(`no fragment for ${Date.now() - lastDataAt} ms`);
      kill();
    }
  }, 1000);
  watchdog.unref();

  async function* chunks(): AsyncGenerator<Fmp4Chunk> {
    for await (const chunk of splitter as AsyncIterable<Fmp4Chunk>) {
      lastDataAt = Date.now();
      gotVideo = true;
      yield chunk;
    }
  }

  return {
    chunks: chunks(),
    exited,
    stop() {
      requested = true;
      kill();
    },
  };
}
