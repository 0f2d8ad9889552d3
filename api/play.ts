/**
 * GET /api/cameras/:id/play?from=&to=&speed=&reverse=&iframes= — playback as
 * fragmented MP4 that an MSE player appends as it arrives: the init, then one fragment
 * per GOP from the GOP holding `from` (nearest preceding I-frame), across segments;
 * gaps are skipped with decode times continuing, so playback never stalls on a hole.
 *
 * Trick play (media/mp4/fmp4-trick.ts): `speed` 1/8..16 rescales decode times (video only;
 * audio is dropped at any speed but 1); above IFRAME_SPEED_THRESHOLD, with
 * `iframes=1` or `reverse=1` only each GOP's I-frame is sent, shown for the GOP's
 * duration / speed; reverse walks the GOPs backwards from `from` while output times
 * still increase. Streamed lazily (no Content-Length): memory per client is one GOP.
 *
 * Audio browsers cannot play (G.711 kept as it is in PS recordings) is left out at any
 * speed, the stream is video only and `X-Audio-Left-Out` names the codec (`alaw`).
 */
import type { FastifyInstance } from 'fastify';
import { Readable } from 'node:stream';
import { NoVideoError } from '../lib/errors.ts';
import { iso } from '../lib/time.ts';
import { PlaybackStream } from '../playback/playback-stream.ts';
import type { HttpDeps } from './http-deps.ts';
import { headOnly } from '../playback/range-body.ts';
import { access } from '../security/http-auth.ts';
import { parsePlaybackQuery, playbackSegments, type PlaybackQuery } from '../playback/playback-source.ts';

/** Opens a playback stream for a parsed query; NO_VIDEO when nothing is recorded there. */
export async function openPlayback(
  deps: Pick<HttpDeps, 'index' | 'dataDir' | 'caches'>,
  camera: string,
  q: PlaybackQuery,
  startSec = 0,
): Promise<PlaybackStream> {
  const segments = playbackSegments(deps.index, deps.dataDir, camera, q.fromMs, q.toMs, q.reverse);
  const stream = await PlaybackStream.open(segments, q.mode, deps.caches.tables, startSec);
  if (!stream) {
    const [a, b] = q.reverse ? [q.toMs, q.fromMs] : [q.fromMs, q.toMs];
    throw new NoVideoError(
      `no video of camera ${camera} ${q.reverse ? 'before' : 'from'} ${iso(q.fromMs)}${b < Number.MAX_SAFE_INTEGER && a > 0 ? ` (range ${iso(a)} to ${iso(b)})` : ''}`,
    );
  }
  return stream;
}

export function registerPlay(app: FastifyInstance, deps: HttpDeps): void {
  app.get<{ Params: { id: string }; Querystring: Record<string, string | undefined> }>(
    '/api/cameras/:id/play',
    access('play', { camera: 'params.id' }),
    async (req, reply) => {
      const camera = deps.service.requireCamera(req.params.id);
      const q = parsePlaybackQuery(req.query);
      const stream = await openPlayback(deps, camera.id, q);
      // The first fragment is read before the headers go out, so its errors are typed replies.
      let first: Buffer[] | null;
      try {
        first = await stream.next();
      } catch (err) {
        await stream.close();
        throw err;
      }
      const firstMs = stream.positionMs;
      async function* body(): AsyncGenerator<Buffer> {
        try {
          yield stream.init;
          if (first) yield* first;
          first = null;
          for (let parts = await stream.next(); parts; parts = await stream.next()) yield* parts;
        } catch (err) {
          // Headers are gone: the connection is aborted (never a silent short stream).
          deps.log.warn({ err, camera: camera.id, url: req.url }, 'playback aborted');
          throw err;
        } finally {
          await stream.close();
        }
      }
      void reply
        .header('Content-Type', stream.mimeType)
        .header('Cache-Control', 'no-store')
        .header('X-Playback-Mode', q.mode.kind)
        .header('X-Recording-From', firstMs === null ? '' : iso(firstMs));
      if (stream.droppedAudio.length > 0) void reply.header('X-Audio-Left-Out', stream.droppedAudio.join(','));
      if (req.method === 'HEAD') {
        // The headers only: a body stream would be read to the end of the recording and dropped.
        await stream.close();
        return reply.send(headOnly());
      }
      return reply.send(Readable.from(body(), { objectMode: false, highWaterMark: 64 * 1024 }));
    },
  );
}
