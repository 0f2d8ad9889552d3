/**
 * The live channels of one node, by camera id, and their transcoded previews.
 * Ingest attempts publish into it (LivePublisher, the narrow producer side); the
 * supervisor hands out subscriptions. A preview (live/live-preview.ts) exists only
 * while it has viewers and is stopped with its camera's channel.
 *
 * Live view is for browsers: a stream whose audio they cannot play (G.711 of an MP2P
 * camera recording PS segments, which keep it as it is) is published video only
 * (media/mp4/video-only.ts), since MSE would refuse the video with it.
 */
import type { Logger } from '../lib/log.ts';
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { DEFAULT_MAX_QUEUED_BYTES, LiveChannel, type LiveSink, type LiveViewer, type LiveViewerStats } from './live-fanout.ts';
import { LivePreview } from './live-preview.ts';
import { VideoOnlyFilter } from '../media/mp4/video-only.ts';

/** What an ingest needs to feed live viewers. Never blocks, never throws. */
export interface LivePublisher {
  publish(cameraId: string, chunk: Fmp4Chunk): void;
  ended(cameraId: string, reason: string): void;
}

export interface LiveSubscribeOptions {
  /** The low-res H.264 transcode instead of the stream as recorded. */
  preview: boolean;
  /** This viewer's backlog bound (default: the hub's, 8 MiB). */
  maxQueuedBytes?: number;
}

export interface LiveHubOptions {
  ffmpegPath: string;
  log: Logger;
  /** Height of transcoded previews (default 240). */
  previewHeight?: number;
  maxQueuedBytes?: number;
}

export interface LiveStats {
  /** The init in force: null while the camera's ingest is not running. */
  mimeType: string | null;
  viewers: LiveViewerStats[];
  preview: { running: boolean; mimeType: string | null; viewers: LiveViewerStats[] };
}

export class LiveHub implements LivePublisher {
  private readonly channels = new Map<string, LiveChannel>();
  private readonly previews = new Map<string, LivePreview>();
  /** Per camera: what browsers get of its stream (video only when they cannot play its audio). */
  private readonly filters = new Map<string, VideoOnlyFilter>();

  constructor(private readonly opts: LiveHubOptions) {}

  private channel(cameraId: string): LiveChannel {
    let ch = this.channels.get(cameraId);
    if (!ch) {
      ch = new LiveChannel();
      this.channels.set(cameraId, ch);
    }
    return ch;
  }

  publish(cameraId: string, chunk: Fmp4Chunk): void {
    let filter = this.filters.get(cameraId);
    if (!filter) this.filters.set(cameraId, (filter = new VideoOnlyFilter()));
    let out: Fmp4Chunk | null;
    try {
      out = filter.push(chunk);
    } catch (err) {
      // Never throws (LivePublisher): a chunk we cannot rewrite is not shown.
      this.opts.log.warn({ err, camera: cameraId }, 'live: a chunk could not be made video only');
      return;
    }
    if (out) this.channel(cameraId).publish(out);
  }

  ended(cameraId: string, reason: string): void {
    this.channels.get(cameraId)?.ended(reason);
  }

  /** Subscribes to the camera's live stream as recorded, or to its low-res H.264 preview. */
  subscribe(cameraId: string, sink: LiveSink, opts: LiveSubscribeOptions): LiveViewer {
    const { preview } = opts;
    const max = opts.maxQueuedBytes ?? this.opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    if (!preview) return this.channel(cameraId).subscribe(sink, max);
    let p = this.previews.get(cameraId);
    if (!p || p.isStopped) {
      p = new LivePreview(this.channel(cameraId), {
        ffmpegPath: this.opts.ffmpegPath,
        height: this.opts.previewHeight ?? 240,
        log: this.opts.log.child({ camera: cameraId }),
      });
      this.previews.set(cameraId, p);
    }
    return p.channel.subscribe(sink, max);
  }

  stats(cameraId: string): LiveStats {
    const ch = this.channels.get(cameraId);
    const p = this.previews.get(cameraId);
    const running = !!p && !p.isStopped;
    return {
      mimeType: ch?.currentInit?.mimeType ?? null,
      viewers: ch?.stats() ?? [],
      preview: { running, mimeType: running ? (p.channel.currentInit?.mimeType ?? null) : null, viewers: running ? p.channel.stats() : [] },
    };
  }

  /** The camera is gone: viewers get `closed`, its preview's ffmpeg is killed. */
  close(cameraId: string, reason: string): void {
    const ch = this.channels.get(cameraId);
    this.channels.delete(cameraId);
    this.filters.delete(cameraId);
    ch?.close(reason);
    const p = this.previews.get(cameraId);
    this.previews.delete(cameraId);
    p?.stop(reason);
  }

  closeAll(reason: string): void {
    for (const id of new Set([...this.channels.keys(), ...this.previews.keys()])) this.close(id, reason);
  }
}
