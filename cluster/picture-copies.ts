/**
 * Redundant copies of pictures (docs/design/pictures.md "Copies in a cluster"): a pool's
 * `copies` (1 to 3) of every picture, as cluster/copies.ts keeps of video, adapted to
 * objects a thousand times smaller and a thousand times more numerous.
 *
 * The unit announced is a pack's synced extent, never a picture: each second the writer
 * announces every pack of its own (of a pool with `copies` > 1) whose durable length or
 * closed state changed since it last did, `{origin, pack, pool, to, closed, source,
 * holders}` on the replicated stream `<prefix>-piccopies`, which keeps the last one per
 * pack and source. A thousand pictures a second into one pack are one announcement a
 * second. The holders of a pack are its writer and
 * the next `copies - 1` nodes of the rendezvous ranking of `pictures/<origin>/<pack>`
 * (cluster/copy-plan.ts), so packs spread over the nodes and a death moves only the
 * packs the dead node held.
 *
 * A holder reads the stream through its durable consumer (`piccopy-<node>`) and pulls
 * from the announcement's source what it lacks of the pack, from where its copy ends:
 * `GET /api/cluster/picture-packs/:origin/:pack?from=<offset>` (the cluster token) answers
 * whole records and the locks of their pictures; the holder appends them after its copy,
 * fdatasyncs, then indexes them (pictures/copy-pack.ts: an entry never points at bytes
 * not synced) and joins the cameras' holders catalog, so reads, search and the ZIP
 * through any node find the copy. Announcements carry only where the pack ends, so a
 * lost, repeated or reordered one costs nothing: the next one says more.
 *
 * Re-make: when a peer is judged dead (`peerDied`, this node's count), the copies of its
 * packs held here are closed (cover may take them), and every pack held here (own or
 * copied) that the dead node was a holder of is announced again with this node as its
 * source and the holders among the nodes alive now: the next node of the ranking pulls
 * it. When a node joins or comes back (`peerJoined`), the writer announces those of its
 * own packs whose holders now include the newcomer (for one that comes back, only those
 * written since shortly before it was judged dead).
 *
 * Failures wait and retry: an announcement that cannot be published is kept and tried
 * again; a pull that fails is redelivered with a growing delay; a source that no longer
 * holds the pack (covered) makes the holder acknowledge it.
 */
import { createHash } from 'node:crypto';
import type { JsMsg, NatsConnection } from 'nats';
import { z } from 'zod';
import type { RecorderIndex } from '../index/db.ts';
import { originEnd, type PackRecord } from '../index/pictures.ts';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import { decodePackRange } from '../pictures/copy-pack.ts';
import type { PictureStorage } from '../pictures/picture-storage.ts';
import { AnnouncementStream, durableName } from './announcement-stream.ts';
import { BACKUP_GRANT_HEADER, CLUSTER_TOKEN_HEADER, RETURN_MARGIN_MS } from './copies.ts';
import { copyHolders, heldByDead } from './copy-plan.ts';

/** How often the writer looks for packs grown since their last announcement. */
export const ANNOUNCE_EVERY_MS = 1000;
/** How long a node just started waits to see a peer before it announces its packs anyway. */
const STARTUP_SETTLE_MS = 30_000;
/** At start, own packs with pictures this long before the newest are announced again (a crash may have cut their announcement). */
const START_MARGIN_MS = 3600_000;
/** Announcements kept for a publish that failed (quorum lost): one per pack, so few. */
const MAX_UNPUBLISHED = 10_000;

/** What the stream carries: how far one pack is durable and where to pull it. */
export interface PictureCopyAnnouncement {
  /** The node that wrote the pack, and its id there (pack ids are per node). */
  origin: string;
  pack: number;
  pool: string;
  /** The origin offset the pack is durable to at `source`. */
  to: number;
  /** The pack will not grow: closed at its writer, or its writer judged dead. */
  closed: boolean;
  /** A node that holds the pack through `to`: the one to pull from. */
  source: string;
  /** The nodes that should hold it (cluster/copy-plan.ts), its writer first while alive. */
  holders: string[];
  /**
   * A backup from another cluster (cluster/picture-backup.ts): where its writer answers
   * and the grant for this one pack (`picturePackGrant`). `holders` is then empty: the
   * nodes of this cluster choose among themselves (the pool's `copies` of them), and
   * `pool` is this cluster's.
   */
  backup?: { http: string; grant: string };
}

/**
 * Every field of a picture copy announcement, checked where it is consumed: a malformed
 * one (a field missing or of the wrong type) is terminated and logged once
 * (cluster/announcement-stream.ts), never redelivered.
 */
export const pictureCopyAnnouncementSchema: z.ZodType<PictureCopyAnnouncement> = z.object({
  origin: z.string().min(1),
  pack: z.number().int().nonnegative(),
  pool: z.string().min(1),
  to: z.number().int().nonnegative(),
  closed: z.boolean(),
  source: z.string().min(1),
  holders: z.array(z.string()),
  backup: z.object({ http: z.string(), grant: z.string() }).optional(),
});

/** The key that ranks the nodes for one pack (never a segment's: camera ids hold no '/'). */
export function picturePackKey(origin: string, pack: number): string {
  return `pictures/${origin}/${pack}`;
}

/**
 * Where an announcement is published: one subject per pool, pack and source (a hash:
 * node ids may hold dots), so the stream keeps one message per pack and source (the
 * latest, which says all the earlier ones did) instead of one a second for 7 days.
 */
export function announcementSubject(prefix: string, a: Pick<PictureCopyAnnouncement, 'pool' | 'origin' | 'pack' | 'source'>): string {
  const tag = createHash('sha256').update(`${a.origin}\0${a.pack}\0${a.source}`).digest('hex').slice(0, 32);
  return `${prefix}.piccopies.${a.pool}.${tag}`;
}

export interface PictureCopyDeps {
  nodeId: string;
  prefix: string;
  replicas: number;
  index: RecorderIndex;
  storage: PictureStorage;
  log: Logger;
  signal: AbortSignal;
  liveNodes: () => string[];
  peerHttp: (node: string) => string | null;
  /** The cluster token (cluster/copies.ts binds it); null: not yet. */
  token: () => string | null;
  /** Joins a camera's holders catalog (reads through any node then ask this one). */
  catalog: (camera: string) => void;
  /** `copies-behind`: a pull still failing after a few deliveries, as for segments (cluster/announcement-stream.ts). */
  raiseAlarm?: (alarm: AlarmInput) => void;
}

/** What the node's picture copy work shows. */
export interface PictureCopyStatus {
  pending: number | null;
  unpublished: number;
  pictures: number;
  bytes: number;
  /** Copied pictures not indexed: their key held here already (the same picture, or a seq clash). */
  skipped: number;
  failed: number;
  lastError: string | null;
}

export class PictureCopyService {
  private readonly stop = new AbortController();
  /** The picture copy stream `<prefix>-piccopies` and this node's durable consumer `piccopy-<node>`. */
  private readonly stream: AnnouncementStream<PictureCopyAnnouncement>;
  private readonly startedPerf = performance.now();
  /** Per own pack: the extent last announced (`<bytes>/<closed>`). */
  private readonly announced = new Map<number, string>();
  /** Own packs current at the last look (announceOwn). */
  private watched = new Set<number>();
  /** Own packs to look at in the next round whatever they are (the start). */
  private readonly queued = new Set<number>();
  private lastAnnounceMs = -Infinity;
  private readonly stats = { pictures: 0, bytes: 0, skipped: 0 };
  /** Pools whose backup announcements were refused: logged once each (a misconfiguration, not news every pack). */
  private readonly refusedPools = new Set<string>();

  constructor(private readonly d: PictureCopyDeps) {
    d.signal.addEventListener('abort', () => this.stop.abort(), { once: true });
    this.stream = new AnnouncementStream<PictureCopyAnnouncement>({
      what: 'picture copies',
      stream: `${d.prefix}-piccopies`,
      subjects: `${d.prefix}.piccopies.>`,
      durable: durableName('piccopy', d.nodeId),
      replicas: d.replicas,
      // Each announcement says all an earlier one of its pack and source did: only the last is kept.
      maxMsgsPerSubject: 1,
      maxUnpublished: MAX_UNPUBLISHED,
      subject: (a) => announcementSubject(d.prefix, a),
      id: (a) => `${a.origin}/${a.pack}/${a.source}`,
      describe: (a) => ({ origin: a.origin, pack: a.pack }),
      schema: pictureCopyAnnouncementSchema,
      malformed: 'not a picture copy announcement',
      batch: { max: 32, expiresMs: ANNOUNCE_EVERY_MS },
      roundFailureLevel: 'debug',
      onBind: () => this.queueRecent(),
      beforeFetch: () => this.announceRound(),
      handle: (a, m) => this.handle(a, m),
      behindAlarm: (a, tries, err, pending) => ({
        kind: 'copies-behind',
        pool: a.pool,
        message: `picture copies fall behind: pack ${a.origin}/${a.pack} could not be pulled from ${a.source} in ${tries} tries (${err.message}); retrying`,
        details: { origin: a.origin, pack: a.pack, source: a.source, pending },
      }),
      log: d.log,
      raiseAlarm: d.raiseAlarm,
      signal: this.stop.signal,
    });
  }

  start(nc: NatsConnection): void {
    this.stream.start(nc);
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.stream.stopped();
  }

  status(): PictureCopyStatus {
    return { pending: this.stream.pending, unpublished: this.stream.unpublishedCount, ...this.stats, ...this.stream.failures };
  }

  /**
   * `dead` was judged dead: its copies here are closed (its packs grow no more until it
   * is back; cover may take them), and every pack held here that it was a holder of is
   * announced again from here, with its holders among the nodes alive now.
   */
  async peerDied(dead: string): Promise<number> {
    await this.d.storage.copies.close(dead);
    const live = this.d.liveNodes().filter((n) => n !== dead);
    let announced = 0;
    for (const held of this.heldPacks()) {
      const key = picturePackKey(held.origin, held.pack);
      if (!heldByDead(key, held.origin, live, dead, held.copies)) continue;
      await this.stream.publish({
        origin: held.origin,
        pack: held.pack,
        pool: held.pool,
        to: held.to,
        closed: held.closed || held.origin === dead,
        source: this.d.nodeId,
        holders: copyHolders(key, held.origin, live, held.copies),
      });
      announced++;
    }
    if (announced > 0) this.d.log.info({ dead, announced }, 'picture copies: packs the dead node held announced again (re-made elsewhere)');
    return announced;
  }

  /**
   * `joined` joined the cluster, or came back after it was judged dead (`awaySinceMs`):
   * this node's own packs whose holders over the nodes alive now include it are
   * announced to it (a new node takes its share of the copies); for a node that comes
   * back only those with pictures from RETURN_MARGIN_MS before it was judged dead on
   * (what was older was announced while it was a holder). The walk stops if it is judged
   * dead again meanwhile.
   */
  async peerJoined(joined: string, awaySinceMs: number | null = null): Promise<number> {
    const live = [...new Set([...this.d.liveNodes(), joined])];
    const since = awaySinceMs === null ? -Infinity : awaySinceMs - RETURN_MARGIN_MS;
    const copiesOf = new Map(this.d.index.pools.list().map((p) => [p.id, p.copies ?? 1]));
    let announced = 0;
    for (const p of this.d.index.pictures.allPacks()) {
      if (this.stop.signal.aborted || !this.d.liveNodes().includes(joined)) break;
      const copies = copiesOf.get(p.pool) ?? 1;
      if (p.copyOf || p.covering || copies <= 1 || p.range === null || p.range[1] < since) continue;
      const a = this.ownAnnouncement(p, live, copies);
      if (!a.holders.includes(joined)) continue;
      await this.stream.publish(a);
      announced++;
    }
    if (announced > 0) this.d.log.info({ joined, announced }, 'picture copies: packs the node that joined should hold announced to it');
    return announced;
  }

  /**
   * Every pack of a pool with copies held here, as one entry per origin pack: its own
   * packs, and its copies of others' (the pieces of one origin pack as one).
   */
  private heldPacks(): { origin: string; pack: number; pool: string; to: number; closed: boolean; copies: number }[] {
    const copiesOf = new Map(this.d.index.pools.list().map((p) => [p.id, p.copies ?? 1]));
    const out = new Map<string, { origin: string; pack: number; pool: string; to: number; closed: boolean; copies: number }>();
    for (const p of this.d.index.pictures.allPacks()) {
      const copies = copiesOf.get(p.pool) ?? 1;
      if (copies <= 1 || p.covering) continue;
      if (!p.copyOf) {
        out.set(picturePackKey(this.d.nodeId, p.id), { origin: this.d.nodeId, pack: p.id, pool: p.pool, to: p.bytes, closed: p.closed, copies });
        continue;
      }
      const key = picturePackKey(p.copyOf.node, p.copyOf.pack);
      const to = originEnd({ ...p, copyOf: p.copyOf });
      const had = out.get(key);
      out.set(key, {
        origin: p.copyOf.node,
        pack: p.copyOf.pack,
        pool: p.pool,
        to: Math.max(to, had?.to ?? 0),
        closed: (had?.closed ?? true) && p.closed,
        copies,
      });
    }
    return [...out.values()];
  }

  /** Each round before its fetch: what grew is announced, and what was kept published again (at most every ANNOUNCE_EVERY_MS). */
  private async announceRound(): Promise<void> {
    if (performance.now() - this.lastAnnounceMs < ANNOUNCE_EVERY_MS) return;
    this.lastAnnounceMs = performance.now();
    await this.announceOwn();
    await this.stream.republish();
  }

  /**
   * The writers' current packs, and those that were current at the last look (to announce
   * their close), plus any queued (the start), each announced when its durable end or
   * closed state changed since its last announcement. Only these can change: a closed
   * pack grows no more, so no round walks every pack.
   */
  private async announceOwn(): Promise<void> {
    // Just started, this node may not have counted its peers yet: holders computed over
    // itself alone would name nobody, and a closed pack is announced once. Wait until a
    // peer is seen, or STARTUP_SETTLE_MS (a cluster of one).
    const live = this.d.liveNodes();
    if (live.length < 2 && performance.now() - this.startedPerf < STARTUP_SETTLE_MS) return;
    const current = this.d.storage.currentPackIds();
    const look = new Set([...this.queued, ...this.watched, ...current]);
    this.watched = new Set(current);
    this.queued.clear();
    const copiesOf = new Map(this.d.index.pools.list().map((p) => [p.id, p.copies ?? 1]));
    for (const id of look) {
      const p = this.d.index.pictures.pack(id);
      const copies = p ? (copiesOf.get(p.pool) ?? 1) : 1;
      if (!p || p.copyOf || p.covering || copies <= 1 || p.count === 0) continue;
      const extent = `${p.bytes}/${p.closed}`;
      if (this.announced.get(p.id) === extent) continue;
      const ok = await this.stream.publish(this.ownAnnouncement(p, live, copies));
      // A publish that failed is kept and tried again; the next change announces the newer extent anyway.
      if (ok) this.announced.set(p.id, extent);
    }
  }

  private ownAnnouncement(p: PackRecord, live: readonly string[], copies: number): PictureCopyAnnouncement {
    return {
      origin: this.d.nodeId,
      pack: p.id,
      pool: p.pool,
      to: p.bytes,
      closed: p.closed,
      source: this.d.nodeId,
      holders: copyHolders(picturePackKey(this.d.nodeId, p.id), this.d.nodeId, live, copies),
    };
  }

  /**
   * At start: the own packs written in the last START_MARGIN_MS before the newest one
   * are announced once (a crash may have come between a batch's commit and its
   * announcement; reconcile closed the packs that were open). Older ones were announced
   * when they closed.
   */
  private queueRecent(): void {
    const own = this.d.index.pictures.allPacks().filter((p) => !p.copyOf && p.range !== null);
    const newest = Math.max(...own.map((p) => p.range![1]));
    for (const p of own) if (p.range![1] >= newest - START_MARGIN_MS) this.queued.add(p.id);
  }

  /** One announcement (cluster/announcement-stream.ts delivers it): refused, nothing for this node, or pulled. */
  private async handle(a: PictureCopyAnnouncement, m: JsMsg): Promise<void> {
    if (a.backup !== undefined) {
      // Another cluster's pictures go only into a pool that says it takes them.
      if (!this.d.index.pools.get(a.pool)?.receivesBackups) {
        const why = `pool ${a.pool} does not receive backups (receivesBackups)`;
        if (!this.refusedPools.has(a.pool)) {
          this.refusedPools.add(a.pool);
          this.d.log.warn({ pool: a.pool, origin: a.origin, pack: a.pack }, `picture copies: a backup announcement refused: ${why}`);
        }
        m.term(why);
        return;
      }
    }
    // A backup names no holders: this cluster's live nodes and the target pool's copies choose.
    const holders =
      a.backup !== undefined ? copyHolders(picturePackKey(a.origin, a.pack), null, this.d.liveNodes(), this.d.index.pools.get(a.pool)?.copies ?? 1) : a.holders;
    if (a.origin === this.d.nodeId || !holders.includes(this.d.nodeId)) {
      m.ack();
      return;
    }
    await this.stream.work(m, a, () => this.pull(a));
  }

  /** Pulls what this node lacks of the announced pack, range after range, from its source. */
  private async pull(a: PictureCopyAnnouncement): Promise<void> {
    const copies = this.d.storage.copies;
    let at = copies.progress(a.origin, a.pack);
    while ((at ?? -1) < a.to && !this.stop.signal.aborted) {
      const got = await this.fetchRange(a, at ?? 0);
      if (got === null || got.bytes.length === 0) break;
      // A backup's pictures are kept under this cluster's pool, whatever the writer's is called.
      const r = await this.d.storage.appendCopy(a.origin, a.pack, a.backup !== undefined ? { ...got, pool: a.pool } : got);
      for (const camera of r.cameras) this.d.catalog(camera);
      this.stats.pictures += r.pictures;
      this.stats.skipped += r.skipped;
      this.stats.bytes += r.progress - got.from;
      at = r.progress;
      if (at >= got.end) break;
    }
    if (a.closed && at !== null && at >= a.to) await copies.close(a.origin, a.pack);
  }

  /** One range of the pack from the source; null when the source holds none of it (covered there). */
  private async fetchRange(a: PictureCopyAnnouncement, from: number): Promise<ReturnType<typeof decodePackRange> | null> {
    // A backup is pulled from its writer in the other cluster with the pack's grant: this cluster's token never goes there.
    const http = a.backup?.http ?? this.d.peerHttp(a.source);
    const token = this.d.token();
    if (!http || (a.backup === undefined && token === null)) {
      throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${a.source} has no known HTTP address (or no cluster token yet)`);
    }
    const headers: Record<string, string> = a.backup !== undefined ? { [BACKUP_GRANT_HEADER]: a.backup.grant } : { [CLUSTER_TOKEN_HEADER]: token ?? '' };
    const url = `${http}/api/cluster/picture-packs/${encodeURIComponent(a.origin)}/${a.pack}?from=${from}`;
    const res = await fetch(url, { headers, signal: this.stop.signal });
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${a.source}: picture pack range ${res.status}`);
    }
    return decodePackRange(Buffer.from(await res.arrayBuffer()));
  }
}
