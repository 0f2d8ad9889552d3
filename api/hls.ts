/**
 * HLS VOD for a range (fMP4 flavour): `GET /api/cameras/:id/video.m3u8?from=&to=` lists
 * the GOPs covering the range as byte ranges of the segment files themselves, with
 * each file's init as EXT-X-MAP, so players fetch the stored bytes with no remux.
 * A codec change or a break in time between segments is an EXT-X-DISCONTINUITY;
 * EXT-X-PROGRAM-DATE-TIME carries the wall clock of each segment.
 * `GET /api/cameras/:id/segments/:startMs.mp4` serves one segment file with Range
 * support, never beyond the bytes the index says are durable.
 */
import type { FastifyInstance } from 'fastify';
import { createReadStream } from 'node:fs';
import { segmentRangeStream } from '../playback/segment-source.ts';
import { join } from 'node:path';
import { timelineGops, writerKey } from '../playback/one-timeline.ts';
import { NoVideoError, RecorderError } from '../lib/errors.ts';
import { iso, parseRangeMs } from '../lib/time.ts';
import { replyRange } from './byte-ranges.ts';
import type { HttpDeps } from './http-deps.ts';
import { access } from '../security/http-auth.ts';

/** Segments further apart than this are not one continuous stream for a player. */
const CONTIGUOUS_MS = 500;

export function registerHls(app: FastifyInstance, deps: HttpDeps): void {
  app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string } }>(
    '/api/cameras/:id/video.m3u8',
    access('play', { camera: 'params.id' }),
    async (req, reply) => {
      const camera = deps.service.requireCamera(req.params.id);
      const { fromMs, toMs } = parseRangeMs(req.query.from, req.query.to);
      const lines: string[] = [];
      let maxDurSec = 1;
      let prev: { endMs: number; codecKey: string; writer: string } | null = null;
      for (const { seg, gops } of timelineGops(deps.index.segments.overlapping(camera.id, fromMs, toMs), fromMs, toMs)) {
        const uri = `segments/${seg.startMs}.mp4`;
        const picked: string[] = [];
        let firstMs: number | null = null;
        let lastMs = seg.endMs;
        for (const g of gops) {
          firstMs ??= g.startMs;
          lastMs = g.endMs;
          const dur = (g.endMs - g.startMs) / 1000;
          maxDurSec = Math.max(maxDurSec, Math.ceil(dur));
          picked.push(`#EXTINF:${dur.toFixed(3)},`, `#EXT-X-BYTERANGE:${g.size}@${g.offset}`, uri);
        }
        if (firstMs === null) continue;
        // Another writer (a partition's two series) has timestamps of its own: a discontinuity even when the times meet.
        const writer = writerKey(seg.fence);
        if (prev && (prev.codecKey !== seg.codecKey || prev.writer !== writer || Math.abs(firstMs - prev.endMs) > CONTIGUOUS_MS || firstMs !== seg.startMs))
          lines.push('#EXT-X-DISCONTINUITY');
        lines.push(`#EXT-X-MAP:URI="${uri}",BYTERANGE="${seg.initSize}@0"`, `#EXT-X-PROGRAM-DATE-TIME:${iso(firstMs)}`, ...picked);
        prev = { endMs: lastMs, codecKey: seg.codecKey, writer };
      }
      if (lines.length === 0) throw new NoVideoError(`no video of camera ${camera.id} between ${iso(fromMs)} and ${iso(toMs)}`);
      const body = [
        '#EXTM3U',
        '#EXT-X-VERSION:7',
        `#EXT-X-TARGETDURATION:${maxDurSec}`,
        '#EXT-X-PLAYLIST-TYPE:VOD',
        '#EXT-X-INDEPENDENT-SEGMENTS',
        ...lines,
        '#EXT-X-ENDLIST',
        '',
      ].join('\n');
      void reply.header('Content-Type', 'application/vnd.apple.mpegurl');
      return body;
    },
  );

  app.get<{ Params: { id: string; file: string } }>('/api/cameras/:id/segments/:file', access('play', { camera: 'params.id' }), async (req, reply) => {
    const camera = deps.service.requireCamera(req.params.id);
    const m = /^(\d{10,15})\.mp4$/.exec(req.params.file);
    if (!m) throw new RecorderError('NOT_FOUND', `no segment ${JSON.stringify(req.params.file)}`);
    const seg = deps.index.segments.get(camera.id, Number(m[1]));
    if (!seg) throw new RecorderError('NOT_FOUND', `no segment ${req.params.file} of camera ${camera.id}`);
    void reply.header('Content-Type', 'video/mp4');
    const { start, end } = replyRange(req, reply, seg.bytes);
    // A .ps segment is served as the fMP4 it reads as (same offsets: the playlist's byte ranges hold).
    const path = join(deps.dataDir, seg.file);
    return reply.send(seg.format === 'ps' ? segmentRangeStream(path, start, end, deps.caches.psViews) : createReadStream(path, { start, end }));
  });
}
