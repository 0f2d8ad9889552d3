/**
 * Users, kept in the node's LMDB index (db `users`, name → UserRecord).
 *
 * Why the index and not a config file: users are managed at run time over HTTP by an
 * admin, and the CLI (`recorder user add`) may add one while the node runs; LMDB gives
 * both atomic durable writes and multi-process access with no reload protocol, and a
 * backup of the index carries the users with the cameras and pools they refer to.
 *
 * Credentials: a password (salted scrypt) for HTTP Basic, and/or one API token
 * (`<name>.<secret>`, SHA-256 of the secret stored) for `Authorization: Bearer`.
 * Successful Basic checks are cached for CACHE_MS (scrypt costs ~50 ms, and a player
 * makes many requests); any change to a user made here clears the cache.
 */
import { z } from 'zod';
import type { UserTable } from '../index/config-stores.ts';
import type { UserRecord } from '../index/records.ts';
import { validate } from '../lib/validate.ts';
import { RecorderError } from '../lib/errors.ts';
import { iso, type Clock } from '../lib/time.ts';
import { ID_PATTERN } from '../storage/layout.ts';
import { ALL_POOLS, ROLES, type Principal, type Role } from './access.ts';
import { hashPassword, newToken, tokenDigest, verifyPassword } from './passwords.ts';
import { timingSafeEqual } from 'node:crypto';

/** What leaves the store: never a hash. */
export interface UserView {
  name: string;
  role: Role;
  pools: string[];
  password: boolean;
  token: boolean;
  createdAt: string;
  updatedAt: string;
}

const CACHE_MS = 60_000;
const CACHE_ENTRIES = 1000;

const name = z.string().regex(ID_PATTERN, 'user names are 1-64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit');
export const userPutSchema = z
  .object({
    name,
    role: z.enum(ROLES),
    pools: z
      .array(z.union([z.literal(ALL_POOLS), z.string().regex(ID_PATTERN, 'pool ids are 1-64 characters of A-Z a-z 0-9 _ -')]))
      .max(1000)
      .default([]),
    password: z.string().min(8, 'passwords have at least 8 characters').max(1024).optional(),
  })
  .strict();
export type UserPut = z.input<typeof userPutSchema>;

export function userNameValid(n: string): boolean {
  return ID_PATTERN.test(n);
}

export class UserStore {
  private readonly cache = new Map<string, { principal: Principal; untilMs: number }>();

  constructor(
    /** The index's users (RecorderIndex.users). */
    private readonly db: UserTable,
    private readonly clock: Clock,
  ) {}

  /**
   * In a cluster (cluster/shared-config.ts): every change of a user is written to the
   * shared config first (CLUSTER_UNAVAILABLE when not confirmed), then here; null removes.
   */
  private share: ((name: string, record: UserRecord | null) => Promise<void>) | null = null;

  shareWith(share: (name: string, record: UserRecord | null) => Promise<void>): void {
    this.share = share;
  }

  /** Another node changed a user (mirrored into the index): cached logins are checked again. */
  forget(): void {
    this.cache.clear();
  }

  count(): number {
    return this.db.count();
  }

  list(): UserView[] {
    return this.db.list().map(view);
  }

  get(userName: string): UserView {
    return view(this.require(userName));
  }

  /** Creates or replaces a user; the password is kept when none is given, the token always. */
  async put(body: unknown): Promise<UserView> {
    const u = validate(userPutSchema, body);
    const old = this.db.get(u.name);
    if (old?.role === 'admin' && u.role !== 'admin') this.refuseLastAdmin(u.name);
    const now = iso(this.clock.nowMs());
    const passwordHash = u.password !== undefined ? await hashPassword(u.password) : old?.passwordHash;
    const record: UserRecord = {
      name: u.name,
      role: u.role,
      pools: [...new Set(u.pools)],
      ...(passwordHash ? { passwordHash } : {}),
      ...(old?.tokenSha256 ? { tokenSha256: old.tokenSha256 } : {}),
      createdAt: old?.createdAt ?? now,
      updatedAt: now,
    };
    await this.share?.(u.name, record);
    await this.db.put(u.name, record);
    this.cache.clear();
    return view(record);
  }

  async remove(userName: string): Promise<{ name: string }> {
    const old = this.require(userName);
    if (old.role === 'admin') this.refuseLastAdmin(userName);
    await this.share?.(userName, null);
    await this.db.remove(userName);
    this.cache.clear();
    return { name: userName };
  }

  /** A new API token for the user (replacing the old one); returned once, stored hashed. */
  async issueToken(userName: string): Promise<{ name: string; token: string }> {
    const old = this.require(userName);
    const secret = newToken();
    const record: UserRecord = { ...old, tokenSha256: tokenDigest(secret).toString('hex'), updatedAt: iso(this.clock.nowMs()) };
    await this.share?.(userName, record);
    await this.db.put(userName, record);
    this.cache.clear();
    return { name: userName, token: `${userName}.${secret}` };
  }

  async authenticatePassword(userName: string, password: string): Promise<Principal | null> {
    const key = tokenDigest(`${userName}\0${password}`).toString('hex');
    const hit = this.cache.get(key);
    if (hit && hit.untilMs > this.clock.nowMs()) return hit.principal;
    const user = userNameValid(userName) ? this.db.get(userName) : undefined;
    // Unknown users are checked against a decoy hash: same cost, no user enumeration by timing.
    if (!(await verifyPassword(password, user?.passwordHash)) || !user) return null;
    const principal = toPrincipal(user);
    if (this.cache.size >= CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, { principal, untilMs: this.clock.nowMs() + CACHE_MS });
    return principal;
  }

  authenticateToken(token: string): Principal | null {
    const dot = token.indexOf('.');
    if (dot <= 0) return null;
    const userName = token.slice(0, dot);
    const user = userNameValid(userName) ? this.db.get(userName) : undefined;
    const got = tokenDigest(token.slice(dot + 1));
    const expected = user?.tokenSha256 ? Buffer.from(user.tokenSha256, 'hex') : tokenDigest('');
    return timingSafeEqual(got, expected) && user?.tokenSha256 ? toPrincipal(user) : null;
  }

  private require(userName: string): UserRecord {
    const u = userNameValid(userName) ? this.db.get(userName) : undefined;
    if (!u) throw new RecorderError('NOT_FOUND', `unknown user ${JSON.stringify(userName)}`);
    return u;
  }

  /** Users exist only with an admin among them, or nobody could manage them any more. */
  private refuseLastAdmin(userName: string): void {
    const admins = this.db.list().filter((u) => u.role === 'admin' && u.name !== userName).length;
    if (admins === 0) throw new RecorderError('VALIDATION_FAILED', `${JSON.stringify(userName)} is the last admin: add another admin first`);
  }
}

function toPrincipal(u: UserRecord): Principal {
  return { name: u.name, role: u.role, pools: u.pools };
}

function view(u: UserRecord): UserView {
  return {
    name: u.name,
    role: u.role,
    pools: u.pools,
    password: u.passwordHash !== undefined,
    token: u.tokenSha256 !== undefined,
    createdAt: u.createdAt,
    updatedAt: u.updatedAt,
  };
}
