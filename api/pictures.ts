/**
 * HTTP routes of pictures (docs/api/http-pictures.md). Thin: the body is taken as
 * bytes (image/jpeg, application/octet-stream) up to RECORDER_PICTURE_MAX_BYTES and
 * handed to PictureService, which validates and throws typed errors. The routes live
 * in their own scope: the byte parsers and the larger body limit apply to them alone.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RecorderError } from '../lib/errors.ts';
import { parsePictureId } from '../pictures/layout.ts';
import { access } from '../security/http-auth.ts';
import { replyRange } from './byte-ranges.ts';
import type { HttpDeps } from './http-deps.ts';

type Query = Record<string, string | undefined>;

/** The camera a picture id names (the auth seam checks the caller's pool for it). */
const cameraOfId = (req: FastifyRequest): string | undefined => parsePictureId((req.params as { id?: string }).id ?? '')?.[0];

export function registerPictures(app: FastifyInstance, deps: HttpDeps): void {
  const pictures = () => deps.service.pictures;
  const { maxBytes } = pictures();
  void app.register(async (scope) => {
    scope.addContentTypeParser(['image/jpeg', 'application/octet-stream'], { parseAs: 'buffer', bodyLimit: maxBytes }, (_req, body, done) => done(null, body));
    // The app's handler names its own 1 MiB limit; a picture's is larger.
    scope.setErrorHandler((err: unknown) => {
      if ((err as { statusCode?: number }).statusCode === 413) throw new RecorderError('PAYLOAD_TOO_LARGE', `a picture is at most ${maxBytes} bytes`);
      throw err;
    });

    scope.post<{ Querystring: Query }>('/api/pictures', { ...access('write', { camera: 'query.camera' }), bodyLimit: maxBytes }, async (req) =>
      pictures().put(req.query, req.body),
    );

    scope.get<{ Params: { id: string }; Querystring: Query }>('/api/pictures/:id', access('read', { camera: cameraOfId }), async (req, reply) => {
      const { bytes, etag } = await pictures().read(req.params.id, req.query);
      if (req.headers['if-none-match'] === etag) return reply.code(304).header('ETag', etag).send();
      const range = replyRange(req, reply, bytes.length, etag);
      return reply
        .header('Content-Type', 'image/jpeg')
        .header('Cache-Control', 'private, max-age=86400')
        .send(range.start === 0 && range.end === bytes.length - 1 ? bytes : bytes.subarray(range.start, range.end + 1));
    });
  });
}
