/**
 * Object operations: PutObject, GetObject (Range, If-Match, If-None-Match,
 * If-Modified-Since, If-Unmodified-Since, response-* overrides), HeadObject,
 * DeleteObject. The write follows buckets/object-files.ts's order: bytes to a tmp file,
 * checked (length, signed SHA-256, Content-MD5, CRC-32), fdatasync'ed and renamed, then
 * the catalog commit (index/buckets.ts), then the replaced version's file unlinked. Any
 * refusal before the commit leaves nothing (the tmp file goes), so a bad or cut upload
 * never replaces the object it names.
 */
import { statfs } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../lib/log.ts';
import { CANNED_ACLS, type BucketRecord, type BucketStore, type CannedAcl, type ObjectHeaders, type ObjectRecord } from '../index/buckets.ts';
import { UnconfirmedChange, type BucketCluster, type CatalogWrites } from './catalog-writes.ts';
import { assertKey } from './names.ts';
import type { ObjectFiles } from './object-files.ts';
import {
  bodyStream,
  crc32Announced,
  declaredLength,
  httpTime,
  MAX_PUT_BYTES,
  payloadHashToCheck,
  readSmallBody,
  sendEmpty,
  sendXml,
  xmlTime,
  type S3Request,
} from './request.ts';
import { parseXmlBody, xmlList, xmlText, type XmlObject } from './xml.ts';
import { HashWorkerError } from './upload-hasher.ts';
import { S3Error } from './s3-errors.ts';
import type { Access } from './access.ts';
import type { PoolRoom } from './pool-room.ts';

/** S3's limit on user metadata (names and values of x-amz-meta-*). */
const MAX_META_BYTES = 2048;
/** Room kept free on the data disk beyond an upload's size. */
const FREE_MARGIN_BYTES = 64 * 1024 ** 2;

export interface ObjectDeps {
  catalog: BucketStore;
  /** Where the catalog's changes go: the catalog itself, or the cluster's object log (buckets/catalog-writes.ts). */
  writes: CatalogWrites;
  /** In a cluster: the bytes of objects other nodes hold, and the node id stamped on new files. */
  cluster?: BucketCluster;
  files: ObjectFiles;
  access: Access;
  log: Logger;
  dataDir: string;
  /** Each pool's room for uploads, held while they are in flight (buckets/pool-room.ts). */
  poolRoom: PoolRoom;
}

const HEADER_FIELDS: [keyof ObjectHeaders, string][] = [
  ['contentType', 'content-type'],
  ['cacheControl', 'cache-control'],
  ['contentDisposition', 'content-disposition'],
  ['contentEncoding', 'content-encoding'],
  ['contentLanguage', 'content-language'],
  ['expires', 'expires'],
];

export function requireBucket(d: { catalog: BucketStore }, name: string): BucketRecord {
  const b = d.catalog.bucket(name);
  if (!b) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: name });
  return b;
}

/** x-amz-meta-* of a request (names lower case, prefix cut), at most 2 kB as S3 allows. */
export function userMeta(r: S3Request): Record<string, string> {
  const meta: Record<string, string> = {};
  let bytes = 0;
  for (const [name, value] of Object.entries(r.req.headers)) {
    if (!name.startsWith('x-amz-meta-') || value === undefined) continue;
    const v = Array.isArray(value) ? value.join(',') : value;
    const n = name.slice('x-amz-meta-'.length);
    meta[n] = v;
    bytes += Buffer.byteLength(n) + Buffer.byteLength(v);
  }
  if (bytes > MAX_META_BYTES) throw new S3Error('InvalidArgument', 'Your metadata headers exceed the maximum allowed metadata size (2 kB)');
  return meta;
}

export function requestHeaders(r: S3Request): ObjectHeaders {
  const h: ObjectHeaders = {};
  for (const [field, name] of HEADER_FIELDS) {
    const v = r.req.headers[name];
    // aws-chunked is how the body travelled, not how the object is encoded.
    const value = name === 'content-encoding' && typeof v === 'string' ? v.replace(/(^|,)\s*aws-chunked\s*(,|$)/, '$1').replace(/^,|,$/g, '') : v;
    if (typeof value === 'string' && value !== '') h[field] = value;
  }
  return h;
}

/** The headers a GET or HEAD answers with for an object. */
export function objectHeaders(rec: ObjectRecord): Record<string, string> {
  const h: Record<string, string> = {
    ETag: `"${rec.etag}"`,
    'Last-Modified': httpTime(rec.lastModifiedMs),
    'Accept-Ranges': 'bytes',
    'Content-Type': rec.headers.contentType ?? 'binary/octet-stream',
  };
  for (const [field, name] of HEADER_FIELDS) {
    const v = rec.headers[field];
    if (v !== undefined && field !== 'contentType') h[name] = v;
  }
  for (const [n, v] of Object.entries(rec.meta)) h[`x-amz-meta-${n}`] = v;
  return h;
}

async function assertRoom(dataDir: string, bytes: number): Promise<void> {
  const s = await statfs(dataDir);
  if (bytes + FREE_MARGIN_BYTES > s.bavail * s.bsize) {
    throw new S3Error('InsufficientStorage', 'The recorder has not enough free disk space for this object');
  }
}

export async function putObject(d: ObjectDeps, r: S3Request): Promise<void> {
  const bucket = requireBucket(d, r.bucket!);
  const key = r.key!;
  assertKey(key);
  d.access.require(r, bucket, 'write');
  const length = declaredLength(r);
  if (length > MAX_PUT_BYTES)
    throw new S3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed object size.', {
      ProposedSize: String(length),
      MaxSizeAllowed: String(MAX_PUT_BYTES),
    });
  const meta = userMeta(r);
  const headers = requestHeaders(r);
  const onlyIfAbsent = r.req.headers['if-none-match'] === '*';
  if (onlyIfAbsent && d.catalog.object(bucket.name, key))
    throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' });
  const contentMd5 = r.req.headers['content-md5'] as string | undefined;
  if (contentMd5 !== undefined && !/^[A-Za-z0-9+/]{22}==$/.test(contentMd5)) throw new S3Error('InvalidDigest', 'The Content-MD5 you specified is not valid.');
  // A bucket's pool has a capacity: its objects count against it with its video, and an
  // object that would pass it is refused; held until committed, so concurrent uploads add up.
  const room = d.poolRoom.hold(bucket.pool, length);
  let rec: ObjectRecord;
  let versionId: string | undefined;
  try {
    await assertRoom(d.dataDir, length);
    const acl = cannedAcl(r);
    rec = await receiveObject(d, r, bucket.name, key, length, meta, headers);
    if (acl) rec.acl = acl;
    versionId = await commitOrDiscard(d, bucket.name, key, rec, onlyIfAbsent);
  } finally {
    room.release();
  }
  if (versionId) r.res.setHeader('x-amz-version-id', versionId);
  r.res.setHeader('ETag', `"${rec.etag}"`);
  if (rec.checksumCrc32) r.res.setHeader('x-amz-checksum-crc32', rec.checksumCrc32);
  sendEmpty(r, 200);
}

/** The x-amz-acl header: one of the canned ACLs kept (InvalidArgument otherwise); undefined when absent. */
export function cannedAcl(r: S3Request): CannedAcl | undefined {
  const v = r.req.headers['x-amz-acl'];
  if (v === undefined) return undefined;
  if (!(CANNED_ACLS as readonly string[]).includes(v as string)) {
    throw new S3Error('InvalidArgument', `x-amz-acl must be one of ${CANNED_ACLS.join(', ')}`, { ArgumentName: 'x-amz-acl', ArgumentValue: String(v) });
  }
  return v as CannedAcl;
}

/**
 * Receives a body into a durable object file (not yet cataloged): every check of
 * length, hash and checksum is made before it is named. Throws (and leaves nothing)
 * on a cut, short, long or tampered body.
 */
export async function receiveObject(
  d: ObjectDeps,
  r: S3Request,
  bucket: string,
  key: string,
  length: number,
  meta: Record<string, string>,
  headers: ObjectHeaders,
): Promise<ObjectRecord> {
  const { stream, decoder } = bodyStream(r, length);
  const wantSha = payloadHashToCheck(r);
  let written;
  try {
    written = await d.files.receive(stream, r.nowMs, { maxBytes: length, sha256: wantSha !== undefined, crc32: crc32Announced(r) });
  } catch (err) {
    // A failed hashing worker is our fault, not the body's: the listener answers InternalError and logs it.
    if (err instanceof HashWorkerError) throw err;
    if (err instanceof S3Error) throw err.code === 'EntityTooLarge' ? new S3Error('IncompleteBody', 'The body holds more bytes than its declared length') : err;
    throw new S3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header');
  }
  const { handle, fileId } = written;
  const refuse = async (e: S3Error): Promise<never> => {
    await handle.close().catch(() => undefined);
    await d.files.discard(bucket, fileId);
    throw e;
  };
  if (written.size !== length || (!decoder && !r.req.complete)) {
    await refuse(new S3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header'));
  }
  if (wantSha && written.sha256Hex !== wantSha)
    await refuse(new S3Error('XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed."));
  const contentMd5 = r.req.headers['content-md5'] as string | undefined;
  if (contentMd5 !== undefined && contentMd5 !== written.md5Base64)
    await refuse(new S3Error('BadDigest', 'The Content-MD5 you specified did not match what we received.'));
  const crcSent = decoder?.trailers.get('x-amz-checksum-crc32') ?? (r.req.headers['x-amz-checksum-crc32'] as string | undefined);
  if (crcSent !== undefined && crcSent !== written.crc32Base64) {
    await refuse(new S3Error('BadDigest', 'The CRC32 you specified did not match the calculated checksum.'));
  }
  const rec: ObjectRecord = {
    fileId,
    size: written.size,
    etag: written.md5Hex,
    lastModifiedMs: r.nowMs,
    headers,
    meta,
    ...(crcSent !== undefined ? { checksumCrc32: crcSent } : {}),
    ...(d.cluster ? { node: d.cluster.nodeId } : {}),
  };
  await d.files.finish(handle, fileId, {
    bucket,
    key,
    etag: rec.etag,
    size: rec.size,
    lastModifiedMs: rec.lastModifiedMs,
    meta,
    ...(headers.contentType ? { contentType: headers.contentType } : {}),
  });
  return rec;
}

/** Commits a durable object file as the key's current version and unlinks what that replaced; returns the version id. */
export async function commitOrDiscard(d: ObjectDeps, bucket: string, key: string, rec: ObjectRecord, onlyIfAbsent = false): Promise<string | undefined> {
  let result;
  try {
    result = await d.writes.putObject(bucket, key, rec, { onlyIfAbsent });
  } catch (err) {
    if (!(err instanceof UnconfirmedChange)) await d.files.discard(bucket, rec.fileId);
    throw err;
  }
  if (result === 'no-bucket') {
    await d.files.discard(bucket, rec.fileId);
    throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: bucket });
  }
  if (result === 'exists') {
    await d.files.discard(bucket, rec.fileId);
    throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' });
  }
  await unlinkAfterCommit(d, bucket, key, result.unlink);
  await keepVersions(d, bucket, key, rec.lastModifiedMs);
  await d.cluster?.replicate(bucket, rec);
  return result.versionId;
}

/** After a write to a versioned key: noncurrent versions beyond a NoncurrentDays-0 rule's count go now. */
export async function keepVersions(d: Pick<ObjectDeps, 'catalog' | 'writes' | 'files' | 'log'>, bucket: string, key: string, nowMs: number): Promise<void> {
  const b = d.catalog.bucket(bucket);
  if (!b?.versioning) return;
  for (const rule of b.lifecycle ?? []) {
    if (!rule.enabled || !key.startsWith(rule.prefix)) continue;
    if (rule.noncurrentDays !== 0) continue;
    await unlinkAfterCommit(d, bucket, key, await d.writes.expireNoncurrent(bucket, key, rule, nowMs));
  }
}

/** Unlinks object files whose records a commit removed; one that stays is swept at the next start. */
export async function unlinkAfterCommit(d: Pick<ObjectDeps, 'files' | 'log'>, bucket: string, key: string, fileIds: readonly string[]): Promise<void> {
  for (const id of fileIds) {
    await d.files
      .remove(bucket, id)
      .catch((err: unknown) => d.log.warn({ err, bucket, key }, 's3: an object file no record names was not removed (the next start sweeps it)'));
  }
}

/** RFC 7232 as S3 applies it: 412 for If-Match / If-Unmodified-Since, 304 for If-None-Match / If-Modified-Since. */
function preconditions(r: S3Request, rec: ObjectRecord): 200 | 304 | 412 {
  const h = r.req.headers;
  const etag = `"${rec.etag}"`;
  const matches = (list: string): boolean => list.split(',').some((t) => t.trim() === '*' || t.trim() === etag || t.trim() === rec.etag);
  const modifiedS = Math.floor(rec.lastModifiedMs / 1000);
  if (h['if-match'] !== undefined) {
    if (!matches(h['if-match'])) return 412;
  } else if (h['if-unmodified-since'] !== undefined) {
    const t = Date.parse(h['if-unmodified-since']);
    if (Number.isFinite(t) && modifiedS > Math.floor(t / 1000)) return 412;
  }
  if (h['if-none-match'] !== undefined) {
    if (matches(h['if-none-match'])) return 304;
  } else if (h['if-modified-since'] !== undefined) {
    const t = Date.parse(h['if-modified-since']);
    if (Number.isFinite(t) && t <= r.nowMs && modifiedS <= Math.floor(t / 1000)) return 304;
  }
  return 200;
}

/** One `bytes=` range of an object of `size` bytes; null: serve it whole (no or an unreadable header, as S3 does). */
function byteRange(header: string | undefined, size: number): { start: number; end: number } | null {
  if (header === undefined) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) throw new S3Error('InvalidRange', 'The requested range is not satisfiable', { RangeRequested: header, ActualObjectSize: String(size) });
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return null;
  }
  if (start >= size) throw new S3Error('InvalidRange', 'The requested range is not satisfiable', { RangeRequested: header, ActualObjectSize: String(size) });
  return { start, end };
}

const OVERRIDES: [string, string][] = [
  ['response-content-type', 'Content-Type'],
  ['response-content-language', 'Content-Language'],
  ['response-expires', 'Expires'],
  ['response-cache-control', 'Cache-Control'],
  ['response-content-disposition', 'Content-Disposition'],
  ['response-content-encoding', 'Content-Encoding'],
];

export async function getObject(d: ObjectDeps, r: S3Request): Promise<void> {
  const bucket = requireBucket(d, r.bucket!);
  const versionId = r.query.get('versionId');
  const found = versionId !== null ? d.catalog.objectVersion(bucket.name, r.key!, versionId) : d.catalog.object(bucket.name, r.key!);
  if (found && !found.deleteMarker) d.access.requireObject(r, bucket, found, 'read');
  else d.access.require(r, bucket, 'read');
  if (!found) {
    if (versionId !== null) throw new S3Error('NoSuchVersion', 'The specified version does not exist.', { Key: r.key!, VersionId: versionId });
    throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: r.key! });
  }
  const vid = found.versionId ?? 'null';
  if (found.deleteMarker) {
    const headers = { 'x-amz-delete-marker': 'true', 'x-amz-version-id': vid };
    if (versionId !== null) throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.', { Key: r.key! }, headers);
    throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: r.key! }, headers);
  }
  const rec = found;
  const headers = objectHeaders(rec);
  if (bucket.versioning || rec.versionId) headers['x-amz-version-id'] = vid;
  const pre = preconditions(r, rec);
  if (pre === 412) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
  if (pre === 304) {
    r.res.writeHead(304, { ETag: headers.ETag!, 'Last-Modified': headers['Last-Modified']! });
    r.res.end();
    return;
  }
  for (const [q, h] of OVERRIDES) {
    const v = r.query.get(q);
    if (v !== null) headers[h] = v;
  }
  const range = byteRange(r.req.headers.range, rec.size);
  const start = range?.start ?? 0;
  const end = range?.end ?? rec.size - 1;
  if (range) headers['Content-Range'] = `bytes ${start}-${end}/${rec.size}`;
  // The whole object's checksum, asked for and only with the whole object (clients check it against the body).
  else if (rec.checksumCrc32 && r.req.headers['x-amz-checksum-mode'] === 'ENABLED') headers['x-amz-checksum-crc32'] = rec.checksumCrc32;
  headers['Content-Length'] = String(Math.max(0, end - start + 1));
  if (r.method === 'HEAD' || rec.size === 0) {
    r.res.writeHead(range ? 206 : 200, headers);
    r.res.end();
    return;
  }
  if (d.cluster && !d.files.has(bucket.name, rec.fileId)) {
    // In a cluster: an object whose copies are on other nodes is streamed from one of them.
    const remote = await d.cluster.read(bucket.name, rec, start, end);
    if (!remote) throw new S3Error('ServiceUnavailable', 'No node that holds this object answered; try again');
    r.res.writeHead(range ? 206 : 200, headers);
    await pipeline(remote, r.res).catch((err: unknown) => r.res.destroy(err as Error));
    return;
  }
  const stream = d.files.read(bucket.name, rec.fileId, start, end);
  await new Promise<void>((resolve, reject) => {
    stream.once('open', () => {
      r.res.writeHead(range ? 206 : 200, headers);
      stream.pipe(r.res);
    });
    stream.once('error', (err: NodeJS.ErrnoException) => {
      // Deleted between the lookup and the open: the object is gone.
      if (!r.res.headersSent && err.code === 'ENOENT') reject(new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: r.key! }));
      else {
        r.res.destroy(err);
        resolve();
      }
    });
    r.res.once('close', () => {
      stream.destroy();
      resolve();
    });
  });
}

/** The object x-amz-copy-source names (`/bucket/key`, URL-encoded), readable by the caller. */
export function copySource(d: ObjectDeps, r: S3Request): { bucket: string; key: string; rec: ObjectRecord } {
  const raw = r.req.headers['x-amz-copy-source'] as string;
  const q = raw.indexOf('?');
  let path: string;
  try {
    path = decodeURIComponent(q < 0 ? raw : raw.slice(0, q));
  } catch {
    throw new S3Error('InvalidArgument', 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey', { ArgumentName: 'x-amz-copy-source' });
  }
  const sourceVersion = q >= 0 ? new URLSearchParams(raw.slice(q + 1)).get('versionId') : null;
  const p = path.replace(/^\//, '');
  const slash = p.indexOf('/');
  if (slash <= 0 || slash === p.length - 1)
    throw new S3Error('InvalidArgument', 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey', { ArgumentName: 'x-amz-copy-source' });
  const bucketName = p.slice(0, slash);
  const key = p.slice(slash + 1);
  const bucket = requireBucket(d, bucketName);
  const found = sourceVersion !== null ? d.catalog.objectVersion(bucketName, key, sourceVersion) : d.catalog.object(bucketName, key);
  const rec = found?.deleteMarker ? undefined : found;
  if (rec) d.access.requireObject(r, bucket, rec, 'read');
  else d.access.require(r, bucket, 'read');
  if (!rec) {
    if (sourceVersion !== null) throw new S3Error('NoSuchVersion', 'The specified version does not exist.', { Key: key, VersionId: sourceVersion });
    throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: key });
  }
  // x-amz-copy-source-if-*: the same rules as a GET's conditions, all answered 412.
  const h = r.req.headers;
  const etag = `"${rec.etag}"`;
  const matches = (list: string): boolean => list.split(',').some((t) => ['*', etag, rec.etag].includes(t.trim()));
  const im = h['x-amz-copy-source-if-match'] as string | undefined;
  const inm = h['x-amz-copy-source-if-none-match'] as string | undefined;
  const ims = h['x-amz-copy-source-if-modified-since'] as string | undefined;
  const ius = h['x-amz-copy-source-if-unmodified-since'] as string | undefined;
  const modifiedS = Math.floor(rec.lastModifiedMs / 1000);
  if (
    (im !== undefined && !matches(im)) ||
    (inm !== undefined && matches(inm)) ||
    (im === undefined && ius !== undefined && modifiedS > Math.floor(Date.parse(ius) / 1000)) ||
    (inm === undefined && ims !== undefined && modifiedS <= Math.floor(Date.parse(ims) / 1000))
  ) {
    throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
  }
  return { bucket: bucketName, key, rec };
}

/**
 * CopyObject: a new object file with the source's bytes (copied by the kernel), its
 * metadata copied or, with x-amz-metadata-directive REPLACE, the request's; the ACL of
 * x-amz-acl (else private, as S3 does). Copying an object onto itself changes nothing
 * but metadata, so it needs REPLACE (S3's rule).
 */
export async function copyObject(d: ObjectDeps, r: S3Request): Promise<void> {
  const bucket = requireBucket(d, r.bucket!);
  const key = r.key!;
  assertKey(key);
  d.access.require(r, bucket, 'write');
  const src = copySource(d, r);
  const directive = (r.req.headers['x-amz-metadata-directive'] as string | undefined) ?? 'COPY';
  if (directive !== 'COPY' && directive !== 'REPLACE')
    throw new S3Error('InvalidArgument', 'Unknown metadata directive.', { ArgumentName: 'x-amz-metadata-directive', ArgumentValue: directive });
  const acl = cannedAcl(r);
  if (src.bucket === bucket.name && src.key === key && directive === 'COPY' && acl === undefined) {
    throw new S3Error(
      'InvalidRequest',
      "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
    );
  }
  const meta = directive === 'REPLACE' ? userMeta(r) : src.rec.meta;
  const headers = directive === 'REPLACE' ? requestHeaders(r) : src.rec.headers;
  const room = d.poolRoom.hold(bucket.pool, src.rec.size);
  try {
    await copyInto(d, r, bucket, key, src, meta, headers, acl);
  } finally {
    room.release();
  }
}

/** CopyObject's work once the pool's room is held: the bytes copied durably, then committed. */
async function copyInto(
  d: ObjectDeps,
  r: S3Request,
  bucket: BucketRecord,
  key: string,
  src: { bucket: string; key: string; rec: ObjectRecord },
  meta: Record<string, string>,
  headers: ObjectHeaders,
  acl: CannedAcl | undefined,
): Promise<void> {
  await assertRoom(d.dataDir, src.rec.size);
  await ensureHere(d, src);
  let fileId: string;
  try {
    fileId = await d.files.copy(src.bucket, src.rec.fileId, src.rec.size, r.nowMs, {
      bucket: bucket.name,
      key,
      etag: src.rec.etag,
      size: src.rec.size,
      lastModifiedMs: r.nowMs,
      meta,
      ...(headers.contentType ? { contentType: headers.contentType } : {}),
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: src.key });
    throw err;
  }
  const rec: ObjectRecord = {
    fileId,
    size: src.rec.size,
    etag: src.rec.etag,
    lastModifiedMs: r.nowMs,
    headers,
    meta,
    ...(acl ? { acl } : {}),
    ...(src.rec.checksumCrc32 ? { checksumCrc32: src.rec.checksumCrc32 } : {}),
    ...(src.rec.partSizes ? { partSizes: src.rec.partSizes } : {}),
    ...(d.cluster ? { node: d.cluster.nodeId } : {}),
  };
  const versionId = await commitOrDiscard(d, bucket.name, key, rec);
  const answer: Record<string, string> = {};
  if (versionId) answer['x-amz-version-id'] = versionId;
  if (src.rec.versionId) answer['x-amz-copy-source-version-id'] = src.rec.versionId;
  sendXml(r, 200, 'CopyObjectResult', { ETag: `"${rec.etag}"`, LastModified: xmlTime(r.nowMs) }, answer);
}

/** DeleteObjects: up to 1000 keys in one XML body; each deleted as DeleteObject does, the result per key. */
export async function deleteObjects(d: ObjectDeps, r: S3Request): Promise<void> {
  const bucket = requireBucket(d, r.bucket!);
  d.access.require(r, bucket, 'write');
  const body = parseXmlBody(await readSmallBody(r), 'Delete');
  const quiet = xmlText(body.Quiet) === 'true';
  const objects = xmlList(body.Object).map((o) => {
    const x = (o ?? {}) as Record<string, unknown>;
    return { key: xmlText(x.Key) ?? '', versionId: xmlText(x.VersionId) };
  });
  if (objects.length === 0 || objects.length > 1000) throw new S3Error('MalformedXML', 'A Delete request names 1 to 1000 objects');
  const deleted: XmlObject[] = [];
  const errors: XmlObject[] = [];
  for (const { key, versionId } of objects) {
    try {
      assertKey(key);
      const out = await removeKey(d, bucket.name, key, versionId, r.nowMs);
      if (!quiet) {
        deleted.push({
          Key: key,
          ...(versionId !== undefined ? { VersionId: versionId } : {}),
          ...(out.deleteMarker ? { DeleteMarker: true, ...(versionId === undefined && out.versionId ? { DeleteMarkerVersionId: out.versionId } : {}) } : {}),
        });
      }
    } catch (err) {
      const e = err instanceof S3Error ? err : new S3Error('InternalError', 'We encountered an internal error. Please try again.');
      if (!(err instanceof S3Error)) d.log.error({ err, bucket: bucket.name, key }, 's3: delete failed');
      errors.push({ Key: key, Code: e.code, Message: e.message });
    }
  }
  sendXml(r, 200, 'DeleteResult', { Deleted: deleted, Error: errors });
}

export async function deleteObject(d: ObjectDeps, r: S3Request): Promise<void> {
  const bucket = requireBucket(d, r.bucket!);
  d.access.require(r, bucket, 'write');
  const out = await removeKey(d, bucket.name, r.key!, r.query.get('versionId') ?? undefined, r.nowMs);
  const headers: Record<string, string> = {};
  if (out.versionId) headers['x-amz-version-id'] = out.versionId;
  if (out.deleteMarker) headers['x-amz-delete-marker'] = 'true';
  sendEmpty(r, 204, headers);
}

/**
 * DeleteObject's catalog side and then the files (absent keys are fine, as in S3):
 * a version for good, the unversioned object, or a delete marker.
 */
export async function removeKey(
  d: ObjectDeps,
  bucket: string,
  key: string,
  versionId: string | undefined,
  nowMs: number,
  opts: { ifCurrent?: string } = {},
): Promise<{ versionId?: string; deleteMarker?: boolean }> {
  const out = await d.writes.deleteObject(bucket, key, versionId, nowMs, opts);
  await unlinkAfterCommit(d, bucket, key, out.unlink);
  if (versionId === undefined) await keepVersions(d, bucket, key, nowMs);
  return { ...(out.versionId ? { versionId: out.versionId } : {}), ...(out.deleteMarker ? { deleteMarker: true } : {}) };
}

/**
 * In a cluster, the file of a copy source (CopyObject, UploadPartCopy) pulled here first
 * when another node holds it: the copy is then made from local bytes.
 */
export async function ensureHere(d: Pick<ObjectDeps, 'files' | 'cluster'>, src: { bucket: string; key: string; rec: ObjectRecord }): Promise<void> {
  if (!d.cluster || src.rec.deleteMarker || d.files.has(src.bucket, src.rec.fileId)) return;
  if (!(await d.cluster.fetch(src.bucket, src.rec)))
    throw new S3Error('ServiceUnavailable', 'No node that holds the copy source answered; try again', { Key: src.key });
}
