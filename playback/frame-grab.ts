/**
 * The I-frame at or before an instant of a camera's recording, as JPEG: the GOP found in
 * the index (no file scan), its init and fragment read from the segment file and decoded
 * by ffmpeg/ffmpeg-frame.ts. Decodes are cached by (segment, GOP, width) in the node's
 * LRU (playback/read-caches.ts) and bounded by one FrameDecoder per node (a few at once,
 * a bounded queue, FRAMES_BUSY past it), so recording is never starved by reads.
 * Used by `frame.jpg` (api/frames.ts) and by picture snapshots (services/picture-service.ts).
 */
import { join } from 'node:path';
import { FrameDecoder } from '../ffmpeg/ffmpeg-frame.ts';
import type { RecorderIndex } from '../index/db.ts';
import { gopAtOrBefore } from './gop-range.ts';
import { NoVideoError } from '../lib/errors.ts';
import { iso } from '../lib/time.ts';
import type { ReadCaches } from './read-caches.ts';
import { openSegmentFile, type PsViews } from './segment-source.ts';

export interface GrabbedFrame {
  jpeg: Buffer;
  /** When the I-frame was taken (its GOP's start). */
  frameMs: number;
}

async function readRange(path: string, offset: number, length: number, views: PsViews): Promise<Buffer> {
  const fh = await openSegmentFile(path, views);
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    if (bytesRead !== length) throw new NoVideoError(`segment file ${path} is shorter than its index entry`);
    return buf;
  } finally {
    await fh.close();
  }
}

export class FrameGrabber {
  private readonly decoder: FrameDecoder;

  constructor(private readonly d: { index: RecorderIndex; dataDir: string; caches: ReadCaches; ffmpegPath: string }) {
    this.decoder = new FrameDecoder({ ffmpegPath: d.ffmpegPath });
  }

  /** The I-frame at or before `atMs` (scaled to `width` when given); NO_VIDEO where nothing is recorded, FRAMES_BUSY when decodes queue up. */
  async grab(camera: string, atMs: number, width?: number): Promise<GrabbedFrame> {
    const seg = this.d.index.segments.inRange(camera, atMs, atMs + 1)[0];
    if (!seg || seg.startMs > atMs) throw new NoVideoError(`no video of camera ${camera} at ${iso(atMs)}`);
    const gop = gopAtOrBefore(seg, atMs);
    const cache = this.d.caches.frames;
    const key = `${seg.file}:${gop.offset}:${width ?? 0}`;
    let jpeg = cache.get(key);
    if (!jpeg) {
      const path = join(this.d.dataDir, seg.file);
      const views = this.d.caches.psViews;
      const decoding = Promise.all([readRange(path, 0, seg.initSize, views), readRange(path, gop.offset, gop.size, views)]).then(([init, frag]) =>
        this.decoder.decode(init, frag, width),
      );
      // A failure is not cached (nor does it evict a later decode of the same frame).
      decoding.catch(() => {
        if (cache.peek(key) === decoding) cache.delete(key);
      });
      cache.set(key, decoding);
      jpeg = decoding;
    }
    return { jpeg: await jpeg, frameMs: gop.startMs };
  }
}
