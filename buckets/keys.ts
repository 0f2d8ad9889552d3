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

export class S3Keys {
  constructor(
    private readonly index: RecorderIndex,
    private readonly box: SecretBox,
  ) {}

  /** A new key for `user` (who must exist); the secret appears only in this answer. */
  async issue(user: string, nowMs: number): Promise<S3KeyView & { secretAccessKey: string }> {
    if (!this.index.users.get(user)) throw new RecorderError('NOT_FOUND', `unknown user ${JSON.stringify(user)}`);
    const id = `RK${[...randomBytes(18)].map((b) => ALPHABET[b % 32]).join('')}`;
    const secret = randomBytes(30).toString('base64url');
    await this.index.buckets.putAccessKey({ accessKeyId: id, user, secret: this.box.seal(secret), createdMs: nowMs });
    return { accessKeyId: id, user, createdAt: new Date(nowMs).toISOString(), secretAccessKey: secret };
  }

  list(user: string): S3KeyView[] {
    if (!this.index.users.get(user)) throw new RecorderError('NOT_FOUND', `unknown user ${JSON.stringify(user)}`);
    return this.index.buckets.accessKeys(user).map((k) => ({ accessKeyId: k.accessKeyId, user: k.user, createdAt: new Date(k.createdMs).toISOString() }));
  }

  async revoke(user: string, accessKeyId: string): Promise<{ accessKeyId: string }> {
    const k = this.index.buckets.accessKey(accessKeyId);
    if (!k || k.user !== user) throw new RecorderError('NOT_FOUND', `user ${JSON.stringify(user)} has no S3 key ${JSON.stringify(accessKeyId)}`);
    await this.index.buckets.removeAccessKey(accessKeyId);
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
