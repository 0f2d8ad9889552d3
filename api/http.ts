/**
 * The HTTP interface (CONTRACT.md) on fastify. Handlers validate, call one
 * RecorderService function, and errors map once to `{error:{code,message}}` with the
 * RecorderError's status.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import { RecorderError, errorBody, toRecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { VERSION, type RecorderService } from './service.ts';
import { registerDownload } from './download.ts';
import { registerFrames } from './frames.ts';
import { registerHls } from './hls.ts';
import { registerPlay } from './play.ts';
import type { RecorderIndex } from '../index/db.ts';

export interface HttpDeps {
  service: RecorderService;
  index: RecorderIndex;
  dataDir: string;
  log: Logger;
  authToken?: string | undefined;
  ffmpegPath: string;
}

export function buildHttp(deps: HttpDeps): FastifyInstance {
  // Fastify's own logger stays off: errors are logged once, by the error handler below.
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });

  if (deps.authToken) {
    const expected = Buffer.from(`Bearer ${deps.authToken}`);
    app.addHook('onRequest', async (req) => {
      const got = Buffer.from(req.headers.authorization ?? '');
      if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
        throw new RecorderError('UNAUTHORIZED', 'authentication required: Authorization: Bearer <token>');
      }
    });
  }

  app.setErrorHandler((err: unknown, req, reply) => {
    let e: RecorderError;
    const statusCode = (err as { statusCode?: number }).statusCode;
    if (err instanceof RecorderError) e = err;
    else if (statusCode === 413) e = new RecorderError('VALIDATION_FAILED', 'request body too large');
    else if (statusCode === 400 || statusCode === 415) e = new RecorderError(statusCode === 400 ? 'BAD_JSON' : 'VALIDATION_FAILED', (err as Error).message);
    else e = toRecorderError(err);
    if (e.status >= 500) deps.log.error({ err, url: req.url }, 'request failed');
    void reply.code(e.status).send({ error: errorBody(e) });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  app.get('/api/health', async () => ({ status: 'ok', version: VERSION }));
  app.get('/api/cameras', async () => ({ cameras: deps.service.listCameras() }));
  app.get<{ Params: { id: string } }>('/api/cameras/:id', async (req) => ({ camera: deps.service.getCamera({ id: req.params.id }) }));
  app.put<{ Params: { id: string } }>('/api/cameras/:id', async (req) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    return { camera: await deps.service.putCamera({ ...body, id: req.params.id }) };
  });
  app.delete<{ Params: { id: string }; Querystring: { purge?: string } }>('/api/cameras/:id', async (req) =>
    deps.service.deleteCamera({ id: req.params.id, purge: req.query.purge === '1' || req.query.purge === 'true' }),
  );
  app.put<{ Params: { id: string } }>('/api/cameras/:id/schedule', async (req) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    return { schedule: await deps.service.putSchedule({ ...body, camera: req.params.id }) };
  });
  app.get<{ Querystring: Record<string, string | undefined> }>('/api/recordings', async (req) => {
    const { camera, from, to, types } = req.query;
    return deps.service.search({
      camera,
      from,
      to,
      ...(types ? { types: types.split(',').filter(Boolean) } : {}),
    });
  });
  app.post<{ Params: { id: string } }>('/api/cameras/:id/events', async (req) => ({ event: deps.service.event(req.params.id, req.body ?? {}) }));
  app.post<{ Params: { id: string } }>('/api/cameras/:id/manual/start', async (req) => deps.service.manual({ camera: req.params.id }, true));
  app.post<{ Params: { id: string } }>('/api/cameras/:id/manual/stop', async (req) => deps.service.manual({ camera: req.params.id }, false));
  registerDownload(app, deps);
  registerFrames(app, deps);
  registerHls(app, deps);
  registerPlay(app, deps);
  return app;
}
