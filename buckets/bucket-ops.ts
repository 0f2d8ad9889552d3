/**
 * Bucket operations: ListBuckets, CreateBucket (the LocationConstraint names the pool,
 * `default` when none), DeleteBucket, HeadBucket, GetBucketLocation, and the listings
 * ListObjectsV2 (prefix, delimiter, continuation token, start-after, encoding-type=url)
 * and ListObjects (v1, marker), both one catalog range read per page
 * (index/buckets.ts `list`).
 */
import type { BucketStore } from '../index/buckets.ts';
import type { BucketCluster, CatalogWrites } from './catalog-writes.ts';
import type { Access } from './access.ts';
import { assertBucketName } from './names.ts';
import type { ObjectFiles } from './object-files.ts';
import { cannedAcl, requireBucket } from './object-ops.ts';
import { readSmallBody, sendEmpty, sendXml, xmlTime, type S3Request } from './request.ts';
import { S3Error } from './s3-errors.ts';
import { uriEncode } from './sigv4.ts';
import { parseXmlBody, xmlText, type XmlObject } from './xml.ts';

export interface BucketDeps {
  catalog: BucketStore;
  /** Where the catalog's changes go (buckets/catalog-writes.ts). */
  writes: CatalogWrites;
  files: ObjectFiles;
  access: Access;
  /** Whether a pool of that id exists (a bucket's LocationConstraint). */
  poolExists: (pool: string) => boolean;
  /** In a cluster: the object log removes a removed bucket's files as it applies the removal. */
  cluster?: BucketCluster;
}

/** The pool of a bucket created without a LocationConstraint. */
export const DEFAULT_POOL = 'default';
const MAX_KEYS = 1000;

function owner(name: string): XmlObject {
  return { ID: name, DisplayName: name };
}

export function listBuckets(d: BucketDeps, r: S3Request): void {
  if (!r.auth) throw new S3Error('AccessDenied', 'Access Denied');
  const buckets = d.catalog.listBuckets().filter((b) => d.access.sees(r, b));
  sendXml(r, 200, 'ListAllMyBucketsResult', {
    Owner: owner(r.auth.cred.user),
    Buckets: { Bucket: buckets.map((b) => ({ Name: b.name, CreationDate: xmlTime(b.createdMs) })) },
  });
}

export async function createBucket(d: BucketDeps, r: S3Request): Promise<void> {
  const name = r.bucket!;
  assertBucketName(name);
  const body = await readSmallBody(r);
  let pool = DEFAULT_POOL;
  if (body.length > 0) {
    const conf = parseXmlBody(body, 'CreateBucketConfiguration');
    const loc = xmlText(conf.LocationConstraint);
    // Region names the clients default to mean "the default pool".
    if (loc && loc !== 'us-east-1') pool = loc;
  }
  if (pool !== DEFAULT_POOL && !d.poolExists(pool)) {
    throw new S3Error('InvalidLocationConstraint', `The specified location-constraint is not valid: no pool ${pool}`, { LocationConstraint: pool });
  }
  if (!d.access.mayCreate(r, pool)) throw new S3Error('AccessDenied', 'Access Denied');
  const acl = cannedAcl(r) ?? 'private';
  const existing = d.catalog.bucket(name);
  const created = !existing && (await d.writes.createBucket({ name, pool, createdMs: r.nowMs, acl, owner: r.auth!.cred.user }));
  if (!created) {
    const b = d.catalog.bucket(name);
    if (b && b.owner === r.auth!.cred.user)
      throw new S3Error('BucketAlreadyOwnedByYou', 'Your previous request to create the named bucket succeeded and you already own it.', { BucketName: name });
    throw new S3Error('BucketAlreadyExists', 'The requested bucket name is not available.', { BucketName: name });
  }
  sendEmpty(r, 200, { Location: `/${name}` });
}

export async function deleteBucket(d: BucketDeps, r: S3Request): Promise<void> {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'admin');
  const removed = await d.writes.removeBucket(b.name);
  if (!removed) throw new S3Error('BucketNotEmpty', 'The bucket you tried to delete is not empty', { BucketName: b.name });
  // Its multipart uploads in progress went with it. In a cluster the object log removes
  // the files when it applies the removal, in its order (cluster/object-log.ts).
  if (!d.cluster) {
    for (const id of removed.uploads) await d.files.removeUploadFiles(id);
    await d.files.removeBucketDir(b.name);
  }
  sendEmpty(r, 204);
}

export function headBucket(d: BucketDeps, r: S3Request): void {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'read');
  sendEmpty(r, 200, { 'x-amz-bucket-region': 'us-east-1' });
}

/** Always the clients' default region: the pool is the recorder's business, and a client signs for the region it is told. */
export function getBucketLocation(d: BucketDeps, r: S3Request): void {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'read');
  sendXml(r, 200, 'LocationConstraint', {});
}

function maxKeys(r: S3Request): number {
  const raw = r.query.get('max-keys');
  if (raw === null) return MAX_KEYS;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0)
    throw new S3Error('InvalidArgument', 'max-keys must be a non-negative integer', { ArgumentName: 'max-keys', ArgumentValue: raw });
  return Math.min(n, MAX_KEYS);
}

interface Token {
  value: string;
  prefix: boolean;
}

function encodeToken(t: Token): string {
  return Buffer.from(JSON.stringify([t.value, t.prefix ? 1 : 0])).toString('base64url');
}

function decodeToken(s: string): Token {
  try {
    const [value, prefix] = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as [unknown, unknown];
    if (typeof value === 'string') return { value, prefix: prefix === 1 };
  } catch {
    /* refused below */
  }
  throw new S3Error('InvalidArgument', 'The continuation token provided is incorrect', { ArgumentName: 'continuation-token' });
}

/** ListObjectsV2 (`list-type=2`) and ListObjects (v1). */
export function listObjects(d: BucketDeps, r: S3Request): void {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'read');
  const v2 = r.query.get('list-type') === '2';
  const prefix = r.query.get('prefix') ?? '';
  const delimiter = r.query.get('delimiter') ?? '';
  const encodingType = r.query.get('encoding-type');
  if (encodingType !== null && encodingType !== 'url')
    throw new S3Error('InvalidArgument', 'Invalid Encoding Method specified in Request', { ArgumentName: 'encoding-type' });
  const enc = (s: string): string => (encodingType === 'url' ? uriEncode(s, true) : s);
  const max = maxKeys(r);
  let after: Token | undefined;
  const token = v2 ? r.query.get('continuation-token') : null;
  const startAfter = v2 ? r.query.get('start-after') : r.query.get('marker');
  if (token !== null) after = decodeToken(token);
  // A v1 NextMarker may be a common prefix: resume after everything under it.
  else if (startAfter) after = { value: startAfter, prefix: !v2 && delimiter !== '' && startAfter.startsWith(prefix) && startAfter.endsWith(delimiter) };
  const page = d.catalog.list(b.name, { prefix, delimiter, maxKeys: max, ...(after ? { after } : {}) });
  const contents = page.objects.map((o) => ({
    Key: enc(o.key),
    LastModified: xmlTime(o.record.lastModifiedMs),
    ETag: `"${o.record.etag}"`,
    Size: o.record.size,
    ...(v2 ? {} : { Owner: owner(b.owner) }),
    StorageClass: 'STANDARD',
  }));
  const common = page.commonPrefixes.map((p) => ({ Prefix: enc(p) }));
  const body: XmlObject = {
    Name: b.name,
    Prefix: enc(prefix),
    ...(delimiter ? { Delimiter: enc(delimiter) } : {}),
    MaxKeys: max,
    ...(encodingType ? { EncodingType: encodingType } : {}),
    IsTruncated: page.truncated,
  };
  if (v2) {
    body.KeyCount = contents.length + common.length;
    if (token !== null) body.ContinuationToken = token;
    if (startAfter) body.StartAfter = enc(startAfter);
    if (page.truncated && page.last) body.NextContinuationToken = encodeToken(page.last);
  } else {
    body.Marker = enc(startAfter ?? '');
    if (page.truncated && page.last) body.NextMarker = enc(page.last.value);
  }
  body.Contents = contents;
  body.CommonPrefixes = common;
  sendXml(r, 200, 'ListBucketResult', body);
}
