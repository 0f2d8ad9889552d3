/**
 * The S3 listener (issue 17; docs/s3.md, docs/design/buckets.md): its own node:http
 * server, apart from the Fastify API, because S3 clients need exact control of raw
 * bodies (aws-chunked, a 5 GiB PUT streamed to disk), of headers (ETag quoting,
 * x-amz-*, Content-Length on HEAD) and of the error shape (XML, S3's codes), none of
 * which the JSON API has.
 *
 * One request: the target is split (path style `/bucket/key`, or virtual-host style
 * `bucket.host/key` when the Host's first label names a bucket), the signature checked
 * (buckets/sigv4.ts; none: anonymous, allowed only where an ACL says so), the
 * operation chosen by method, bucket, key and sub-resource, and any failure answered
 * as S3's XML error (HEAD: status only). Unexpected faults are logged once here and
 * answered InternalError.
 *
 * Start: the object store's folders are made and swept (buckets/object-files.ts: tmp
 * files and files no catalog record names go; buckets the catalog lost entirely are
 * recovered from their files' footers) before the listener binds. Stop: no new
 * connection; requests in flight get a grace, then are cut (their tmp files go).
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { RecorderIndex } from '../index/db.ts';
import { sleepUnlessStopped } from '../lib/lifecycle.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import {
  bucketAcl,
  deleteBucketLifecycle,
  getBucketLifecycle,
  getBucketVersioning,
  listObjectVersions,
  objectAcl,
  putBucketLifecycle,
  putBucketVersioning,
} from './bucket-config-ops.ts';
import type { BucketCluster } from './catalog-writes.ts';
import { passOn, PROXIED_HEADER } from './pass-on.ts';
import { runLifecycle, type LifecycleReport } from './lifecycle.ts';
import { createBucket, deleteBucket, getBucketLocation, headBucket, listBuckets, listObjects, type BucketDeps } from './bucket-ops.ts';
import { Access, ROOT_USER } from './access.ts';
import { ObjectFiles, type ObjectFooter } from './object-files.ts';
import {
  abortMultipartUpload,
  completeMultipartUpload,
  createMultipartUpload,
  expireUploads,
  listMultipartUploads,
  listParts,
  uploadPart,
} from './multipart-ops.ts';
import { copyObject, deleteObject, deleteObjects, getObject, putObject, type ObjectDeps } from './object-ops.ts';
import type { S3Request } from './request.ts';
import { PoolRoom } from './pool-room.ts';
import { S3Error, s3ErrorXml } from './s3-errors.ts';
import { verifyHeaderAuth, verifyQueryAuth, type KeyLookup } from './sigv4.ts';

/** How long a connection may send or receive nothing before it is cut (S3 cuts idle uploads after ~20 s). */
const IDLE_MS = 60_000;
/** Longer than any write takes from its backup copy to its change in the catalog (the object log's publish and apply, with retries, in a cluster). */
const IN_FLIGHT_WRITE_MS = 5 * 60_000;
/** How long a stop lets requests in flight finish. */
const CLOSE_GRACE_MS = 2000;

/** A refused request body up to this size is read to its end and dropped, keeping the connection. */
const DRAIN_LIMIT_BYTES = 16 * 1024 * 1024;

/** Sub-resources this listener answers; any other is NotImplemented (never mistaken for a plain GET or PUT). */
const KNOWN_SUBRESOURCES = new Set([
  'location',
  'list-type',
  'versioning',
  'acl',
  'uploads',
  'uploadId',
  'partNumber',
  'delete',
  'versions',
  'versionId',
  'lifecycle',
]);
const SUBRESOURCES = new Set([
  'accelerate',
  'acl',
  'analytics',
  'attributes',
  'cors',
  'delete',
  'encryption',
  'intelligent-tiering',
  'inventory',
  'legal-hold',
  'lifecycle',
  'location',
  'logging',
  'metrics',
  'notification',
  'object-lock',
  'ownershipControls',
  'partNumber',
  'policy',
  'policyStatus',
  'publicAccessBlock',
  'replication',
  'requestPayment',
  'restore',
  'retention',
  'select',
  'tagging',
  'torrent',
  'uploadId',
  'uploads',
  'versionId',
  'versioning',
  'versions',
  'website',
]);

export interface S3ServerOptions {
  index: RecorderIndex;
  dataDir: string;
  log: Logger;
  clock: Clock;
  keys: KeyLookup;
  signal: AbortSignal;
  /** Multipart uploads started longer ago are aborted (their parts removed). */
  uploadExpiryMs: number;
  /** How often backup copies of objects (pools with a backupDir) are checked and re-made (RECORDER_BACKUP_AUDIT_MS). */
  backupAuditMs?: number;
  /** How often every object is scrubbed (read back, MD5 checked, a bad copy made again: RECORDER_S3_SCRUB_MS); absent: never by itself. */
  scrubMs?: number;
  /** `backup-failed` when an object's backup copy could not be made; `object-corrupt` when a scrub finds no good copy. */
  raiseAlarm?: (alarm: AlarmInput) => void;
  /**
   * Browser origins whose requests get CORS headers and whose preflights are answered
   * (the recorder's own web UI, which uses presigned URLs: buckets/presign.ts). Others
   * get none, as a bucket without a CORS configuration in S3.
   */
  corsOrigin?: (origin: string) => boolean;
  /** In a cluster: the object log, the read barrier and other nodes' bytes (buckets/catalog-writes.ts). */
  cluster?: BucketCluster;
}

/** Headers a browser page may read from a response (ETag to show, versions, ranges). */
const CORS_EXPOSED = 'ETag, Content-Length, Content-Range, Content-Type, Last-Modified, x-amz-version-id, x-amz-request-id, x-amz-delete-marker';

/** What a scrub found (S3Server.scrub): objects read, their bytes, copies made again, objects with no good copy, files missing (the audit's case). */
export interface ScrubReport {
  checked: number;
  bytes: number;
  repaired: number;
  corrupt: number;
  missing: number;
}

export class S3Server {
  url = '';
  private server: Server | null = null;
  private readonly files: ObjectFiles;
  private readonly deps: ObjectDeps & BucketDeps;
  private readonly inFlight = new Set<Promise<void>>();
  private expiryTimer: NodeJS.Timeout | null = null;
  private lifecycleTimer: NodeJS.Timeout | null = null;
  private lifecycleRun: Promise<LifecycleReport> | null = null;
  private backupTimer: NodeJS.Timeout | null = null;
  private auditing: Promise<unknown> | null = null;
  private scrubbing: Promise<ScrubReport> | null = null;
  private scrubTimer: NodeJS.Timeout | null = null;
  /** In a cluster: the start-up sweep and passes, waiting for the object log (housekeepWhenCaughtUp). */
  private housekeeping: Promise<void> | null = null;

  constructor(private readonly opts: S3ServerOptions) {
    const { index } = opts;
    this.files = new ObjectFiles(opts.dataDir, {
      dirOf: (bucket) => {
        const b = index.buckets.bucket(bucket);
        return (b && index.pools.get(b.pool)?.backupDir) ?? null;
      },
      failed: (bucket, fileId, err) =>
        opts.raiseAlarm?.({
          kind: 'backup-failed',
          message: `backup copy of an object of bucket ${bucket} could not be made (${err.message}); the audit makes it again`,
          details: { bucket, fileId },
        }),
    });
    this.deps = {
      catalog: index.buckets,
      writes: opts.cluster?.writes ?? index.buckets,
      ...(opts.cluster ? { cluster: opts.cluster } : {}),
      files: this.files,
      access: new Access((name) => index.users.get(name)),
      log: opts.log,
      dataDir: opts.dataDir,
      poolExists: (pool) => index.pools.get(pool) !== undefined,
      poolRoom: new PoolRoom((pool) => {
        const cap = index.pools.get(pool)?.capacityBytes;
        if (cap === undefined || cap === null) return null;
        const objects = index.buckets
          .listBuckets()
          .filter((b) => b.pool === pool)
          .reduce((n, b) => n + index.buckets.bucketUsage(b.name).bytes, 0);
        return cap - index.segments.poolUsage(pool) - objects;
      }),
    };
  }

  /** This node's object files (in a cluster, the object log unlinks and the copies adopt them). */
  get objects(): ObjectFiles {
    return this.files;
  }

  /** The path of an object file on this node (its backup when the primary is gone); null: not here. */
  localFile(bucket: string, fileId: string): string | null {
    const primary = this.files.path(bucket, fileId);
    if (existsSync(primary)) return primary;
    const backup = this.files.backupPath(bucket, fileId);
    return backup && existsSync(backup) ? backup : null;
  }

  /**
   * Listens on `host:port`. On one node the start-up sweep and the passes that judge by
   * the catalog (backup audit, upload expiry, lifecycle) run first; in a cluster they run
   * once the object log has been caught up with (housekeepWhenCaughtUp).
   */
  async start(host: string, port: number): Promise<void> {
    await this.files.init();
    const tmp = await this.files.sweepTmp();
    if (tmp > 0) this.opts.log.warn({ tmp }, 's3: unfinished uploads removed at start');
    const cluster = this.opts.cluster;
    if (cluster) {
      const startedMs = Date.now();
      this.housekeeping = this.housekeepWhenCaughtUp(cluster, startedMs).catch((err: unknown) =>
        this.opts.log.error({ err }, 's3: the start-up sweep failed (the next start sweeps again)'),
      );
    } else await this.housekeep(false);
    const server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 5000 }, (req, res) => {
      const p = this.handle(req, res);
      this.inFlight.add(p);
      void p.finally(() => this.inFlight.delete(p));
    });
    server.setTimeout(IDLE_MS);
    // A request the HTTP parser gave up on: a body cut short by the client's FIN (S3's
    // IncompleteBody), or a malformed request. S3's XML instead of Node's bare 400.
    server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      if (!socket.writable) return void socket.destroy();
      const e =
        err.code === 'HPE_INVALID_EOF_STATE'
          ? new S3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header')
          : new S3Error('InvalidRequest', `The request could not be parsed: ${err.code ?? err.message}`);
      const body = s3ErrorXml(e, '', randomBytes(8).toString('hex').toUpperCase());
      socket.end(
        `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? ''}\r\nContent-Type: application/xml\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    const addr = server.address();
    const bound = typeof addr === 'object' && addr ? addr.port : port;
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
    this.opts.log.info({ url: this.url }, 's3 listening');
  }

  /**
   * In a cluster this node's catalog is the object log applied here, and at start it may
   * still lack changes made while it was away, or made here just before a crash and not
   * yet applied: an object file it does not name yet is not an orphan. So the sweep and
   * the passes wait until the catalog has caught up with the log once, retrying while the
   * log cannot be read (a node that never reaches its cluster sweeps nothing).
   */
  private async housekeepWhenCaughtUp(cluster: BucketCluster, startedMs: number): Promise<void> {
    const { signal, log } = this.opts;
    for (let failures = 0; !signal.aborted; failures++) {
      try {
        await cluster.caughtUp();
      } catch (err) {
        if (failures === 0) log.info({ err: (err as Error).message }, "s3: the start-up sweep waits until this node has applied the cluster's object log");
        await sleepUnlessStopped(Math.min(30_000, 1000 * 2 ** Math.min(failures, 5)), signal);
        continue;
      }
      if (!signal.aborted) await this.housekeep(startedMs);
      return;
    }
  }

  /**
   * The start-up sweep (every object file the catalog does not hold, part files no upload
   * names), then the first backup audit, upload expiry and lifecycle pass and their
   * timers. `clusterStartMs`, in a cluster: only files there before the listener started
   * are swept (newer ones may be named by a change not applied yet), and a bucket folder
   * the catalog has no bucket for is kept and reported, not recovered from its files as
   * on one node: the cluster's catalog comes from the log, which removes a bucket's
   * folder when it applies the bucket's removal, so such a folder after catching up means
   * the log itself lost the bucket.
   */
  private async housekeep(clusterStartMs: number | false): Promise<void> {
    const catalog = this.opts.index.buckets;
    const uploads = new Map<string, Set<string>>();
    for (const up of catalog.allUploads()) uploads.set(up.uploadId, new Set(catalog.listParts(up.uploadId).map((p) => p.part.fileId)));
    const swept = await this.files.sweep(
      (id) => catalog.holdsFile(id),
      (b) => catalog.bucket(b) !== undefined,
      uploads,
      clusterStartMs === false ? Infinity : clusterStartMs,
    );
    if (swept.orphans + swept.parts > 0) {
      this.opts.log.warn({ orphans: swept.orphans, parts: swept.parts }, 's3: object and part files no record names removed at start');
    }
    for (const [bucket, found] of swept.lost) {
      if (clusterStartMs !== false) {
        this.opts.log.error(
          { bucket, files: found.length },
          "s3: object files of a bucket the cluster's object log does not know are kept, not recovered (was the log's stream removed?)",
        );
      } else await this.recover(bucket, found);
    }
    // Backup files no record names: all of them on one node (nothing is written yet); in a
    // cluster those from before the start.
    await this.auditBackups(clusterStartMs === false ? Infinity : clusterStartMs);
    if (this.opts.signal.aborted) return;
    this.backupTimer = setInterval(() => void this.auditBackups(), this.opts.backupAuditMs ?? 3_600_000);
    this.backupTimer.unref();
    // Reading every byte is the costly pass: the first one period after start, not at it.
    if (this.opts.scrubMs) this.scrubTimer = setInterval(() => void this.scrub(), this.opts.scrubMs);
    await this.expire();
    // Abandoned multipart uploads go after uploadExpiryMs, checked this often.
    this.expiryTimer = setInterval(() => void this.expire(), Math.min(this.opts.uploadExpiryMs, 3_600_000));
    this.expiryTimer.unref();
    this.lifecycleTick();
    this.lifecycleTimer = setInterval(() => this.lifecycleTick(), 3_600_000);
    this.lifecycleTimer.unref();
  }

  /**
   * Re-catalogs a bucket the catalog lost (a reindex sets a corrupt index aside) from
   * its files' footers: the bucket comes back private, in the pool `default`, owned by
   * root; each key's newest file becomes its object (older ones go: their versions are
   * not recovered).
   */
  private async recover(bucket: string, found: { fileId: string; footer: ObjectFooter }[]): Promise<void> {
    const catalog = this.opts.index.buckets;
    found.sort((a, b) => a.footer.lastModifiedMs - b.footer.lastModifiedMs || (a.fileId < b.fileId ? -1 : 1));
    await catalog.createBucket({ name: bucket, pool: 'default', createdMs: found[0]!.footer.lastModifiedMs, acl: 'private', owner: ROOT_USER });
    for (const { fileId, footer } of found) {
      const rec = {
        fileId,
        size: footer.size,
        etag: footer.etag,
        lastModifiedMs: footer.lastModifiedMs,
        headers: footer.contentType ? { contentType: footer.contentType } : {},
        meta: footer.meta,
      };
      const written = await catalog.putObject(bucket, footer.key, rec);
      if (typeof written === 'object') for (const id of written.unlink) await this.files.remove(bucket, id);
    }
    this.opts.log.warn(
      { bucket, files: found.length },
      's3: a bucket the catalog lost was recovered from its object files (private, pool default, newest version of each key)',
    );
  }

  /**
   * Every object of the buckets whose pool has a backup dir against its backup copy
   * (buckets/object-files.ts auditBackup): missing or short backups made again, lost
   * primaries copied back, backup files no record names removed (those that changed
   * before `before`: by default IN_FLIGHT_WRITE_MS ago, as a write on its way to the
   * catalog already has its backup). One audit at a time.
   */
  auditBackups(before = Date.now() - IN_FLIGHT_WRITE_MS): Promise<unknown> {
    this.auditing ??= this.runAudit(before).finally(() => (this.auditing = null));
    return this.auditing;
  }

  /** `before`: backup files no record names are removed if they changed before then (ObjectFiles.sweepBackups). */
  private async runAudit(before: number): Promise<{ backedUp: number; restored: number; removed: number }> {
    const catalog = this.opts.index.buckets;
    const done = { backedUp: 0, restored: 0, removed: 0 };
    try {
      for (const b of catalog.listBuckets()) {
        if (!this.files.hasBackup(b.name)) continue;
        let after: { key: string; versionId?: string } | undefined;
        for (;;) {
          if (this.opts.signal.aborted) return done;
          const page = catalog.listVersions(b.name, '', 1000, after);
          for (const { key, record } of page.versions) {
            if (record.deleteMarker) continue;
            const r = await this.files.auditBackup(b.name, record.fileId);
            if (r === 'backed-up') done.backedUp++;
            else if (r === 'restored') {
              done.restored++;
              this.opts.log.warn({ bucket: b.name, key }, 's3: an object file was lost and is copied back from its backup');
            }
          }
          const last = page.versions[page.versions.length - 1];
          if (!page.truncated || !last) break;
          after = { key: last.key, versionId: last.record.versionId ?? 'null' };
        }
        done.removed += await this.files.sweepBackups(b.name, (id) => catalog.holdsFile(id), before);
      }
      if (done.backedUp + done.restored + done.removed > 0) this.opts.log.warn(done, 's3: backup copies audited');
    } catch (err) {
      this.opts.log.error({ err }, 's3: backup audit failed; tried again at the next one');
    }
    return done;
  }

  /**
   * Every object version of every bucket read back (ObjectFiles.scrub): its MD5 against
   * its ETag and its backup copy, a bad copy made again from the good one. What cannot
   * be mended (no copy matches, or a multipart object's two copies differ) raises
   * `object-corrupt` once per object per scrub. One scrub at a time; it stops with the node.
   */
  scrub(): Promise<ScrubReport> {
    this.scrubbing ??= this.runScrub().finally(() => (this.scrubbing = null));
    return this.scrubbing;
  }

  private async runScrub(): Promise<ScrubReport> {
    const catalog = this.opts.index.buckets;
    const report: ScrubReport = { checked: 0, bytes: 0, repaired: 0, corrupt: 0, missing: 0 };
    try {
      for (const b of catalog.listBuckets()) {
        let after: { key: string; versionId?: string } | undefined;
        for (;;) {
          if (this.opts.signal.aborted) return report;
          const page = catalog.listVersions(b.name, '', 1000, after);
          for (const { key, record } of page.versions) {
            if (record.deleteMarker || this.opts.signal.aborted) continue;
            const found = await this.files.scrub(b.name, record.fileId, record.size, record.etag, () => catalog.holdsFile(record.fileId), record.partSizes);
            report.checked++;
            report.bytes += record.size;
            const where = { bucket: b.name, key, versionId: record.versionId ?? null };
            if (found === 'corrupt' && (await this.opts.cluster?.repair(b.name, record))) {
              report.repaired++;
              this.opts.log.warn(where, "s3 scrub: a bad copy of an object was made again from another node's good one");
              continue;
            }
            if (found === 'primary-repaired' || found === 'backup-repaired') {
              report.repaired++;
              this.opts.log.warn({ ...where, found }, 's3 scrub: a bad copy of an object was made again from its good one');
            } else if (found === 'corrupt' || found === 'copies-differ') {
              report.corrupt++;
              this.opts.raiseAlarm?.({
                kind: 'object-corrupt',
                pool: b.pool,
                message:
                  found === 'corrupt'
                    ? `object ${b.name}/${key}: no copy matches its ETag (bytes changed on disk); it is served as it is`
                    : `object ${b.name}/${key}: its two copies differ and a multipart ETag cannot tell which is good`,
                details: { ...where, found },
              });
            } else if (found === 'missing') report.missing++;
          }
          const last = page.versions[page.versions.length - 1];
          if (!page.truncated || !last) break;
          after = { key: last.key, versionId: last.record.versionId ?? 'null' };
        }
      }
      this.opts.log.info(report, 's3 scrub: every object read back');
    } catch (err) {
      this.opts.log.error({ err }, 's3 scrub failed; tried again at the next one');
    }
    return report;
  }

  private async expire(): Promise<void> {
    try {
      await expireUploads(this.opts.index.buckets, this.files, this.opts.clock.nowMs(), this.opts.uploadExpiryMs, this.opts.log);
    } catch (err) {
      this.opts.log.error({ err }, 's3: expiring abandoned multipart uploads failed (retried at the next pass)');
    }
  }

  /** One lifecycle pass now (it also runs at start and hourly); one at a time. */
  async lifecycle(): Promise<LifecycleReport> {
    const run = (this.lifecycleRun ??= runLifecycle(this.deps, this.opts.clock.nowMs()).finally(() => (this.lifecycleRun = null)));
    return run;
  }

  private lifecycleTick(): void {
    this.lifecycle().catch((err: unknown) => this.opts.log.error({ err }, 's3: lifecycle pass failed (retried at the next pass)'));
  }

  async stop(): Promise<void> {
    // Its waits end with the node's signal; timers it set are cleared below.
    await this.housekeeping?.catch((err: unknown) => this.opts.log.error({ err }, 's3: the start-up sweep failed'));
    if (this.backupTimer) clearInterval(this.backupTimer);
    if (this.scrubTimer) clearInterval(this.scrubTimer);
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    if (this.lifecycleTimer) clearInterval(this.lifecycleTimer);
    const server = this.server;
    if (!server) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
    await closed;
    clearTimeout(cut);
    await Promise.allSettled([...this.inFlight, this.lifecycleRun, this.scrubbing]);
    await this.files.stop();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = randomBytes(8).toString('hex').toUpperCase();
    res.setHeader('x-amz-request-id', requestId);
    res.setHeader('Server', 'ipcam-recorder');
    // The recorder's clock, which signatures are judged by: clients correct their skew from it.
    res.sendDate = false;
    res.setHeader('Date', new Date(this.opts.clock.nowMs()).toUTCString());
    const origin = req.headers.origin;
    const cors = origin !== undefined && this.opts.corsOrigin?.(origin) === true;
    if (cors) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Vary', 'Origin');
      res.setHeader('Access-Control-Expose-Headers', CORS_EXPOSED);
    }
    // A CORS preflight carries no signature: answered from the origin rule alone (S3 answers 403 without a rule).
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
      if (!cors) {
        res.writeHead(403, { 'Content-Type': 'application/xml' });
        res.end(
          '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessForbidden</Code><Message>CORSResponse: This CORS request is not allowed.</Message></Error>',
        );
        return;
      }
      res.writeHead(200, {
        'Access-Control-Allow-Methods': 'GET, PUT, HEAD, DELETE, POST',
        'Access-Control-Allow-Headers': req.headers['access-control-request-headers'] ?? '',
        'Access-Control-Max-Age': '600',
        'Content-Length': '0',
      });
      res.end();
      return;
    }
    const target = req.url ?? '/';
    const q = target.indexOf('?');
    const rawPath = q < 0 ? target : target.slice(0, q);
    let r: S3Request | undefined;
    try {
      if (this.opts.signal.aborted) throw new S3Error('ServiceUnavailable', 'The recorder is stopping');
      // In a cluster: every change any node acknowledged before this request is in this node's catalog.
      await this.opts.cluster?.caughtUp();
      if (!rawPath.startsWith('/')) throw new S3Error('InvalidRequest', 'The request target must be a path');
      const rawQuery = q < 0 ? '' : target.slice(q + 1);
      const query = new URLSearchParams(rawQuery);
      const nowMs = this.opts.clock.nowMs();
      let path: string;
      try {
        path = decodeURIComponent(rawPath);
      } catch {
        throw new S3Error('InvalidURI', 'Could not parse the specified URI.');
      }
      const { bucket, key } = this.split(path, req.headers.host);
      let auth = null;
      if (req.headers.authorization !== undefined) auth = verifyHeaderAuth(req, rawPath, rawQuery, this.opts.keys, nowMs);
      else if (query.has('X-Amz-Signature') || query.has('X-Amz-Credential')) auth = verifyQueryAuth(req, rawPath, rawQuery, query, this.opts.keys, nowMs);
      r = {
        req,
        res,
        method: req.method ?? 'GET',
        ...(bucket !== undefined ? { bucket } : {}),
        ...(key !== undefined ? { key } : {}),
        query,
        auth,
        requestId,
        nowMs,
      };
      await this.route(r);
    } catch (err) {
      this.fail(req, res, err, rawPath, requestId);
    }
  }

  /** Bucket and key of a decoded path; virtual-host style when the Host's first label is a bucket. */
  private split(path: string, host: string | undefined): { bucket?: string; key?: string } {
    const hostname = (host ?? '').replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    const dot = hostname.indexOf('.');
    if (dot > 0 && isIP(hostname) === 0) {
      const label = hostname.slice(0, dot);
      if (this.deps.catalog.bucket(label)) {
        const key = path.slice(1);
        return { bucket: label, ...(key ? { key } : {}) };
      }
    }
    const p = path.slice(1);
    const slash = p.indexOf('/');
    const bucket = slash < 0 ? p : p.slice(0, slash);
    const key = slash < 0 ? '' : p.slice(slash + 1);
    return { ...(bucket ? { bucket } : {}), ...(key ? { key } : {}) };
  }

  private async route(r: S3Request): Promise<void> {
    const d = this.deps;
    for (const name of r.query.keys()) {
      if (SUBRESOURCES.has(name) && !KNOWN_SUBRESOURCES.has(name))
        throw new S3Error('NotImplemented', `The ${name} sub-resource is not implemented by the recorder`);
    }
    const m = r.method;
    if (r.bucket === undefined) {
      if (m === 'GET') return listBuckets(d, r);
      throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.');
    }
    if (r.key === undefined) {
      if (r.query.has('uploads') && m === 'GET') return listMultipartUploads(d, r);
      if (r.query.has('delete') && m === 'POST') return deleteObjects(d, r);
      if (r.query.has('versioning') && m === 'GET') return getBucketVersioning(d, r);
      if (r.query.has('versioning') && m === 'PUT') return putBucketVersioning(d, r);
      if (r.query.has('versions') && m === 'GET') return listObjectVersions(d, r);
      if (r.query.has('lifecycle')) {
        if (m === 'PUT') return putBucketLifecycle(d, r);
        if (m === 'GET') return getBucketLifecycle(d, r);
        if (m === 'DELETE') return deleteBucketLifecycle(d, r);
      }
      if (r.query.has('acl')) return bucketAcl(d, r);
      if (m === 'PUT') return createBucket(d, r);
      if (m === 'DELETE') return deleteBucket(d, r);
      if (m === 'HEAD') return headBucket(d, r);
      if (m === 'GET' && r.query.has('location')) return getBucketLocation(d, r);
      if (m === 'GET') return listObjects(d, r);
      throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.');
    }
    if (r.query.has('acl')) return objectAcl(d, r);
    if (r.query.has('uploadId') && this.opts.cluster && r.req.headers[PROXIED_HEADER] === undefined) {
      // In a cluster: an upload another node created is continued there (its parts are on its disk).
      const holder = await this.opts.cluster.uploadNode(r.query.get('uploadId')!);
      if (holder) return passOn(r, holder);
    }
    if (r.query.has('uploadId')) {
      if (m === 'PUT' && r.query.has('partNumber')) return uploadPart(d, r);
      if (m === 'POST') return completeMultipartUpload(d, r);
      if (m === 'GET') return listParts(d, r);
      if (m === 'DELETE') return abortMultipartUpload(d, r);
    } else if (r.query.has('uploads')) {
      if (m === 'POST') return createMultipartUpload(d, r);
    } else {
      if (m === 'PUT' && r.req.headers['x-amz-copy-source'] !== undefined) return copyObject(d, r);
      if (m === 'PUT') return putObject(d, r);
      if (m === 'GET' || m === 'HEAD') return getObject(d, r);
      if (m === 'DELETE') return deleteObject(d, r);
    }
    throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.');
  }

  private fail(req: IncomingMessage, res: ServerResponse, err: unknown, resource: string, requestId: string): void {
    let e: S3Error;
    if (err instanceof S3Error) {
      e = err;
      this.opts.log.debug({ code: e.code, method: req.method, resource }, `s3: ${e.code}: ${e.message}`);
    } else {
      e = new S3Error('InternalError', 'We encountered an internal error. Please try again.');
      this.opts.log.error({ err, method: req.method, resource }, 's3: request failed');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = Buffer.from(s3ErrorXml(e, resource, requestId));
    const headers: Record<string, string> = { ...e.headers, 'Content-Type': 'application/xml', 'Content-Length': String(body.length) };
    if (!req.complete) {
      // The rest of the body is read and dropped: a socket closed with unread bytes sends
      // a reset, which can take the answer with it (a client still sending its body got
      // "fetch failed" instead of the 507). Past DRAIN_LIMIT_BYTES (a 5 GiB PUT refused at
      // once) the connection closes after the answer rather than read it all.
      req.resume();
      const length = Number(req.headers['content-length']);
      if (!Number.isFinite(length) || length > DRAIN_LIMIT_BYTES) headers.Connection = 'close';
    }
    res.writeHead(e.status, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  }
}
