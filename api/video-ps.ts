/**
 * GET /api/cameras/:id/video.ps?from=&to= — any recorded range, whatever the segment
 * format, as one MPEG program stream: the GOPs from the one holding `from` to the one
 * holding the last instant before `to`, across segments, codec changes and gaps.
 *
 * The conversion is playback/ps-range.ts (GOPs read through the fMP4 view of `.mp4`
 * and `.ps` segments alike, muxed by media/ps/ps-convert.ts, continuous output time).
 *
 * The bytes are a pure function of the stored files, so a range of up to
 * PLAN_LIMIT_BYTES of stored video is planned first (every GOP converted once, only
 * its size and the converter state before it kept): exact Content-Length, a strong
 * ETag, single `Range` and `If-Range`, each GOP converted again when it is sent. A
 * longer range, or any with `stream=1` (first byte at once), is streamed as it is
 * converted (no Content-Length, `Accept-Ranges: none`). Either way one GOP is in
 * memory and no temp file is written.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { NoVideoError } from '../lib/errors.ts';
import { iso, parseRangeMs } from '../lib/time.ts';
import { PLAN_LIMIT_BYTES, PROGRAM_END, PS_OUTPUT_VERSION, pickGops, replay, walk, type PickedSegment, type PlannedGop } from '../playback/ps-range.ts';
import { access } from '../security/http-auth.ts';
import { attachmentDisposition } from '../security/headers.ts';
import { replyRange } from './byte-ranges.ts';
import type { HttpDeps } from './http-deps.ts';

function headers(reply: FastifyReply, cameraId: string, picks: PickedSegment[]): void {
  const name = `${cameraId}_${iso(picks[0]!.firstMs).replace(/[:.]/g, '-')}.ps`;
  void reply
    .header('Content-Type', 'video/MP2P')
    .header('Content-Disposition', attachmentDisposition(name))
    .header('X-Recording-From', iso(picks[0]!.firstMs))
    .header('X-Recording-To', iso(picks[picks.length - 1]!.lastMs));
}

/** A body generator whose failure after the headers aborts the connection (logged once). */
function guarded(deps: HttpDeps, url: string, gen: AsyncGenerator<Buffer>): Readable {
  async function* body(): AsyncGenerator<Buffer> {
    try {
      yield* gen;
    } catch (err) {
      deps.log.warn({ err, url }, 'video.ps aborted');
      throw err;
    }
  }
  return Readable.from(body(), { objectMode: false });
}

export function registerVideoPs(app: FastifyInstance, deps: HttpDeps): void {
  app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string; stream?: string } }>(
    '/api/cameras/:id/video.ps',
    access('play', { camera: 'params.id' }),
    async (req, reply) => {
      const camera = deps.service.requireCamera(req.params.id);
      const { fromMs, toMs } = parseRangeMs(req.query.from, req.query.to);
      const picks = pickGops(deps, camera.id, fromMs, toMs);
      if (picks.length === 0) throw new NoVideoError(`no video of camera ${camera.id} between ${iso(fromMs)} and ${iso(toMs)}`);
      headers(reply, camera.id, picks);
      const sourceBytes = picks.reduce((n, p) => n + p.gops.reduce((m, g) => m + g.size, 0), 0);

      if (req.query.stream === '1' || sourceBytes > PLAN_LIMIT_BYTES) {
        // Streamed as converted. The first GOP is converted before the headers go out,
        // so its errors are typed replies.
        const gops = walk(deps, picks);
        const first = await gops.next();
        async function* body(): AsyncGenerator<Buffer> {
          if (!first.done) yield first.value.bytes;
          for await (const g of gops) yield g.bytes;
          yield PROGRAM_END;
        }
        void reply.header('Accept-Ranges', 'none');
        return reply.send(guarded(deps, req.url, body()));
      }

      const plan: PlannedGop[] = [];
      for await (const g of walk(deps, picks)) plan.push(g.planned);
      const contentLength = plan.reduce((n, g) => n + g.outBytes, 0) + PROGRAM_END.length;
      const hash = createHash('sha1').update(`psv${PS_OUTPUT_VERSION};`);
      for (const g of plan) hash.update(`${g.seg.file}:${g.seg.codecKey}:${g.offset}:${g.size};`);
      const etag = `"psv${PS_OUTPUT_VERSION}-${hash.digest('hex').slice(0, 32)}"`;
      const range = replyRange(req, reply, contentLength, etag);
      return reply.send(guarded(deps, req.url, replay(deps, plan, range.start, range.end + 1)));
    },
  );
}
