/**
 * What the S3 listener of a cluster node is given (buckets/catalog-writes.ts
 * BucketCluster): the object log's ordered writes and read barrier, the copies' reads
 * and pulls, and which node runs a bucket's lifecycle: the first of the live nodes in the
 * rendezvous ranking of `bucket/<name>`, so that each expiry is one change of the log,
 * made by one node (another takes over when that one is judged dead).
 */
import type { BucketCluster } from '../buckets/catalog-writes.ts';
import { copyHolders } from './copy-plan.ts';
import type { ObjectCopies } from './object-copies.ts';
import type { ObjectLog } from './object-log.ts';

export function bucketCluster(log: ObjectLog, copies: ObjectCopies, node: { nodeId: string; liveNodes(): string[] }): BucketCluster {
  return {
    writes: log,
    caughtUp: () => log.caughtUp(),
    read: (bucket, rec, start, end) => copies.read(bucket, rec, start, end),
    fetch: (bucket, rec) => copies.fetch(bucket, rec),
    runsLifecycle: (bucket) => copyHolders(`bucket/${bucket}`, null, node.liveNodes(), 1)[0] === node.nodeId,
    nodeId: node.nodeId,
  };
}
