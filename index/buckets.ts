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
 *   s3usage    bucket → [objects, bytes], in the same commit as every object put/remove
 *   s3uploads  [bucket, key, uploadId] → UploadRecord: a multipart upload in progress
 *   s3parts    [uploadId, partNumber] → PartRecord: its parts (files under buckets/parts/<uploadId>/)
 *
 * What must share one commit is one method: an object's record, its file's entry, the
 * previous version's file entry going and the bucket's usage.
 */
import type { Database, RootDatabase } from 'lmdb';
import type { Tables } from './tables.ts';

/** S3's canned ACLs the recorder keeps (the seed's private, read-only, read-write). */
export const CANNED_ACLS = ['private', 'public-read', 'public-read-write'] as const;
export type CannedAcl = (typeof CANNED_ACLS)[number];

export interface BucketRecord {
  name: string;
  /** The pool whose capacity the bucket's objects count against. */
  pool: string;
  createdMs: number;
  acl: CannedAcl;
  /** Who created it (a user name; `root` for the first key of the settings). */
  owner: string;
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
  /** The object file's name (buckets/object-files.ts), also the S3 version id. */
  fileId: string;
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

/** Greater than any character a key may hold after a common prefix (U+10FFFF encodes to the largest UTF-8 bytes). */
const AFTER_ALL = '\u{10FFFF}';

export class BucketStore {
  private readonly root: RootDatabase;
  private readonly buckets: Database<BucketRecord, string>;
  private readonly objects: Database<ObjectRecord, ObjectKey>;
  private readonly files: Database<ObjectKey, string>;
  private readonly usage: Database<[number, number], string>;
  private readonly uploads: Database<UploadRecord, UploadKey>;
  private readonly parts: Database<PartRecord, [string, number]>;
  private readonly commit: <T>(p: Promise<T>) => Promise<T>;

  constructor(t: Tables) {
    this.root = t.root;
    this.commit = t.commit;
    this.buckets = t.root.openDB<BucketRecord, string>({ name: 's3buckets' });
    this.objects = t.root.openDB<ObjectRecord, ObjectKey>({ name: 's3objects', sharedStructuresKey: Symbol.for('s3structures') });
    this.files = t.root.openDB<ObjectKey, string>({ name: 's3files' });
    this.usage = t.root.openDB<[number, number], string>({ name: 's3usage' });
    this.uploads = t.root.openDB<UploadRecord, UploadKey>({ name: 's3uploads' });
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
  async completeUpload(up: UploadRecord, rec: ObjectRecord): Promise<{ previous?: ObjectRecord } | 'no-upload' | 'no-bucket'> {
    let previous: ObjectRecord | undefined;
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
        previous = this.objects.get([bucket, key]);
        this.writeObject(bucket, key, rec, previous);
      }),
    );
    return refused ?? (previous ? { previous } : {});
  }

  // ---- objects -----------------------------------------------------------------

  object(bucket: string, key: string): ObjectRecord | undefined {
    return this.objects.get([bucket, key]);
  }

  /** Whether the catalog holds the object file `fileId` (the start-up sweep asks). */
  holdsFile(fileId: string): boolean {
    return this.files.doesExist(fileId);
  }

  /**
   * Makes `rec` the object's current version (its file is already durable) and returns
   * the version it replaced, whose file the caller unlinks after this commit.
   * `onlyIfAbsent`: commit nothing and return 'exists' if the key has an object
   * (a PUT with If-None-Match: *); 'no-bucket' if the bucket went meanwhile.
   */
  async putObject(
    bucket: string,
    key: string,
    rec: ObjectRecord,
    opts: { onlyIfAbsent?: boolean } = {},
  ): Promise<{ previous?: ObjectRecord } | 'exists' | 'no-bucket'> {
    let previous: ObjectRecord | undefined;
    let refused: 'exists' | 'no-bucket' | undefined;
    await this.commit(
      this.root.transaction(() => {
        if (!this.buckets.doesExist(bucket)) {
          refused = 'no-bucket';
          return;
        }
        previous = this.objects.get([bucket, key]);
        if (previous && opts.onlyIfAbsent) {
          refused = 'exists';
          return;
        }
        this.writeObject(bucket, key, rec, previous);
      }),
    );
    return refused ?? (previous ? { previous } : {});
  }

  /** Inside a transaction: `rec` replaces `previous` as the key's current version. */
  private writeObject(bucket: string, key: string, rec: ObjectRecord, previous: ObjectRecord | undefined): void {
    void this.objects.put([bucket, key], rec);
    void this.files.put(rec.fileId, [bucket, key]);
    if (previous) void this.files.remove(previous.fileId);
    const [n, bytes] = this.usage.get(bucket) ?? [0, 0];
    void this.usage.put(bucket, [n + (previous ? 0 : 1), bytes + rec.size - (previous?.size ?? 0)]);
  }

  /**
   * Removes the object's current version and returns it (its file is the caller's to
   * unlink after this commit); undefined when there is none. `fileId`: only if the
   * current version is still that one.
   */
  async removeObject(bucket: string, key: string, fileId?: string): Promise<ObjectRecord | undefined> {
    let removed: ObjectRecord | undefined;
    await this.commit(
      this.root.transaction(() => {
        const cur = this.objects.get([bucket, key]);
        if (!cur || (fileId !== undefined && cur.fileId !== fileId)) return;
        removed = cur;
        void this.objects.remove([bucket, key]);
        void this.files.remove(cur.fileId);
        const [n, bytes] = this.usage.get(bucket) ?? [1, cur.size];
        void this.usage.put(bucket, [Math.max(0, n - 1), Math.max(0, bytes - cur.size)]);
      }),
    );
    return removed;
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
        if (k === exclusive) continue;
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
