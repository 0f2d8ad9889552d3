/**
 * User management over HTTP (admin only, security/users.ts holds the rules):
 *   GET    /api/users               list (never a hash)
 *   PUT    /api/users/:name         create or replace {role, pools?, password?}
 *   DELETE /api/users/:name         remove (not the last admin)
 *   POST   /api/users/:name/token   a new API token, shown once
 *   GET    /api/me                  who am I (any authenticated user)
 */
import type { FastifyInstance } from 'fastify';
import { access } from '../security/http-auth.ts';
import type { UserStore } from '../security/users.ts';

export function registerUsers(app: FastifyInstance, users: UserStore): void {
  app.get('/api/me', access('read'), async (req) => ({ user: req.principal }));
  app.get('/api/users', access('admin'), async () => ({ users: users.list() }));
  app.put<{ Params: { name: string } }>('/api/users/:name', access('admin'), async (req) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    return { user: await users.put({ ...body, name: req.params.name }) };
  });
  app.delete<{ Params: { name: string } }>('/api/users/:name', access('admin'), async (req) => users.remove(req.params.name));
  app.post<{ Params: { name: string } }>('/api/users/:name/token', access('admin'), async (req) => users.issueToken(req.params.name));
}
