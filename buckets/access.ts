/**
 * Who may do what on a bucket. A signed request acts as the user its access key belongs
 * to; the settings' first key (RECORDER_S3_ACCESS_KEY) acts as `root`, an admin. An
 * admin sees and may do everything; other users see only the buckets of the pools they
 * are bound to (a bucket of another pool is reported as missing, as the HTTP API hides
 * cameras of other pools), viewers only read. An anonymous request may do only what a
 * canned ACL grants: `public-read` reads, `public-read-write` also writes.
 */
import type { BucketRecord, ObjectRecord } from '../index/buckets.ts';
import type { UserRecord } from '../index/records.ts';
import type { S3Request } from './request.ts';
import { S3Error } from './s3-errors.ts';

export type BucketAction = 'read' | 'write' | 'admin';

/** The name the settings' first key acts as. */
export const ROOT_USER = 'root';

export class Access {
  constructor(
    /** A user of the index by name (RecorderIndex.users). */
    private readonly user: (name: string) => UserRecord | undefined,
  ) {}

  /** The acting user's role and pools; null for anonymous. */
  private principal(r: S3Request): { name: string; role: UserRecord['role']; pools: readonly string[] } | null {
    if (!r.auth) return null;
    const name = r.auth.cred.user;
    if (name === ROOT_USER) return { name, role: 'admin', pools: ['*'] };
    const u = this.user(name);
    if (!u) return { name, role: 'viewer', pools: [] };
    return { name, role: u.role, pools: u.pools };
  }

  /** Whether the caller may see the bucket at all (ListBuckets shows only those). */
  sees(r: S3Request, b: BucketRecord): boolean {
    const p = this.principal(r);
    if (!p) return b.acl !== 'private';
    return p.role === 'admin' || p.pools.includes('*') || p.pools.includes(b.pool);
  }

  /** Whether a signed caller may create a bucket in `pool`. */
  mayCreate(r: S3Request, pool: string): boolean {
    const p = this.principal(r);
    return p !== null && p.role !== 'viewer' && (p.role === 'admin' || p.pools.includes('*') || p.pools.includes(pool));
  }

  require(r: S3Request, b: BucketRecord, action: BucketAction): void {
    const p = this.principal(r);
    if (!p) {
      if ((action === 'read' && b.acl !== 'private') || (action === 'write' && b.acl === 'public-read-write')) return;
      throw new S3Error('AccessDenied', 'Access Denied');
    }
    if (!this.sees(r, b)) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: b.name });
    if (action === 'read') return;
    if (p.role === 'viewer' || (action === 'admin' && p.role !== 'admin' && b.owner !== p.name)) throw new S3Error('AccessDenied', 'Access Denied');
  }

  /** An object's own ACL may open it to anonymous reads in a private bucket. */
  requireObject(r: S3Request, b: BucketRecord, rec: ObjectRecord, action: 'read'): void {
    if (!r.auth && rec.acl !== undefined && rec.acl !== 'private') return;
    this.require(r, b, action);
  }
}
