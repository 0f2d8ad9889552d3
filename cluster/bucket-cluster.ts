/**
 * What the S3 listener of a cluster node is given (buckets/catalog-writes.ts
 * BucketCluster): the object log's ordered writes and read barrier, the copies' reads
 * and pulls, and which node runs a bucket's lifecycle: the first of the live nodes in the
 * rendezvous ranking of `bucket/<name>`, so that each expiry is one change of the log,
 * made by one node (another takes over when that one is judged dead).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { BucketCluster } from '../buckets/catalog-writes.ts';
import { S3Error } from '../buckets/s3-errors.ts';
import { copyHolders } from './copy-plan.ts';
import type { ObjectCopies } from './object-copies.ts';
import type { ObjectLog } from './object-log.ts';

/** How an upload id names the node that created it: the first 10 hex digits of SHA-256 of its id (ids stay URL-safe and opaque). */
export function uploadTag(nodeId: string): string {
  return createHash('sha256').update(nodeId).digest('hex').slice(0, 10);
}

/** The peer subject a node answers with its S3 listener's URL (`<prefix>.v1.node.<id>.s3`). */
export const S3_URL_SUBJECT = 's3';

export interface BucketClusterNode {
  nodeId: string;
  liveNodes(): string[];
  /** Asks a peer on its own subject (cluster/cluster.ts ask). */
  ask<T>(node: string, what: string, body: unknown): Promise<T>;
}

export function bucketCluster(log: ObjectLog, copies: ObjectCopies, node: BucketClusterNode): BucketCluster {
  const ownTag = uploadTag(node.nodeId);
  return {
    writes: log,
    caughtUp: () => log.caughtUp(),
    read: (bucket, rec, start, end) => copies.read(bucket, rec, start, end),
    fetch: (bucket, rec) => copies.fetch(bucket, rec),
    replicate: (bucket, rec) => copies.replicate(bucket, rec),
    repair: (bucket, rec) => copies.repair(bucket, rec),
    runsLifecycle: (bucket) => copyHolders(`bucket/${bucket}`, null, node.liveNodes(), 1)[0] === node.nodeId,
    nodeId: node.nodeId,
    newUploadId: (nowMs) => `${ownTag}-${nowMs.toString(16)}${randomBytes(12).toString('hex')}`,
    uploadNode: async (uploadId) => {
      const tag = /^([0-9a-f]{10})-/.exec(uploadId)?.[1];
      if (tag === undefined || tag === ownTag) return null;
      const holder = node.liveNodes().find((n) => uploadTag(n) === tag);
      if (!holder) throw new S3Error('ServiceUnavailable', 'The node that holds this multipart upload is not reachable; try again, or start the upload again');
      let url: string | null;
      try {
        url = (await node.ask<{ url: string | null }>(holder, S3_URL_SUBJECT, {})).url;
      } catch (err) {
        throw new S3Error('ServiceUnavailable', `The node that holds this multipart upload did not answer (${(err as Error).message}); try again`);
      }
      if (!url) throw new S3Error('ServiceUnavailable', 'The node that holds this multipart upload has no S3 listener now; try again');
      return { node: holder, s3: url };
    },
  };
}
