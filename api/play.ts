/**
 * GET /api/cameras/:id/play?from=&to= — playback as fragmented MP4 that an MSE player
 * appends as it arrives: the init, then every GOP from the one holding `from` (nearest
 * preceding I-frame) to `to` (default: the end of what is recorded now), across
 * segment boundaries; gaps are skipped (decode times continue), so playback never
 * stalls on a hole. Same bytes as `video.mp4` for the same range, but meant to be
 * played, not saved. Trick play (speed, reverse, I-frames only) is the playback issue's
 * next step and is refused with a clear error until then.
 */
import type { FastifyInstance } from 'fastify';
import { ValidationError } from '../lib/errors.ts';
import { iso, parseTimeMs } from '../lib/time.ts';
import { planFmp4Range } from '../media/fmp4-range.ts';
import { selectRange } from './download.ts';
import type { HttpDeps } from './http.ts';

export function registerPlay(app: FastifyInstance, deps: HttpDeps): void {
  app.get<{ Params: { id: string }; Querystring: Record<string, string | undefined> }>('/api/cameras/:id/play', async (req, reply) => {
    const camera = deps.service.requireCamera(req.params.id);
    for (const trick of ['speed', 'reverse', 'iframes']) {
      if (req.query[trick] !== undefined) throw new ValidationError(`${trick}: trick play is not available in this version; play at normal speed or download the range`);
    }
    const fromMs = parseTimeMs(req.query.from, 'from');
    const toMs = req.query.to === undefined ? Math.max(fromMs + 1, deps.index.lastSegment(camera.id)?.endMs ?? fromMs + 1) : parseTimeMs(req.query.to, 'to');
    if (toMs <= fromMs) throw new ValidationError(`to (${iso(toMs)}) must be after from (${iso(fromMs)})`);
    const sel = selectRange(deps.index, deps.dataDir, camera.id, fromMs, toMs);
    const body = await planFmp4Range(sel.slices);
    void reply
      .header('Content-Type', sel.mimeType || 'video/mp4')
      .header('Content-Length', body.contentLength)
      .header('Cache-Control', 'no-store')
      .header('X-Recording-From', iso(sel.fromMs))
      .header('X-Recording-To', iso(sel.toMs));
    return reply.send(body.stream());
  });
}
