/**
 * GET /api/cameras/:id/video.mp4?from=&to=&format= — one MP4 for any range: the GOPs
 * from the one that holds `from` to the one that holds the last instant before `to`,
 * presented from exactly `from` to `to` (edit lists). Progressive by default
 * (playback/progressive-mp4.ts), fragmented with `format=fmp4` (playback/fmp4-range.ts);
 * built per request from the index and the segment files (playback/range-body.ts).
 * Single byte ranges, If-Range and a strong ETag let a broken download resume.
 */
import type { FastifyInstance } from 'fastify';
import { iso, parseRangeMs } from '../lib/time.ts';
import { headOnly, rangeBody } from '../playback/range-body.ts';
import { selectRange } from '../playback/range-selection.ts';
import type { HttpDeps } from './http-deps.ts';
import { replyRange } from './byte-ranges.ts';

export { parseByteRange } from './byte-ranges.ts';
import { access } from '../security/http-auth.ts';
import { attachmentDisposition } from '../security/headers.ts';

export function registerDownload(app: FastifyInstance, deps: HttpDeps): void {
  app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string } }>(
    '/api/cameras/:id/video.mp4',
    access('play', { camera: 'params.id' }),
    async (req, reply) => {
      const camera = deps.service.requireCamera(req.params.id);
      const { fromMs, toMs } = parseRangeMs(req.query.from, req.query.to);
      const sel = selectRange(deps.index, deps.dataDir, camera.id, fromMs, toMs);
      const body = await rangeBody(deps, sel, fromMs, toMs, (req.query as { format?: string }).format);
      const name = `${camera.id}_${iso(sel.fromMs).replace(/[:.]/g, '-')}.mp4`;
      void reply
        .header('Content-Type', sel.mimeType || 'video/mp4')
        .header('Content-Disposition', attachmentDisposition(name))
        .header('X-Recording-From', iso(sel.fromMs))
        .header('X-Recording-To', iso(sel.toMs));
      const range = replyRange(req, reply, body.contentLength, body.etag);
      return reply.send(req.method === 'HEAD' ? headOnly() : body.stream(range.start, range.end));
    },
  );
}
