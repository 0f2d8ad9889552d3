/**
 * S3 access keys of the recorder's users (issue 17): an admin issues them over HTTP
 * (`POST /api/users/:name/s3-keys`, api/s3-keys.ts); a request signed with one acts as
 * that user, seeing only the buckets of the user's pools (buckets/access.ts). The secret
 * is shown once, when issued, and kept in the index as is: SigV4 signs with the secret
 * itself, so a digest could not check a signature. A key stops working when its user or
 * the key is removed.
 */
import { randomBytes } from 'node:crypto';
import type { RecorderIndex } from '../index/db.ts';
import type { S3KeyRecord } from '../index/buckets.ts';
import { isSealed, type SecretBox } from '../lib/secret-box.ts';
import { RecorderError } from '../lib/errors.ts';
import { ROOT_USER } from './access.ts';
import type { Credential, KeyLookup } from './sigv4.ts';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export interface S3KeyView {
  accessKeyId: string;
  user: string;
  createdAt: string;
}

/** Where key changes go: the catalog on one node, the cluster's object log in a cluster (every node then knows every key). */
export interface KeyWrites {
  putAccessKey(rec: S3KeyRecord): Promise<void>;
  removeAccessKey(accessKeyId: string): Promise<boolean>;
}

/** In a cluster: the ordered key writes, and the box of the cluster's key (null until the cluster token is bound). */
export interface ClusterKeys {
  writes: KeyWrites;
  box: () => SecretBox | null;
}

export class S3Keys {
  private cluster: ClusterKeys | null = null;

  constructor(
    private readonly index: RecorderIndex,
    private readonly box: SecretBox,
  ) {}

  /**
   * In a cluster, keys are issued and revoked through the cluster's object log and sealed
   * under the cluster's key, so a key issued through one node signs requests to any node.
   * Keys issued before the node joined stay its own.
   */
  useCluster(cluster: ClusterKeys): void {
    this.cluster = cluster;
  }

  /** A new key for `user` (who must exist); the secret appears only in this answer. */
  async issue(user: string, nowMs: number): Promise<S3KeyView & { secretAccessKey: string }> {
    if (!this.index.users.get(user)) throw new RecorderError('NOT_FOUND', `unknown user ${JSON.stringify(user)}`);
    const id = `RK${[...randomBytes(18)].map((b) => ALPHABET[b % 32]).join('')}`;
    const secret = randomBytes(30).toString('base64url');
    if (this.cluster) {
      const box = this.cluster.box();
      if (!box) throw new RecorderError('CLUSTER_UNAVAILABLE', 'the cluster key is not known on this node yet; try again');
      await this.inCluster(() => this.cluster!.writes.putAccessKey({ accessKeyId: id, user, secret: box.seal(secret), createdMs: nowMs, sealedBy: 'cluster' }));
    } else {
      await this.index.buckets.putAccessKey({ accessKeyId: id, user, secret: this.box.seal(secret), createdMs: nowMs });
    }
    return { accessKeyId: id, user, createdAt: new Date(nowMs).toISOString(), secretAccessKey: secret };
  }

  /** A cluster write whose S3-shaped refusal (the log unavailable) becomes the API's CLUSTER_UNAVAILABLE. */
  private async inCluster<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (err) {
      if (err instanceof RecorderError) throw err;
      throw new RecorderError('CLUSTER_UNAVAILABLE', `the cluster did not confirm the key change (${(err as Error).message})`);
    }
  }

  list(user: string): S3KeyView[] {
    if (!this.index.users.get(user)) throw new RecorderError('NOT_FOUND', `unknown user ${JSON.stringify(user)}`);
    return this.index.buckets.accessKeys(user).map((k) => ({ accessKeyId: k.accessKeyId, user: k.user, createdAt: new Date(k.createdMs).toISOString() }));
  }

  async revoke(user: string, accessKeyId: string): Promise<{ accessKeyId: string }> {
    const k = this.index.buckets.accessKey(accessKeyId);
    if (!k || k.user !== user) throw new RecorderError('NOT_FOUND', `user ${JSON.stringify(user)} has no S3 key ${JSON.stringify(accessKeyId)}`);
    if (this.cluster && k.sealedBy === 'cluster') await this.inCluster(() => this.cluster!.writes.removeAccessKey(accessKeyId));
    else await this.index.buckets.removeAccessKey(accessKeyId);
    return { accessKeyId };
  }

  /** The listener's key lookup: the settings' first key (root), then the users' keys whose user still exists. */
  lookup(root?: Credential): KeyLookup {
    return (id) => {
      if (root && id === root.accessKeyId) return root;
      const k = this.index.buckets.accessKey(id);
      if (!k || k.user === ROOT_USER || !this.index.users.get(k.user)) return undefined;
      try {
        return { accessKeyId: k.accessKeyId, secret: this.secretOf(k), user: k.user };
      } catch {
        // Sealed under another key file: as if unknown (InvalidAccessKeyId); said once at start by sealLegacy.
        return undefined;
      }
    };
  }

  /** A stored key's secret in clear (a legacy clear one as it is); SECRET_UNREADABLE when it does not open. */
  secretOf(rec: S3KeyRecord): string {
    if (rec.sealedBy === 'cluster') {
      const box = this.cluster?.box();
      if (!box) throw new RecorderError('SECRET_UNREADABLE', 'a key sealed under the cluster key, and the cluster token is not known here');
      return box.unseal(rec.secret);
    }
    return isSealed(rec.secret) ? this.box.unseal(rec.secret) : rec.secret;
  }

  /**
   * At start: seals the secrets stored in clear (before sealing existed), each in its own
   * commit; returns how many, and the keys whose sealed secret does not open with this
   * key file (to be logged: they are refused until issued again).
   */
  async sealLegacy(): Promise<{ sealed: number; unreadable: string[] }> {
    let sealed = 0;
    const unreadable: string[] = [];
    for (const k of this.index.buckets.accessKeys()) {
      // Opened with the cluster's key once the cluster is joined, not this node's file.
      if (k.sealedBy === 'cluster') continue;
      if (!isSealed(k.secret)) {
        await this.index.buckets.putAccessKey({ ...k, secret: this.box.seal(k.secret) });
        sealed++;
        continue;
      }
      try {
        this.box.unseal(k.secret);
      } catch {
        unreadable.push(k.accessKeyId);
      }
    }
    return { sealed, unreadable };
  }

  any(): boolean {
    return this.index.buckets.accessKeys().length > 0;
  }
}
