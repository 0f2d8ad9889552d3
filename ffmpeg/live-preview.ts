/**
 * A low-resolution H.264 preview of a live channel, for codecs the browser cannot
 * decode (H.265 in Debian's Chromium). It is fed from the running ingest's own
 * fragments (a subscriber of the camera's LiveChannel: no second RTSP session, no
 * port): init + fragments go to ffmpeg's stdin, ffmpeg scales and encodes H.264
 * (ultrafast, zerolatency, one GOP per second), and its fragmented MP4 on stdout is
 * cut by Fmp4Splitter into a derived LiveChannel that preview viewers subscribe to.
 *
 * Lifetime (no orphan ffmpeg): one ffmpeg per source init; it is killed when the
 * source sends a new init (a new one starts), when the source's ingest ends or the
 * channel closes, when the last preview viewer leaves (`onIdle`), and by a process
 * exit hook. Back-pressure: the source viewer's `done` is called when stdin took the
 * bytes, so a slow ffmpeg makes this subscriber skip GOPs (bounded queue), never
 * buffer without bound.
 */
import ffmpeg from 'fluent-ffmpeg';
import { assertSpawnHeadroom } from './spawn-headroom.ts';
import type { ChildProcess } from 'node:child_process';
import { PassThrough } from 'node:stream';
import type { Logger } from '../lib/log.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { LiveChannel, type LiveMessage, type LiveViewer } from '../live/live-fanout.ts';

export interface PreviewOptions {
  ffmpegPath: string;
  /** Output height in pixels (width follows the aspect, even). */
  height: number;
  log: Logger;
}

const live = new Set<ChildProcess>();
let hooked = false;

/** Number of preview ffmpeg children alive in this process (tests: no orphans). */
export function livePreviewCount(): number {
  return live.size;
}

/** At most this much of the source is queued for ffmpeg: it then skips to the next keyframe. */
const SOURCE_QUEUE_BYTES = 4 * 1024 * 1024;

export class LivePreview {
  readonly channel = new LiveChannel();
  private readonly source: LiveViewer;
  private current: { command: ffmpeg.FfmpegCommand; input: PassThrough; child: ChildProcess | null; stopped: boolean } | null = null;
  private stopped = false;

  constructor(
    sourceChannel: LiveChannel,
    private readonly opts: PreviewOptions,
  ) {
    if (!hooked) {
      hooked = true;
      process.on('exit', () => {
        for (const c of live) c.kill('SIGKILL');
      });
    }
    this.channel.onIdle = () => this.stop();
    this.source = sourceChannel.subscribe({ deliver: (msg, done) => this.onSource(msg, done) }, SOURCE_QUEUE_BYTES);
  }

  private onSource(msg: LiveMessage, done: () => void): void {
    switch (msg.kind) {
      case 'init':
        this.startEncoder();
        this.write(msg.bytes, done);
        return;
      case 'fragment':
        this.write(msg.bytes, done);
        return;
      case 'ended':
        this.stopEncoder();
        this.channel.ended(msg.reason);
        done();
        return;
      case 'closed':
        this.stop(msg.reason);
        done();
        return;
    }
  }

  private write(bytes: Buffer, done: () => void): void {
    const enc = this.current;
    if (!enc || enc.stopped) {
      done();
      return;
    }
    // Called once the bytes are taken (or the stream failed): never holds the source.
    enc.input.write(bytes, () => done());
  }

  private startEncoder(): void {
    this.stopEncoder();
    if (this.stopped) return;
    try {
      assertSpawnHeadroom();
    } catch (err) {
      // No preview for this ingest attempt (viewers keep waiting); the next init tries again.
      this.opts.log.warn({ err: (err as Error).message }, 'live preview transcoder not started');
      return;
    }
    const input = new PassThrough({ highWaterMark: 256 * 1024 });
    const splitter = new Fmp4Splitter();
    const command = ffmpeg({ stdoutLines: 0 })
      .setFfmpegPath(this.opts.ffmpegPath)
      .input(input)
      .inputFormat('mp4')
      .inputOptions(['-nostdin', '-hide_banner', '-loglevel', 'error', '-fflags', 'nobuffer'])
      .outputOptions([
        '-map', '0:v:0',
        '-an',
        '-vf', `scale=-2:${this.opts.height}`,
        '-c:v', 'libx264',
        '-preset', 'ultrafast',
        '-tune', 'zerolatency',
        '-profile:v', 'baseline',
        '-pix_fmt', 'yuv420p',
        // A keyframe every second, so a fragment (one GOP) leaves ffmpeg every second.
        '-force_key_frames', 'expr:gte(t,n_forced*1)',
        '-f', 'mp4',
        '-movflags', 'frag_keyframe+empty_moov+default_base_moof',
      ]);
    const enc = { command, input, child: null as ChildProcess | null, stopped: false };
    this.current = enc;
    command.on('start', () => {
      enc.child = (command as unknown as { ffmpegProc?: ChildProcess }).ffmpegProc ?? null;
      if (enc.child) {
        live.add(enc.child);
        enc.child.once('exit', () => live.delete(enc.child!));
      }
      if (enc.stopped) command.kill('SIGKILL');
    });
    command.on('error', (err: Error) => {
      if (!enc.stopped) this.opts.log.warn({ err: err.message.split('\n')[0] }, 'live preview transcoder failed');
      input.destroy();
    });
    command.on('end', () => input.destroy());
    splitter.on('data', (chunk: Fmp4Chunk) => {
      if (!enc.stopped) this.channel.publish(chunk);
    });
    splitter.on('error', (err: Error) => {
      if (!enc.stopped) this.opts.log.warn({ err: err.message }, 'live preview output not understood');
      command.kill('SIGKILL');
    });
    input.on('error', () => undefined); // EPIPE when ffmpeg is killed mid-write
    command.pipe(splitter, { end: true });
  }

  private stopEncoder(): void {
    const enc = this.current;
    if (!enc) return;
    this.current = null;
    enc.stopped = true;
    enc.input.destroy();
    enc.command.kill('SIGKILL');
  }

  /** Kills ffmpeg, leaves the source, closes the preview channel. Idempotent. */
  stop(reason = 'preview stopped'): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stopEncoder();
    this.source.close();
    this.channel.close(reason);
  }

  get isStopped(): boolean {
    return this.stopped;
  }
}
