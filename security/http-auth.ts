/**
 * The one permission seam of the HTTP interface. Every route declares what it does in
 * its options, `access(action, {camera|pool: where})`:
 *
 *   app.get('/api/cameras/:id/play', access('play', { camera: 'params.id' }), handler)
 *   app.post('/api/locks', access('lock', { camera: 'body.camera' }), handler)
 *   app.get('/api/health', access('public'), handler)
 *
 * A plugin scope whose routes cannot take options (e.g. @fastify/static) declares them
 * all at once with `scopeAccess(scope, 'public')` before registering them.
 *
 * `onRequest` authenticates (Bearer token, HTTP Basic, or for clients that cannot set
 * headers — <img>, <video>, WebSocket — `?access_token=` or a WebSocket subprotocol
 * `bearer.<base64url token>`) and puts the principal on
 * `req.principal`; `preHandler` (after the body is parsed, so `body.*` works) resolves
 * the named camera to its pool and checks (role, action, pool) with security/access.ts.
 * A camera id that is not a valid id is refused (400) before anything touches disk.
 *
 * Invariants: a route that declares nothing is admin-only (fail closed) and is logged
 * at start; a route whose target is absent (e.g. a list without `camera`) gets a role
 * check here and must filter what it returns by `req.principal` itself (`canSee`).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RecorderError, ValidationError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { ID_PATTERN } from '../storage/layout.ts';
import { ANONYMOUS_ADMIN, authorize, authorizeCamera, boundToPool, type Action, type Principal } from './access.ts';
import { secretEquals } from './passwords.ts';
import type { UserStore } from './users.ts';

/**
 * Where a route finds its target id: `params.id`, `query.camera`, `body.camera`…, or a
 * function for ids that must be looked up (a lock or label id → its camera).
 */
export type Where = `${'params' | 'query' | 'body'}.${string}` | ((req: FastifyRequest) => string | undefined);

export interface RouteAccess {
  action: Action | 'public';
  camera?: Where;
  pool?: Where;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: RouteAccess;
  }
  interface FastifyRequest {
    /** Set by the auth seam on every route that is not `public`. */
    principal: Principal;
  }
}

/** Route options declaring the route's action and target (spread into the route's options). */
export function access(action: Action | 'public', target: { camera?: Where; pool?: Where } = {}): { config: { access: RouteAccess } } {
  return { config: { access: { action, ...target } } };
}

export interface AuthDeps {
  users: UserStore;
  /** RECORDER_AUTH_TOKEN: an admin token, kept from before users existed. */
  authToken?: string | undefined;
  /** Authentication is required even when no token or user is configured yet. */
  required: boolean;
  /** The camera's pool; throws CAMERA_NOT_FOUND for an unknown camera. */
  cameraPool: (id: string) => { id: string; pool: string };
  log: Logger;
}

const FAIL_CLOSED: RouteAccess = { action: 'admin' };

/** Whether a principal may see things of `pool` at all (for filtering lists). */
export function canSee(p: Principal, pool: string): boolean {
  return boundToPool(p, pool);
}

/** Gives every route registered later in `scope` that declares nothing this access. */
export function scopeAccess(scope: FastifyInstance, action: Action | 'public', target: { camera?: Where; pool?: Where } = {}): void {
  scope.addHook('onRoute', (route) => {
    const cfg = route.config ?? {};
    if (!cfg.access) route.config = { ...cfg, access: { action, ...target } };
  });
}

/** Installs the seam; call before any route is registered. `undeclared()` lists the routes that declared nothing. */
export function installAuth(app: FastifyInstance, deps: AuthDeps): { undeclared: () => string[] } {
  // Route options are kept by reference: scope hooks running after this one may still declare.
  const routes: { method: string; url: string; opts: { config?: unknown } }[] = [];
  const undeclared = (): string[] =>
    routes.filter((r) => r.method !== 'HEAD' && !(r.opts.config as { access?: RouteAccess } | undefined)?.access).map((r) => `${r.method} ${r.url}`);
  app.decorateRequest('principal', null as unknown as Principal);
  app.addHook('onRoute', (route) => {
    routes.push({ method: String(route.method), url: route.url, opts: route });
  });
  app.addHook('onReady', (done) => {
    const list = undeclared();
    if (list.length) deps.log.warn({ routes: list }, 'routes declare no access: admin only');
    done();
  });

  // A WebSocket upgrade refused here never reaches the websocket plugin's own hooks, and
  // its socket is no longer the HTTP server's to reap: once the error is sent, hang up,
  // or the client could hold it open (and hold up close()) for ever.
  app.addHook('onResponse', async (req, reply) => {
    if (req.headers.upgrade !== undefined && reply.statusCode !== 101) reply.raw.socket?.destroy();
  });

  app.addHook('onRequest', async (req, reply) => {
    if (routeAccess(req).action === 'public') return;
    const principal = await authenticate(req, deps);
    if (principal) {
      req.principal = principal;
      return;
    }
    // Bearer only: a Basic challenge would make browsers pop a login dialog over the
    // UI's own form. Basic is still accepted when sent (curl -u).
    void reply.header('WWW-Authenticate', 'Bearer realm="recorder"');
    throw new RecorderError('UNAUTHORIZED', 'authentication required: Authorization: Bearer <token> or Basic <user:password>');
  });

  app.addHook('preHandler', async (req) => {
    const a = routeAccess(req);
    if (a.action === 'public') return;
    // A public route that handed on to the not-found route (a missing UI file) skipped
    // authentication in onRequest: authenticate now, fail closed.
    if (!req.principal) {
      const principal = await authenticate(req, deps);
      if (!principal) throw new RecorderError('UNAUTHORIZED', 'authentication required: Authorization: Bearer <token> or Basic <user:password>');
      req.principal = principal;
    }
    const p = req.principal;
    const cameraId = a.camera ? pick(req, a.camera) : undefined;
    const poolId = a.pool ? pick(req, a.pool) : undefined;
    if (cameraId !== undefined) {
      let camera: { id: string; pool: string } | null = null;
      try {
        camera = deps.cameraPool(cameraId);
      } catch (err) {
        // Admins may address a camera that does not exist yet (create); others learn nothing.
        if (!(err instanceof RecorderError && err.code === 'CAMERA_NOT_FOUND' && p.role === 'admin')) throw err;
      }
      if (camera) authorizeCamera(p, a.action, camera);
      else authorize(p, a.action);
    } else if (poolId !== undefined) {
      authorize(p, a.action, poolId);
    } else {
      authorize(p, a.action);
    }
  });
  return { undeclared };
}

function routeAccess(req: FastifyRequest): RouteAccess {
  return (req.routeOptions.config as { access?: RouteAccess }).access ?? FAIL_CLOSED;
}

/** The id at `where`, validated as an id (no `..`, `/`, NUL…): undefined when absent. */
function pick(req: FastifyRequest, where: Where): string | undefined {
  let v: unknown;
  if (typeof where === 'function') v = where(req);
  else {
    const dot = where.indexOf('.');
    const from = where.slice(0, dot) as 'params' | 'query' | 'body';
    const container = req[from] as Record<string, unknown> | null | undefined;
    v = container && typeof container === 'object' ? container[where.slice(dot + 1)] : undefined;
  }
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || !ID_PATTERN.test(v)) {
    const name = typeof where === 'function' ? 'id' : where;
    throw new ValidationError(`${name}: ids are 1-64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit`);
  }
  return v;
}

async function authenticate(req: FastifyRequest, deps: AuthDeps): Promise<Principal | null> {
  const header = req.headers.authorization;
  const queryToken = (req.query as Record<string, unknown> | undefined)?.access_token;
  const bearer = header?.startsWith('Bearer ')
    ? header.slice(7).trim()
    : header === undefined
      ? ((typeof queryToken === 'string' ? queryToken : undefined) ?? wsProtocolToken(req.headers['sec-websocket-protocol']))
      : undefined;
  let principal: Principal | null = null;
  let who = '';
  if (bearer !== undefined) {
    if (deps.authToken !== undefined && secretEquals(bearer, deps.authToken)) return { name: 'token', role: 'admin', pools: ['*'] };
    principal = deps.users.authenticateToken(bearer);
    who = bearer.includes('.') ? bearer.slice(0, bearer.indexOf('.')) : '(token)';
  } else if (header?.startsWith('Basic ')) {
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      who = decoded.slice(0, colon);
      principal = await deps.users.authenticatePassword(who, decoded.slice(colon + 1));
    }
  } else if (header === undefined && !deps.required && deps.authToken === undefined && deps.users.count() === 0) {
    // No authentication configured: the loopback-only default of a fresh install.
    return ANONYMOUS_ADMIN;
  }
  if (!principal && header !== undefined) deps.log.info({ user: who.slice(0, 64), ip: req.ip, url: req.url.split('?')[0] }, 'authentication failed');
  return principal;
}

/** Browsers cannot set headers on a WebSocket: the token may ride as a subprotocol `bearer.<base64url>`. */
export const WS_BEARER_PREFIX = 'bearer.';

function wsProtocolToken(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  for (const p of header.split(',')) {
    const v = p.trim();
    if (v.startsWith(WS_BEARER_PREFIX)) return Buffer.from(v.slice(WS_BEARER_PREFIX.length), 'base64url').toString('utf8');
  }
  return undefined;
}
