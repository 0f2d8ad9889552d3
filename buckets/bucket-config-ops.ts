/**
 * A bucket's settings over S3: versioning (Put/GetBucketVersioning), ListObjectVersions,
 * lifecycle (Put/Get/DeleteBucketLifecycleConfiguration: expiry by days, noncurrent
 * versions by days and how many to keep, aborting old uploads), canned ACLs on buckets
 * and objects (Put/GetBucketAcl, Put/GetObjectAcl with x-amz-acl). Only the owner or
 * an admin changes them.
 */
import type { BucketRecord, CannedAcl, LifecycleRule, ObjectRecord } from '../index/buckets.ts';
import type { BucketDeps } from './bucket-ops.ts';
import { assertKey } from './names.ts';
import { cannedAcl, requireBucket } from './object-ops.ts';
import { readSmallBody, sendEmpty, sendXml, xmlTime, type S3Request } from './request.ts';
import { S3Error } from './s3-errors.ts';
import { uriEncode } from './sigv4.ts';
import { parseXmlBody, xmlList, xmlText, type XmlObject } from './xml.ts';

const MAX_RULES = 100;

export async function putBucketVersioning(d: BucketDeps, r: S3Request): Promise<void> {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'admin');
  const conf = parseXmlBody(await readSmallBody(r), 'VersioningConfiguration');
  const status = xmlText(conf.Status);
  if (status !== 'Enabled' && status !== 'Suspended') throw new S3Error('MalformedXML', 'Status must be Enabled or Suspended');
  if (xmlText(conf.MfaDelete) === 'Enabled') throw new S3Error('NotImplemented', 'MFA delete is not implemented');
  await d.writes.putBucket({ ...b, versioning: status });
  sendEmpty(r, 200);
}

export function getBucketVersioning(d: BucketDeps, r: S3Request): void {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'read');
  sendXml(r, 200, 'VersioningConfiguration', b.versioning ? { Status: b.versioning } : {});
}

function owner(name: string): XmlObject {
  return { ID: name, DisplayName: name };
}

export function listObjectVersions(d: BucketDeps, r: S3Request): void {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'read');
  const prefix = r.query.get('prefix') ?? '';
  const keyMarker = r.query.get('key-marker') ?? '';
  const versionMarker = r.query.get('version-id-marker') ?? '';
  const rawMax = r.query.get('max-keys');
  const max = rawMax === null ? 1000 : Math.min(1000, Math.max(0, Number(rawMax) || 0));
  const encodingType = r.query.get('encoding-type');
  const enc = (s: string): string => (encodingType === 'url' ? uriEncode(s, true) : s);
  const after = keyMarker ? { key: keyMarker, ...(versionMarker ? { versionId: versionMarker } : {}) } : undefined;
  const { versions, truncated } = d.catalog.listVersions(b.name, prefix, max, after);
  const entry = (v: { key: string; record: ObjectRecord; latest: boolean }): XmlObject => ({
    Key: enc(v.key),
    VersionId: v.record.versionId ?? 'null',
    IsLatest: v.latest,
    LastModified: xmlTime(v.record.lastModifiedMs),
    ...(v.record.deleteMarker ? {} : { ETag: `"${v.record.etag}"`, Size: v.record.size, StorageClass: 'STANDARD' }),
    Owner: owner(b.owner),
  });
  const last = versions[versions.length - 1];
  sendXml(r, 200, 'ListVersionsResult', {
    Name: b.name,
    Prefix: enc(prefix),
    KeyMarker: enc(keyMarker),
    VersionIdMarker: versionMarker,
    ...(truncated && last ? { NextKeyMarker: enc(last.key), NextVersionIdMarker: last.record.versionId ?? 'null' } : {}),
    MaxKeys: max,
    ...(encodingType ? { EncodingType: encodingType } : {}),
    IsTruncated: truncated,
    Version: versions.filter((v) => !v.record.deleteMarker).map(entry),
    DeleteMarker: versions.filter((v) => v.record.deleteMarker).map(entry),
  });
}

function days(v: unknown, what: string, min = 1): number | undefined {
  const t = xmlText(v);
  if (t === undefined) return undefined;
  const n = Number(t);
  if (!Number.isInteger(n) || n < min) throw new S3Error('InvalidArgument', `${what} must be an integer of at least ${min}`);
  return n;
}

export async function putBucketLifecycle(d: BucketDeps, r: S3Request): Promise<void> {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'admin');
  const conf = parseXmlBody(await readSmallBody(r), 'LifecycleConfiguration');
  const rules = xmlList(conf.Rule).map((raw, i): LifecycleRule => {
    const x = (raw ?? {}) as Record<string, unknown>;
    const filter = (x.Filter ?? {}) as Record<string, unknown>;
    const and = (filter.And ?? {}) as Record<string, unknown>;
    if (filter.Tag !== undefined || and.Tag !== undefined || filter.ObjectSizeGreaterThan !== undefined || filter.ObjectSizeLessThan !== undefined) {
      throw new S3Error('NotImplemented', 'Lifecycle filters by tag or size are not implemented: filter by prefix');
    }
    const prefix = xmlText(filter.Prefix) ?? xmlText(and.Prefix) ?? xmlText(x.Prefix) ?? '';
    const status = xmlText(x.Status);
    if (status !== 'Enabled' && status !== 'Disabled') throw new S3Error('MalformedXML', 'A rule needs a Status of Enabled or Disabled');
    const exp = (x.Expiration ?? {}) as Record<string, unknown>;
    if (exp.Date !== undefined) throw new S3Error('NotImplemented', 'Expiration by date is not implemented: use Days');
    const nc = (x.NoncurrentVersionExpiration ?? {}) as Record<string, unknown>;
    const ab = (x.AbortIncompleteMultipartUpload ?? {}) as Record<string, unknown>;
    const rule: LifecycleRule = { id: xmlText(x.ID) ?? `rule-${i + 1}`, prefix, enabled: status === 'Enabled' };
    const e = days(exp.Days, 'Expiration Days');
    const ncd = days(nc.NoncurrentDays, 'NoncurrentDays', 0);
    const keep = days(nc.NewerNoncurrentVersions, 'NewerNoncurrentVersions');
    const a = days(ab.DaysAfterInitiation, 'DaysAfterInitiation');
    if (e !== undefined) rule.expirationDays = e;
    if (ncd !== undefined) rule.noncurrentDays = ncd;
    if (keep !== undefined) rule.newerNoncurrent = keep;
    if (a !== undefined) rule.abortDays = a;
    if (e === undefined && ncd === undefined && a === undefined)
      throw new S3Error('MalformedXML', 'A rule needs an Expiration, a NoncurrentVersionExpiration or an AbortIncompleteMultipartUpload');
    return rule;
  });
  if (rules.length === 0 || rules.length > MAX_RULES) throw new S3Error('MalformedXML', `A lifecycle configuration has 1 to ${MAX_RULES} rules`);
  await d.writes.putBucket({ ...b, lifecycle: rules });
  sendEmpty(r, 200);
}

export function getBucketLifecycle(d: BucketDeps, r: S3Request): void {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'read');
  if (!b.lifecycle?.length) throw new S3Error('NoSuchLifecycleConfiguration', 'The lifecycle configuration does not exist', { BucketName: b.name });
  sendXml(r, 200, 'LifecycleConfiguration', {
    Rule: b.lifecycle.map((rule) => ({
      ID: rule.id,
      Filter: { Prefix: rule.prefix },
      Status: rule.enabled ? 'Enabled' : 'Disabled',
      ...(rule.expirationDays !== undefined ? { Expiration: { Days: rule.expirationDays } } : {}),
      ...(rule.noncurrentDays !== undefined
        ? {
            NoncurrentVersionExpiration: {
              NoncurrentDays: rule.noncurrentDays,
              ...(rule.newerNoncurrent !== undefined ? { NewerNoncurrentVersions: rule.newerNoncurrent } : {}),
            },
          }
        : {}),
      ...(rule.abortDays !== undefined ? { AbortIncompleteMultipartUpload: { DaysAfterInitiation: rule.abortDays } } : {}),
    })),
  });
}

export async function deleteBucketLifecycle(d: BucketDeps, r: S3Request): Promise<void> {
  const b = requireBucket(d, r.bucket!);
  d.access.require(r, b, 'admin');
  const { lifecycle: _gone, ...rest } = b;
  await d.writes.putBucket(rest);
  sendEmpty(r, 204);
}

function aclXml(ownerName: string, acl: CannedAcl): XmlObject {
  const everyone = (perm: string): XmlObject => ({ Grantee: { URI: 'http://acs.amazonaws.com/groups/global/AllUsers' }, Permission: perm });
  const grants: XmlObject[] = [{ Grantee: { ID: ownerName, DisplayName: ownerName }, Permission: 'FULL_CONTROL' }];
  if (acl !== 'private') grants.push(everyone('READ'));
  if (acl === 'public-read-write') grants.push(everyone('WRITE'));
  return { Owner: owner(ownerName), AccessControlList: { Grant: grants } };
}

/** A canned ACL from x-amz-acl (grants in a body or x-amz-grant-* headers are not kept: NotImplemented). */
function requiredAcl(r: S3Request): CannedAcl {
  const acl = cannedAcl(r);
  if (acl === undefined) throw new S3Error('NotImplemented', 'Only canned ACLs (x-amz-acl: private, public-read, public-read-write) are kept');
  return acl;
}

/** Get/PutBucketAcl. */
export async function bucketAcl(d: BucketDeps, r: S3Request): Promise<void> {
  const b = requireBucket(d, r.bucket!);
  if (r.method === 'PUT') {
    d.access.require(r, b, 'admin');
    const acl: BucketRecord['acl'] = requiredAcl(r);
    await d.writes.putBucket({ ...b, acl });
    return sendEmpty(r, 200);
  }
  if (r.method !== 'GET') throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.');
  d.access.require(r, b, 'read');
  sendXml(r, 200, 'AccessControlPolicy', aclXml(b.owner, b.acl));
}

/** Get/PutObjectAcl: an object's own canned ACL (its current version, or ?versionId). */
export async function objectAcl(d: BucketDeps, r: S3Request): Promise<void> {
  const b = requireBucket(d, r.bucket!);
  const key = r.key!;
  assertKey(key);
  const versionId = r.query.get('versionId') ?? undefined;
  const rec = versionId !== undefined ? d.catalog.objectVersion(b.name, key, versionId) : d.catalog.object(b.name, key);
  if (!rec || rec.deleteMarker) throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: key });
  if (r.method === 'PUT') {
    d.access.require(r, b, 'write');
    const acl = requiredAcl(r);
    if (!(await d.writes.setObjectAcl(b.name, key, rec.fileId, acl))) throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: key });
    return sendEmpty(r, 200);
  }
  if (r.method !== 'GET') throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.');
  d.access.requireObject(r, b, rec, 'read');
  sendXml(r, 200, 'AccessControlPolicy', aclXml(b.owner, rec.acl ?? 'private'));
}
