/**
 * The catalog changes S3 operations make, apart from the catalog's reads, so that a
 * cluster can order them (docs/design/buckets.md "In a cluster").
 *
 * On one node the catalog (index/buckets.ts) makes them itself: it satisfies this
 * interface as it is. In a cluster every change goes through the cluster's object log
 * (cluster/object-log.ts), a replicated JetStream stream that every node applies in the
 * same order to its own catalog; the call returns what the change did once this node has
 * applied it, so the operation reads its own write. Multipart uploads in progress, access
 * keys and the log's own position are this node's business and stay direct.
 */
import type { BucketRecord, CannedAcl, LifecycleRule, ObjectRecord, UploadRecord, Written } from '../index/buckets.ts';
import { S3Error } from './s3-errors.ts';

/**
 * A change whose outcome is not known (its publish timed out, or it was published but
 * not applied here in time): it may still apply, so the operation keeps the object file
 * it wrote (a start's sweep removes it if no record ever names it). Answered 503.
 */
export class UnconfirmedChange extends S3Error {
  constructor(message: string) {
    super('ServiceUnavailable', message);
  }
}

export interface CatalogWrites {
  /** False: a bucket of that name exists (the first created in the log's order wins). */
  createBucket(rec: BucketRecord): Promise<boolean>;
  putBucket(rec: BucketRecord): Promise<void>;
  removeBucket(name: string): Promise<false | { uploads: string[] }>;
  putObject(bucket: string, key: string, rec: ObjectRecord, opts?: { onlyIfAbsent?: boolean }): Promise<Written | 'exists' | 'no-bucket'>;
  /** `opts.ifCurrent`: nothing happens unless that file is the key's current version when the delete is applied. */
  deleteObject(
    bucket: string,
    key: string,
    versionId: string | undefined,
    nowMs: number,
    opts?: { ifCurrent?: string },
  ): Promise<Written & { deleteMarker?: boolean }>;
  setObjectAcl(bucket: string, key: string, fileId: string, acl: CannedAcl): Promise<boolean>;
  expireNoncurrent(bucket: string, key: string, rule: LifecycleRule, nowMs: number): Promise<string[]>;
  completeUpload(up: UploadRecord, rec: ObjectRecord): Promise<Written | 'no-upload' | 'no-bucket'>;
}

/**
 * What a node of a cluster adds to the S3 listener: the ordered writes, a read barrier,
 * the bytes of objects other nodes hold, and which node runs a bucket's lifecycle.
 */
export interface BucketCluster {
  writes: CatalogWrites;
  /**
   * Resolves once this node's catalog holds every change the log had when it was called
   * (a write acknowledged by any node is then seen here); throws S3's ServiceUnavailable
   * when the log cannot be read (its quorum lost).
   */
  caughtUp(): Promise<void>;
  /** Bytes [start, end] of an object whose file is not on this node, from a node that holds it; null: none answered. */
  read(bucket: string, rec: ObjectRecord, start: number, end: number): Promise<NodeJS.ReadableStream | null>;
  /**
   * After a version is committed here: its other holders pull it now, and this resolves
   * when they have it (or could not, in time: the copies then follow as for any apply),
   * so an acknowledged object is on `copies` nodes while they live.
   */
  replicate(bucket: string, rec: ObjectRecord): Promise<void>;
  /** A copy here that no local copy of matches its ETag, made again from another node's good one; false: none could be had. */
  repair(bucket: string, rec: ObjectRecord): Promise<boolean>;
  /** Pulls an object's file here (a copy source this node lacks); false: no node has it. */
  fetch(bucket: string, rec: ObjectRecord): Promise<boolean>;
  /** Whether this node runs the bucket's lifecycle (one node per bucket, so an expiry is made once). */
  runsLifecycle(bucket: string): boolean;
  /** The node id stamped on the object files written here. */
  nodeId: string;
  /** A new multipart upload's id, naming this node: its parts sent to another node are passed here. */
  newUploadId(nowMs: number): string;
  /**
   * The node that created an upload and its S3 listener, when that is another node; null
   * for this node's own (or an id from before the cluster). ServiceUnavailable when that
   * node is not alive or does not say where it listens.
   */
  uploadNode(uploadId: string): Promise<{ node: string; s3: string } | null>;
}
