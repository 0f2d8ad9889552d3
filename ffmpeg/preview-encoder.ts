/**
 * The ffmpeg of a live preview (live/live-preview.ts): fragmented MP4 in on stdin,
 * scaled to `height` and encoded as H.264 (ultrafast, zerolatency, baseline, a
 * keyframe every second so one fragment leaves every second), fragmented MP4 out on
 * stdout, cut into chunks by Fmp4Splitter.
 *
 * Invariant: once `stop()` is called or the process exits, no chunk is delivered and
 * the child is gone (SIGKILL through lib/child-process.ts, which also kills it when this
 * process exits, so no orphan ffmpeg).
 */
import { PassThrough } from 'node:stream';
import type { Logger } from '../lib/log.ts';
import { liveChildCount, spawnChild } from '../lib/child-process.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';

export interface PreviewEncoderOptions {
  ffmpegPath: string;
  /** Output height in pixels (width follows the aspect, even). */
  height: number;
  log: Logger;
}

export interface PreviewEncoder {
  /** Queues source bytes; `done` is called once stdin took them (or the encoder is gone). */
  write(bytes: Buffer, done: () => void): void;
  /** Kills ffmpeg; idempotent. */
  stop(): void;
}

/** Number of preview ffmpeg children alive in this process (tests: no orphans). */
export function livePreviewCount(): number {
  return liveChildCount('ffmpeg', 'preview');
}

/** ffmpeg's arguments: fMP4 on stdin, scaled H.264 fMP4 on stdout. */
function previewArgs(height: number): string[] {
  return [
    '-f',
    'mp4',
    '-nostdin',
    '-hide_banner',
    '-loglevel',
    'error',
    '-fflags',
    'nobuffer',
    '-i',
    'pipe:0',
    '-map',
    '0:v:0',
    '-an',
    '-vf',
    `scale=-2:${height}`,
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-tune',
    'zerolatency',
    '-profile:v',
    'baseline',
    '-pix_fmt',
    'yuv420p',
    '-force_key_frames',
    'expr:gte(t,n_forced*1)',
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    'pipe:1',
  ];
}

/**
 * Starts one preview ffmpeg (lib/child-process.ts). Throws ChildProcessError
 * SPAWN_NO_DESCRIPTORS when the process has no descriptor headroom to spawn.
 */
export function startPreviewEncoder(opts: PreviewEncoderOptions, onChunk: (chunk: Fmp4Chunk) => void): PreviewEncoder {
  const child = spawnChild({ command: 'ffmpeg', purpose: 'preview', file: opts.ffmpegPath, args: previewArgs(opts.height), stdin: 'pipe' });
  const input = new PassThrough({ highWaterMark: 256 * 1024 });
  const splitter = new Fmp4Splitter();
  let stopped = false;
  void child.exited.then((exit) => {
    if (!stopped && exit.error) opts.log.warn({ err: exit.error.message.split('\n')[0] }, 'live preview transcoder failed');
    input.destroy();
  });
  splitter.on('data', (chunk: Fmp4Chunk) => {
    if (!stopped) onChunk(chunk);
  });
  splitter.on('error', (err: Error) => {
    if (!stopped) opts.log.warn({ err: err.message }, 'live preview output not understood');
    void child.stop();
  });
  input.on('error', () => undefined); // EPIPE when ffmpeg is killed mid-write
  input.pipe(child.stdin!);
  child.stdout!.on('error', () => undefined);
  child.stdout!.pipe(splitter, { end: true });
  return {
    write(bytes, done) {
      if (stopped) {
        done();
        return;
      }
      input.write(bytes, () => done());
    },
    stop() {
      if (stopped) return;
      stopped = true;
      input.destroy();
      void child.stop();
    },
  };
}
