/**
 * GET / and /ui/* — the web UI: static files from web/ (plain ES modules, no build
 * step), served by @fastify/static. The files hold no data, so they are public (http.ts
 * registers this in a `public` scope); the UI asks for the token when the API answers
 * 401 and sends it on every API call.
 */
import type { FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', 'web');

export function registerUi(app: FastifyInstance): void {
  void app.register(async (scope) => {
    await scope.register(fastifyStatic, { root: ROOT, prefix: '/ui/', index: false, cacheControl: true, maxAge: 0, etag: true });
    scope.get('/', (_req, reply) => reply.header('Cache-Control', 'no-cache').sendFile('index.html'));
  });
}
