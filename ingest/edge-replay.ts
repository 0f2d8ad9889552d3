/**
 * Pulls one past interval from a camera's edge storage into a staging fMP4 file
 * (init, then one moof+mdat per GOP, as ffmpeg cut them), and says on which wall-clock
 * instant its first fragment starts. Nothing here touches the index: the caller writes
 * the staged fragments into segments only when the pull succeeded, so a camera that
 * refuses, answers with another interval or never stops leaves stored video and the
 * gap ledger as they were (docs/design/backfill.md).
 *
 * Modes: `onvif` (ONVIF replay through rtsp/rtsp-replay-proxy.ts: `Require:
 * onvif-replay`, `Range: clock=`, `Rate-Control: no`), or `url` (the interval is in the
 * URL template; ffmpeg opens it directly).
 *
 * Time (docs/design/architecture.md section 6): the first fragment starts at the camera's absolute clock
 * when it says one (the ONVIF RTP extension of the first packet, else the clock range
 * of its PLAY reply), else at the start asked for; later fragments follow media time.
 * Never arrival time.
 *
 * Bounds, each a typed RecorderError:
 * - EDGE_UNREACHABLE: no TCP connection / not RTSP; EDGE_REFUSED: a non-2xx answer to
 *   DESCRIBE, SETUP or PLAY (e.g. 551 when the camera has no replay, 404 no such track);
 * - EDGE_WRONG_INTERVAL: the camera's clock says it sends video starting before
 *   from - WRONG_INTERVAL_MS or after `to`, or ending after to + WRONG_INTERVAL_MS;
 * - EDGE_OVERRUN: a fragment starting OVERRUN_SLACK_MS past `to` (the camera does not
 *   stop where asked, in either mode: e.g. a live stream behind a replay URL), or more
 *   than `maxBytes`;
 * - EDGE_TIMEOUT: not done within `deadlineMs`;
 * - EDGE_NO_VIDEO: the camera answered but sent no complete GOP.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import { RecorderError } from '../lib/errors.ts';
import { startIngest } from '../ffmpeg/ffmpeg-ingest.ts';
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import type { InitInfo } from '../media/mp4/init-info.ts';
import { renderReplayUrl } from '../rtsp/edge-url.ts';
import { startReplayProxy, type ReplayProxy } from '../rtsp/rtsp-replay-proxy.ts';

/** A camera whose clock is further than this from the interval asked for answers another interval. */
export const WRONG_INTERVAL_MS = 15_000;
/** Video this far past the end asked for means the camera does not stop. */
export const OVERRUN_SLACK_MS = 5_000;

export interface EdgePullOptions {
  template: string;
  mode: 'onvif' | 'url';
  rateControl: boolean;
  fromMs: number;
  toMs: number;
  ffmpegPath: string;
  stagingPath: string;
  connectTimeoutMs: number;
  /** No data for this long ends the pull (a camera that goes quiet without BYE). */
  stallTimeoutMs: number;
  deadlineMs: number;
  maxBytes: number;
  signal?: AbortSignal;
}

export type ClockSource = 'onvif-rtp' | 'play-range' | 'requested';

export interface EdgePullResult {
  /** Wall-clock start of the first staged fragment. */
  anchorMs: number;
  clockSource: ClockSource;
  fragments: number;
  bytes: number;
  firstStartMs: number;
  lastEndMs: number;
}

type Fragment = Extract<Fmp4Chunk, { kind: 'fragment' }>;

export async function pullEdgeInterval(opts: EdgePullOptions): Promise<EdgePullResult> {
  if (opts.signal?.aborted) throw shuttingDown();
  const url = renderReplayUrl(opts.template, opts.fromMs, opts.toMs);
  let proxy: ReplayProxy | null = null;
  if (opts.mode === 'onvif') {
    proxy = await startReplayProxy({
      target: url,
      replay: { startMs: opts.fromMs, endMs: opts.toMs, rateControl: opts.rateControl },
      connectTimeoutMs: opts.connectTimeoutMs,
    });
  }
  // What attempts learn about the camera's audio is kept under its template: the URL
  // ffmpeg opens is a proxy's (or holds the interval), new for every pull.
  // The back-fill's signal reaches ffmpeg too (lib/child-process.ts kills it when it aborts).
  const session = startIngest({
    url: proxy?.url ?? url,
    memoryKey: opts.template,
    ffmpegPath: opts.ffmpegPath,
    stallTimeoutMs: opts.stallTimeoutMs,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  let failure: RecorderError | null = null;
  const stop = (err: RecorderError): void => {
    failure ??= err;
    session.stop();
  };
  const deadline = setTimeout(
    () => stop(new RecorderError('EDGE_TIMEOUT', `edge replay of ${span(opts)} not done within ${opts.deadlineMs} ms`)),
    opts.deadlineMs,
  );
  const onAbort = (): void => stop(shuttingDown());
  opts.signal?.addEventListener('abort', onAbort);
  if (opts.signal?.aborted) onAbort(); // aborted while the proxy connected
  let fh: FileHandle | null = await open(opts.stagingPath, 'w');
  let bytes = 0;
  let init: InitInfo | null = null;
  let timeline: { ticks: bigint; anchorMs: number; source: ClockSource } | null = null;
  let fragments = 0;
  let firstStartMs = 0;
  let lastEndMs = 0;
  try {
    try {
      for await (const chunk of session.chunks) {
        if (failure) continue; // drain until ffmpeg is gone
        if (chunk.kind === 'init') {
          if (init && init.codecKey !== chunk.info.codecKey) {
            stop(new RecorderError('EDGE_REFUSED', 'the camera changed codec in the middle of a replay'));
            continue;
          }
          if (!init) {
            await fh.write(chunk.bytes);
            bytes += chunk.bytes.byteLength;
          }
          init = chunk.info;
          continue;
        }
        if (!init) continue;
        const ticks = videoTicks(chunk, init);
        if (!timeline) {
          const clock = cameraClock(proxy, opts);
          if (clock.problem) {
            stop(
              new RecorderError('EDGE_WRONG_INTERVAL', clock.problem, { details: { asked: { fromMs: opts.fromMs, toMs: opts.toMs }, camera: clock.range } }),
            );
            continue;
          }
          timeline = { ticks, anchorMs: clock.startMs, source: clock.source };
        }
        const startMs = timeline.anchorMs + (Number(ticks - timeline.ticks) * 1000) / chunk.timescale;
        const endMs = startMs + (chunk.durationTicks * 1000) / chunk.timescale;
        if (startMs >= opts.toMs + OVERRUN_SLACK_MS) {
          stop(new RecorderError('EDGE_OVERRUN', `the camera sent video ${Math.round(startMs - opts.toMs)} ms past the end of ${span(opts)} and did not stop`));
          continue;
        }
        if (startMs >= opts.toMs) continue; // the tail of the last GOP asked for; nothing of ours
        if (bytes + chunk.bytes.byteLength > opts.maxBytes) {
          stop(new RecorderError('EDGE_OVERRUN', `the replay of ${span(opts)} exceeds ${opts.maxBytes} bytes`));
          continue;
        }
        await fh.write(chunk.bytes);
        bytes += chunk.bytes.byteLength;
        if (fragments === 0) firstStartMs = startMs;
        fragments++;
        lastEndMs = endMs;
      }
    } catch (err) {
      // A stream cut mid-GOP or garbage: what was staged before it is still good.
      if (fragments === 0) failure ??= new RecorderError('EDGE_REFUSED', `the camera's replay stream is not usable: ${redactUrls((err as Error).message)}`);
      session.stop();
    }
    const exit = await session.exited;
    await fh.close();
    fh = null;
    if (failure) throw failure;
    if (fragments === 0) throw noVideo(proxy, opts, exit.error?.message);
    return {
      anchorMs: timeline!.anchorMs,
      clockSource: timeline!.source,
      fragments,
      bytes,
      firstStartMs: Math.round(firstStartMs),
      lastEndMs: Math.round(lastEndMs),
    };
  } catch (err) {
    await rm(opts.stagingPath, { force: true });
    throw err;
  } finally {
    clearTimeout(deadline);
    opts.signal?.removeEventListener('abort', onAbort);
    await fh?.close().catch(() => undefined);
    session.stop();
    proxy?.close();
  }
}

function shuttingDown(): RecorderError {
  return new RecorderError('EDGE_TIMEOUT', 'back-fill stopped: the recorder is shutting down');
}

function span(o: { fromMs: number; toMs: number }): string {
  return `${new Date(o.fromMs).toISOString()}..${new Date(o.toMs).toISOString()}`;
}

function videoTicks(frag: Fragment, init: InitInfo): bigint {
  const videoId = init.videoTrackId ?? init.tracks[0]?.id;
  const traf = frag.moof.tracks.find((t) => t.trackId === videoId) ?? frag.moof.tracks[0];
  return traf?.baseDecodeTime ?? 0n;
}

/** Where the camera says its video starts, and whether that is the interval asked for. */
export function judgeCameraClock(
  said: { firstPacketMs: number | null; playRange: { startMs: number; endMs: number | null } | null },
  asked: { fromMs: number; toMs: number },
): { startMs: number; source: ClockSource; problem: string | null; range: { startMs: number; endMs: number | null } | null } {
  const range = said.firstPacketMs !== null ? { startMs: said.firstPacketMs, endMs: said.playRange?.endMs ?? null } : said.playRange;
  if (!range) return { startMs: asked.fromMs, source: 'requested', problem: null, range: null };
  const source: ClockSource = said.firstPacketMs !== null ? 'onvif-rtp' : 'play-range';
  const off = (ms: number): string => `${Math.round(ms / 1000)} s`;
  let problem: string | null = null;
  if (range.startMs < asked.fromMs - WRONG_INTERVAL_MS)
    problem = `the camera sends video from ${off(asked.fromMs - range.startMs)} before the interval asked for`;
  else if (range.startMs > asked.toMs) problem = `the camera sends video from ${off(range.startMs - asked.toMs)} after the interval asked for`;
  else if (range.endMs !== null && range.endMs > asked.toMs + WRONG_INTERVAL_MS)
    problem = `the camera sends video until ${off(range.endMs - asked.toMs)} after the interval asked for`;
  return { startMs: range.startMs, source, problem, range };
}

function cameraClock(proxy: ReplayProxy | null, asked: { fromMs: number; toMs: number }): ReturnType<typeof judgeCameraClock> {
  if (!proxy) return judgeCameraClock({ firstPacketMs: null, playRange: null }, asked);
  return judgeCameraClock(proxy.report, asked);
}

/** Credentials of a URL never go into an error (errors are stored on the gap and published). */
export function redactUrls(text: string): string {
  return text.replace(/(rtsps?:\/\/)[^@\s/]*@/gi, '$1***@');
}

function noVideo(proxy: ReplayProxy | null, o: EdgePullOptions, rawError: string | undefined): RecorderError {
  const ffmpegError = rawError === undefined ? undefined : redactUrls(rawError);
  const r = proxy?.report;
  if (r?.upstreamError) return new RecorderError('EDGE_UNREACHABLE', r.upstreamError);
  if (r?.refused)
    return new RecorderError('EDGE_REFUSED', `the camera refused ${r.refused.method} of ${span(o)}: ${r.refused.status} ${r.refused.reason}`, {
      details: r.refused,
    });
  if (ffmpegError && /Connection refused|No route to host|Connection timed out|Name or service not known/i.test(ffmpegError))
    return new RecorderError('EDGE_UNREACHABLE', ffmpegError);
  // An answer that ended cleanly without a GOP: nothing recorded there. Anything else
  // (an RTSP error status, an SDP or stream ffmpeg cannot read) is the camera refusing.
  if (!ffmpegError || /stream ended/.test(ffmpegError)) return new RecorderError('EDGE_NO_VIDEO', `the camera has no video for ${span(o)}`);
  return new RecorderError('EDGE_REFUSED', `the camera's replay of ${span(o)} could not be read: ${ffmpegError}`);
}
