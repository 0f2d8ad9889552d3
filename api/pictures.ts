/**
 * HTTP routes of pictures (docs/api/http-pictures.md). Thin: the body is taken as
 * bytes (image/jpeg, application/octet-stream) up to RECORDER_PICTURE_MAX_BYTES and
 * handed to PictureService, which validates and throws typed errors. The routes live
 * in their own scope: the byte parsers and the larger body limit apply to them alone.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { pipeline } from 'node:stream';
import { RecorderError } from '../lib/errors.ts';
import { parsePictureId } from '../pictures/layout.ts';
import { access, canSee } from '../security/http-auth.ts';
import { multipartBoundary, parseMultipart } from '../pictures/multipart.ts';
import { ByteSlice } from '../pictures/zip.ts';
import { replyRange } from './byte-ranges.ts';
import type { HttpDeps } from './http-deps.ts';

type Query = Record<string, string | undefined>;

/** A multipart body may carry this many pictures' worth of the single-picture limit. */
const MULTIPART_PICTURES = 4;

/** The camera a picture id names (the auth seam checks the caller's pool for it). */
const cameraOfId = (req: FastifyRequest): string | undefined => parsePictureId((req.params as { id?: string }).id ?? '')?.[0];

export function registerPictures(app: FastifyInstance, deps: HttpDeps): void {
  const pictures = () => deps.service.pictures;
  const { maxBytes } = pictures();
  const multipartMax = MULTIPART_PICTURES * maxBytes;
  // Whether the caller may see a camera's pictures (its pool); a camera gone is seen by admins only.
  const visible = (req: FastifyRequest) => (camera: string) => {
    try {
      return canSee(req.principal, deps.service.requireCamera(camera).pool);
    } catch {
      return req.principal.role === 'admin';
    }
  };
  void app.register(async (scope) => {
    scope.addContentTypeParser(['image/jpeg', 'application/octet-stream'], { parseAs: 'buffer', bodyLimit: maxBytes }, (_req, body, done) => done(null, body));
    scope.addContentTypeParser('multipart/form-data', { parseAs: 'buffer', bodyLimit: multipartMax }, (_req, body, done) => done(null, body));
    // The app's handler names its own 1 MiB limit; a picture's is larger.
    scope.setErrorHandler((err: unknown) => {
      if ((err as { statusCode?: number }).statusCode === 413) {
        throw new RecorderError('PAYLOAD_TOO_LARGE', `a picture is at most ${maxBytes} bytes, a multipart body ${multipartMax}`);
      }
      throw err;
    });

    scope.post<{ Querystring: Query }>('/api/pictures', { ...access('write', { camera: 'query.camera' }), bodyLimit: multipartMax }, async (req) => {
      const boundary = multipartBoundary(req.headers['content-type']);
      if (boundary === null) return pictures().put(req.query, req.body);
      if (!Buffer.isBuffer(req.body)) throw new RecorderError('PICTURE_INVALID', 'the multipart body could not be read');
      return { pictures: await pictures().putMany(req.query, parseMultipart(req.body, boundary)) };
    });

    // In a cluster every node that stores pictures of the cameras is asked and the answers merged (services/cluster-pictures.ts).
    const across = () => deps.service.clusterPictures;
    scope.post<{ Querystring: Query }>('/api/pictures/similar', { ...access('read'), bodyLimit: maxBytes }, async (req) =>
      across().similar(req.query, req.body, visible(req)),
    );
    scope.get<{ Querystring: Query }>('/api/pictures', access('read'), async (req) => across().search(req.query, visible(req)));

    scope.post<{ Params: { id: string }; Querystring: Query }>('/api/cameras/:id/snapshot', access('write', { camera: 'params.id' }), async (req) =>
      pictures().snapshot(req.params.id, req.query),
    );

    // Locks: by URL, and in batch (cameras and a time range; the service checks each camera's pool).
    // One picture: on every node that holds it (a pool's copies), this one first.
    scope.post<{ Params: { id: string } }>('/api/pictures/:id/lock', access('lock', { camera: cameraOfId }), async (req) =>
      across().lockOne({ ...((req.body ?? {}) as Record<string, unknown>), id: req.params.id }, false),
    );
    scope.delete<{ Params: { id: string } }>('/api/pictures/:id/lock', access('lock', { camera: cameraOfId }), async (req) =>
      across().lockOne({ id: req.params.id }, true),
    );
    scope.post('/api/pictures/locks', access('lock'), async (req) => across().lockBatch(req.body, visible(req), false));
    scope.delete<{ Querystring: Query }>('/api/pictures/locks', access('lock'), async (req) => across().lockBatch(req.query, visible(req), true));

    scope.get<{ Querystring: Query }>('/api/pictures/download.zip', access('read'), async (req, reply) => {
      const zip = await across().zip(req.query, visible(req));
      let range;
      try {
        range = replyRange(req, reply, zip.length, zip.etag);
      } catch (err) {
        zip.stream.destroy();
        throw err;
      }
      void reply
        .header('Content-Type', 'application/zip')
        .header('Content-Disposition', 'attachment; filename="pictures.zip"')
        .header('X-Picture-Count', zip.count);
      // Never silent: a node judged dead was answered for by its copies (see PictureZip).
      if (zip.fromCopiesOf) void reply.header('X-Recorder-Nodes-Down', zip.fromCopiesOf.join(','));
      if (range.start === 0 && range.end === zip.length - 1) return reply.send(zip.stream);
      return reply.send(pipeline(zip.stream, new ByteSlice(range.start, range.end), () => undefined));
    });

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
