/**
 * Copies of S3 objects on other nodes (docs/design/buckets.md "In a cluster"): a bucket's
 * pool's `copies` (1 to 3) of every object version, as cluster/copies.ts keeps of video.
 *
 * The catalog is on every node (cluster/object-log.ts); the bytes are on the holders: the
 * node that wrote the file while it lives, then the live nodes by rendezvous ranking of
 * `object/<bucket>/<fileId>` (cluster/copy-plan.ts), `copies` in all. A holder that
 * applies a put it did not make pulls the whole file (bytes and footer) from the writer,
 * or from any live node that has it: `GET /api/cluster/objects/:bucket/:fileId` with the
 * cluster token, into a tmp file, fdatasync, rename (buckets/object-files.ts adopt). A
 * plain-MD5 ETag is checked against the bytes pulled.
 *
 * Re-make: when membership changes (a node judged dead, one that joins) and every ten
 * minutes, the catalog is walked and each version this node should now hold but lacks
 * is pulled. A node that holds no copy of an object reads its bytes from a node that does
 * (`read`), ranges passed through.
 */
import type { FileHandle } from 'node:fs/promises';
import { pipeline, Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { EtagHasher } from '../buckets/etag.ts';
import type { ScrubResult } from '../buckets/object-files.ts';
import type { BucketStore, ObjectRecord } from '../index/buckets.ts';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { CLUSTER_TOKEN_HEADER } from './copies.ts';
import { copyHolders, MembershipSettle } from './copy-plan.ts';
import type { Applied } from './object-log.ts';

const SCAN_EVERY_MS = 10 * 60_000;
/** How long a write waits for its other holders to confirm their copy before it is answered anyway. */
const REPLICATE_MS = 60_000;
/** The peer subject a writer asks a holder on to pull a version it just committed (`<prefix>.v1.node.<id>.objects.pull`). */
export const OBJECT_PULL_SUBJECT = 'objects.pull';
const PULLS_AT_ONCE = 2;
const FETCH_TIMEOUT_MS = 10_000;
/** A peer's body that sends nothing this long is cut (a node hung mid-answer): the pull tries another, a read fails. */
const BODY_IDLE_MS = 30_000;
const MAX_RETRY_MS = 60_000;
/** Failed pulls of one file before a warning (about a minute of retries). */
const RETRY_WARN_AFTER = 6;

/** The key that ranks the nodes for one object file. */
export function objectCopyKey(bucket: string, fileId: string): string {
  return `object/${bucket}/${fileId}`;
}

/** This node's object files, as the S3 listener keeps them (buckets/object-files.ts). */
export interface LocalObjectFiles {
  has(bucket: string, fileId: string): boolean;
  adopt(bucket: string, fileId: string, write: (handle: FileHandle) => Promise<void>): Promise<void>;
  remove(bucket: string, fileId: string): Promise<void>;
  /** Reads a file back against its ETag (and mends it from its backup copy): buckets/object-files.ts scrub. */
  scrub(bucket: string, fileId: string, size: number, etag: string, held: () => boolean, partSizes?: readonly number[]): Promise<ScrubResult>;
}

export interface ObjectCopiesDeps {
  nodeId: string;
  catalog: BucketStore;
  /** The `copies` of a pool (1 when unset or unknown). */
  copiesOf: (pool: string) => number;
  liveNodes: () => string[];
  peerHttp: (node: string) => string | null;
  token: () => string | null;
  /** Null while the S3 listener is not up. */
  files: () => LocalObjectFiles | null;
  /** Asks a peer on its own subject (cluster/cluster.ts ask). */
  ask: <T>(node: string, what: string, body: unknown, timeoutMs: number) => Promise<T>;
  /** Resolves once this node has applied the object log as far as it went (cluster/object-log.ts caughtUp). */
  caughtUp: () => Promise<void>;
  /** How long membership must hold still before surplus copies go (as for segments: twice the time that judges a node dead). */
  settleMs: number;
  log: Logger;
  signal: AbortSignal;
  /** A peer's body that sends nothing this long is cut (default BODY_IDLE_MS). */
  bodyIdleMs?: number;
}

export interface ObjectCopiesStatus {
  pulled: number;
  failed: number;
  queued: number;
  /** Pulls running now. */
  active: number;
  /** Files waiting for their retry. */
  waiting: number;
  trimmed: number;
}

export class ObjectCopies {
  private readonly queue = new Map<string, { bucket: string; rec: ObjectRecord }>();
  /** Pulls running, by file id (one at a time per file: they share its tmp file); `replace`: a repair's. */
  private readonly inflight = new Map<string, { pull: Promise<boolean>; replace: boolean }>();
  /** Failed pulls in a row, by file id. */
  private readonly retries = new Map<string, number>();
  /** The one retry waiting per file (a file is never in two retry chains). */
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private active = 0;
  private pulled = 0;
  private failed = 0;
  private scanning: Promise<void> | null = null;
  private readonly settle: MembershipSettle;
  private settleTimer: NodeJS.Timeout | null = null;
  private trimmed = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly d: ObjectCopiesDeps) {
    this.settle = new MembershipSettle(d.settleMs);
  }

  start(): void {
    this.timer = setInterval(() => this.rescan(), SCAN_EVERY_MS);
    this.timer.unref();
    this.rescan();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.settleTimer) clearTimeout(this.settleTimer);
    for (const t of this.retryTimers.values()) clearTimeout(t);
    this.retryTimers.clear();
  }

  status(): ObjectCopiesStatus {
    return { pulled: this.pulled, failed: this.failed, queued: this.queue.size, active: this.active, waiting: this.retryTimers.size, trimmed: this.trimmed };
  }

  /** The nodes that should hold a version's file now. */
  holders(bucket: string, rec: ObjectRecord): string[] {
    const pool = this.d.catalog.bucket(bucket)?.pool;
    const copies = pool === undefined ? 1 : this.d.copiesOf(pool);
    return copyHolders(objectCopyKey(bucket, rec.fileId), rec.node ?? null, [...this.d.liveNodes(), this.d.nodeId], copies);
  }

  /** After the log applied a change: a put this node should hold a copy of is pulled. */
  applied(a: Applied): void {
    if (a.change.op !== 'putObject' || a.origin === this.d.nodeId || typeof a.result !== 'object') return;
    this.want(a.change.bucket, a.change.rec);
  }

  /** Membership changed (or the periodic pass): every version this node should hold and lacks is pulled. */
  rescan(): void {
    this.scanning ??= this.scan()
      .catch((err: unknown) => this.d.log.warn({ err: (err as Error).message }, 'object copies: a scan failed; again at the next one'))
      .finally(() => (this.scanning = null));
  }

  /**
   * A node joined, came back or was judged dead: what this node should hold is pulled at
   * once; what it holds beyond that is trimmed once membership has held still (a second
   * pass then).
   */
  membershipChanged(): void {
    this.settle.reset();
    this.rescan();
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => this.rescan(), this.d.settleMs + 1000);
    this.settleTimer.unref();
  }

  private async scan(): Promise<void> {
    // Copies beyond the holders go only when the live nodes have not changed for settleMs.
    const trimming = this.settle.settled(this.d.liveNodes(), performance.now());
    const surplus: { bucket: string; rec: ObjectRecord }[] = [];
    for (const b of this.d.catalog.listBuckets()) {
      const pulls = this.d.copiesOf(b.pool) > 1;
      let after: { key: string; versionId?: string } | undefined;
      for (;;) {
        if (this.d.signal.aborted) return;
        const page = this.d.catalog.listVersions(b.name, '', 1000, after);
        for (const { record } of page.versions) {
          if (pulls) this.want(b.name, record);
          if (trimming && this.isSurplus(b.name, record)) surplus.push({ bucket: b.name, rec: record });
        }
        const last = page.versions[page.versions.length - 1];
        if (!page.truncated || !last) break;
        after = { key: last.key, versionId: last.record.versionId ?? 'null' };
        await new Promise((r) => setImmediate(r));
      }
    }
    for (const { bucket, rec } of surplus) await this.trim(bucket, rec);
  }

  /** A file here that this node is not a holder of (a node came back after its copies were made again, a copy source pulled). */
  private isSurplus(bucket: string, rec: ObjectRecord): boolean {
    const files = this.d.files();
    return (
      !!files && !rec.deleteMarker && !this.inflight.has(rec.fileId) && files.has(bucket, rec.fileId) && !this.holders(bucket, rec).includes(this.d.nodeId)
    );
  }

  /**
   * A surplus copy goes once every holder confirms it holds a good copy of the version
   * (each is asked to pull it if it has not, and to read its copy back against the ETag:
   * `objects.pull` with `verify`), and membership is still as it was. So the surplus copy
   * is never the last good one: a holder whose copy rotted mends it first, from this one.
   */
  private async trim(bucket: string, rec: ObjectRecord): Promise<void> {
    const holders = this.holders(bucket, rec);
    const answers = await Promise.allSettled(
      holders.map((n) => this.d.ask<{ held: boolean }>(n, OBJECT_PULL_SUBJECT, { bucket, fileId: rec.fileId, verify: true }, REPLICATE_MS)),
    );
    if (!answers.every((a) => a.status === 'fulfilled' && a.value.held)) return;
    if (!this.settle.settled(this.d.liveNodes(), performance.now()) || !this.isSurplus(bucket, rec)) return;
    await this.d.files()?.remove(bucket, rec.fileId);
    this.trimmed++;
    this.d.log.info({ bucket, fileId: rec.fileId, holders }, 'object copies: a surplus copy removed (its holders have it)');
  }

  private want(bucket: string, rec: ObjectRecord): void {
    const files = this.d.files();
    if (!files || rec.deleteMarker || files.has(bucket, rec.fileId)) return;
    // Being pulled, or waiting for its retry: that pull or retry will do.
    if (this.inflight.has(rec.fileId) || this.retryTimers.has(rec.fileId)) return;
    if (!this.holders(bucket, rec).includes(this.d.nodeId)) return;
    this.queue.set(rec.fileId, { bucket, rec });
    this.drain();
  }

  private drain(): void {
    while (this.active < PULLS_AT_ONCE && this.queue.size > 0 && !this.d.signal.aborted) {
      const [fileId, job] = this.queue.entries().next().value as [string, { bucket: string; rec: ObjectRecord }];
      this.queue.delete(fileId);
      this.active++;
      void this.fetch(job.bucket, job.rec)
        .then((ok) => {
          if (ok) {
            this.pulled++;
            this.retries.delete(fileId);
          } else this.retryLater(job.bucket, job.rec);
        })
        .finally(() => {
          this.active--;
          this.drain();
        });
    }
  }

  /**
   * A pull that found no node to give the file (peers not bound yet, the one that has it
   * restarting) is tried again after a growing delay, while this node should still hold it.
   */
  private retryLater(bucket: string, rec: ObjectRecord): void {
    this.failed++;
    const tries = (this.retries.get(rec.fileId) ?? 0) + 1;
    this.retries.set(rec.fileId, tries);
    if (tries === RETRY_WARN_AFTER) this.d.log.warn({ bucket, fileId: rec.fileId, tries }, 'object copies: no node gave this object file yet; still trying');
    if (this.retryTimers.has(rec.fileId) || this.d.signal.aborted) return;
    const timer = setTimeout(
      () => {
        this.retryTimers.delete(rec.fileId);
        if (this.d.catalog.holdsFile(rec.fileId)) this.want(bucket, rec);
        else this.retries.delete(rec.fileId);
      },
      Math.min(MAX_RETRY_MS, 1000 * 2 ** Math.min(tries, 6)),
    );
    timer.unref();
    this.retryTimers.set(rec.fileId, timer);
  }

  /** Live nodes to ask for a version's bytes: its writer first, then the others. */
  private sources(rec: ObjectRecord): string[] {
    const live = this.d.liveNodes().filter((n) => n !== this.d.nodeId);
    return [...new Set([...(rec.node && live.includes(rec.node) ? [rec.node] : []), ...live])];
  }

  /**
   * A peer's answer for an object's bytes, as a stream cut with an error when the peer
   * sends nothing for BODY_IDLE_MS, and `abort()` to let go of it (the socket with it)
   * when the caller gives up; null when that node does not answer with the file.
   */
  private async ask(node: string, bucket: string, fileId: string, range?: string): Promise<{ body: Readable; abort: () => void } | null> {
    const base = this.d.peerHttp(node);
    const token = this.d.token();
    if (!base || !token) return null;
    const cut = new AbortController();
    // The timeout is for the answer's head; the body then has the idle guard.
    const timer = setTimeout(() => cut.abort(new Error(`${node} did not answer in ${FETCH_TIMEOUT_MS} ms`)), FETCH_TIMEOUT_MS);
    let res: Response;
    try {
      res = await fetch(`${base}/api/cluster/objects/${encodeURIComponent(bucket)}/${encodeURIComponent(fileId)}`, {
        headers: { [CLUSTER_TOKEN_HEADER]: token, ...(range ? { range } : {}) },
        signal: cut.signal,
      });
    } catch {
      // Unreachable, or no answer in time: the next node is asked.
      return null;
    } finally {
      clearTimeout(timer);
    }
    if (!res.ok || !res.body) {
      // 404: not on that node (the next is asked); 401: that node has not bound the cluster token yet.
      await res.body?.cancel().catch(() => undefined);
      return null;
    }
    const idleMs = this.d.bodyIdleMs ?? BODY_IDLE_MS;
    let idle: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => cut.abort(new Error(`${node} sent nothing for ${idleMs} ms`)), idleMs);
      idle.unref();
    };
    const watched = new Transform({
      transform(chunk: Buffer, _enc, done) {
        arm();
        done(null, chunk);
      },
      flush(done) {
        clearTimeout(idle);
        done();
      },
    });
    arm();
    pipeline(Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), watched, () => clearTimeout(idle));
    return {
      body: watched,
      abort: () => {
        clearTimeout(idle);
        cut.abort(new Error('let go'));
        watched.destroy();
      },
    };
  }

  /**
   * Pulls a version's whole file here (a copy this node holds, or a copy source it needs);
   * true when it is here. The record gone meanwhile: the file pulled goes too.
   *
   * One pull per file at a time (they share its tmp file): a pull asked while one runs
   * shares it, except a repair (`replace`), which must write a good copy over a bad one:
   * it waits for a plain pull to end, then runs its own.
   */
  fetch(bucket: string, rec: ObjectRecord, replace = false): Promise<boolean> {
    const running = this.inflight.get(rec.fileId);
    if (running && (running.replace || !replace)) return running.pull;
    const after = running ? running.pull.catch(() => false) : Promise.resolve(false);
    const pull = after
      .then(() => this.pullOnce(bucket, rec, replace))
      .finally(() => {
        if (this.inflight.get(rec.fileId)?.pull === pull) this.inflight.delete(rec.fileId);
      });
    this.inflight.set(rec.fileId, { pull, replace });
    return pull;
  }

  /**
   * A copy here that the scrub found bad (no local copy matches its ETag): a good one is
   * pulled from another node and renamed over it; true when that was done. The bad file
   * stays until a good one replaces it.
   */
  repair(bucket: string, rec: ObjectRecord): Promise<boolean> {
    if (rec.etag.includes('-') && !rec.partSizes) return Promise.resolve(false); // nothing to tell a good copy by
    return this.fetch(bucket, rec, true);
  }

  private async pullOnce(bucket: string, rec: ObjectRecord, replace: boolean): Promise<boolean> {
    const files = this.d.files();
    if (!files) return false;
    if (!replace && files.has(bucket, rec.fileId)) return true;
    for (const node of this.sources(rec)) {
      const answer = await this.ask(node, bucket, rec.fileId);
      if (!answer) continue;
      try {
        await files.adopt(bucket, rec.fileId, async (handle) => {
          // A plain ETag, or a multipart one with its part sizes, checks the bytes pulled.
          const checkable = !rec.etag.includes('-') || rec.partSizes !== undefined;
          const etag = new EtagHasher(rec.partSizes);
          let at = 0;
          for await (const chunk of answer.body as AsyncIterable<Buffer>) {
            if (at < rec.size) etag.update(chunk.subarray(0, Math.max(0, rec.size - at)));
            at += chunk.length;
            await handle.write(chunk);
          }
          if (at < rec.size) throw new Error(`${node} sent ${at} bytes of ${rec.size}`);
          if (checkable && etag.digest() !== rec.etag) throw new Error(`the bytes ${node} sent do not match the ETag`);
        });
      } catch (err) {
        answer.abort();
        this.d.log.warn({ bucket, fileId: rec.fileId, from: node, err: (err as Error).message }, 'object copies: a pull failed; another holder is asked');
        continue;
      }
      if (!this.d.catalog.holdsFile(rec.fileId)) await files.remove(bucket, rec.fileId);
      return true;
    }
    return false;
  }

  /**
   * After this node committed a version it wrote: each other live holder is asked to pull
   * it now (`<prefix>.v1.node.<id>.objects.pull`), and this resolves when every one has it
   * or REPLICATE_MS passed. A holder that did not confirm gets it as any apply does (the
   * log, retries, rescans); the operation is answered either way.
   */
  async replicate(bucket: string, rec: ObjectRecord): Promise<void> {
    const others = this.holders(bucket, rec).filter((n) => n !== this.d.nodeId);
    if (others.length === 0) return;
    const results = await Promise.allSettled(
      others.map((n) => this.d.ask<{ held: boolean }>(n, OBJECT_PULL_SUBJECT, { bucket, fileId: rec.fileId }, REPLICATE_MS)),
    );
    const missing = others.filter((_, i) => {
      const r = results[i]!;
      return r.status === 'rejected' || !r.value.held;
    });
    if (missing.length > 0) {
      this.d.log.warn({ bucket, fileId: rec.fileId, holders: missing }, 'object copies: holders did not confirm a copy before the answer; it follows');
    }
  }

  /**
   * A writer asks this node to pull a version it just committed, or a node about to drop
   * a surplus copy asks whether this holder's is good (`verify`): once this node has
   * applied the log that far, the file is pulled (or found here) and, with `verify`, read
   * back against its ETag (a bad copy is mended first: from its backup, or another
   * node's). `{held}`: this node has the file (with `verify`: a good one).
   */
  async answerPull(body: unknown): Promise<{ held: boolean }> {
    const b = body as { bucket?: unknown; fileId?: unknown; verify?: unknown };
    if (typeof b.bucket !== 'string' || typeof b.fileId !== 'string' || !/^[0-9a-f]{24}$/.test(b.fileId)) {
      throw new RecorderError('VALIDATION_FAILED', 'objects.pull needs {bucket, fileId}');
    }
    await this.d.caughtUp();
    const found = this.d.catalog.versionOfFile(b.fileId);
    if (!found || found.bucket !== b.bucket) return { held: false };
    const { bucket, record } = found;
    if (!(await this.fetch(bucket, record))) return { held: false };
    if (b.verify !== true) return { held: true };
    const files = this.d.files();
    if (!files) return { held: false };
    const checked = await files.scrub(bucket, record.fileId, record.size, record.etag, () => this.d.catalog.holdsFile(record.fileId), record.partSizes);
    if (checked === 'ok' || checked === 'primary-repaired' || checked === 'backup-repaired') return { held: true };
    // Rotten here: a good copy from another node (the one asking has one) replaces it. Copies
    // that differ with no part sizes to tell the good one by, or the file gone: not confirmed.
    return { held: checked === 'corrupt' && (await this.repair(bucket, record)) };
  }

  /** Bytes [start, end] of a version from a node that holds it; null when none answers. */
  async read(bucket: string, rec: ObjectRecord, start: number, end: number): Promise<NodeJS.ReadableStream | null> {
    for (const node of this.sources(rec)) {
      const answer = await this.ask(node, bucket, rec.fileId, `bytes=${start}-${end}`);
      if (answer) return answer.body;
    }
    return null;
  }
}
