/**
 * Who may do what (the permission model of issue 8). A principal has one role and a
 * set of pools; every camera belongs to one pool, so every check on a camera, its
 * video, locks, labels and events is a check on (role, action, pool).
 *
 *   action   what it covers                                   roles
 *   read     see cameras, search, list locks/labels           viewer operator admin
 *   play     play, download, HLS, frames, thumbnails, live    viewer operator admin
 *   write    events, manual recording, labels                 operator admin
 *   lock     lock and unlock video                            operator admin
 *   delete   delete recorded video                            admin
 *   admin    cameras, schedules, pools, users, system, metrics admin
 *
 * Admins are global (their pools are ignored). Viewers and operators act only on the
 * pools they are bound to; `*` binds every pool. A principal that may not even `read`
 * a pool is told its cameras do not exist (404), so pool B stays invisible to pool A.
 */
import { CameraNotFoundError, RecorderError } from '../lib/errors.ts';

export const ROLES = ['admin', 'operator', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

export const ACTIONS = ['read', 'play', 'write', 'lock', 'delete', 'admin'] as const;
export type Action = (typeof ACTIONS)[number];

/** Binds every pool. */
export const ALL_POOLS = '*';

export interface Principal {
  /** User name; `token` for RECORDER_AUTH_TOKEN, `anonymous` when auth is off. */
  name: string;
  role: Role;
  pools: readonly string[];
}

const ROLE_ACTIONS: Record<Role, ReadonlySet<Action>> = {
  viewer: new Set<Action>(['read', 'play']),
  operator: new Set<Action>(['read', 'play', 'write', 'lock']),
  admin: new Set<Action>(ACTIONS),
};

export function roleAllows(role: Role, action: Action): boolean {
  return ROLE_ACTIONS[role].has(action);
}

export function boundToPool(p: Principal, pool: string): boolean {
  return p.role === 'admin' || p.pools.includes(ALL_POOLS) || p.pools.includes(pool);
}

/** Whether `p` may do `action` on something in `pool` (no pool: a role check only). */
export function can(p: Principal, action: Action, pool?: string): boolean {
  return roleAllows(p.role, action) && (pool === undefined || boundToPool(p, pool));
}

/**
 * Throws unless `p` may do `action` on a camera of `pool`: a camera in a pool `p` is
 * not bound to is reported as unknown (CAMERA_NOT_FOUND), a role that lacks the action
 * as FORBIDDEN.
 */
export function authorizeCamera(p: Principal, action: Action, camera: { id: string; pool: string }): void {
  if (!boundToPool(p, camera.pool)) throw new CameraNotFoundError(camera.id);
  if (!roleAllows(p.role, action)) throw forbidden(p, action);
}

/** Throws FORBIDDEN unless `p` may do `action` (on `pool`, when given). */
export function authorize(p: Principal, action: Action, pool?: string): void {
  if (!can(p, action, pool)) throw forbidden(p, action, pool);
}

function forbidden(p: Principal, action: Action, pool?: string): RecorderError {
  return new RecorderError('FORBIDDEN', `${p.role} ${JSON.stringify(p.name)} may not ${action}${pool === undefined ? '' : ` in pool ${JSON.stringify(pool)}`}`);
}

/** The principal used when no authentication is configured and HTTP is on loopback. */
export const ANONYMOUS_ADMIN: Principal = Object.freeze({ name: 'anonymous', role: 'admin', pools: Object.freeze([ALL_POOLS]) });
