/**
 * Multipart uploads: CreateMultipartUpload, UploadPart (and UploadPartCopy), Complete
 * (parts in ascending order, each known with its ETag, each but the last at least
 * 5 MiB: InvalidPartOrder, InvalidPart, EntityTooSmall), Abort, ListParts,
 * ListMultipartUploads; and the expiry of abandoned uploads. Parts are durable before
 * their record commits (buckets/object-files.ts), the assembled object before its
 * record, so an upload cut anywhere leaves no torn object: its parts stay for the
 * client to resume until Complete, Abort or the expiry.
 *
 * The ETag of an assembled object is S3's: the MD5 of the parts' binary MD5s, a dash,
 * the number of parts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Logger } from '../lib/log.ts';
import type { BucketStore, ObjectRecord, PartRecord, UploadRecord } from '../index/buckets.ts';
import { assertKey } from './names.ts';
import type { ObjectFiles } from './object-files.ts';
import { UnconfirmedChange } from './catalog-writes.ts';
import { cannedAcl, copySource, ensureHere, requestHeaders, requireBucket, unlinkAfterCommit, userMeta, type ObjectDeps } from './object-ops.ts';
import {
  bodyStream,
  crc32Announced,
  declaredLength,
  MAX_PUT_BYTES,
  payloadHashToCheck,
  readSmallBody,
  sendEmpty,
  sendXml,
  xmlTime,
  type S3Request,
} from './request.ts';
import { HashWorkerError } from './upload-hasher.ts';
import { S3Error } from './s3-errors.ts';
import { parseXmlBody, xmlList, xmlText, type XmlObject } from './xml.ts';

/** S3's smallest part but the last. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
const MAX_PART_NUMBER = 10_000;
const MAX_OBJECT_BYTES = 5 * 1024 ** 4;

function requireUpload(d: ObjectDeps, r: S3Request): UploadRecord {
  const id = r.query.get('uploadId') ?? '';
  const up = d.catalog.upload(r.bucket!, r.key!, id);
  if (!up)
    throw new S3Error(
      'NoSuchUpload',
      'The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.',
      { UploadId: id },
    );
  return up;
}

function partNumber(r: S3Request): number {
  const raw = r.query.get('partNumber') ?? '';
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < 1 || n > MAX_PART_NUMBER)
    throw new S3Error('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', { ArgumentName: 'partNumber', ArgumentValue: raw });
  return n;
}

function person(name: string): XmlObject {
  return { ID: name, DisplayName: name };
}

export async function createMultipartUpload(d: ObjectDeps, r: S3Request): Promise<void> {
  const bucket = requireBucket(d, r.bucket!);
  const key = r.key!;
  assertKey(key);
  d.access.require(r, bucket, 'write');
  const acl = cannedAcl(r);
  const up: UploadRecord = {
    bucket: bucket.name,
    key,
    uploadId: d.cluster?.newUploadId(r.nowMs) ?? `${r.nowMs.toString(16)}${randomBytes(12).toString('hex')}`,
    initiatedMs: r.nowMs,
    owner: r.auth?.cred.user ?? 'anonymous',
    headers: requestHeaders(r),
    meta: userMeta(r),
    ...(acl ? { acl } : {}),
  };
  await d.catalog.createUpload(up);
  sendXml(r, 200, 'InitiateMultipartUploadResult', { Bucket: bucket.name, Key: key, UploadId: up.uploadId });
}

/** Commits a durable part file as the upload's part `n`, and unlinks the part it replaced. */
async function commitPart(d: ObjectDeps, up: UploadRecord, n: number, part: PartRecord): Promise<void> {
  const result = await d.catalog.putPart(up, n, part);
  if (result === 'no-upload') {
    await d.files.removePart(up.uploadId, part.fileId);
    throw new S3Error('NoSuchUpload', 'The specified multipart upload does not exist.', { UploadId: up.uploadId });
  }
  if (result.previous) await d.files.removePart(up.uploadId, result.previous.fileId);
}

export async function uploadPart(d: ObjectDeps, r: S3Request): Promise<void> {
  const bucket = requireBucket(d, r.bucket!);
  d.access.require(r, bucket, 'write');
  const up = requireUpload(d, r);
  const n = partNumber(r);
  if (r.req.headers['x-amz-copy-source'] !== undefined) return uploadPartCopy(d, r, up, n);
  const length = declaredLength(r);
  if (length > MAX_PUT_BYTES)
    throw new S3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed object size.', {
      ProposedSize: String(length),
      MaxSizeAllowed: String(MAX_PUT_BYTES),
    });
  // Parts count against the pool once completed; a part that could not fit even now is refused.
  d.poolRoom.hold(bucket.pool, length).release();
  const { stream, decoder } = bodyStream(r, length);
  const wantSha = payloadHashToCheck(r);
  let written;
  try {
    written = await d.files.receive(stream, r.nowMs, { maxBytes: length, sha256: wantSha !== undefined, crc32: crc32Announced(r) });
  } catch (err) {
    // A failed hashing worker is our fault, not the body's: the listener answers InternalError and logs it.
    if (err instanceof HashWorkerError) throw err;
    if (err instanceof S3Error && err.code !== 'EntityTooLarge') throw err;
    throw new S3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header');
  }
  const { handle, fileId } = written;
  const refuse = async (e: S3Error): Promise<never> => {
    await handle.close().catch(() => undefined);
    await d.files.discard(up.bucket, fileId);
    throw e;
  };
  if (written.size !== length || (!decoder && !r.req.complete))
    await refuse(new S3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header'));
  if (wantSha && written.sha256Hex !== wantSha)
    await refuse(new S3Error('XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed."));
  const contentMd5 = r.req.headers['content-md5'] as string | undefined;
  if (contentMd5 !== undefined && contentMd5 !== written.md5Base64)
    await refuse(new S3Error('BadDigest', 'The Content-MD5 you specified did not match what we received.'));
  const crcSent = decoder?.trailers.get('x-amz-checksum-crc32') ?? (r.req.headers['x-amz-checksum-crc32'] as string | undefined);
  if (crcSent !== undefined && crcSent !== written.crc32Base64)
    await refuse(new S3Error('BadDigest', 'The CRC32 you specified did not match the calculated checksum.'));
  await d.files.finishPart(handle, fileId, up.uploadId);
  await commitPart(d, up, n, { fileId, size: written.size, etag: written.md5Hex, lastModifiedMs: r.nowMs });
  r.res.setHeader('ETag', `"${written.md5Hex}"`);
  if (crcSent !== undefined) r.res.setHeader('x-amz-checksum-crc32', crcSent);
  sendEmpty(r, 200);
}

/** UploadPartCopy: a part made of an existing object's bytes (all, or x-amz-copy-source-range). */
async function uploadPartCopy(d: ObjectDeps, r: S3Request, up: UploadRecord, n: number): Promise<void> {
  const src = copySource(d, r);
  const range = r.req.headers['x-amz-copy-source-range'] as string | undefined;
  let start = 0;
  let end = src.rec.size - 1;
  if (range !== undefined) {
    const m = /^bytes=(\d+)-(\d+)$/.exec(range.trim());
    if (!m || Number(m[1]) > Number(m[2]) || Number(m[2]) >= src.rec.size) {
      throw new S3Error(
        'InvalidArgument',
        'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy',
        {
          ArgumentName: 'x-amz-copy-source-range',
          ArgumentValue: range,
        },
      );
    }
    start = Number(m[1]);
    end = Number(m[2]);
  }
  await ensureHere(d, src);
  const stream = end >= start ? d.files.read(src.bucket, src.rec.fileId, start, end) : Readable.from([]);
  let written;
  try {
    written = await d.files.receive(stream, r.nowMs, { maxBytes: MAX_PUT_BYTES });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: src.key });
    throw err;
  }
  await d.files.finishPart(written.handle, written.fileId, up.uploadId);
  await commitPart(d, up, n, { fileId: written.fileId, size: written.size, etag: written.md5Hex, lastModifiedMs: r.nowMs });
  sendXml(r, 200, 'CopyPartResult', { ETag: `"${written.md5Hex}"`, LastModified: xmlTime(r.nowMs) });
}

export async function completeMultipartUpload(d: ObjectDeps, r: S3Request): Promise<void> {
  const bucket = requireBucket(d, r.bucket!);
  d.access.require(r, bucket, 'write');
  const up = requireUpload(d, r);
  const body = parseXmlBody(await readSmallBody(r), 'CompleteMultipartUpload');
  const asked = xmlList(body.Part).map((p) => {
    const o = (p ?? {}) as Record<string, unknown>;
    const num = Number(xmlText(o.PartNumber));
    const etag = (xmlText(o.ETag) ?? '').replace(/^"|"$/g, '').replace(/^&quot;|&quot;$/g, '');
    if (!Number.isInteger(num)) throw new S3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema');
    return { num, etag };
  });
  if (asked.length === 0) throw new S3Error('MalformedXML', 'You must specify at least one part');
  const stored = new Map(d.catalog.listParts(up.uploadId).map((p) => [p.partNumber, p.part]));
  const chosen: PartRecord[] = [];
  for (let i = 0; i < asked.length; i++) {
    const a = asked[i]!;
    if (i > 0 && a.num <= asked[i - 1]!.num)
      throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order. The parts list must be specified in order by part number.');
    const p = stored.get(a.num);
    if (!p || p.etag !== a.etag) {
      throw new S3Error(
        'InvalidPart',
        "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.",
        {
          PartNumber: String(a.num),
          ETag: a.etag,
        },
      );
    }
    chosen.push(p);
  }
  for (let i = 0; i < chosen.length - 1; i++) {
    if (chosen[i]!.size < MIN_PART_BYTES) {
      throw new S3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.', {
        ProposedSize: String(chosen[i]!.size),
        MinSizeAllowed: String(MIN_PART_BYTES),
        PartNumber: String(asked[i]!.num),
      });
    }
  }
  const size = chosen.reduce((n, p) => n + p.size, 0);
  if (size > MAX_OBJECT_BYTES) throw new S3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed object size.');
  // Held until the catalog has the object (its bytes then count as the bucket's).
  const room = d.poolRoom.hold(bucket.pool, size);
  let fileId: string;
  let result: Awaited<ReturnType<typeof d.writes.completeUpload>>;
  let rec: ObjectRecord;
  const md5s = createHash('md5');
  for (const p of chosen) md5s.update(Buffer.from(p.etag, 'hex'));
  const etag = `${md5s.digest('hex')}-${chosen.length}`;
  try {
    fileId = await d.files.assemble(up.uploadId, chosen, r.nowMs, {
      bucket: up.bucket,
      key: up.key,
      etag,
      size,
      lastModifiedMs: r.nowMs,
      meta: up.meta,
      ...(up.headers.contentType ? { contentType: up.headers.contentType } : {}),
    });
    rec = {
      fileId,
      size,
      etag,
      lastModifiedMs: r.nowMs,
      headers: up.headers,
      meta: up.meta,
      ...(up.acl ? { acl: up.acl } : {}),
      ...(d.cluster ? { node: d.cluster.nodeId } : {}),
      partSizes: chosen.map((p) => p.size),
    };
    try {
      result = await d.writes.completeUpload(up, rec);
    } catch (err) {
      if (!(err instanceof UnconfirmedChange)) await d.files.discard(up.bucket, fileId);
      throw err;
    }
  } finally {
    room.release();
  }
  if (result === 'no-upload' || result === 'no-bucket') {
    await d.files.discard(up.bucket, fileId);
    if (result === 'no-bucket') throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: up.bucket });
    throw new S3Error('NoSuchUpload', 'The specified multipart upload does not exist.', { UploadId: up.uploadId });
  }
  await d.files.removeUploadFiles(up.uploadId);
  await unlinkAfterCommit(d, up.bucket, up.key, result.unlink);
  await d.cluster?.replicate(up.bucket, rec);
  sendXml(
    r,
    200,
    'CompleteMultipartUploadResult',
    { Location: `/${up.bucket}/${up.key}`, Bucket: up.bucket, Key: up.key, ETag: `"${etag}"` },
    result.versionId ? { 'x-amz-version-id': result.versionId } : {},
  );
}

export async function abortMultipartUpload(d: ObjectDeps, r: S3Request): Promise<void> {
  const bucket = requireBucket(d, r.bucket!);
  d.access.require(r, bucket, 'write');
  const up = requireUpload(d, r);
  if (await d.catalog.removeUpload(up)) await d.files.removeUploadFiles(up.uploadId);
  sendEmpty(r, 204);
}

export function listParts(d: ObjectDeps, r: S3Request): void {
  const bucket = requireBucket(d, r.bucket!);
  d.access.require(r, bucket, 'read');
  const up = requireUpload(d, r);
  const marker = Number(r.query.get('part-number-marker') ?? '0') || 0;
  const max = Math.min(1000, Math.max(0, Number(r.query.get('max-parts') ?? '1000') || 1000));
  const all = d.catalog.listParts(up.uploadId).filter((p) => p.partNumber > marker);
  const page = all.slice(0, max);
  const truncated = all.length > page.length;
  sendXml(r, 200, 'ListPartsResult', {
    Bucket: up.bucket,
    Key: up.key,
    UploadId: up.uploadId,
    Initiator: person(up.owner),
    Owner: person(up.owner),
    StorageClass: 'STANDARD',
    PartNumberMarker: marker,
    ...(truncated ? { NextPartNumberMarker: page[page.length - 1]!.partNumber } : {}),
    MaxParts: max,
    IsTruncated: truncated,
    Part: page.map((p) => ({ PartNumber: p.partNumber, LastModified: xmlTime(p.part.lastModifiedMs), ETag: `"${p.part.etag}"`, Size: p.part.size })),
  });
}

export function listMultipartUploads(d: ObjectDeps, r: S3Request): void {
  const bucket = requireBucket(d, r.bucket!);
  d.access.require(r, bucket, 'read');
  const prefix = r.query.get('prefix') ?? '';
  const keyMarker = r.query.get('key-marker') ?? '';
  const idMarker = r.query.get('upload-id-marker') ?? '';
  const max = Math.min(1000, Math.max(0, Number(r.query.get('max-uploads') ?? '1000') || 1000));
  const after = keyMarker ? { key: keyMarker, uploadId: idMarker || '\u{10FFFF}' } : undefined;
  const { uploads, truncated } = d.catalog.listUploads(bucket.name, prefix, max, after);
  const last = uploads[uploads.length - 1];
  sendXml(r, 200, 'ListMultipartUploadsResult', {
    Bucket: bucket.name,
    KeyMarker: keyMarker,
    UploadIdMarker: idMarker,
    ...(truncated && last ? { NextKeyMarker: last.key, NextUploadIdMarker: last.uploadId } : {}),
    Prefix: prefix,
    MaxUploads: max,
    IsTruncated: truncated,
    Upload: uploads.map((u) => ({
      Key: u.key,
      UploadId: u.uploadId,
      Initiator: person(u.owner),
      Owner: person(u.owner),
      StorageClass: 'STANDARD',
      Initiated: xmlTime(u.initiatedMs),
    })),
  });
}

/** Aborts every upload started more than `maxAgeMs` ago (S3's abandoned-upload cleanup); returns how many. */
export async function expireUploads(catalog: BucketStore, files: ObjectFiles, nowMs: number, maxAgeMs: number, log: Logger): Promise<number> {
  let n = 0;
  for (const up of catalog.allUploads()) {
    if (nowMs - up.initiatedMs < maxAgeMs) continue;
    if (await catalog.removeUpload(up)) {
      await files.removeUploadFiles(up.uploadId);
      n++;
    }
  }
  if (n > 0) log.info({ uploads: n }, 's3: abandoned multipart uploads expired');
  return n;
}
