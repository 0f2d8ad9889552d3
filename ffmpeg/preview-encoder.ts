/**
 * The ffmpeg of a live preview (live/live-preview.ts): fragmented MP4 in on stdin,
 * scaled to `height` and encoded as H.264 (ultrafast, zerolatency, baseline, a
 * keyframe every second so one fragment leaves every second), fragmented MP4 out on
 * stdout, cut into chunks by Fmp4Splitter.
 *
 * Invariant: once `stop()` is called or the process exits, no chunk is delivered and
 * the child is gone (SIGKILL; also killed by a process exit hook, so no orphan ffmpeg).
 */
import ffmpeg from 'fluent-ffmpeg';
import type { ChildProcess } from 'node:child_process';
import { PassThrough } from 'node:stream';
import type { Logger } from '../lib/log.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { assertSpawnHeadroom } from './spawn-headroom.ts';

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

const live = new Set<ChildProcess>();
let hooked = false;

/** Number of preview ffmpeg children alive in this process (tests: no orphans). */
export function livePreviewCount(): number {
  return live.size;
}

/**
 * Starts one preview ffmpeg. Throws (RecorderError from assertSpawnHeadroom) when the
 * process has no descriptor headroom to spawn.
 */
export function startPreviewEncoder(opts: PreviewEncoderOptions, onChunk: (chunk: Fmp4Chunk) => void): PreviewEncoder {
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  assertSpawnHeadroom();
  const input = new PassThrough({ highWaterMark: 256 * 1024 });
  const splitter = new Fmp4Splitter();
  const command = ffmpeg({ stdoutLines: 0 })
    .setFfmpegPath(opts.ffmpegPath)
    .input(input)
    .inputFormat('mp4')
    .inputOptions(['-nostdin', '-hide_banner', '-loglevel', 'error', '-fflags', 'nobuffer'])
    .outputOptions([
      '-map', '0:v:0',
      '-an',
      '-vf', `scale=-2:${opts.height}`,
      '-c:v', 'libx264',
      '-preset', 'ultrafast',
      '-tune', 'zerolatency',
      '-profile:v', 'baseline',
      '-pix_fmt', 'yuv420p',
      '-force_key_frames', 'expr:gte(t,n_forced*1)',
      '-f', 'mp4',
      '-movflags', 'frag_keyframe+empty_moov+default_base_moof',
    ]);
  let stopped = false;
  let child: ChildProcess | null = null;
  command.on('start', () => {
    child = (command as unknown as { ffmpegProc?: ChildProcess }).ffmpegProc ?? null;
    if (child) {
      const c = child;
      live.add(c);
      c.once('exit', () => live.delete(c));
    }
    if (stopped) command.kill('SIGKILL');
  });
  command.on('error', (err: Error) => {
    if (!stopped) opts.log.warn({ err: err.message.split('\n')[0] }, 'live preview transcoder failed');
    input.destroy();
  });
  command.on('end', () => input.destroy());
  splitter.on('data', (chunk: Fmp4Chunk) => {
    if (!stopped) onChunk(chunk);
  });
  splitter.on('error', (err: Error) => {
    if (!stopped) opts.log.warn({ err: err.message }, 'live preview output not understood');
    command.kill('SIGKILL');
  });
  input.on('error', () => undefined); // EPIPE when ffmpeg is killed mid-write
  command.pipe(splitter, { end: true });
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
      command.kill('SIGKILL');
    },
  };
}
