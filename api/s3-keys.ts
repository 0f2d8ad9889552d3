/**
 * S3 access keys of users over HTTP (admin only; buckets/keys.ts holds the rules):
 *   POST   /api/users/:name/s3-keys                 a new key, its secret shown once
 *   GET    /api/users/:name/s3-keys                 the user's keys (never a secret)
 *   DELETE /api/users/:name/s3-keys/:accessKeyId    revoke one
 * and, for the web UI's buckets page, any user:
 *   POST   /api/s3/presign                          a presigned URL signed with the user's key (buckets/presign.ts)
 */
import type { FastifyInstance } from 'fastify';
import type { S3Keys } from '../buckets/keys.ts';
import type { S3Presigner } from '../buckets/presign.ts';
import { RecorderError } from '../lib/errors.ts';
import { access } from '../security/http-auth.ts';

export function registerS3Keys(app: FastifyInstance, keys: S3Keys | undefined, presigner?: S3Presigner): void {
  app.post('/api/s3/presign', access('read'), async (req) => {
    if (!presigner) throw new RecorderError('S3_UNAVAILABLE', 'this recorder has no S3 listener');
    return presigner.presign(req.principal, req.headers.host, req.body);
  });
  if (!keys) return;
  app.post<{ Params: { name: string } }>('/api/users/:name/s3-keys', access('admin'), async (req, reply) => {
    reply.code(201);
    return keys.issue(req.params.name, Date.now());
  });
  app.get<{ Params: { name: string } }>('/api/users/:name/s3-keys', access('admin'), async (req) => ({ keys: keys.list(req.params.name) }));
  app.delete<{ Params: { name: string; accessKeyId: string } }>('/api/users/:name/s3-keys/:accessKeyId', access('admin'), async (req) =>
    keys.revoke(req.params.name, req.params.accessKeyId),
  );
}
