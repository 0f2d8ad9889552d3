/**
 * Backup to another cluster (docs/design/cluster.md "Backup to another cluster"; seed:
 * "backup to a different cluster"). A pool's `backupCluster` names another cluster of
 * recorders by its NATS servers and one of its pools; that cluster receives a copy of
 * every closed segment of the pool by the protocol copies use inside a cluster
 * (cluster/copies.ts), announce and pull:
 *
 * - Each node announces the closed segments it wrote itself of such a pool on the
 *   target's copy stream (`<target prefix>.copies.<camera>`), with `origin`: this node's
 *   HTTP URL and a grant for that one segment (`backupGrant`: an HMAC under this
 *   cluster's token, which never leaves it), `holders` empty and the target's pool. The
 *   target's nodes choose among themselves who pulls it (the target pool's `copies`).
 * - Progress is a cursor per pool, camera and node in this cluster's KV
 *   (`<prefix>-backup`): the start of the last segment the target's stream took. A
 *   restart of this node goes on from it; the target's stream holds what was announced
 *   while its nodes were down, and a node of it that restarts resumes its pulls
 *   (`.pull` temp files resume with a Range). A publish repeated after a lost
 *   acknowledgement carries the same message id, which JetStream de-duplicates.
 * - A target that does not answer: every round tries again from the cursor; a pool
 *   whose backup has not moved for BEHIND_ALARM_MS while it has segments waiting raises
 *   `backup-behind` (at most once per BEHIND_ALARM_MS).
 *
 * Segments this node holds as copies of another node's are left to their writer while
 * it lives. A writer judged dead (the cluster's count, `writerDied`) is stood in for:
 * one survivor per pool, camera and writer (cluster/backup-stand-in.ts) announces the
 * copies the live nodes hold of its segments after its cursor, each with the writer's
 * message id, and moves the writer's cursor by compare-and-set; the segments the writer
 * announced for copies that no live node holds are counted once and put on the writer's
 * late list, which it sends from its own disk when it is back. The stand-in stops as
 * soon as the writer beats again. Every cursor write is a compare-and-set: a writer
 * that finds its cursor moved by a stand-in (it was judged dead but lived: a stall, a
 * partition) takes the further of the two and reads its late list again.
 *
 * Back-filled segments close late: their start is in the past, often behind the
 * cursor, which only walks forward. kick() keeps each back-filled segment of a backed-up
 * pool in memory; the next round of its camera that reaches the target adds those
 * behind the cursor to a list in the KV (`<cursor key>.late`, starts) before announcing
 * them, and takes each off once the target's stream took it: once listed, a target
 * that is down or a restart of this node loses none. Kicks not listed yet (the target
 * unreachable since before the segment closed, or the KV without quorum) are held in
 * memory only, and a restart then loses them.
 */
import { DeliverPolicy, JSONCodec, type KV, type NatsConnection } from 'nats';
import type { PoolPolicy, SegmentRecord } from '../index/records.ts';
import { BackupRounds, JS_TIMEOUT_MS, targetLabel, type BackedUpPool, type BackupDeps, type BackupRound } from './backup-rounds.ts';
import { planStandIn, standInFor } from './backup-stand-in.ts';
import { copyHolders, segmentKey } from './copy-plan.ts';
import { backupGrant, type CopyAnnouncement } from './copies.ts';

const ROUND_MS = 2000;
/** A pool whose backup has not moved this long with segments waiting: an alarm. */
const BEHIND_ALARM_MS = 5 * 60_000;
/** Cursor writes: after this many announcements of a camera, and at the end of its run. */
const CURSOR_EVERY = 50;
/** A stand-in walks a dead writer's segments of a camera at most this often (new copies arrive as they are re-made), and after a failure. */
const STAND_IN_EVERY_MS = 10_000;
/** After a pass that found nothing to send: the re-made copies are in place by then; a dead writer's camera costs little while it stays dead. */
const STAND_IN_IDLE_MS = 60_000;
/** The copy stream is read from this long before a dead writer's cursor (announcements are published after their segment closes; clocks differ). */
const LEDGER_MARGIN_MS = 60_000;

/** A closed segment as a peer reports it from its own index (the `segments` peer subject). */
export interface PeerSegment {
  startMs: number;
  bytes: number;
  pool: string;
  fence?: { node: string };
}

/** The cluster's view a stand-in needs (absent: a dead writer's segments wait for it). */
export interface StandInView {
  /** The nodes alive by this node's count, itself included. */
  liveNodes: () => string[];
  /** The camera's holders catalog (every node that holds video of it). */
  holders: (camera: string) => string[];
  peerHttp: (node: string) => string | null;
  /** A peer's own closed segments of the camera overlapping [fromMs, toMs). */
  peerSegments: (node: string, camera: string, fromMs: number, toMs: number) => Promise<PeerSegment[]>;
}

export interface BackupSenderDeps extends BackupDeps {
  standIn?: StandInView;
}

/** What `GET /api/cluster/nodes` shows of this node's backups, per pool. */
export interface BackupStatus {
  pool: string;
  target: string;
  announced: number;
  /** Start of the newest segment the target took (null: none yet). */
  lastMs: number | null;
  lastError: string | null;
}

const json = JSONCodec();

/** The KV key of a cursor (keys hold letters, digits, `-`, `_`, `=`, `.`, `/`). */
/** How much of a camera's time one peer `segments` question covers (its answer is one NATS reply). */
const PEER_WINDOW_MS = 3600_000;
/** Where a stand-in with no cursor starts asking peers when this node has no video of the camera. */
const PEER_WALK_BACK_MS = 7 * 86_400_000;

/** A late list as the KV holds it: segment starts; anything else there is read as none. */
function lateListOf(text: string): number[] {
  try {
    const v: unknown = JSON.parse(text);
    return Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number' && Number.isSafeInteger(x)) : [];
  } catch {
    return [];
  }
}

function cursorKey(pool: string, camera: string, node: string): string {
  const safe = (v: string): string => v.replace(/[^A-Za-z0-9_-]/g, (c) => `=${c.charCodeAt(0).toString(16)}`);
  return `${safe(pool)}.${safe(camera)}.${safe(node)}`;
}

export class BackupSender {
  private readonly rounds: BackupRounds;
  private readonly cursors = new Map<string, number>();
  /** The KV revision each cursor in `cursors` was read or written at (0: no key yet). */
  private readonly revs = new Map<string, number>();
  /** Writers judged dead by the cluster's count, until they beat again. */
  private readonly deadWriters = new Set<string>();
  /** When each stand-in pass (cursor key) may run again (performance.now()). */
  private readonly standInAt = new Map<string, number>();
  /** Back-filled segments closed here since the last round of their camera, by cursor key. */
  private readonly backfilled = new Map<string, Set<number>>();
  /** Back-filled segments behind the cursor still to announce, by cursor key (the KV's `.late` list, held here once read). */
  private readonly late = new Map<string, number[]>();
  private readonly status = new Map<string, BackupStatus>();
  private readonly movedAt = new Map<string, number>();
  private readonly alarmedAt = new Map<string, number>();

  constructor(private readonly d: BackupSenderDeps) {
    this.rounds = new BackupRounds(d, { what: 'backup', connectionName: `recorder-backup-${d.nodeId}`, roundMs: ROUND_MS, round: (r) => this.round(r) });
  }

  start(nc: NatsConnection): void {
    this.rounds.start(nc);
  }

  /** A segment closed here: announce it now rather than at the next round. */
  kick(seg: SegmentRecord): void {
    if (seg.open || !this.d.index.pools.get(seg.pool)?.backupCluster) return;
    if (seg.flags.backfill && (!seg.fence || seg.fence.node === this.d.nodeId)) {
      const key = cursorKey(seg.pool, seg.camera, this.d.nodeId);
      const starts = this.backfilled.get(key) ?? new Set<number>();
      starts.add(seg.startMs);
      this.backfilled.set(key, starts);
    }
    this.rounds.wake();
  }

  /** The cluster judged `node` dead: its segments are sent from the copies (by one survivor) until it beats again. */
  writerDied(node: string): void {
    if (node === this.d.nodeId || !this.d.standIn) return;
    this.deadWriters.add(node);
    this.rounds.wake();
  }

  statuses(): BackupStatus[] {
    return [...this.status.values()];
  }

  close(): Promise<void> {
    return this.rounds.close();
  }

  private get kv(): KV {
    return this.rounds.kv;
  }

  private get stopped(): boolean {
    return this.rounds.signal.aborted;
  }

  /** One round (cluster/backup-rounds.ts): each pool's cameras from their cursors, then the stand-ins. */
  private async round({ pools, token, http }: BackupRound): Promise<void> {
    for (const pool of pools) {
      if (this.stopped) return;
      const st = this.statusOf(pool);
      try {
        const target = await this.rounds.target(pool.backupCluster);
        for (const camera of this.d.index.segments.poolCameras(pool.id)) await this.sendCamera(pool, camera, target, token, http, st);
        st.lastError = null;
      } catch (err) {
        st.lastError = (err as Error).message;
        this.d.log.warn(
          { pool: pool.id, target: st.target, err: st.lastError },
          'backup: the target cluster did not take the announcements; tried again next round',
        );
      }
      this.checkBehind(pool, st);
    }
    await this.standInRound(pools, token);
  }

  /** For each writer judged dead: the cameras of pools with copies this node stands in for (module comment). */
  private async standInRound(pools: BackedUpPool[], token: string): Promise<void> {
    const view = this.d.standIn;
    if (!view || this.deadWriters.size === 0) return;
    for (const writer of [...this.deadWriters]) {
      for (const pool of pools) {
        if ((pool.copies ?? 1) <= 1) continue;
        const cameras = new Set([
          ...this.d.index.segments.poolCameras(pool.id),
          ...this.d.index.cameras
            .list()
            .filter((c) => c.pool === pool.id)
            .map((c) => c.id),
        ]);
        for (const camera of cameras) {
          if (this.stopped || this.writerBack(writer, view)) return;
          if (standInFor(pool.id, camera, writer, view.liveNodes(), view.holders(camera)) !== this.d.nodeId) continue;
          const key = cursorKey(pool.id, camera, writer);
          if ((this.standInAt.get(key) ?? -Infinity) > performance.now()) continue;
          this.standInAt.set(key, performance.now() + STAND_IN_EVERY_MS);
          const st = this.statusOf(pool);
          try {
            const target = await this.rounds.target(pool.backupCluster);
            if (!(await this.standInCamera(pool, camera, writer, target, token, st, view))) this.standInAt.set(key, performance.now() + STAND_IN_IDLE_MS);
          } catch (err) {
            st.lastError = (err as Error).message;
            this.d.log.warn({ pool: pool.id, camera, writer, err: st.lastError }, 'backup: standing in for a dead writer failed; tried again shortly');
          }
        }
      }
    }
  }

  /** Whether `writer` beats again (alive by the cluster's count): its stand-in stops, it sends its own again. */
  private writerBack(writer: string, view: StandInView): boolean {
    if (!this.deadWriters.has(writer)) return true;
    if (!view.liveNodes().includes(writer)) return false;
    this.deadWriters.delete(writer);
    this.d.log.info({ writer }, 'backup: the writer beats again; it sends its own segments again');
    return true;
  }

  /**
   * One pass for (pool, camera, dead writer), in this order so that a crash between any
   * two steps loses nothing: the segments only the writer has go on its late list; its
   * late segments held here are announced and taken off; the copies the live nodes hold
   * after its cursor are announced in time order; its cursor moves past all of them.
   * Every write is a compare-and-set: another writer of the key (a second stand-in for a
   * tick, the writer back) ends the pass, and the next one reads again. False: nothing
   * was known after the cursor (an idle pass).
   */
  private async standInCamera(
    pool: BackedUpPool,
    camera: string,
    writer: string,
    target: NatsConnection,
    token: string,
    st: BackupStatus,
    view: StandInView,
  ): Promise<boolean> {
    const key = cursorKey(pool.id, camera, writer);
    const lateKey = `${key}.late`;
    const [c, l] = await Promise.all([this.kv.get(key), this.kv.get(lateKey)]);
    let rev = c?.revision ?? 0;
    let lateRev = l?.revision ?? 0;
    const cursor = c && c.operation === 'PUT' ? Number(c.string()) : -1;
    let late = l && l.operation === 'PUT' ? (JSON.parse(l.string()) as number[]) : [];
    const { held, bytes } = await this.heldCopies(writer, pool.id, camera, cursor, view);
    const live = view.liveNodes();
    const plan = planStandIn({
      self: this.d.nodeId,
      cursor,
      held,
      announced: await this.ledger(writer, pool.id, camera, cursor),
      // Named from a copy that stays: a surplus one may be trimmed (cluster/copy-trim.ts) before the target pulls it.
      keeps: (startMs) => copyHolders(segmentKey(camera, startMs), null, live, pool.copies ?? 1),
    });
    const writeLate = async (list: number[]): Promise<boolean> => {
      const r = await this.cas(lateKey, JSON.stringify(list), lateRev);
      if (r === null) return false;
      lateRev = r;
      late = list;
      return true;
    };
    if (plan.lost.length > 0) {
      if (!(await writeLate([...new Set([...late, ...plan.lost])].sort((a, b) => a - b)))) return true;
      this.d.log.warn(
        { pool: pool.id, camera, writer, lost: plan.lost.length },
        'backup: segments of a dead writer that no live node holds are not sent; its late list keeps them for when it is back',
      );
    }
    const announce = this.announcer(pool, camera, writer, target, token, st);
    const http = this.d.httpUrl();
    const sentLate: number[] = [];
    for (const startMs of late) {
      const seg = this.d.index.segments.get(camera, startMs);
      if (!http || !seg || seg.open || seg.pool !== pool.id || seg.fence?.node !== writer) continue;
      if (this.writerBack(writer, view)) return true;
      await announce(startMs, seg.bytes, this.d.nodeId, http);
      sentLate.push(startMs);
    }
    if (sentLate.length > 0 && !(await writeLate(late.filter((s) => !sentLate.includes(s))))) return true;
    let moved = cursor;
    const save = async (to: number): Promise<boolean> => {
      const r = await this.cas(key, String(to), rev);
      if (r === null) return false;
      rev = r;
      moved = to;
      return true;
    };
    let sent = 0;
    let last = cursor;
    for (const { startMs, origin } of plan.send) {
      if (this.stopped || this.writerBack(writer, view)) break;
      const from = origin === this.d.nodeId ? http : view.peerHttp(origin);
      if (!from) throw new Error(`no HTTP address for node ${origin}`);
      await announce(startMs, bytes.get(startMs) ?? 0, origin, from);
      last = startMs;
      if (++sent % CURSOR_EVERY === 0 && !(await save(startMs))) return true;
    }
    // Stopped early (the writer is back, this node stops): the cursor says what was sent, no more.
    const to = sent === plan.send.length ? plan.cursor : last;
    if (to !== moved) await save(to);
    if (sent > 0) this.d.log.info({ pool: pool.id, camera, writer, sent, cursor: moved }, "backup: sent a dead writer's segments from the copies");
    return plan.send.length > 0 || plan.lost.length > 0 || sentLate.length > 0;
  }

  /**
   * The writer's closed segments of the pool after `from` that live nodes hold, by start,
   * with those nodes: this node's index and each other live node of the camera's holders
   * catalog, asked. A node that does not answer fails the pass (its segments would look
   * lost).
   */
  private async heldCopies(
    writer: string,
    pool: string,
    camera: string,
    from: number,
    view: StandInView,
  ): Promise<{ held: Map<number, string[]>; bytes: Map<number, number> }> {
    const held = new Map<number, string[]>();
    const bytes = new Map<number, number>();
    const add = (s: { startMs: number; bytes: number }, node: string): void => {
      held.set(s.startMs, [...(held.get(s.startMs) ?? []), node]);
      bytes.set(s.startMs, s.bytes);
    };
    for (const seg of this.d.index.segments.all(camera, from + 1)) {
      if (!seg.open && seg.pool === pool && seg.fence?.node === writer) add(seg, this.d.nodeId);
    }
    const live = view.liveNodes();
    const peers = view.holders(camera).filter((n) => n !== this.d.nodeId && n !== writer && live.includes(n) && view.peerHttp(n) !== null);
    const toMs = Date.now() + 3600_000; // the range's end only bounds the query; segments ahead of this clock are included
    // Asked an hour at a time: a peer's answer is one NATS reply (1 MB), and a cursor far
    // behind (or none: the writer never sent this camera) must not ask for its whole
    // history at once. With no cursor the walk starts at the oldest video here of the
    // camera, or PEER_WALK_BACK_MS ago.
    let start = Math.max(0, from + 1);
    if (from < 0) start = this.d.index.segments.all(camera, 0).next().value?.startMs ?? Date.now() - PEER_WALK_BACK_MS;
    await Promise.all(
      peers.map(async (n) => {
        for (let a = start; a < toMs; a += PEER_WINDOW_MS) {
          for (const s of await view.peerSegments(n, camera, a, Math.min(a + PEER_WINDOW_MS, toMs))) {
            // A segment across a window's edge is in both answers: added once, by its start.
            if (s.startMs >= a && s.startMs > from && s.pool === pool && s.fence?.node === writer) add(s, n);
          }
        }
      }),
    );
    return { held, bytes };
  }

  /**
   * The starts `writer` announced for copies of `camera` in `pool` after `cursor`: its
   * ledger of closed segments, read from this cluster's copy stream (kept 7 days).
   */
  private async ledger(writer: string, pool: string, camera: string, cursor: number): Promise<number[]> {
    const js = this.rounds.connection!.jetstream({ timeout: JS_TIMEOUT_MS });
    const consumer = await js.consumers.get(`${this.d.prefix}-copies`, {
      // A string, not a list: a list is `filter_subjects`, which servers before 2.10 refuse.
      filterSubjects: `${this.d.prefix}.copies.${camera}`,
      ...(cursor > LEDGER_MARGIN_MS ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(cursor - LEDGER_MARGIN_MS).toISOString() } : {}),
    });
    const out: number[] = [];
    try {
      // One message first: its `pending` says how many follow, so no fetch waits out its expiry.
      let m = await consumer.next({ expires: 1000 });
      while (m) {
        try {
          const a = m.json<CopyAnnouncement>();
          if (a.source === writer && !a.origin && a.pool === pool && a.startMs > cursor) out.push(a.startMs);
        } catch {
          /* not an announcement: not the writer's */
        }
        m = m.info.pending > 0 ? await consumer.next({ expires: 2000 }) : null;
      }
    } finally {
      await consumer.delete().catch(() => undefined);
    }
    return out;
  }

  /**
   * Announces one segment of `writer` to the target, from `origin` (a node of this
   * cluster that holds it), under the writer's message id: this node's own segments
   * (writer and origin itself) and a dead writer's it stands in for alike.
   */
  private announcer(
    pool: BackedUpPool,
    camera: string,
    writer: string,
    target: NatsConnection,
    token: string,
    st: BackupStatus,
  ): (startMs: number, bytes: number, origin: string, http: string) => Promise<void> {
    const js = target.jetstream({ timeout: JS_TIMEOUT_MS });
    const subject = `${pool.backupCluster.prefix ?? 'rec'}.copies.${camera}`;
    return async (startMs, bytes, origin, http) => {
      const a: CopyAnnouncement = {
        camera,
        startMs,
        bytes,
        pool: pool.backupCluster.pool ?? pool.id,
        source: origin,
        holders: [],
        origin: { node: origin, http, grant: backupGrant(token, camera, startMs) },
      };
      // The writer's own id: the writer back re-announcing it is de-duplicated (or acknowledged by a holder that has it).
      await js.publish(subject, json.encode(a), { msgID: `backup.${writer}.${camera}.${startMs}` });
      st.announced++;
      st.lastMs = Math.max(st.lastMs ?? -Infinity, startMs);
      this.movedAt.set(pool.id, performance.now());
    };
  }

  /**
   * Writes `value` at `key` if the key is still at revision `rev` (0: no key). Its new
   * revision, or null when another node wrote it first; throws when the KV does not answer.
   */
  private async cas(key: string, value: string, rev: number): Promise<number | null> {
    try {
      return rev === 0 ? await this.kv.create(key, value) : await this.kv.update(key, value, rev);
    } catch (err) {
      const now = await this.kv.get(key);
      if ((now?.revision ?? 0) !== rev) return null;
      throw err;
    }
  }

  private statusOf(pool: BackedUpPool): BackupStatus {
    const target = targetLabel(pool);
    let st = this.status.get(pool.id);
    if (!st || st.target !== target) {
      st = { pool: pool.id, target, announced: 0, lastMs: null, lastError: null };
      this.status.set(pool.id, st);
      this.movedAt.set(pool.id, performance.now());
    }
    return st;
  }

  /** Announces the camera's closed segments of the pool this node wrote, after its cursor. */
  private async sendCamera(pool: BackedUpPool, camera: string, target: NatsConnection, token: string, http: string, st: BackupStatus): Promise<void> {
    const key = cursorKey(pool.id, camera, this.d.nodeId);
    let cursor = this.cursors.get(key);
    if (cursor === undefined) {
      const e = await this.kv.get(key);
      cursor = e && e.operation === 'PUT' ? Number(e.string()) : -1;
      this.cursors.set(key, cursor);
      this.revs.set(key, e?.revision ?? 0);
    }
    const send = this.announcer(pool, camera, this.d.nodeId, target, token, st);
    const announce = (seg: SegmentRecord): Promise<void> => send(seg.startMs, seg.bytes, this.d.nodeId, http);
    await this.sendLate(key, cursor, pool.id, camera, announce);
    let sent = 0;
    const from = cursor;
    try {
      for (const seg of this.d.index.segments.all(camera, cursor + 1)) {
        if (this.stopped) return;
        // Time order: an open segment is the camera's last; what follows it is not closed yet.
        if (seg.open) break;
        // Another pool's, or a copy of another node's: never this node's to send; the cursor
        // passes it, so a camera that moved away is not walked again every round.
        if (seg.pool !== pool.id || (seg.fence && seg.fence.node !== this.d.nodeId)) {
          cursor = seg.startMs;
          continue;
        }
        await announce(seg);
        cursor = seg.startMs;
        if (++sent % CURSOR_EVERY === 0) await this.saveCursor(key, cursor);
      }
    } finally {
      if (cursor !== from) await this.saveCursor(key, cursor);
    }
  }

  /**
   * The camera's back-filled segments behind its cursor (see the module comment): the
   * list kept in the KV (read once per camera and node, then held here) with the new
   * ones, written back when it changed, then announced one by one, each taken off the
   * list once the target took it. Those after the cursor the walk announces. A KV that
   * does not answer keeps the list in memory (tried again next round) and never holds
   * up the walk.
   */
  private async sendLate(key: string, cursor: number, pool: string, camera: string, announce: (seg: SegmentRecord) => Promise<void>): Promise<void> {
    const lateKey = `${key}.late`;
    let late = this.late.get(key);
    if (late === undefined) {
      const e = await this.kv.get(lateKey).catch(() => undefined);
      if (e === undefined) return; // not readable now: the kicks wait in memory for the next round
      late = e && e.operation === 'PUT' ? (JSON.parse(e.string()) as number[]) : [];
      this.late.set(key, late);
    }
    const kicked = this.backfilled.get(key) ?? new Set<number>();
    const taken = [...kicked]; // those after the cursor the walk below announces
    const known = late;
    const fresh = taken.filter((s) => s <= cursor && !known.includes(s));
    for (const s of taken) kicked.delete(s); // kicks during the awaits stay for the next round
    if (kicked.size === 0 && this.backfilled.get(key) === kicked) this.backfilled.delete(key);
    if (fresh.length > 0) {
      late = [...late, ...fresh].sort((a, b) => a - b);
      this.late.set(key, late);
      late = await this.saveLate(key, late);
    }
    if (late.length === 0) return;
    const left = [...late];
    try {
      for (const startMs of late) {
        if (this.stopped) return;
        const seg = this.d.index.segments.get(camera, startMs);
        // Gone (retention), not closed, moved to another pool or not ours: nothing to send.
        if (seg && !seg.open && seg.pool === pool && (!seg.fence || seg.fence.node === this.d.nodeId)) await announce(seg);
        left.shift();
      }
    } finally {
      if (left.length !== late.length) {
        const sent = new Set(late.filter((s) => !left.includes(s)));
        this.late.set(key, left);
        await this.saveLate(key, left, sent);
      }
    }
  }

  /**
   * Writes the late list of `key` (`<key>.late`) by compare-and-set, merged with what
   * another node put there meanwhile (a stand-in adds the segments only this node holds
   * while it is judged dead): theirs are kept unless this node sent them (`sent`), so a
   * stand-in's additions are never written over. Returns the list kept (also held in
   * memory). Not written now (no quorum here): held in memory, and written with the
   * next change.
   */
  private async saveLate(key: string, list: number[], sent: ReadonlySet<number> = new Set()): Promise<number[]> {
    const lateKey = `${key}.late`;
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        const e = await this.kv.get(lateKey);
        const theirs = e && e.operation === 'PUT' ? lateListOf(e.string()) : [];
        const merged = [...new Set([...list, ...theirs.filter((s) => !sent.has(s))])].sort((a, b) => a - b);
        // Empty: the key goes (by its revision, so an addition meanwhile is not lost).
        const written =
          merged.length > 0
            ? (await this.cas(lateKey, JSON.stringify(merged), e?.revision ?? 0)) !== null
            : !e ||
              e.operation !== 'PUT' ||
              (await this.kv.delete(lateKey, { previousSeq: e.revision }).then(
                () => true,
                () => false,
              ));
        if (written) {
          this.late.set(key, merged);
          return merged;
        }
      }
      this.d.log.debug({ key: lateKey }, 'backup: late list kept changing under this node; written with the next change');
    } catch (err) {
      this.d.log.debug({ key: lateKey, err: (err as Error).message }, 'backup: late list not saved');
    }
    return list;
  }

  /**
   * This node's own cursor, by compare-and-set. Moved by another node meanwhile (a stand-in
   * while this node was judged dead, but lived): the further of the two is kept, and the
   * late list is read again (the stand-in may have added to it).
   */
  private async saveCursor(key: string, cursor: number): Promise<void> {
    this.cursors.set(key, cursor);
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        const rev = await this.cas(key, String(cursor), this.revs.get(key) ?? 0);
        if (rev !== null) {
          this.revs.set(key, rev);
          return;
        }
        const e = await this.kv.get(key);
        const theirs = e && e.operation === 'PUT' ? Number(e.string()) : -1;
        this.revs.set(key, e?.revision ?? 0);
        this.late.delete(key);
        this.d.log.info(
          { key, mine: cursor, theirs },
          'backup: the cursor was written elsewhere (a stand-in, or a write whose answer was lost); the further one is kept',
        );
        if (theirs >= cursor) {
          this.cursors.set(key, theirs);
          return;
        }
      }
    } catch (err) {
      // A cursor not saved (no quorum here) only repeats announcements after a restart: the target ignores what it has.
      this.d.log.debug({ key, err: (err as Error).message }, 'backup: cursor not saved');
    }
  }

  private checkBehind(pool: PoolPolicy, st: BackupStatus): void {
    if (st.lastError === null) {
      this.movedAt.set(pool.id, performance.now());
      return;
    }
    const since = performance.now() - (this.movedAt.get(pool.id) ?? performance.now());
    const last = this.alarmedAt.get(pool.id) ?? -Infinity;
    if (since < BEHIND_ALARM_MS || performance.now() - last < BEHIND_ALARM_MS) return;
    this.alarmedAt.set(pool.id, performance.now());
    this.d.raiseAlarm?.({
      kind: 'backup-behind',
      pool: pool.id,
      message: `backup of pool ${pool.id} to ${st.target} has not moved for ${Math.round(since / 60_000)} min: ${st.lastError}`,
      details: { target: st.target, lastMs: st.lastMs },
    });
  }
}
