/**
 * The S3 buckets' catalog (issue 17; docs/design/buckets.md): buckets, the current
 * version of every object, and which object file belongs to which object. The bytes are
 * files under <data>/buckets/ (buckets/object-files.ts); this is the fast path to them
 * and the truth about which file is an object's: a file no record names is garbage
 * (a PUT cut before its commit, an overwritten or deleted object whose unlink was cut),
 * removed by the start-up sweep.
 *
 * Databases (opened here, beside index/tables.ts, so the other record kinds' file is not
 * touched; they are private to this store like every table of the index):
 *
 *   s3buckets  bucket → BucketRecord
 *   s3objects  [bucket, key] → ObjectRecord (the current version; keys in UTF-8 byte order,
 *              which is S3's listing order)
 *   s3files    fileId → [bucket, key]: every object file the catalog holds
 *   s3versions [bucket, key, fileId] → ObjectRecord: noncurrent versions (fileIds are time-ordered: oldest first)
 *   s3usage    bucket → [versions, bytes] (delete markers and noncurrent versions counted), in the same commit as every write
 *   s3keys     accessKeyId → S3KeyRecord: users' access keys (the secret sealed: lib/secret-box.ts)
 *   s3uploads  [bucket, key, uploadId] → UploadRecord: a multipart upload in progress
 *   s3parts    [uploadId, partNumber] → PartRecord: its parts (files under buckets/parts/<uploadId>/)
 *
 * What must share one commit is one method: an object's record, its file's entry, the
 * previous version's file entry going and the bucket's usage.
 */
import type { Database, RootDatabase } from 'lmdb';
import { randomBytes } from 'node:crypto';
import type { Tables } from './tables.ts';

/** S3's canned ACLs the recorder keeps (the seed's private, read-only, read-write). */
export const CANNED_ACLS = ['private', 'public-read', 'public-read-write'] as const;
export type CannedAcl = (typeof CANNED_ACLS)[number];

export type Versioning = 'Enabled' | 'Suspended';

/** One rule of a bucket's lifecycle (PutBucketLifecycleConfiguration): expiry by days. */
export interface LifecycleRule {
  id: string;
  /** Keys it applies to (empty: all). */
  prefix: string;
  enabled: boolean;
  /** Current versions older than this many days are deleted (a delete marker in a versioned bucket). */
  expirationDays?: number;
  /** Noncurrent versions go this many days after they became noncurrent … */
  noncurrentDays?: number;
  /** … except the newest this many of each key (S3's NewerNoncurrentVersions: the versions kept). */
  newerNoncurrent?: number;
  /** Multipart uploads started longer ago are aborted. */
  abortDays?: number;
}

export interface BucketRecord {
  name: string;
  /** The pool whose capacity the bucket's objects count against. */
  pool: string;
  createdMs: number;
  acl: CannedAcl;
  /** Who created it (a user name; `root` for the first key of the settings). */
  owner: string;
  /** Unset: never versioned (every object is the `null` version and a PUT replaces it). */
  versioning?: Versioning;
  lifecycle?: LifecycleRule[];
}

/** Headers S3 stores with an object and returns on GET/HEAD. */
export interface ObjectHeaders {
  contentType?: string;
  cacheControl?: string;
  contentDisposition?: string;
  contentEncoding?: string;
  contentLanguage?: string;
  expires?: string;
}

export interface ObjectRecord {
  /** The object file's name (buckets/object-files.ts); a delete marker has one but no file. */
  fileId: string;
  /** S3's version id (the fileId) for versions written while versioning was on; unset: the `null` version. */
  versionId?: string;
  /** A delete marker: the key reads as deleted, its older versions stay. */
  deleteMarker?: boolean;
  /** When it stopped being the current version (noncurrent versions, for the lifecycle). */
  noncurrentSinceMs?: number;
  /** Bytes of the object: the file's first `size` bytes (a footer describing the object follows them). */
  size: number;
  /** MD5 of the bytes in hex, or the multipart form `<md5 of the part md5s>-<parts>`. */
  etag: string;
  lastModifiedMs: number;
  headers: ObjectHeaders;
  /** x-amz-meta-* with the prefix cut, names lower case. */
  meta: Record<string, string>;
  acl?: CannedAcl;
  /** The CRC-32 the client sent as a trailer or header (base64), if any. */
  checksumCrc32?: string;
  /** In a cluster: the node that wrote the file, asked first for its bytes (cluster/object-log.ts). */
  node?: string;
  /** A multipart object's part sizes, in order: its ETag is computed again from them (a scrub tells a good copy from a bad one). */
  partSizes?: number[];
}

export type ObjectKey = [string, string];

/** A multipart upload in progress (CreateMultipartUpload until Complete or Abort, or its expiry). */
export interface UploadRecord {
  bucket: string;
  key: string;
  uploadId: string;
  initiatedMs: number;
  owner: string;
  headers: ObjectHeaders;
  meta: Record<string, string>;
  acl?: CannedAcl;
}

export interface PartRecord {
  /** The part file's name under buckets/parts/<uploadId>/. */
  fileId: string;
  size: number;
  /** MD5 of the part's bytes, hex. */
  etag: string;
  lastModifiedMs: number;
}

export type UploadKey = [string, string, string];

/** An S3 access key of a user (buckets/keys.ts). */
export interface S3KeyRecord {
  accessKeyId: string;
  user: string;
  /**
   * SigV4 needs the secret itself to sign with, so it is stored, not a digest of it:
   * sealed (`sealed:v1:…`, lib/secret-box.ts; buckets/keys.ts opens it), or in clear in
   * an index from before sealing until the next start seals it.
   */
  secret: string;
  createdMs: number;
  /** `cluster`: sealed under the cluster's key (lib/secret-box.ts derived from the cluster token), shared by every node; unset: this node's key file. */
  sealedBy?: 'cluster';
}

export interface ListedObject {
  key: string;
  record: ObjectRecord;
}

export interface ListPage {
  objects: ListedObject[];
  commonPrefixes: string[];
  truncated: boolean;
  /** The last key or common prefix of this page (what a continuation resumes after). */
  last?: { value: string; prefix: boolean };
}

export interface ListQuery {
  prefix: string;
  delimiter: string;
  /** Resume strictly after this key (or after every key under this common prefix). */
  after?: { value: string; prefix: boolean };
  maxKeys: number;
}

/** What a write commits besides its records: the object files to unlink after the commit, and the version id written or removed. */
export interface Written {
  unlink: string[];
  versionId?: string;
}

const DAY_MS = 86_400_000;

/** Greater than any character a key may hold after a common prefix (U+10FFFF encodes to the largest UTF-8 bytes). */
const AFTER_ALL = '\u{10FFFF}';

export class BucketStore {
  private readonly root: RootDatabase;
  private readonly buckets: Database<BucketRecord, string>;
  private readonly objects: Database<ObjectRecord, ObjectKey>;
  private readonly files: Database<ObjectKey, string>;
  private readonly usage: Database<[number, number], string>;
  private readonly uploads: Database<UploadRecord, UploadKey>;
  private readonly versions: Database<ObjectRecord, [string, string, string]>;
  private readonly keyDb: Database<S3KeyRecord, string>;
  private readonly parts: Database<PartRecord, [string, number]>;
  private readonly meta: Database<number | string, string>;
  private readonly commit: <T>(p: Promise<T>) => Promise<T>;

  constructor(t: Tables) {
    this.root = t.root;
    this.meta = t.meta;
    this.commit = t.commit;
    this.buckets = t.root.openDB<BucketRecord, string>({ name: 's3buckets' });
    this.objects = t.root.openDB<ObjectRecord, ObjectKey>({ name: 's3objects', sharedStructuresKey: Symbol.for('s3structures') });
    this.files = t.root.openDB<ObjectKey, string>({ name: 's3files' });
    this.usage = t.root.openDB<[number, number], string>({ name: 's3usage' });
    this.uploads = t.root.openDB<UploadRecord, UploadKey>({ name: 's3uploads' });
    this.keyDb = t.root.openDB<S3KeyRecord, string>({ name: 's3keys' });
    this.versions = t.root.openDB<ObjectRecord, [string, string, string]>({ name: 's3versions', sharedStructuresKey: Symbol.for('s3structures') });
    this.parts = t.root.openDB<PartRecord, [string, number]>({ name: 's3parts' });
  }

  // ---- buckets -----------------------------------------------------------------

  bucket(name: string): BucketRecord | undefined {
    return this.buckets.get(name);
  }

  listBuckets(): BucketRecord[] {
    return [...this.buckets.getRange({})].map((e) => e.value);
  }

  /** Creates the bucket; false if one of that name exists (nothing written then). */
  async createBucket(rec: BucketRecord): Promise<boolean> {
    return this.commit(this.buckets.ifNoExists(rec.name, () => void this.buckets.put(rec.name, rec)));
  }

  async putBucket(rec: BucketRecord): Promise<void> {
    await this.commit(this.buckets.put(rec.name, rec));
  }

  /**
   * Removes an empty bucket, with the multipart uploads still in progress in it (whose
   * part files the caller removes after: their ids are returned); false (nothing
   * written) if it holds an object.
   */
  async removeBucket(name: string): Promise<false | { uploads: string[] }> {
    let notEmpty = false;
    const uploads: string[] = [];
    await this.commit(
      this.root.transaction(() => {
        if ((this.usage.get(name)?.[0] ?? 0) > 0) {
          notEmpty = true;
          return;
        }
        void this.buckets.remove(name);
        void this.usage.remove(name);
        for (const { key } of this.uploads.getRange({ start: [name, '', ''] })) {
          if (key[0] !== name) break;
          uploads.push(key[2]);
          void this.uploads.remove(key);
          for (const k of this.parts.getKeys({ start: [key[2], 0], end: [key[2], Number.MAX_SAFE_INTEGER] })) void this.parts.remove(k);
        }
      }),
    );
    return notEmpty ? false : { uploads };
  }

  /** [objects, bytes] of a bucket's current versions. */
  bucketUsage(name: string): { objects: number; bytes: number } {
    const u = this.usage.get(name);
    return { objects: u?.[0] ?? 0, bytes: u?.[1] ?? 0 };
  }

  // ---- access keys -----------------------------------------------------------------

  accessKey(accessKeyId: string): S3KeyRecord | undefined {
    return this.keyDb.get(accessKeyId);
  }

  accessKeys(user?: string): S3KeyRecord[] {
    return [...this.keyDb.getRange({})].map((e) => e.value).filter((k) => user === undefined || k.user === user);
  }

  async putAccessKey(rec: S3KeyRecord): Promise<void> {
    await this.commit(this.keyDb.put(rec.accessKeyId, rec));
  }

  async removeAccessKey(accessKeyId: string): Promise<boolean> {
    const had = this.keyDb.doesExist(accessKeyId);
    if (had) await this.commit(this.keyDb.remove(accessKeyId));
    return had;
  }

  // ---- multipart uploads ---------------------------------------------------------

  async createUpload(rec: UploadRecord): Promise<void> {
    await this.commit(this.uploads.put([rec.bucket, rec.key, rec.uploadId], rec));
  }

  upload(bucket: string, key: string, uploadId: string): UploadRecord | undefined {
    return this.uploads.get([bucket, key, uploadId]);
  }

  /** Uploads in progress of a bucket in key order (then by id), from `after` on, at most `limit`. */
  listUploads(bucket: string, prefix: string, limit: number, after?: { key: string; uploadId: string }): { uploads: UploadRecord[]; truncated: boolean } {
    const uploads: UploadRecord[] = [];
    const start: UploadKey = after ? [bucket, after.key, after.uploadId] : [bucket, prefix, ''];
    for (const { key, value } of this.uploads.getRange({ start })) {
      if (key[0] !== bucket) break;
      if (after && key[1] === after.key && key[2] === after.uploadId) continue;
      if (!key[1].startsWith(prefix)) {
        if (key[1] > prefix) break;
        continue;
      }
      if (uploads.length === limit) return { uploads, truncated: true };
      uploads.push(value);
    }
    return { uploads, truncated: false };
  }

  /** Every upload in progress, all buckets (the expiry pass). */
  allUploads(): UploadRecord[] {
    return [...this.uploads.getRange({})].map((e) => e.value);
  }

  /** The parts of an upload by number. */
  listParts(uploadId: string): { partNumber: number; part: PartRecord }[] {
    return [...this.parts.getRange({ start: [uploadId, 0], end: [uploadId, Number.MAX_SAFE_INTEGER] })].map((e) => ({ partNumber: e.key[1], part: e.value }));
  }

  /**
   * Makes `part` the upload's part `partNumber` (its file already durable); returns the
   * part it replaced, whose file the caller unlinks after this commit. 'no-upload' when
   * the upload was completed or aborted meanwhile (nothing written).
   */
  async putPart(up: UploadRecord, partNumber: number, part: PartRecord): Promise<{ previous?: PartRecord } | 'no-upload'> {
    let previous: PartRecord | undefined;
    let gone = false;
    await this.commit(
      this.root.transaction(() => {
        if (!this.uploads.doesExist([up.bucket, up.key, up.uploadId])) {
          gone = true;
          return;
        }
        previous = this.parts.get([up.uploadId, partNumber]);
        void this.parts.put([up.uploadId, partNumber], part);
      }),
    );
    if (gone) return 'no-upload';
    return previous ? { previous } : {};
  }

  /** Drops an upload and its part records (Abort, expiry); its part files are the caller's to remove after. false: it was gone. */
  async removeUpload(up: Pick<UploadRecord, 'bucket' | 'key' | 'uploadId'>): Promise<boolean> {
    let had = false;
    await this.commit(
      this.root.transaction(() => {
        had = this.uploads.doesExist([up.bucket, up.key, up.uploadId]);
        if (!had) return;
        void this.uploads.remove([up.bucket, up.key, up.uploadId]);
        for (const k of this.parts.getKeys({ start: [up.uploadId, 0], end: [up.uploadId, Number.MAX_SAFE_INTEGER] })) void this.parts.remove(k);
      }),
    );
    return had;
  }

  /**
   * CompleteMultipartUpload's commit: the assembled object becomes the key's current
   * version and the upload with its part records goes, in one commit. Returns the
   * version replaced (its file the caller's to unlink), or 'no-upload' / 'no-bucket'
   * with nothing written.
   */
  async completeUpload(up: UploadRecord, rec: ObjectRecord): Promise<Written | 'no-upload' | 'no-bucket'> {
    let written: Written = { unlink: [] };
    let refused: 'no-upload' | 'no-bucket' | undefined;
    const { bucket, key } = up;
    await this.commit(
      this.root.transaction(() => {
        if (!this.buckets.doesExist(bucket)) {
          refused = 'no-bucket';
          return;
        }
        if (!this.uploads.doesExist([bucket, key, up.uploadId])) {
          refused = 'no-upload';
          return;
        }
        void this.uploads.remove([bucket, key, up.uploadId]);
        for (const k of this.parts.getKeys({ start: [up.uploadId, 0], end: [up.uploadId, Number.MAX_SAFE_INTEGER] })) void this.parts.remove(k);
        written = this.writeVersion(bucket, key, rec, this.objects.get([bucket, key]));
      }),
    );
    return refused ?? written;
  }

  // ---- objects -----------------------------------------------------------------

  object(bucket: string, key: string): ObjectRecord | undefined {
    return this.objects.get([bucket, key]);
  }

  /** Whether `fileId` is a version of the key, current or not (a delete marker too): a change applied twice is seen so. */
  hasVersion(bucket: string, key: string, fileId: string): boolean {
    return this.objects.get([bucket, key])?.fileId === fileId || this.versions.doesExist([bucket, key, fileId]);
  }

  /** The last change of the cluster's object log applied here (cluster/object-log.ts); 0: none. */
  logSeq(): number {
    const v = this.meta.get('s3log.seq');
    return typeof v === 'number' ? v : 0;
  }

  async setLogSeq(seq: number): Promise<void> {
    await this.commit(this.meta.put('s3log.seq', seq));
  }

  /** Buckets this node had before it joined a cluster, not yet given to the cluster's object log (cluster/joining-buckets.ts). */
  logJoining(): string | null {
    const v = this.meta.get('s3log.joining');
    return typeof v === 'string' ? v : null;
  }

  /** Its state (JSON, opaque here); null: none left to give. */
  async setLogJoining(state: string | null): Promise<void> {
    await this.commit(state !== null ? this.meta.put('s3log.joining', state) : this.meta.remove('s3log.joining'));
  }

  /** When the object log's stream this node applies was created (JetStream's `created`); null: not known yet. */
  logStream(): string | null {
    const v = this.meta.get('s3log.stream');
    return typeof v === 'string' ? v : null;
  }

  /** A stream (re)bound: its creation time, and the position in it. */
  async setLogStream(created: string, seq: number): Promise<void> {
    await this.commit(
      this.root.transaction(() => {
        void this.meta.put('s3log.stream', created);
        void this.meta.put('s3log.seq', seq);
      }),
    );
  }

  /** The version whose file is `fileId`, current or not, with its bucket and key. */
  versionOfFile(fileId: string): { bucket: string; key: string; record: ObjectRecord } | undefined {
    const at = this.files.get(fileId);
    if (!at) return undefined;
    const [bucket, key] = at;
    const cur = this.objects.get([bucket, key]);
    const record = cur?.fileId === fileId ? cur : this.versions.get([bucket, key, fileId]);
    return record ? { bucket, key, record } : undefined;
  }

  /** Whether the catalog holds the object file `fileId` (the start-up sweep asks). */
  holdsFile(fileId: string): boolean {
    return this.files.doesExist(fileId);
  }

  /** A version of a key by S3 version id (`null`: the null version), current or not. */
  objectVersion(bucket: string, key: string, versionId: string): ObjectRecord | undefined {
    const cur = this.objects.get([bucket, key]);
    if (cur && (cur.versionId ?? 'null') === versionId) return cur;
    if (versionId !== 'null') return this.versions.get([bucket, key, versionId]);
    return this.noncurrent(bucket, key).find((v) => v.versionId === undefined);
  }

  /** Noncurrent versions of a key, oldest first. */
  noncurrent(bucket: string, key: string): ObjectRecord[] {
    return [...this.versions.getRange({ start: [bucket, key, ''], end: [bucket, key, AFTER_ALL] })].map((e) => e.value);
  }

  /**
   * Makes `rec` the key's current version (its file already durable), by the bucket's
   * versioning: unversioned, the old current version is replaced; Enabled, it becomes
   * noncurrent and `rec` gets a version id; Suspended, `rec` is the `null` version and
   * replaces the old one wherever it is. Also drops noncurrent versions beyond the
   * bucket's NewerNoncurrentVersions once they are old enough. Returns the files to
   * unlink after this commit and the version id; 'exists' with `onlyIfAbsent` when the
   * key reads as present (If-None-Match: *), 'no-bucket' when the bucket went.
   */
  async putObject(bucket: string, key: string, rec: ObjectRecord, opts: { onlyIfAbsent?: boolean } = {}): Promise<Written | 'exists' | 'no-bucket'> {
    let written: Written = { unlink: [] };
    let refused: 'exists' | 'no-bucket' | undefined;
    await this.commit(
      this.root.transaction(() => {
        if (!this.buckets.doesExist(bucket)) {
          refused = 'no-bucket';
          return;
        }
        const previous = this.objects.get([bucket, key]);
        if (previous && !previous.deleteMarker && opts.onlyIfAbsent) {
          refused = 'exists';
          return;
        }
        written = this.writeVersion(bucket, key, rec, previous);
      }),
    );
    return refused ?? written;
  }

  /**
   * DeleteObject. With a version id: that version goes for good (if it was current, the
   * newest noncurrent one becomes current). Without: unversioned, the object goes;
   * versioned, a delete marker becomes the current version. Returns the files to unlink
   * after this commit, the version id removed or created, and whether that is a marker.
   */
  /**
   * `opts.markerId`: the delete marker's id (given by the object log in a cluster, so every
   * node names it alike). `opts.ifCurrent`: only if that file is still the key's current
   * version (a lifecycle expiry judged an object that a PUT may have replaced since).
   */
  async deleteObject(
    bucket: string,
    key: string,
    versionId?: string,
    nowMs = Date.now(),
    opts: { markerId?: string; ifCurrent?: string } = {},
  ): Promise<Written & { deleteMarker?: boolean }> {
    const { markerId, ifCurrent } = opts;
    let out: Written & { deleteMarker?: boolean } = { unlink: [] };
    await this.commit(
      this.root.transaction(() => {
        const b = this.buckets.get(bucket);
        if (!b) return;
        const cur = this.objects.get([bucket, key]);
        if (ifCurrent !== undefined && cur?.fileId !== ifCurrent) return;
        if (versionId !== undefined) {
          out = this.removeVersion(bucket, key, versionId, cur);
          return;
        }
        if (!b.versioning) {
          if (!cur) return;
          this.dropCurrent(bucket, key, cur);
          out = { unlink: cur.deleteMarker ? [] : [cur.fileId] };
          return;
        }
        const marker: ObjectRecord = {
          fileId: markerId ?? `${nowMs.toString(16).padStart(12, '0')}${randomBytes(6).toString('hex')}`,
          size: 0,
          etag: '',
          lastModifiedMs: nowMs,
          headers: {},
          meta: {},
          deleteMarker: true,
        };
        if (b.versioning === 'Enabled') marker.versionId = marker.fileId;
        out = { ...this.writeVersion(bucket, key, marker, cur), deleteMarker: true };
      }),
    );
    return out;
  }

  /** Inside a transaction: `rec` becomes current as the bucket's versioning says. */
  private writeVersion(bucket: string, key: string, rec: ObjectRecord, previous: ObjectRecord | undefined): Written {
    const b = this.buckets.get(bucket)!;
    const unlink: string[] = [];
    let [n, bytes] = this.usage.get(bucket) ?? [0, 0];
    if (b.versioning === 'Enabled') rec.versionId = rec.fileId;
    else delete rec.versionId;
    if (previous) {
      if (b.versioning === undefined || (b.versioning === 'Suspended' && previous.versionId === undefined)) {
        // The null version is replaced where it stands.
        if (!previous.deleteMarker) unlink.push(previous.fileId);
        void this.files.remove(previous.fileId);
        n--;
        bytes -= previous.size;
      } else {
        void this.versions.put([bucket, key, previous.fileId], { ...previous, noncurrentSinceMs: rec.lastModifiedMs });
      }
    }
    if (b.versioning === 'Suspended') {
      // Only one null version per key: an older noncurrent one goes.
      for (const v of this.noncurrent(bucket, key)) {
        if (v.versionId !== undefined) continue;
        void this.versions.remove([bucket, key, v.fileId]);
        void this.files.remove(v.fileId);
        if (!v.deleteMarker) unlink.push(v.fileId);
        n--;
        bytes -= v.size;
      }
    }
    void this.objects.put([bucket, key], rec);
    if (!rec.deleteMarker) void this.files.put(rec.fileId, [bucket, key]);
    n++;
    bytes += rec.size;
    void this.usage.put(bucket, [Math.max(0, n), Math.max(0, bytes)]);
    return { unlink, ...(rec.versionId ? { versionId: rec.versionId } : b.versioning ? { versionId: 'null' } : {}) };
  }

  /** Inside a transaction: the current version goes, the newest noncurrent (if any) takes its place. */
  private dropCurrent(bucket: string, key: string, cur: ObjectRecord): void {
    void this.objects.remove([bucket, key]);
    void this.files.remove(cur.fileId);
    const older = this.noncurrent(bucket, key);
    const next = older[older.length - 1];
    if (next) {
      void this.versions.remove([bucket, key, next.fileId]);
      const { noncurrentSinceMs: _since, ...promoted } = next;
      void this.objects.put([bucket, key], promoted);
    }
    const [n, bytes] = this.usage.get(bucket) ?? [1, cur.size];
    void this.usage.put(bucket, [Math.max(0, n - 1), Math.max(0, bytes - cur.size)]);
  }

  /** Inside a transaction: one version goes for good. */
  private removeVersion(bucket: string, key: string, versionId: string, cur: ObjectRecord | undefined): Written & { deleteMarker?: boolean } {
    if (cur && (cur.versionId ?? 'null') === versionId) {
      this.dropCurrent(bucket, key, cur);
      return { unlink: cur.deleteMarker ? [] : [cur.fileId], versionId, ...(cur.deleteMarker ? { deleteMarker: true } : {}) };
    }
    const v = versionId === 'null' ? this.noncurrent(bucket, key).find((x) => x.versionId === undefined) : this.versions.get([bucket, key, versionId]);
    if (!v) return { unlink: [], versionId };
    void this.versions.remove([bucket, key, v.fileId]);
    void this.files.remove(v.fileId);
    const [n, bytes] = this.usage.get(bucket) ?? [1, v.size];
    void this.usage.put(bucket, [Math.max(0, n - 1), Math.max(0, bytes - v.size)]);
    return { unlink: v.deleteMarker ? [] : [v.fileId], versionId, ...(v.deleteMarker ? { deleteMarker: true } : {}) };
  }

  /** Sets the canned ACL of one version of a key (by its fileId); false if that version went meanwhile. */
  async setObjectAcl(bucket: string, key: string, fileId: string, acl: CannedAcl): Promise<boolean> {
    let done = false;
    await this.commit(
      this.root.transaction(() => {
        const cur = this.objects.get([bucket, key]);
        if (cur?.fileId === fileId) {
          void this.objects.put([bucket, key], { ...cur, acl });
          done = true;
          return;
        }
        const v = this.versions.get([bucket, key, fileId]);
        if (v) {
          void this.versions.put([bucket, key, fileId], { ...v, acl });
          done = true;
        }
      }),
    );
    return done;
  }

  /**
   * Noncurrent versions of a key that the rule lets go at `nowMs`: noncurrent for
   * `noncurrentDays` and not among the `newerNoncurrent` newest. Removed in one commit;
   * returns the files to unlink.
   */
  async expireNoncurrent(bucket: string, key: string, rule: LifecycleRule, nowMs: number): Promise<string[]> {
    const unlink: string[] = [];
    await this.commit(
      this.root.transaction(() => {
        for (const v of this.expiredNoncurrent(bucket, key, rule, nowMs)) {
          const out = this.removeVersion(bucket, key, v.versionId ?? 'null', this.objects.get([bucket, key]));
          unlink.push(...out.unlink);
        }
      }),
    );
    return unlink;
  }

  /** The noncurrent versions of a key the rule lets go at `nowMs` (a read: whether there is anything to expire). */
  expiredNoncurrent(bucket: string, key: string, rule: LifecycleRule, nowMs: number): ObjectRecord[] {
    const all = this.noncurrent(bucket, key);
    const candidates = all.slice(0, Math.max(0, all.length - (rule.newerNoncurrent ?? 0)));
    return candidates.filter((v) => nowMs - (v.noncurrentSinceMs ?? v.lastModifiedMs) >= (rule.noncurrentDays ?? 0) * DAY_MS);
  }

  /** Keys of a bucket under a prefix, from `after` on, at most `limit` (the lifecycle pass walks them page by page). */
  keys(bucket: string, prefix: string, after: string | undefined, limit: number): { key: string; record: ObjectRecord }[] {
    const out: { key: string; record: ObjectRecord }[] = [];
    for (const { key, value } of this.objects.getRange({ start: [bucket, after ?? prefix] })) {
      if (key[0] !== bucket || !key[1].startsWith(prefix)) break;
      if (key[1] === after) continue;
      out.push({ key: key[1], record: value });
      if (out.length === limit) break;
    }
    return out;
  }

  /**
   * ListObjectVersions: every version of the keys under `prefix` in key order, each key's
   * newest first (current, then noncurrent), from after (keyMarker, versionIdMarker) on.
   */
  listVersions(
    bucket: string,
    prefix: string,
    max: number,
    after?: { key: string; versionId?: string },
  ): { versions: { key: string; record: ObjectRecord; latest: boolean }[]; truncated: boolean } {
    const versions: { key: string; record: ObjectRecord; latest: boolean }[] = [];
    let skipping = after?.versionId !== undefined;
    const startKey = after ? after.key : prefix;
    for (const { key, value } of this.objects.getRange({ start: [bucket, startKey] })) {
      const [b, k] = key;
      if (b !== bucket || !k.startsWith(prefix)) break;
      if (after && k === after.key && after.versionId === undefined) continue;
      const all = [value, ...this.noncurrent(bucket, k).reverse()];
      for (let i = 0; i < all.length; i++) {
        const v = all[i]!;
        if (skipping && k === after!.key) {
          if ((v.versionId ?? 'null') === after!.versionId) skipping = false;
          continue;
        }
        if (versions.length === max) return { versions, truncated: true };
        versions.push({ key: k, record: v, latest: i === 0 });
      }
      skipping = false;
    }
    return { versions, truncated: false };
  }

  /**
   * One page of a bucket's keys in S3's order (UTF-8 bytes), with keys that share a
   * common prefix up to `delimiter` rolled up into one entry (each counted once against
   * maxKeys, as S3 counts them). Reads synchronously: no iterator outlives the call
   * (docs/design/crash-safety.md, reader slots).
   */
  list(bucket: string, q: ListQuery): ListPage {
    const page: ListPage = { objects: [], commonPrefixes: [], truncated: false };
    let from = q.prefix;
    let exclusive: string | undefined;
    if (q.after) {
      const resume = q.after.prefix ? q.after.value + AFTER_ALL : q.after.value;
      if (resume >= from) {
        from = resume;
        exclusive = resume;
      }
    }
    let count = 0;
    // A key holding U+10FFFF right after a common prefix sorts after the restart point: never listed twice.
    let lastPrefix = q.after?.prefix ? q.after.value : undefined;
    for (;;) {
      let restartAt: string | undefined;
      for (const { key, value } of this.objects.getRange({ start: [bucket, from] })) {
        const [b, k] = key;
        if (b !== bucket || !k.startsWith(q.prefix)) return page;
        if (k === exclusive || value.deleteMarker) continue;
        if (count === q.maxKeys) {
          page.truncated = true;
          return page;
        }
        const cut = q.delimiter ? k.indexOf(q.delimiter, q.prefix.length) : -1;
        if (cut >= 0) {
          const cp = k.slice(0, cut + q.delimiter.length);
          if (cp === lastPrefix) continue;
          lastPrefix = cp;
          page.commonPrefixes.push(cp);
          page.last = { value: cp, prefix: true };
          count++;
          // Skip every other key under it: one new range read instead of walking them.
          restartAt = cp + AFTER_ALL;
          break;
        }
        page.objects.push({ key: k, record: value });
        page.last = { value: k, prefix: false };
        count++;
      }
      if (restartAt === undefined) return page;
      from = restartAt;
      exclusive = restartAt;
    }
  }
}
