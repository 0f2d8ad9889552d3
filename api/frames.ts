/**
 * GET /api/cameras/:id/frame.jpg?at=&width= — the I-frame at or before `at` as JPEG.
 * The GOP is found in the index (no file scan); its init and fragment are read from
 * the segment file and decoded by ffmpeg/ffmpeg-frame.ts. Results are cached by
 * (segment, GOP, width) in the node's LRU (playback/read-caches.ts), so a timeline
 * strip costs one decode per GOP.
 *
 * Load: decodes go through one FrameDecoder per server (a few at once, a bounded queue,
 * 503 FRAMES_BUSY with Retry-After past it), and `width` is rounded up to one of
 * FRAME_WIDTHS (the reply says which in X-Frame-Width), so a client asking for every
 * width from 16 to 3840 costs at most that many decodes of a GOP, not 3825.
 */
import type { FastifyInstance } from 'fastify';
import { openSegmentFile, type PsViews } from '../playback/segment-source.ts';
import { join } from 'node:path';
import { decodeGops } from '../index/gop-table.ts';
import { NoVideoError, ValidationError } from '../lib/errors.ts';
import { iso, parseRangeMs, parseTimeMs } from '../lib/time.ts';
import { FrameDecoder, FramesBusyError } from '../ffmpeg/ffmpeg-frame.ts';
import type { HttpDeps } from './http-deps.ts';
import { access } from '../security/http-auth.ts';

/** Widths a frame is scaled to: a requested width is rounded up to the next (at most the last). */
export const FRAME_WIDTHS = [80, 160, 320, 480, 640, 960, 1280, 1920, 3840] as const;

export function frameWidth(requested: number): number {
  return FRAME_WIDTHS.find((w) => w >= requested) ?? FRAME_WIDTHS[FRAME_WIDTHS.length - 1]!;
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

export interface StripEntry {
  at: string;
  url: string;
}

/**
 * A timeline strip: `count` evenly spaced instants over [from, to), each mapped to the
 * I-frame at or before it (distinct GOPs only, gaps skipped), as frame.jpg URLs the
 * client fetches (and this server caches per GOP).
 */
export function thumbnailStrip(deps: HttpDeps, cameraId: string, fromMs: number, toMs: number, count: number, width: number): StripEntry[] {
  const out: StripEntry[] = [];
  const seen = new Set<string>();
  const segs = deps.index.segments.inRange(cameraId, fromMs, toMs);
  let si = 0;
  for (let k = 0; k < count; k++) {
    const at = fromMs + Math.floor(((toMs - fromMs) * k) / count);
    while (si < segs.length && segs[si]!.endMs <= at) si++;
    const seg = segs[si];
    if (!seg || seg.startMs > at) continue; // in a gap
    const gops = decodeGops(seg.gops);
    let i = gops.length - 1;
    while (i > 0 && seg.startMs + gops[i]!.timeMs > at) i--;
    const frameMs = seg.startMs + gops[i]!.timeMs;
    const key = `${seg.startMs}:${i}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ at: iso(frameMs), url: `/api/cameras/${encodeURIComponent(cameraId)}/frame.jpg?at=${frameMs}&width=${width}` });
  }
  return out;
}

export function registerFrames(app: FastifyInstance, deps: HttpDeps & { ffmpegPath: string }): void {
  app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string; count?: string; width?: string } }>(
    '/api/cameras/:id/thumbnails',
    access('play', { camera: 'params.id' }),
    async (req) => {
      const camera = deps.service.requireCamera(req.params.id);
      const { fromMs, toMs } = parseRangeMs(req.query.from, req.query.to);
      const count = req.query.count === undefined ? 24 : Number(req.query.count);
      const width = req.query.width === undefined ? 160 : Number(req.query.width);
      if (!Number.isInteger(count) || count < 1 || count > 500) throw new ValidationError('count: an integer from 1 to 500');
      if (!Number.isInteger(width) || width < 16 || width > 3840) throw new ValidationError('width: an integer from 16 to 3840');
      return { thumbnails: thumbnailStrip(deps, camera.id, fromMs, toMs, count, width) };
    },
  );

  const cache = deps.caches.frames;
  const decoder = new FrameDecoder({ ffmpegPath: deps.ffmpegPath });
  app.get<{ Params: { id: string }; Querystring: { at?: string; width?: string } }>(
    '/api/cameras/:id/frame.jpg',
    access('play', { camera: 'params.id' }),
    async (req, reply) => {
      const camera = deps.service.requireCamera(req.params.id);
      const atMs = parseTimeMs(req.query.at, 'at');
      const asked = req.query.width === undefined ? undefined : Number(req.query.width);
      if (asked !== undefined && (!Number.isInteger(asked) || asked < 16 || asked > 3840)) throw new ValidationError('width: an integer from 16 to 3840');
      const width = asked === undefined ? undefined : frameWidth(asked);
      const seg = deps.index.segments.inRange(camera.id, atMs, atMs + 1)[0];
      if (!seg || seg.startMs > atMs) throw new NoVideoError(`no video of camera ${camera.id} at ${iso(atMs)}`);
      const gops = decodeGops(seg.gops);
      let i = gops.length - 1;
      while (i > 0 && seg.startMs + gops[i]!.timeMs > atMs) i--;
      const gop = gops[i]!;
      const key = `${seg.file}:${gop.offset}:${width ?? 0}`;
      let jpeg = cache.get(key);
      if (!jpeg) {
        const path = join(deps.dataDir, seg.file);
        const decoding = Promise.all([readRange(path, 0, seg.initSize, deps.caches.psViews), readRange(path, gop.offset, gop.size, deps.caches.psViews)]).then(
          ([init, frag]) => decoder.decode(init, frag, width),
        );
        // A failure is not cached (nor does it evict a later decode of the same frame).
        decoding.catch(() => {
          if (cache.peek(key) === decoding) cache.delete(key);
        });
        cache.set(key, decoding);
        jpeg = decoding;
      }
      let body: Buffer;
      try {
        body = await jpeg;
      } catch (err) {
        if (err instanceof FramesBusyError) void reply.header('Retry-After', '1');
        throw err;
      }
      if (width !== undefined) void reply.header('X-Frame-Width', String(width));
      void reply
        .header('Content-Type', 'image/jpeg')
        .header('Cache-Control', 'private, max-age=86400')
        .header('X-Frame-Time', iso(seg.startMs + gop.timeMs));
      return reply.send(body);
    },
  );
}
