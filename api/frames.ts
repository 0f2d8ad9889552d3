/**
 * GET /api/cameras/:id/frame.jpg?at=&width= — the I-frame at or before `at` as JPEG
 * (playback/frame-grab.ts: found in the index, decoded once per GOP and width and
 * cached, so a timeline strip costs one decode per GOP).
 *
 * Load: decodes go through one FrameDecoder per server (a few at once, a bounded queue,
 * 503 FRAMES_BUSY with Retry-After past it), and `width` is rounded up to one of
 * FRAME_WIDTHS (the reply says which in X-Frame-Width), so a client asking for every
 * width from 16 to 3840 costs at most that many decodes of a GOP, not 3825.
 */
import type { FastifyInstance } from 'fastify';
import { gopAtOrBefore } from '../playback/gop-range.ts';
import { ValidationError } from '../lib/errors.ts';
import { iso, parseRangeMs, parseTimeMs } from '../lib/time.ts';
import { FramesBusyError } from '../ffmpeg/ffmpeg-frame.ts';
import { FrameGrabber } from '../playback/frame-grab.ts';
import type { HttpDeps } from './http-deps.ts';
import { access } from '../security/http-auth.ts';

/** Widths a frame is scaled to: a requested width is rounded up to the next (at most the last). */
export const FRAME_WIDTHS = [80, 160, 320, 480, 640, 960, 1280, 1920, 3840] as const;

export function frameWidth(requested: number): number {
  return FRAME_WIDTHS.find((w) => w >= requested) ?? FRAME_WIDTHS[FRAME_WIDTHS.length - 1]!;
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
    const gop = gopAtOrBefore(seg, at);
    const frameMs = gop.startMs;
    const key = `${seg.startMs}:${gop.index}`;
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

  const frames = deps.frames ?? new FrameGrabber({ index: deps.index, dataDir: deps.dataDir, caches: deps.caches, ffmpegPath: deps.ffmpegPath });
  app.get<{ Params: { id: string }; Querystring: { at?: string; width?: string } }>(
    '/api/cameras/:id/frame.jpg',
    access('play', { camera: 'params.id' }),
    async (req, reply) => {
      const camera = deps.service.requireCamera(req.params.id);
      const atMs = parseTimeMs(req.query.at, 'at');
      const asked = req.query.width === undefined ? undefined : Number(req.query.width);
      if (asked !== undefined && (!Number.isInteger(asked) || asked < 16 || asked > 3840)) throw new ValidationError('width: an integer from 16 to 3840');
      const width = asked === undefined ? undefined : frameWidth(asked);
      let frame;
      try {
        frame = await frames.grab(camera.id, atMs, width);
      } catch (err) {
        if (err instanceof FramesBusyError) void reply.header('Retry-After', '1');
        throw err;
      }
      if (width !== undefined) void reply.header('X-Frame-Width', String(width));
      void reply.header('Content-Type', 'image/jpeg').header('Cache-Control', 'private, max-age=86400').header('X-Frame-Time', iso(frame.frameMs));
      return reply.send(frame.jpeg);
    },
  );
}
