/**
 * The HTTP interface (docs/api/http-*.md) on fastify. Handlers validate, call one
 * RecorderService function, and errors map once to `{error:{code,message}}` with the
 * RecorderError's status.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyReply, type RouteOptions } from 'fastify';
import websocket from '@fastify/websocket';
import { RecorderError, errorBody, toRecorderError } from '../lib/errors.ts';
import { shuttingDown } from '../lib/lifecycle.ts';
import { faultPoint } from '../lib/crash-point.ts';
import { StreamLimiter, installStreamLimit } from './stream-limit.ts';
import { VERSION } from '../services/recorder-service.ts';
import type { HttpDeps } from './http-deps.ts';

export type { HttpDeps } from './http-deps.ts';
import { registerDownload } from './download.ts';
import { registerFrames } from './frames.ts';
import { registerHls } from './hls.ts';
import { registerPlay } from './play.ts';
import { registerVideoPs } from './video-ps.ts';
import { registerSmart } from './smart.ts';
import { registerLive, selectWsProtocol } from './live.ts';
import { registerPlaybackSessions } from './playback-session.ts';
import { registerUi } from './ui.ts';
import { access, canSee, installAuth, scopeAccess, type RouteAccess } from '../security/http-auth.ts';
import type { Principal } from '../security/access.ts';
import { registerUsers } from './users.ts';
import { registerS3Keys } from './s3-keys.ts';
import { registerStorageRoutes } from './storage-routes.ts';
import { registerPictures } from './pictures.ts';
import { registerCluster } from './cluster-routes.ts';

/** A route as registered: what docs/api/ must describe (test/docs.test.ts compares them). */
export interface RegisteredRoute {
  method: string;
  url: string;
  /** The declared access (security/http-auth.ts); undefined: admin only. */
  access: RouteAccess | undefined;
}

const registered = new WeakMap<FastifyInstance, RouteOptions[]>();

/** Every route of an app built by buildHttp, HEAD included, with its access as declared now. */
export function registeredRoutes(app: FastifyInstance): RegisteredRoute[] {
  return (registered.get(app) ?? []).flatMap((r) =>
    (Array.isArray(r.method) ? r.method : [r.method]).map((method) => ({ method: String(method), url: r.url, access: r.config?.access })),
  );
}

/** Request bodies above this are refused with 413 before they are parsed. */
export const BODY_LIMIT_BYTES = 1024 * 1024;

const REQUEST_TIMEOUT_MS = 30_000;

/**
 * Destroys the socket of an upgrade request once its (non-101) answer is written: the
 * socket belongs to no HTTP keep-alive loop, so left open it stays in CLOSE-WAIT for ever
 * and holds a descriptor (and SIGTERM). Routed refusals are closed by the auth seam's
 * onResponse hook (security/http-auth.ts); this is for the router's own errors.
 */
function closeRefusedUpgrade(req: IncomingMessage, res: ServerResponse): void {
  if (!req.headers.upgrade) return;
  const socket = req.socket;
  if (res.writableFinished) socket.destroy();
  else res.once('finish', () => socket.destroy());
}

export function buildHttp(deps: HttpDeps): FastifyInstance {
  // Fastify's own logger stays off: errors are logged once, by the error handler below.
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT_BYTES,
    // A request whose head and body have not arrived within this is answered 408 and
    // closed: bodies here are at most 1 MiB of JSON, so only a stalled client waits so long.
    requestTimeout: REQUEST_TIMEOUT_MS,
    // While closing, requests on open connections get the typed SHUTTING_DOWN below, not fastify's own 503.
    return503OnClosing: false,
    // Errors the router raises before any route or hook runs (a malformed URL, a path
    // parameter over 100 characters) get the same {error:{code,message}} body.
    frameworkErrors: (err, req, reply) => {
      const e =
        (err as { statusCode?: number }).statusCode === 414
          ? new RecorderError('URL_TOO_LONG', 'a path parameter is longer than 100 characters')
          : new RecorderError('VALIDATION_FAILED', 'the URL is not valid');
      void (reply as FastifyReply).code(e.status).send({ error: errorBody(e) });
      closeRefusedUpgrade(req.raw, reply.raw);
    },
  });

  // Kept by reference: scope hooks that run later may still declare a route's access.
  const routes: RouteOptions[] = [];
  registered.set(app, routes);
  app.addHook('onRoute', (route) => {
    routes.push(route);
  });

  // Shutting down (lib/lifecycle.ts): every request from now on starts nothing, before
  // auth or any route runs. Requests already in flight finish within the close grace.
  const { signal } = deps;
  if (signal) {
    app.addHook('onRequest', async (req, reply) => {
      if (!signal.aborted) return;
      const e = shuttingDown(`${req.method} ${req.url.split('?')[0]}`);
      // A refused WebSocket upgrade's socket is hung up by the auth seam's onResponse hook.
      return reply
        .code(e.status)
        .header('Connection', 'close')
        .send({ error: errorBody(e) });
    });
  }

  // Tests only (lib/crash-point.ts): RECORDER_FAULT_POINT=http.request:<path> makes a
  // request to that path fail as an unexpected error would (500 INTERNAL, logged once).
  app.addHook('onRequest', async (req) => {
    faultPoint('http.request', req.url.split('?')[0]!);
  });

  // Every route goes through this seam: it declares its action (and camera or pool) in
  // its options with access(); undeclared routes are admin-only.
  installAuth(app, {
    users: deps.users,
    authToken: deps.authToken,
    required: deps.authRequired,
    cameraPool: (id) => deps.service.requireCamera(id),
    log: deps.log,
  });
  const streams = new StreamLimiter(deps.maxStreams ?? 500);
  installStreamLimit(app, streams, deps.log);
  deps.metrics.setStreamSource(() => ({ active: streams.active, max: streams.max, refused: streams.refused }));
  app.setErrorHandler((err: unknown, req, reply) => {
    let e: RecorderError;
    const statusCode = (err as { statusCode?: number }).statusCode;
    if (err instanceof RecorderError) e = err;
    else if (statusCode === 413) e = new RecorderError('PAYLOAD_TOO_LARGE', `request body over ${BODY_LIMIT_BYTES} bytes`);
    else if (statusCode === 400) e = new RecorderError('BAD_JSON', (err as Error).message);
    else if (statusCode === 415) e = new RecorderError('UNSUPPORTED_MEDIA_TYPE', (err as Error).message);
    // A plugin's own 4xx (the static files' 403 for a directory or a path out of its root,
    // 404) is the client's mistake, not an INTERNAL error with a stack trace in the log.
    else if (statusCode === 403 || statusCode === 404) e = new RecorderError('NOT_FOUND', `no such file ${req.url.split('?')[0]}`);
    else if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) e = new RecorderError('VALIDATION_FAILED', (err as Error).message);
    else e = toRecorderError(err);
    if (e.status >= 500) deps.log.error({ err, url: req.url }, 'request failed');
    void reply.code(e.status).send({ error: errorBody(e) });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  // Registered once, here, for every WebSocket route (live view, playback sessions).
  void app.register(websocket, { options: { maxPayload: 64 * 1024, handleProtocols: selectWsProtocol } });

  app.get('/api/health', access('public'), async () => ({ status: 'ok', version: VERSION }));
  // Camera URLs carry their passwords to admins only (security/redact.ts).
  const credentials = (req: { principal: Principal }): { credentials: boolean } => ({ credentials: req.principal.role === 'admin' });
  app.get('/api/cameras', access('read'), async (req) => ({
    cameras: deps.service.listCameras(credentials(req)).filter((c) => canSee(req.principal, c.pool)),
  }));
  app.get<{ Params: { id: string } }>('/api/cameras/:id', access('read', { camera: 'params.id' }), async (req) => ({
    camera: deps.service.getCamera({ id: req.params.id }, credentials(req)),
  }));
  app.put<{ Params: { id: string } }>('/api/cameras/:id', access('admin', { camera: 'params.id' }), async (req) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    return { camera: await deps.service.putCamera({ ...body, id: req.params.id }, credentials(req)) };
  });
  app.delete<{ Params: { id: string }; Querystring: { purge?: string } }>('/api/cameras/:id', access('admin', { camera: 'params.id' }), async (req) =>
    deps.service.deleteCamera({ id: req.params.id, purge: req.query.purge === '1' || req.query.purge === 'true' }),
  );
  app.put<{ Params: { id: string } }>('/api/cameras/:id/schedule', access('admin', { camera: 'params.id' }), async (req) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    return { schedule: await deps.service.putSchedule({ ...body, camera: req.params.id }) };
  });
  app.get<{ Querystring: Record<string, string | undefined> }>('/api/recordings', access('read', { camera: 'query.camera' }), async (req) => {
    const { camera, from, to, types, locked, label } = req.query;
    return deps.service.search({
      camera,
      from,
      to,
      ...(types ? { types: types.split(',').filter(Boolean) } : {}),
      ...(locked !== undefined ? { locked: locked === '1' || locked === 'true' } : {}),
      ...(label !== undefined ? { label } : {}),
    });
  });
  app.post<{ Params: { id: string } }>('/api/cameras/:id/events', access('write', { camera: 'params.id' }), async (req) => ({
    event: deps.service.event(req.params.id, req.body ?? {}),
  }));
  app.post<{ Params: { id: string } }>('/api/cameras/:id/manual/start', access('write', { camera: 'params.id' }), async (req) =>
    deps.service.manual({ camera: req.params.id }, true),
  );
  app.post<{ Params: { id: string } }>('/api/cameras/:id/manual/stop', access('write', { camera: 'params.id' }), async (req) =>
    deps.service.manual({ camera: req.params.id }, false),
  );
  app.post<{ Params: { id: string } }>('/api/cameras/:id/backfill', access('write', { camera: 'params.id' }), async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    void reply.code(202);
    return deps.service.backfill({ ...body, camera: req.params.id });
  });
  app.get('/metrics', access('admin'), async (_req, reply) => {
    const text = await deps.metrics.render();
    return reply.header('Content-Type', deps.metrics.contentType).send(text);
  });
  app.get('/api/system', access('admin'), async () => ({ system: await deps.service.systemInfo() }));
  registerUsers(app, deps.users);
  registerS3Keys(app, deps.s3Keys, deps.s3Presigner);
  registerStorageRoutes(app, deps);
  registerCluster(app, deps);
  registerDownload(app, deps);
  registerFrames(app, deps);
  registerHls(app, deps);
  registerPlay(app, deps);
  registerVideoPs(app, deps);
  registerSmart(app, deps);
  registerPictures(app, deps);
  // WebSocket routes in their own scope, so they load after the websocket plugin.
  void app.register(async (scope) => {
    scopeAccess(scope, 'play', { camera: 'params.id' });
    registerLive(scope, deps);
    registerPlaybackSessions(scope, deps);
  });
  // The UI's static files hold no data (security/http-auth.ts scopeAccess).
  void app.register(async (scope) => {
    scopeAccess(scope, 'public');
    registerUi(scope);
  });
  return app;
}
