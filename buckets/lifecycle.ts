/**
 * Bucket lifecycle (PutBucketLifecycleConfiguration; docs/s3.md#lifecycle): current
 * versions expire a number of days after they were written (a delete marker in a
 * versioned bucket, as S3 does), noncurrent versions a number of days after they became
 * noncurrent except the newest NewerNoncurrentVersions of each key, multipart uploads a
 * number of days after they began. The pass runs at start and hourly, page by page
 * (1000 keys, one synchronous read each), off the request path. A rule with
 * NoncurrentDays 0 (the recorder's "keep N versions") is also applied to a key right
 * after each write to it (buckets/object-ops.ts keepVersions).
 */
import { removeKey, unlinkAfterCommit, type ObjectDeps } from './object-ops.ts';

const DAY_MS = 86_400_000;
const PAGE = 1000;

export interface LifecycleReport {
  expired: number;
  noncurrent: number;
  uploads: number;
}

/** One lifecycle pass over every bucket with rules. */
export async function runLifecycle(d: ObjectDeps, nowMs: number): Promise<LifecycleReport> {
  const report: LifecycleReport = { expired: 0, noncurrent: 0, uploads: 0 };
  const deps = d;
  for (const b of d.catalog.listBuckets()) {
    // In a cluster one node expires a bucket's objects (each expiry is one change of the
    // log, made once); every node aborts its own multipart uploads, which are its alone.
    const objectsHere = d.cluster?.runsLifecycle(b.name) ?? true;
    for (const rule of b.lifecycle ?? []) {
      if (!rule.enabled) continue;
      if (rule.abortDays !== undefined) {
        for (const up of d.catalog.listUploads(b.name, rule.prefix, Number.MAX_SAFE_INTEGER).uploads) {
          if (nowMs - up.initiatedMs < rule.abortDays * DAY_MS) continue;
          if (await d.catalog.removeUpload(up)) {
            await d.files.removeUploadFiles(up.uploadId);
            report.uploads++;
          }
        }
      }
      if (!objectsHere || (rule.expirationDays === undefined && rule.noncurrentDays === undefined)) continue;
      let after: string | undefined;
      for (;;) {
        const page = d.catalog.keys(b.name, rule.prefix, after, PAGE);
        for (const { key, record } of page) {
          if (rule.expirationDays !== undefined && !record.deleteMarker && nowMs - record.lastModifiedMs >= rule.expirationDays * DAY_MS) {
            // Only the version judged here: a PUT since (on any node) is not expired with it.
            await removeKey(deps, b.name, key, undefined, nowMs, { ifCurrent: record.fileId });
            if (d.catalog.object(b.name, key)?.fileId !== record.fileId) report.expired++;
          }
          if (rule.noncurrentDays !== undefined) {
            const gone = await d.writes.expireNoncurrent(b.name, key, rule, nowMs);
            await unlinkAfterCommit(d, b.name, key, gone);
            report.noncurrent += gone.length;
          }
        }
        if (page.length < PAGE) break;
        after = page[page.length - 1]!.key;
        await new Promise((r) => setImmediate(r));
      }
    }
  }
  if (report.expired + report.noncurrent + report.uploads > 0) d.log.info(report, 's3: lifecycle expired objects');
  return report;
}
