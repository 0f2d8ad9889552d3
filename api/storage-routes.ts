/**
 * HTTP routes for pools, locks and labels (docs/api/http-storage.md: `POST/DELETE /api/locks`,
 * `POST/PATCH/DELETE /api/labels`, plus pool and list routes). Thin: validate through
 * StorageService, which throws typed errors. Routes addressed by a lock or label id
 * check the pool of the camera it belongs to themselves (the id names no camera).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RecorderError } from '../lib/errors.ts';
import { access, canSee } from '../security/http-auth.ts';
import type { HttpDeps } from './http-deps.ts';

type Query = Record<string, string | undefined>;

function optionalQuery(q: Query, keys: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of keys) if (q[k] !== undefined) out[k] = q[k]!;
  return out;
}

export function registerStorageRoutes(app: FastifyInstance, deps: HttpDeps): void {
  const storage = () => deps.service.storage;
  const requirePoolOf = (req: FastifyRequest, camera: string): void => {
    let pool: string;
    try {
      pool = deps.service.requireCamera(camera).pool;
    } catch {
      return; // the camera is gone: the lock or label is reachable by admins' lists only
    }
    if (!canSee(req.principal, pool)) throw new RecorderError('FORBIDDEN', `no access to pool ${pool}`);
  };

  // ---- pools
  app.get('/api/pools', access('read'), async (req) => ({
    pools: storage()
      .listPools()
      .filter((p) => canSee(req.principal, p.id)),
  }));
  app.get<{ Params: { id: string } }>('/api/pools/:id', access('read', { pool: 'params.id' }), async (req) => ({
    pool: storage().getPool({ id: req.params.id }),
  }));
  app.put<{ Params: { id: string } }>('/api/pools/:id', access('admin', { pool: 'params.id' }), async (req) => ({
    pool: await storage().putPool({ ...((req.body ?? {}) as Record<string, unknown>), id: req.params.id }),
  }));

  // ---- locks
  app.get<{ Querystring: Query }>('/api/locks', access('read', { camera: 'query.camera' }), async (req) => ({
    locks: storage()
      .listLocks(req.query.camera)
      .filter((l) => req.query.camera !== undefined || canSee(req.principal, poolOf(deps, l.camera))),
  }));
  app.post('/api/locks', access('lock', { camera: 'body.camera' }), async (req) => ({ lock: await storage().lock(req.body ?? {}) }));
  app.delete<{ Querystring: Query }>('/api/locks', access('lock', { camera: 'query.camera' }), async (req) =>
    storage().unlock(optionalQuery(req.query, ['camera', 'from', 'to'])),
  );
  app.delete<{ Params: { id: string } }>('/api/locks/:id', access('lock'), async (req) => {
    const lock = storage()
      .listLocks()
      .find((l) => l.id === req.params.id);
    if (lock) requirePoolOf(req, lock.camera);
    return storage().unlock({ id: req.params.id });
  });

  // ---- labels
  app.get<{ Querystring: Query }>('/api/labels', access('read', { camera: 'query.camera' }), async (req) => {
    const q = optionalQuery(req.query, ['camera', 'from', 'to', 'text']);
    const limit = req.query.limit !== undefined ? Number(req.query.limit) : undefined;
    const labels = storage().searchLabels({ ...q, ...(limit !== undefined ? { limit } : {}) });
    return { labels: labels.filter((l) => q.camera !== undefined || canSee(req.principal, poolOf(deps, l.camera))) };
  });
  app.post('/api/labels', access('write', { camera: 'body.camera' }), async (req) => ({ label: await storage().addLabel(req.body ?? {}) }));
  app.patch<{ Params: { id: string } }>('/api/labels/:id', access('write'), async (req) => {
    const existing = deps.index.labels.get(req.params.id);
    if (existing) requirePoolOf(req, existing.camera);
    return { label: await storage().updateLabel({ ...((req.body ?? {}) as Record<string, unknown>), id: req.params.id }) };
  });
  app.delete<{ Params: { id: string } }>('/api/labels/:id', access('write'), async (req) => {
    const existing = deps.index.labels.get(req.params.id);
    if (existing) requirePoolOf(req, existing.camera);
    return storage().deleteLabel({ id: req.params.id });
  });
}

function poolOf(deps: HttpDeps, camera: string): string {
  try {
    return deps.service.requireCamera(camera).pool;
  } catch {
    return '';
  }
}
