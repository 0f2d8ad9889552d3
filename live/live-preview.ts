/**
 * A low-resolution H.264 preview of a live channel, for codecs the browser cannot
 * decode (H.265 in Debian's Chromium). It is fed from the running ingest's own
 * fragments (a subscriber of the camera's LiveChannel: no second RTSP session, no
 * port): init + fragments go to ffmpeg's stdin, ffmpeg scales and encodes H.264
 * (ultrafast, zerolatency, one GOP per second), and its fragmented MP4 on stdout is
 * cut by Fmp4Splitter into a derived LiveChannel that preview viewers subscribe to.
 *
 * The ffmpeg itself is ffmpeg/preview-encoder.ts. Lifetime (no orphan ffmpeg): one
 * encoder per source init; it is killed when the
 * source sends a new init (a new one starts), when the source's ingest ends or the
 * channel closes, when the last preview viewer leaves (`onIdle`), and by a process
 * exit hook. Back-pressure: the source viewer's `done` is called when stdin took the
 * bytes, so a slow ffmpeg makes this subscriber skip GOPs (bounded queue), never
 * buffer without bound.
 */
import type { Logger } from '../lib/log.ts';
import { startPreviewEncoder, type PreviewEncoder } from '../ffmpeg/preview-encoder.ts';
import { LiveChannel, type LiveMessage, type LiveViewer } from './live-fanout.ts';

export { livePreviewCount } from '../ffmpeg/preview-encoder.ts';

export interface PreviewOptions {
  ffmpegPath: string;
  /** Output height in pixels (width follows the aspect, even). */
  height: number;
  log: Logger;
}

/** At most this much of the source is queued for ffmpeg: it then skips to the next keyframe. */
const SOURCE_QUEUE_BYTES = 4 * 1024 * 1024;

export class LivePreview {
  readonly channel = new LiveChannel();
  private readonly source: LiveViewer;
  private encoder: PreviewEncoder | null = null;
  private stopped = false;

  constructor(
    sourceChannel: LiveChannel,
    private readonly opts: PreviewOptions,
  ) {
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
    // Called once the bytes are taken (or the encoder is gone): never holds the source.
    if (this.encoder) this.encoder.write(bytes, done);
    else done();
  }

  private startEncoder(): void {
    this.stopEncoder();
    if (this.stopped) return;
    try {
      this.encoder = startPreviewEncoder(this.opts, (chunk) => this.channel.publish(chunk));
    } catch (err) {
      // No preview for this ingest attempt (viewers keep waiting); the next init tries again.
      this.opts.log.warn({ err: (err as Error).message }, 'live preview transcoder not started');
    }
  }

  private stopEncoder(): void {
    this.encoder?.stop();
    this.encoder = null;
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
