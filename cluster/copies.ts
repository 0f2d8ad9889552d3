/**
 * Redundant copies of closed segments on other nodes (docs/design/cluster.md
 * "Redundant copies"; a pool's `copies`, 1 to 3).
 *
 * Announce, then pull:
 * - The node that closes a segment of a pool with `copies` > 1 publishes an
 *   announcement on the replicated JetStream stream `<prefix>-copies`: the segment, its
 *   source (this node) and the nodes that should hold it (cluster/copy-plan.ts, over
 *   the nodes alive now).
 * - Every node reads the stream through its own durable consumer (`copy-<node>`), so
 *   an announcement made while it was down waits for it. A node named among the
 *   holders that lacks the segment pulls it from the source over HTTP: the record
 *   (`GET /api/cluster/segments/:camera/:startMs`), then the bytes
 *   (`…/file`, resumed with a Range from what a `.pull` temp file already has), checks
 *   the length, fdatasyncs, renames into place, fsyncs the directory, and only then
 *   indexes the record (invariant: an index entry points at synced bytes) and joins
 *   the camera's holders catalog, so search and media find it.
 * - A node judged dead: each survivor announces again every segment it holds that the
 *   dead node was a holder of, naming the holders among the nodes still alive; the
 *   next node in the ranking pulls it (the copy re-made). Several survivors may
 *   announce one segment: a node that has it already acknowledges and does nothing.
 *
 * Failures wait and retry: an announcement that cannot be published (no JetStream
 * quorum) is kept and published again; a pull whose source does not answer is
 * redelivered later with a growing delay (the source may come back); a segment the
 * source no longer has (retention) is dropped. Copies are ordinary segments of the
 * pool on the node that holds them: retention, locks and thinning apply to each.
 *
 * Peers authenticate with the cluster's token (`<prefix>-cluster` KV key `token`,
 * made by the first node with a create and read by the others), sent as
 * `X-Recorder-Cluster-Token`.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { JSONCodec, type JsMsg, type KV, type NatsConnection } from 'nats';
import { z } from 'zod';
import type { RecorderIndex } from '../index/db.ts';
import type { SegmentRecord } from '../index/records.ts';
import { RecorderError } from '../lib/errors.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { Logger } from '../lib/log.ts';
import { parseSegmentRelPath, segmentRelPath } from '../storage/layout.ts';
import { fsyncDir } from '../storage/segment-file.ts';
import { secretEquals } from '../security/passwords.ts';
import { AnnouncementStream, durableName, JS_TIMEOUT_MS } from './announcement-stream.ts';
import { copyHolders, heldByDead, segmentKey } from './copy-plan.ts';
import { CopyTrimmer, type KeepReply, type KeepRequest } from './copy-trim.ts';

/** The header a peer's pull carries (its value: the cluster token). */
export const CLUSTER_TOKEN_HEADER = 'x-recorder-cluster-token';

/** The header a backup cluster's pull carries: the grant for that one segment (`backupGrant`). */
export const BACKUP_GRANT_HEADER = 'x-recorder-backup-grant';

/**
 * What lets a node of another cluster read one segment of this one (cluster/backup-sender.ts):
 * an HMAC of the segment's camera and start under this cluster's token. It opens that
 * segment's record and bytes and nothing else; the token itself never leaves the cluster.
 */
export function backupGrant(clusterToken: string, camera: string, startMs: number): string {
  return createHmac('sha256', clusterToken).update(`backup:${camera}/${startMs}`).digest('hex');
}

/**
 * What lets a node of another cluster read one picture pack of this one
 * (cluster/picture-backup.ts): an HMAC of the pack's origin node and id under this
 * cluster's token, in its own namespace (`picpack:`), so it never opens a segment, another
 * pack, or any other peer route; the token itself never leaves the cluster.
 */
export function picturePackGrant(clusterToken: string, origin: string, pack: number): string {
  return createHmac('sha256', clusterToken).update(`picpack:${origin}/${pack}`).digest('hex');
}

/**
 * Whether a pull of picture pack `origin/pack` may be answered (`GET
 * /api/cluster/picture-packs/:origin/:pack`): a peer shows this cluster's token, a backup
 * cluster's node the grant for that one pack. Null `token`: not in a cluster, nothing is.
 */
export function picturePackAllowed(token: string | null, given: unknown, grant: unknown, origin: string, pack: number): boolean {
  if (token === null) return false;
  if (typeof given === 'string' && secretEquals(given, token)) return true;
  return typeof grant === 'string' && secretEquals(grant, picturePackGrant(token, origin, pack));
}

/** A returning node is announced again what closed from this long before it was judged dead on (peerJoined). */
export const RETURN_MARGIN_MS = 10 * 60_000;
/** How long a source may take to send a segment's record. */
const RECORD_TIMEOUT_MS = 15_000;
/** Announcements kept for a publish that failed (quorum lost), tried again each round. */
const MAX_UNPUBLISHED = 100_000;

/** What the stream carries: one closed segment and where it should be. */
export interface CopyAnnouncement {
  camera: string;
  startMs: number;
  bytes: number;
  pool: string;
  /** A node that holds the segment: the one to pull from. */
  source: string;
  /** The nodes that should hold it (cluster/copy-plan.ts), the source among them when alive. */
  holders: string[];
  /**
   * A backup from another cluster (cluster/backup-sender.ts): where its source answers
   * and the grant for this segment. `holders` is then empty: the nodes of this cluster
   * choose among themselves (the pool's `copies` of them), and `pool` is this cluster's.
   */
  origin?: { node: string; http: string; grant: string };
}

/**
 * Every field of a copy announcement, checked where it is consumed: a malformed one (a
 * field missing or of the wrong type) is terminated and logged once
 * (cluster/announcement-stream.ts), never redelivered.
 */
export const copyAnnouncementSchema: z.ZodType<CopyAnnouncement> = z.object({
  camera: z.string().min(1),
  startMs: z.number().int(),
  bytes: z.number().int().nonnegative(),
  pool: z.string().min(1),
  source: z.string().min(1),
  holders: z.array(z.string()),
  origin: z.object({ node: z.string(), http: z.string(), grant: z.string() }).optional(),
});

/** A segment record as it travels between nodes (the GOP table in base64). */
export type SegmentRecordWire = Omit<SegmentRecord, 'gops'> & { gops: string };

export function recordToWire(seg: SegmentRecord): SegmentRecordWire {
  return { ...seg, gops: Buffer.from(seg.gops).toString('base64') };
}

export function recordFromWire(w: SegmentRecordWire): SegmentRecord {
  return { ...w, gops: new Uint8Array(Buffer.from(w.gops, 'base64')) };
}

export interface CopyDeps {
  nodeId: string;
  prefix: string;
  replicas: number;
  index: RecorderIndex;
  dataDir: string;
  log: Logger;
  signal: AbortSignal;
  /** The nodes alive by this node's count, itself included (cluster/liveness.ts). */
  liveNodes: () => string[];
  /** A peer's HTTP base URL (null: not known). */
  peerHttp: (node: string) => string | null;
  /** Joins the camera's holders catalog (search and media then ask this node too). */
  catalog: (camera: string) => void;
  /** A copy is indexed: retention, backup and sample tables see it as any closed segment. */
  copied: (seg: SegmentRecord) => void;
  /** `copies-behind`: a pull still failing after a few deliveries (cluster/announcement-stream.ts). */
  raiseAlarm?: (alarm: AlarmInput) => void;
  /**
   * Trimming surplus copies after a join or a return (cluster/copy-trim.ts): how to ask a
   * peer, how to delete (the storage supervisor), how long membership must hold still.
   * Without it, surplus copies stay until retention removes them.
   */
  trim?: {
    ask: (node: string, what: string, body: KeepRequest) => Promise<KeepReply>;
    drop: (segs: SegmentRecord[], stillSurplus: (fresh: SegmentRecord) => boolean) => Promise<number>;
    settleMs: number;
  };
}

/** What the node's copy work shows (`GET /api/cluster/nodes`, this node's entry). */
export interface CopyStatus {
  /** Announcements not yet handled by this node's consumer (null: not known yet). */
  pending: number | null;
  /** Announcements this node could not publish yet (no quorum). */
  unpublished: number;
  copied: number;
  copiedBytes: number;
  failed: number;
  lastError: string | null;
  /** Surplus copies this node deleted since it started (cluster/copy-trim.ts). */
  trimmed: number;
}

const json = JSONCodec();

export class CopyService {
  private token: string | null = null;
  private readonly stats = { copied: 0, copiedBytes: 0 };
  private readonly pulling = new Map<string, Promise<SegmentRecord | null>>();
  private readonly stop = new AbortController();
  /** The copy stream `<prefix>-copies` and this node's durable consumer `copy-<node>`. */
  private readonly stream: AnnouncementStream<CopyAnnouncement>;
  private readonly trimmer: CopyTrimmer | null;

  constructor(private readonly d: CopyDeps) {
    d.signal.addEventListener('abort', () => this.stop.abort(), { once: true });
    this.stream = new AnnouncementStream<CopyAnnouncement>({
      what: 'copies',
      stream: `${d.prefix}-copies`,
      subjects: `${d.prefix}.copies.>`,
      durable: durableName('copy', d.nodeId),
      replicas: d.replicas,
      maxUnpublished: MAX_UNPUBLISHED,
      subject: (a) => `${d.prefix}.copies.${a.camera}`,
      id: (a) => segmentKey(a.camera, a.startMs),
      describe: (a) => ({ camera: a.camera, startMs: a.startMs }),
      schema: copyAnnouncementSchema,
      malformed: 'not an announcement',
      batch: { max: 16, expiresMs: 2000 },
      roundFailureLevel: 'warn',
      // The token peers show to read this node's segments, bound with the stream.
      onBind: async (nc) => {
        const kv = await nc.jetstream({ timeout: JS_TIMEOUT_MS }).views.kv(`${d.prefix}-cluster`, { replicas: d.replicas, history: 1, timeout: JS_TIMEOUT_MS });
        this.token = await clusterToken(kv);
      },
      beforeFetch: () => this.stream.republish(),
      handle: (a, m) => this.handle(a, m),
      behindAlarm: (a, tries, err, pending) => ({
        kind: 'copies-behind',
        camera: a.camera,
        pool: a.pool,
        message: `copies fall behind: ${a.camera}/${a.startMs} could not be pulled from ${a.source} in ${tries} tries (${err.message}); retrying`,
        details: { source: a.source, startMs: a.startMs, pending },
      }),
      log: d.log,
      raiseAlarm: d.raiseAlarm,
      signal: this.stop.signal,
    });
    this.trimmer = d.trim
      ? new CopyTrimmer({
          nodeId: d.nodeId,
          index: d.index,
          log: d.log,
          signal: this.stop.signal,
          settleMs: d.trim.settleMs,
          liveNodes: d.liveNodes,
          segments: () => this.closedCopySegments(),
          pulling: (camera, startMs) => this.pulling.has(segmentKey(camera, startMs)),
          ask: d.trim.ask,
          drop: d.trim.drop,
        })
      : null;
  }

  /** Starts binding the stream, the token and the consumer, then the pull loop (in the background). */
  start(nc: NatsConnection): void {
    this.stream.start(nc);
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.stream.stopped();
  }

  /** The cluster token peers must show to read this node's segments (null: not bound yet). */
  clusterToken(): string | null {
    return this.token;
  }

  status(): CopyStatus {
    return {
      pending: this.stream.pending,
      unpublished: this.stream.unpublishedCount,
      ...this.stats,
      ...this.stream.failures,
      trimmed: this.trimmer?.trimmed() ?? 0,
    };
  }

  /** A peer about to delete its surplus copies asks whether this node keeps them (`<prefix>.v1.node.<id>.copies.keep`). */
  answerKeep(body: unknown): KeepReply {
    if (!this.trimmer) throw new RecorderError('CLUSTER_UNAVAILABLE', 'this node does not trim copies');
    return this.trimmer.answerKeep(body);
  }

  /** A segment closed on this node: announce it when its pool wants copies elsewhere. */
  announce(seg: SegmentRecord): void {
    if (seg.open) return;
    const copies = this.copiesOf(seg.pool);
    if (copies <= 1) return;
    const key = segmentKey(seg.camera, seg.startMs);
    const a: CopyAnnouncement = {
      camera: seg.camera,
      startMs: seg.startMs,
      bytes: seg.bytes,
      pool: seg.pool,
      source: this.d.nodeId,
      holders: copyHolders(key, this.d.nodeId, this.d.liveNodes(), copies),
    };
    void this.stream.publish(a);
  }

  /**
   * `dead` was judged dead: announce again the segments held here that it was a holder
   * of, with their holders among the nodes alive now (the copy re-made elsewhere).
   */
  async peerDied(dead: string): Promise<number> {
    // No surplus copy goes while the re-make runs: membership must settle again first.
    this.trimmer?.membershipChanged();
    const live = this.d.liveNodes().filter((n) => n !== dead);
    let announced = 0;
    for (const { seg, copies } of this.closedCopySegments()) {
      const key = segmentKey(seg.camera, seg.startMs);
      const writer = seg.fence?.node ?? null;
      if (!heldByDead(key, writer, live, dead, copies)) continue;
      await this.stream.publish({
        camera: seg.camera,
        startMs: seg.startMs,
        bytes: seg.bytes,
        pool: seg.pool,
        source: this.d.nodeId,
        holders: copyHolders(key, writer, live, copies),
      });
      announced++;
    }
    if (announced > 0) this.d.log.info({ dead, announced }, 'copies: segments the dead node held announced again (re-made elsewhere)');
    return announced;
  }

  /**
   * `joined` joined the cluster, or came back after it was judged dead: announce the
   * segments this node wrote whose holders, over the nodes alive now, include it (a new
   * node takes its share of the copies of video recorded before it came). Only writers
   * announce, so each segment is announced once; `joined` acknowledges what it has.
   *
   * A node that comes back (`awaySinceMs`: when it was judged dead) was a holder in the
   * announcements made while it lived: it has those copies, or its durable consumer still
   * holds the announcements it had not handled. What closed while it was judged dead was
   * announced without it: only the segments that closed since shortly before its death
   * (RETURN_MARGIN_MS: it died up to K ticks before it was judged dead, and pulls were in
   * flight) are announced again, not the whole history. The walk stops if it is judged
   * dead again meanwhile.
   */
  async peerJoined(joined: string, awaySinceMs: number | null = null): Promise<number> {
    const live = [...new Set([...this.d.liveNodes(), joined])];
    const since = awaySinceMs === null ? -Infinity : awaySinceMs - RETURN_MARGIN_MS;
    let announced = 0;
    let walked = 0;
    for (const { seg, copies } of this.closedCopySegments()) {
      if (++walked % 100 === 0 && !this.d.liveNodes().includes(joined)) break;
      if (seg.fence?.node !== this.d.nodeId || seg.endMs < since) continue;
      const holders = copyHolders(segmentKey(seg.camera, seg.startMs), this.d.nodeId, live, copies);
      if (!holders.includes(joined)) continue;
      await this.stream.publish({ camera: seg.camera, startMs: seg.startMs, bytes: seg.bytes, pool: seg.pool, source: this.d.nodeId, holders });
      announced++;
    }
    if (announced > 0) this.d.log.info({ joined, announced }, 'copies: segments the node that joined should hold announced to it');
    // Copies this node held before `joined` ranked above it go once their holders confirm (in the background).
    this.trimmer?.schedule();
    return announced;
  }

  /**
   * Every closed segment held here of a pool with more than one copy, with that number;
   * read in batches (segments.all), so the caller may await between them. Ends when the
   * service stops.
   */
  private *closedCopySegments(): Generator<{ seg: SegmentRecord; copies: number }> {
    for (const pool of this.d.index.pools.list()) {
      const copies = pool.copies ?? 1;
      if (copies <= 1) continue;
      for (const camera of this.d.index.segments.poolCameras(pool.id)) {
        for (const seg of this.d.index.segments.all(camera)) {
          if (this.stop.signal.aborted) return;
          if (seg.pool === pool.id && !seg.open) yield { seg, copies };
        }
      }
    }
  }

  /**
   * Why a backup from another cluster is not taken here (null: it is): its pool must say
   * `receivesBackups`, and its camera must not be one of this cluster's own (a backup
   * never mixes into a camera recorded here).
   */
  private refusedBackup(a: CopyAnnouncement): string | null {
    if (!this.d.index.pools.get(a.pool)?.receivesBackups) return `pool ${a.pool} does not receive backups (receivesBackups)`;
    if (this.d.index.cameras.get(a.camera)) return `camera ${a.camera} is configured in this cluster`;
    return null;
  }

  private copiesOf(pool: string): number {
    return this.d.index.pools.get(pool)?.copies ?? 1;
  }

  /** One announcement (cluster/announcement-stream.ts delivers it): refused, nothing for this node, or pulled. */
  private async handle(a: CopyAnnouncement, m: JsMsg): Promise<void> {
    if (a.origin) {
      const refused = this.refusedBackup(a);
      if (refused) {
        this.d.log.warn({ camera: a.camera, pool: a.pool, origin: a.origin.node }, `copies: a backup announcement refused: ${refused}`);
        m.term(refused);
        return;
      }
    }
    const have = this.d.index.segments.get(a.camera, a.startMs);
    const holders = a.origin ? copyHolders(segmentKey(a.camera, a.startMs), null, this.d.liveNodes(), this.copiesOf(a.pool)) : a.holders;
    if (a.source === this.d.nodeId || !holders.includes(this.d.nodeId) || (have && !have.open)) {
      m.ack();
      return;
    }
    await this.stream.work(m, a, async () => {
      const seg = await this.pull(a);
      if (seg) {
        this.stats.copied++;
        this.stats.copiedBytes += seg.bytes;
      }
    });
  }

  /**
   * Pulls one segment from its source and indexes it here; null: the source no longer
   * has it, or this node has it already. One pull per segment at a time (the consumer
   * and a stitched download may ask for the same one): a second caller shares the first's.
   */
  pull(a: CopyAnnouncement): Promise<SegmentRecord | null> {
    const key = segmentKey(a.camera, a.startMs);
    const running = this.pulling.get(key);
    if (running) return running;
    const p = this.pullOnce(a).finally(() => this.pulling.delete(key));
    this.pulling.set(key, p);
    return p;
  }

  private async pullOnce(a: CopyAnnouncement): Promise<SegmentRecord | null> {
    const http = a.origin?.http ?? this.d.peerHttp(a.source);
    if (!http) throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${a.source} has no known HTTP address`);
    if (a.origin && !this.d.index.pools.get(a.pool)) {
      throw new RecorderError('POOL_NOT_FOUND', `a backup from node ${a.origin.node} goes to pool ${a.pool}, which this cluster does not have: create it`);
    }
    const base = `${http}/api/cluster/segments/${encodeURIComponent(a.camera)}/${a.startMs}`;
    const headers: Record<string, string> = a.origin ? { [BACKUP_GRANT_HEADER]: a.origin.grant } : { [CLUSTER_TOKEN_HEADER]: this.token ?? '' };
    // The record is a few hundred bytes: a source that does not send it in RECORD_TIMEOUT_MS fails this pull (tried again).
    const res = await fetch(base, { headers, signal: AbortSignal.any([this.stop.signal, AbortSignal.timeout(RECORD_TIMEOUT_MS)]) });
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    if (!res.ok) throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${a.source}: segment record ${res.status}`);
    const sent = recordFromWire(((await res.json()) as { segment: SegmentRecordWire }).segment);
    const parsed = parseSegmentRelPath(sent.file);
    // The record names where its bytes go here: only a segment path of this camera and instant.
    if (!parsed || parsed.camera !== a.camera || parsed.startMs !== a.startMs || sent.camera !== a.camera || sent.startMs !== a.startMs || sent.open) {
      throw new RecorderError('VALIDATION_FAILED', `node ${a.source} sent a record that does not match ${a.camera}/${a.startMs}: ${sent.file}`);
    }
    // A backup goes into this cluster's pool: its path here names that pool.
    const seg = a.origin ? { ...sent, pool: a.pool, file: segmentRelPath(a.pool, a.camera, a.startMs, parsed.format) } : sent;
    // A segment this node has at that instant (written or copied) is never replaced: its
    // file is what its entry describes (checked again right before the rename).
    if (this.d.index.segments.get(seg.camera, seg.startMs)) return null;
    const abs = join(this.d.dataDir, seg.file);
    const tmp = `${abs}.pull`;
    await mkdir(dirname(abs), { recursive: true });
    await this.download(`${base}/file`, headers, tmp, seg.bytes);
    if (this.d.index.segments.get(seg.camera, seg.startMs)) {
      await rm(tmp, { force: true });
      return null;
    }
    await rename(tmp, abs);
    await fsyncDir(dirname(abs));
    await this.d.index.segments.put(seg);
    this.d.catalog(seg.camera);
    this.d.copied(seg);
    this.d.log.info({ camera: seg.camera, startMs: seg.startMs, bytes: seg.bytes, from: a.source }, 'copies: segment copied');
    return seg;
  }

  /** Fills `tmp` to `bytes` from `url`, resuming from what it has; fdatasync'ed at the end. */
  private async download(url: string, headers: Record<string, string>, tmp: string, bytes: number): Promise<void> {
    let have = await stat(tmp).then(
      (s) => s.size,
      () => 0,
    );
    if (have > bytes) {
      await rm(tmp, { force: true });
      have = 0;
    }
    if (have < bytes) {
      const res = await fetch(url, { headers: { ...headers, ...(have > 0 ? { range: `bytes=${have}-` } : {}) }, signal: this.stop.signal });
      if (res.status !== 200 && res.status !== 206) {
        await res.body?.cancel();
        throw new RecorderError('CLUSTER_UNAVAILABLE', `segment bytes: ${res.status}`);
      }
      // A 200 is the whole file again: start over.
      const fh = await open(tmp, res.status === 206 ? 'a' : 'w');
      try {
        if (res.body) for await (const chunk of res.body) await fh.write(chunk as Uint8Array);
        await fh.datasync();
      } finally {
        await fh.close();
      }
    }
    const got = (await stat(tmp)).size;
    if (got !== bytes) {
      if (got > bytes) await rm(tmp, { force: true });
      throw new RecorderError('STORAGE_IO', `pulled ${got} bytes where the record says ${bytes}`);
    }
  }
}

/** The cluster's token: made by the first node (a create), read by every later one. */
async function clusterToken(kv: KV): Promise<string> {
  const mine = randomBytes(24).toString('base64url');
  try {
    await kv.create('token', json.encode({ token: mine }));
    return mine;
  } catch {
    const e = await kv.get('token');
    const t = e && e.operation === 'PUT' ? (json.decode(e.value) as { token?: string }).token : undefined;
    if (!t) throw new Error('cluster token missing');
    return t;
  }
}
