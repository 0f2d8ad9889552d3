/**
 * The cluster's object log (docs/design/buckets.md "In a cluster"): every change to the
 * S3 catalog (a bucket made, configured or removed; an object version put; a delete, a
 * delete marker, an ACL, a lifecycle expiry) is a message of one replicated JetStream
 * stream, `<prefix>-objects` (subjects `<prefix>.v1.objects.<bucket>`), and every node
 * applies the stream, in its order, to its own catalog (index/buckets.ts). JetStream
 * orders and replicates; nothing of ours decides which of two writes came first.
 *
 * Invariants:
 * - The same changes in the same order make the same catalog on every node: a change
 *   carries everything its effect depends on (a delete marker's id, the time a lifecycle
 *   judges by), and is decided against the catalog as it stands at that point of the log
 *   (a second CreateBucket of a name is refused on every node alike).
 * - A write is answered once this node has applied it: the operation reads its own
 *   effect (the version id, what it replaced), and any request on any node that starts
 *   after the answer waits (caughtUp) until that node has applied it too.
 * - Applying a change twice (a crash between applying and remembering the position) does
 *   nothing the second time: versions are known by their file ids.
 * - Object files follow the catalog: a change another node made that drops versions
 *   unlinks their files here (the node that made it unlinks its own, as on one node).
 *   A bucket's removal removes its folder and uploads on every node, the one that made
 *   it too, when applied: never after a later change that made the name again.
 *
 * The stream keeps every change (no age limit): a node that joins later, or was away,
 * applies the whole history from where it stopped.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { nanos, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { z } from 'zod';
import type { BucketRecord, BucketStore, CannedAcl, LifecycleRule, ObjectRecord, S3KeyRecord, UploadRecord, Written } from '../index/buckets.ts';
import { UnconfirmedChange, type CatalogWrites } from '../buckets/catalog-writes.ts';
import type { KeyWrites } from '../buckets/keys.ts';
import { S3Error } from '../buckets/s3-errors.ts';
import { JoiningBuckets } from './joining-buckets.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { Logger } from '../lib/log.ts';

const JS_TIMEOUT_MS = 4000;
/** How long a request waits for this node's catalog to reach the log's end before it is refused (503: S3 clients retry). */
const CAUGHT_UP_MS = 5000;
/** How long a write waits for its own change to come back applied. */
const APPLIED_MS = 15_000;
const PUBLISH_ATTEMPTS = 3;
/** How often the stream is checked for having been made anew (checkStream). */
const STREAM_CHECK_MS = 10_000;
/** The subject token of key changes (`<prefix>.v1.objects._keys`): a bucket name never starts with `_`. */
const KEYS_SUBJECT = '_keys';

/** One change of the catalog, as the log carries it. */
export type ObjectChange =
  | { op: 'createBucket'; rec: BucketRecord }
  /** `set`/`unset`: the fields this configuration changed (applied over the bucket as it then is); without them, the whole record (older nodes). */
  | { op: 'putBucket'; rec: BucketRecord; set?: Partial<BucketRecord>; unset?: (keyof BucketRecord)[] }
  | { op: 'removeBucket'; name: string }
  | { op: 'putObject'; bucket: string; key: string; rec: ObjectRecord; onlyIfAbsent?: boolean }
  | { op: 'deleteObject'; bucket: string; key: string; versionId?: string; nowMs: number; markerId: string; ifCurrent?: string }
  | { op: 'setObjectAcl'; bucket: string; key: string; fileId: string; acl: CannedAcl }
  | { op: 'expireNoncurrent'; bucket: string; key: string; rule: LifecycleRule; nowMs: number }
  | { op: 'putAccessKey'; rec: S3KeyRecord }
  | { op: 'removeAccessKey'; accessKeyId: string };

/**
 * What the log must carry for a change to be applied: every field a change's apply reads,
 * by type. Records keep their other fields as they are (the node that wrote them made
 * them from the same types). A message that is not this is skipped, logged once.
 */
const record = z.object({ fileId: z.string().min(1), size: z.number().int().nonnegative(), etag: z.string(), lastModifiedMs: z.number() }).passthrough();
const bucketRecord = z.object({ name: z.string().min(1), pool: z.string().min(1), createdMs: z.number(), acl: z.string(), owner: z.string() }).passthrough();
const where = { bucket: z.string().min(1), key: z.string().min(1) };
const changeSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('createBucket'), rec: bucketRecord }),
  z.object({
    op: z.literal('putBucket'),
    rec: bucketRecord,
    set: z.record(z.string(), z.unknown()).optional(),
    unset: z.array(z.string()).optional(),
  }),
  z.object({ op: z.literal('removeBucket'), name: z.string().min(1) }),
  z.object({ op: z.literal('putObject'), ...where, rec: record, onlyIfAbsent: z.boolean().optional() }),
  z.object({
    op: z.literal('deleteObject'),
    ...where,
    versionId: z.string().optional(),
    nowMs: z.number(),
    markerId: z.string().min(1),
    ifCurrent: z.string().min(1).optional(),
  }),
  z.object({ op: z.literal('setObjectAcl'), ...where, fileId: z.string().min(1), acl: z.string() }),
  z.object({ op: z.literal('expireNoncurrent'), ...where, rule: z.object({ prefix: z.string(), enabled: z.boolean() }).passthrough(), nowMs: z.number() }),
  z.object({
    op: z.literal('putAccessKey'),
    rec: z.object({ accessKeyId: z.string().min(1), user: z.string().min(1), secret: z.string().min(1), createdMs: z.number() }).passthrough(),
  }),
  z.object({ op: z.literal('removeAccessKey'), accessKeyId: z.string().min(1) }),
]);

/** Fields a bucket's configuration never removes. */
const BUCKET_IDENTITY = new Set<string>(['name', 'pool', 'createdMs', 'acl', 'owner']);

/** The envelope: who made the change, and its id (the publish's dedupe id too). */
const envelopeSchema = z.object({ origin: z.string().min(1), id: z.string().min(1), change: changeSchema });

/** What applying a change here did, for the node that made it and for the copies. */
export interface Applied {
  change: ObjectChange;
  origin: string;
  result: unknown;
}

export interface ObjectLogDeps {
  nodeId: string;
  prefix: string;
  replicas: number;
  catalog: BucketStore;
  log: Logger;
  signal: AbortSignal;
  /** Object files of this node: those a change from another node dropped are unlinked. Null while the S3 listener is not up. */
  files: () => {
    remove(bucket: string, fileId: string): Promise<void>;
    removeUploadFiles(uploadId: string): Promise<void>;
    removeBucketDir(bucket: string): Promise<void>;
  } | null;
  /** After each change is applied here (the copies pull what this node should hold). */
  applied?: (a: Applied) => void;
  /** `object-log-reset`: the stream was made anew, or lost changes not applied here. */
  raiseAlarm?: (alarm: AlarmInput) => void;
}

export class ObjectLog implements CatalogWrites, KeyWrites {
  readonly stream: string;
  private nc: NatsConnection | null = null;
  private js: JetStreamClient | null = null;
  private jsm: JetStreamManager | null = null;
  private ready: Promise<void> | null = null;
  private appliedSeq: number;
  private readonly waiting = new Map<string, (result: unknown) => void>();
  private readonly seqWaiters = new Set<{ seq: number; resolve: () => void }>();
  private running: Promise<void> | null = null;
  private messages: { close(): Promise<void | Error> } | null = null;
  /** The read of the stream's last sequence in flight, and the one queued behind it (lastSeqSinceNow). */
  private seqRead: Promise<number> | null = null;
  private nextSeqRead: Promise<number> | null = null;
  /** Buckets this node had before it joined, being given to the cluster. */
  private readonly joining: JoiningBuckets;

  constructor(private readonly d: ObjectLogDeps) {
    this.stream = `${d.prefix}-objects`;
    this.appliedSeq = d.catalog.logSeq();
    this.joining = new JoiningBuckets({
      nodeId: d.nodeId,
      catalog: d.catalog,
      log: d.log,
      signal: d.signal,
      ...(d.raiseAlarm ? { raiseAlarm: d.raiseAlarm } : {}),
    });
    // One listener for the node's life, not one per consumer made.
    d.signal.addEventListener('abort', () => void this.messages?.close(), { once: true });
  }

  /** Binds the stream and starts applying it from where this node stopped. */
  start(nc: NatsConnection): void {
    this.nc = nc;
    this.running = this.run();
    // The consumer alone never notices its stream made anew (it waits past the old end):
    // the stream is looked at this often besides each read barrier (readLastSeq).
    const watch = setInterval(
      () =>
        void this.lastSeqSinceNow().catch(() => {
          this.ready = null; // bound again at the next use
        }),
      STREAM_CHECK_MS,
    );
    watch.unref();
    this.d.signal.addEventListener('abort', () => clearInterval(watch), { once: true });
  }

  async stop(): Promise<void> {
    await this.running?.catch(() => undefined);
  }

  /** The log's position applied here. */
  get position(): number {
    return this.appliedSeq;
  }

  private async bind(): Promise<void> {
    const nc = this.nc!;
    this.jsm = await nc.jetstreamManager({ timeout: JS_TIMEOUT_MS });
    this.js = nc.jetstream({ timeout: JS_TIMEOUT_MS });
    const info = await this.jsm.streams.info(this.stream).catch(() =>
      this.jsm!.streams.add({
        name: this.stream,
        subjects: [`${this.d.prefix}.v1.objects.>`],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        num_replicas: this.d.replicas,
        duplicate_window: nanos(120_000),
      }),
    );
    await this.checkStream(info.created, info.state.first_seq, info.state.last_seq);
  }

  /**
   * The stream is the one this node applied, and still holds every change not applied
   * here. A stream removed and made again (by hand, or its servers' store lost) starts its
   * sequence anew: positions in the old one mean nothing in it, and a node that kept its
   * position would skip the new stream's first changes without a word. Then this node
   * applies the new stream from its start, over the catalog it has (every node that had
   * caught up has the same one, so they stay alike), and `object-log-reset` says that
   * changes made between the old stream's end and the new one's start may be lost.
   * Changes removed from the stream before this node applied them (it was away longer
   * than a limit someone set) raise the alarm too, and it goes on from the first held.
   */
  private async checkStream(created: string, firstSeq: number, lastSeq: number): Promise<void> {
    const cat = this.d.catalog;
    const known = cat.logStream();
    const replaced = known !== null ? known !== created : lastSeq < this.appliedSeq;
    const cutShort = !replaced && firstSeq > this.appliedSeq + 1;
    if (replaced || cutShort) {
      const from = replaced ? 0 : firstSeq - 1;
      const details = { stream: this.stream, position: this.appliedSeq, firstSeq, lastSeq, created, was: known };
      this.d.log.error(
        details,
        replaced ? 'object log: its stream was made anew; applied from its start' : 'object log: changes this node had not applied are no longer in the stream',
      );
      this.d.raiseAlarm?.({
        kind: 'object-log-reset',
        message: replaced
          ? `the S3 object log's stream ${this.stream} was made anew (this node had applied up to ${this.appliedSeq}): it applies the new one from its start; S3 changes made in between may be missing`
          : `the S3 object log no longer holds changes ${this.appliedSeq + 1}-${firstSeq - 1} this node had not applied: those S3 changes are missing here`,
        details,
      });
      this.appliedSeq = from;
      // A consumer still reading (bound by a write's publish, not by run()) starts again from there.
      void this.messages?.close();
    }
    // A node that never applied a log: its own buckets are given to the cluster.
    if (known === null && this.appliedSeq === 0) await this.joining.joined();
    if (replaced || cutShort || known !== created) await cat.setLogStream(created, this.appliedSeq);
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.d.signal.aborted) {
      try {
        this.ready ??= this.bind();
        await this.ready;
        // Published while the consumer below applies (each waits for its own change).
        void this.joining.give(this);
        const consumer = await this.js!.consumers.get(this.stream, { opt_start_seq: this.appliedSeq + 1 });
        const messages = await consumer.consume({ max_messages: 256 });
        this.messages = messages;
        try {
          for await (const m of messages) {
            if (m.seq <= this.appliedSeq) continue;
            await this.applyMessage(m.seq, m.data);
            failures = 0;
          }
        } finally {
          this.messages = null;
        }
        // The consumer ended without a stop (its server went away): made again after a breath.
        if (!this.d.signal.aborted) await new Promise((r) => setTimeout(r, 250));
      } catch (err) {
        this.ready = null;
        if (this.d.signal.aborted) return;
        // Again from the first change not applied, after 1 s, 2 s, … up to 30 s while it keeps failing.
        const delayMs = Math.min(30_000, 1000 * 2 ** Math.min(failures++, 5));
        this.d.log.warn(
          { err: (err as Error).message, position: this.appliedSeq, delayMs },
          'object log: reading or applying the stream failed; again shortly',
        );
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }

  private async applyMessage(seq: number, data: Uint8Array): Promise<void> {
    let env: { origin: string; id: string; change: ObjectChange } | null = null;
    try {
      const parsed = envelopeSchema.safeParse(JSON.parse(new TextDecoder().decode(data)));
      if (parsed.success) env = parsed.data as unknown as { origin: string; id: string; change: ObjectChange };
    } catch {
      env = null;
    }
    let answer: (() => void) | null = null;
    if (!env) {
      // Not ours (a hand-published message): skipped, once, and the log goes on.
      this.d.log.error({ seq, stream: this.stream }, 'object log: a message that is not a catalog change was skipped');
    } else {
      const { id, origin, change } = env;
      // An apply that fails (the disk full, the index unwritable) is tried again from this
      // message until it succeeds: skipping it would leave this node's catalog different.
      const result = await this.apply(change, origin === this.d.nodeId);
      this.d.applied?.({ change, origin, result });
      if (origin === this.d.nodeId) answer = () => this.waiting.get(id)?.(result);
    }
    await this.d.catalog.setLogSeq(seq);
    this.appliedSeq = seq;
    // Answered once the position is kept: the operation's answer implies this node is at least here.
    answer?.();
    for (const w of this.seqWaiters) if (w.seq <= seq) w.resolve();
  }

  /** One change against this node's catalog; files it drops are unlinked here unless this node made it (its operation does). */
  private async apply(c: ObjectChange, mine: boolean): Promise<unknown> {
    const cat = this.d.catalog;
    const files = mine ? null : this.d.files();
    const unlink = async (bucket: string, ids: readonly string[]): Promise<void> => {
      for (const id of ids)
        await files
          ?.remove(bucket, id)
          .catch((err: unknown) => this.d.log.warn({ bucket, id, err: (err as Error).message }, 'object log: unlinking a dropped version failed'));
    };
    switch (c.op) {
      case 'createBucket':
        if (this.joining.deciding(c.rec.name)) return this.joining.claimApplied(c.rec.name, mine);
        return cat.createBucket(c.rec);
      case 'putBucket': {
        // A configuration read before a concurrent DeleteBucket does not bring the bucket back.
        const cur = cat.bucket(c.rec.name);
        if (!cur) return undefined;
        if (c.set === undefined && c.unset === undefined) {
          await cat.putBucket(c.rec);
          return undefined;
        }
        const next: BucketRecord = { ...cur, ...c.set, name: cur.name };
        for (const f of c.unset ?? []) if (!BUCKET_IDENTITY.has(f)) delete next[f];
        await cat.putBucket(next);
        return undefined;
      }
      case 'removeBucket': {
        const removed = await cat.removeBucket(c.name);
        // Here on every node, the one that made it too, at this point of the log: a bucket
        // of the same name created after it never loses its files to this removal.
        const dirs = this.d.files();
        if (removed && dirs) {
          for (const id of removed.uploads) await dirs.removeUploadFiles(id).catch(() => undefined);
          await dirs.removeBucketDir(c.name).catch(() => undefined);
        }
        return removed;
      }
      case 'putObject': {
        if (cat.hasVersion(c.bucket, c.key, c.rec.fileId)) return { unlink: [] } satisfies Written;
        const out = await cat.putObject(c.bucket, c.key, c.rec, c.onlyIfAbsent ? { onlyIfAbsent: true } : {});
        if (typeof out === 'object') await unlink(c.bucket, out.unlink);
        return out;
      }
      case 'deleteObject': {
        if (c.versionId === undefined && cat.hasVersion(c.bucket, c.key, c.markerId)) return { unlink: [] } satisfies Written;
        const out = await cat.deleteObject(c.bucket, c.key, c.versionId, c.nowMs, {
          markerId: c.markerId,
          ...(c.ifCurrent !== undefined ? { ifCurrent: c.ifCurrent } : {}),
        });
        await unlink(c.bucket, out.unlink);
        return out;
      }
      case 'setObjectAcl':
        return cat.setObjectAcl(c.bucket, c.key, c.fileId, c.acl);
      case 'expireNoncurrent': {
        const gone = await cat.expireNoncurrent(c.bucket, c.key, c.rule, c.nowMs);
        await unlink(c.bucket, gone);
        return gone;
      }
      case 'putAccessKey':
        await cat.putAccessKey(c.rec);
        return undefined;
      case 'removeAccessKey':
        return cat.removeAccessKey(c.accessKeyId);
    }
  }

  /**
   * Publishes a change and resolves with what applying it did here. A publish that timed
   * out is sent again with the same id (JetStream keeps one of the two); one that still
   * fails is ServiceUnavailable (503), and the change may yet apply.
   */
  private async submit(bucket: string, change: ObjectChange): Promise<unknown> {
    if (!this.nc) throw new S3Error('ServiceUnavailable', 'The cluster is not connected yet; try again');
    const id = randomUUID();
    const applied = new Promise<unknown>((resolve) => this.waiting.set(id, resolve));
    try {
      let lastErr: unknown;
      let published = false;
      for (let attempt = 0; attempt < PUBLISH_ATTEMPTS && !published; attempt++) {
        try {
          this.ready ??= this.bind();
          await this.ready;
          const payload = JSON.stringify({ origin: this.d.nodeId, id, change });
          await this.js!.publish(`${this.d.prefix}.v1.objects.${bucket}`, payload, { msgID: id, timeout: JS_TIMEOUT_MS });
          published = true;
        } catch (err) {
          lastErr = err;
          this.ready = null;
        }
      }
      if (!published) {
        this.d.log.warn({ bucket, op: change.op, err: (lastErr as Error | undefined)?.message }, 'object log: a change could not be published');
        throw new UnconfirmedChange('The cluster did not confirm the change (it may still apply); try again');
      }
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new UnconfirmedChange('The change was stored but not yet applied on this node; try again')), APPLIED_MS);
      });
      try {
        return await Promise.race([applied, late]);
      } finally {
        clearTimeout(timer);
      }
    } finally {
      this.waiting.delete(id);
    }
  }

  /** Resolves once every change the stream held when called is applied here; ServiceUnavailable when the stream cannot say. */
  async caughtUp(): Promise<void> {
    let last: number;
    try {
      last = await this.lastSeqSinceNow();
    } catch (err) {
      this.ready = null;
      throw new S3Error('ServiceUnavailable', `The cluster's object log cannot be read (${(err as Error).message}); try again`);
    }
    if (this.appliedSeq >= last) return;
    let waiter: { seq: number; resolve: () => void } | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        new Promise<void>((resolve) => {
          waiter = { seq: last, resolve };
          this.seqWaiters.add(waiter);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new S3Error('ServiceUnavailable', "This node is still applying the cluster's object log; try again")), CAUGHT_UP_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (waiter) this.seqWaiters.delete(waiter);
    }
  }

  /**
   * The stream's last sequence, read by a request to its leader that started after this
   * call: a write acknowledged before the call is in it. Concurrent callers share reads:
   * one in flight, and at most one waiting to start when it ends, for everyone who came
   * after the first one started. A burst of requests costs two reads, not one each.
   */
  private lastSeqSinceNow(): Promise<number> {
    if (!this.seqRead) return (this.seqRead = this.readLastSeq());
    this.nextSeqRead ??= this.seqRead
      .catch(() => 0)
      .then(() => {
        this.nextSeqRead = null;
        return (this.seqRead = this.readLastSeq());
      });
    return this.nextSeqRead;
  }

  private readLastSeq(): Promise<number> {
    const read: Promise<number> = (async () => {
      this.ready ??= this.bind();
      await this.ready;
      const info = await this.jsm!.streams.info(this.stream);
      const known = this.d.catalog.logStream();
      if (known !== null && known !== info.created) {
        // Made anew since it was bound: bound again (checkStream) and consumed from there.
        this.ready = null;
        void this.messages?.close();
      }
      return info.state.last_seq;
    })().finally(() => {
      if (this.seqRead === read) this.seqRead = null;
    });
    return read;
  }

  // ---- CatalogWrites: each a change of the log ---------------------------------

  async createBucket(rec: BucketRecord): Promise<boolean> {
    return (await this.submit(rec.name, { op: 'createBucket', rec })) === true;
  }

  /**
   * Only the fields that differ from the bucket here are the change: two configurations
   * made at once through two nodes (versioning through one, a lifecycle through another)
   * both hold, whichever comes first in the log.
   */
  async putBucket(rec: BucketRecord): Promise<void> {
    const cur = this.d.catalog.bucket(rec.name);
    const set: Record<string, unknown> = {};
    const unset: (keyof BucketRecord)[] = [];
    const fields = new Set([...Object.keys(cur ?? {}), ...Object.keys(rec)] as (keyof BucketRecord)[]);
    for (const f of fields) {
      if (f === 'name' || JSON.stringify(cur?.[f]) === JSON.stringify(rec[f])) continue;
      if (rec[f] === undefined) unset.push(f);
      else set[f] = rec[f];
    }
    await this.submit(rec.name, { op: 'putBucket', rec, set, unset });
  }

  async removeBucket(name: string): Promise<false | { uploads: string[] }> {
    return (await this.submit(name, { op: 'removeBucket', name })) as false | { uploads: string[] };
  }

  async putObject(bucket: string, key: string, rec: ObjectRecord, opts: { onlyIfAbsent?: boolean } = {}): Promise<Written | 'exists' | 'no-bucket'> {
    const change: ObjectChange = { op: 'putObject', bucket, key, rec, ...(opts.onlyIfAbsent ? { onlyIfAbsent: true } : {}) };
    return (await this.submit(bucket, change)) as Written | 'exists' | 'no-bucket';
  }

  async deleteObject(
    bucket: string,
    key: string,
    versionId: string | undefined,
    nowMs: number,
    opts: { ifCurrent?: string } = {},
  ): Promise<Written & { deleteMarker?: boolean }> {
    const markerId = `${nowMs.toString(16).padStart(12, '0')}${randomBytes(6).toString('hex')}`;
    const change: ObjectChange = {
      op: 'deleteObject',
      bucket,
      key,
      nowMs,
      markerId,
      ...(versionId !== undefined ? { versionId } : {}),
      ...(opts.ifCurrent !== undefined ? { ifCurrent: opts.ifCurrent } : {}),
    };
    return (await this.submit(bucket, change)) as Written & { deleteMarker?: boolean };
  }

  async setObjectAcl(bucket: string, key: string, fileId: string, acl: CannedAcl): Promise<boolean> {
    return (await this.submit(bucket, { op: 'setObjectAcl', bucket, key, fileId, acl })) === true;
  }

  async expireNoncurrent(bucket: string, key: string, rule: LifecycleRule, nowMs: number): Promise<string[]> {
    // Asked for every key a lifecycle pass walks: only a key with something to expire is a change.
    if (this.d.catalog.expiredNoncurrent(bucket, key, rule, nowMs).length === 0) return [];
    return (await this.submit(bucket, { op: 'expireNoncurrent', bucket, key, rule, nowMs })) as string[];
  }

  /** Users' S3 keys (buckets/keys.ts), sealed under the cluster's key: on the log's own subject, which no bucket name can take. */
  async putAccessKey(rec: S3KeyRecord): Promise<void> {
    await this.submit(KEYS_SUBJECT, { op: 'putAccessKey', rec });
  }

  async removeAccessKey(accessKeyId: string): Promise<boolean> {
    return (await this.submit(KEYS_SUBJECT, { op: 'removeAccessKey', accessKeyId })) === true;
  }

  /**
   * A multipart upload is this node's own: its record and parts stay here. Completing it
   * puts the assembled object through the log, then drops the upload here.
   */
  async completeUpload(up: UploadRecord, rec: ObjectRecord): Promise<Written | 'no-upload' | 'no-bucket'> {
    if (!this.d.catalog.upload(up.bucket, up.key, up.uploadId)) return 'no-upload';
    const out = await this.putObject(up.bucket, up.key, rec);
    if (out === 'exists') return { unlink: [] };
    await this.d.catalog.removeUpload(up);
    return out;
  }
}
