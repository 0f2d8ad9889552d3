/**
 * Pictures backed up to another cluster (docs/design/pictures.md "Backup to another
 * cluster"): a pool's `backupCluster` receives its pictures as it receives its video
 * (cluster/backup-sender.ts), by the protocol picture copies use inside a cluster
 * (cluster/picture-copies.ts), announce and pull:
 *
 * - Each node announces the packs it wrote itself of such a pool on the target's picture
 *   copy stream (`<target prefix>.piccopies.<target pool>.<hash>`): how far the pack is
 *   durable and whether it is closed, `holders` empty, the target's pool, and `backup`:
 *   this node's HTTP URL and a grant for that one pack (`picturePackGrant`, an HMAC
 *   under this cluster's token, which never leaves it). The target's nodes whose pool
 *   `receivesBackups` choose among themselves who pulls it (the target pool's `copies`)
 *   and pull whole records from here as they pull a copy from a peer.
 * - An announcement says "the pack is durable to offset X": repeating one costs the
 *   target nothing (it pulls only what it lacks), and the target's stream keeps the last
 *   one per pack. So the sender keeps, per pack, the extent the target's stream last
 *   acknowledged, and announces a pack again whenever its extent differs: a publish that
 *   failed (the target unreachable) is simply made again each round until the stream
 *   takes it. Nothing the target missed while it was down is lost.
 * - Progress that survives a restart is a cursor per pool and node in this cluster's KV
 *   (`<prefix>-backup`, key `pictures.<pool>.<node>.packs`): the highest pack id such
 *   that every own pack of the pool up to it is closed and its closed extent was taken
 *   by the target's stream. A restart announces again the packs after it (the open pack
 *   and the few closed since), which the target takes at no cost.
 * - A target that does not take announcements for BEHIND_ALARM_MS raises `backup-behind`
 *   (at most once per BEHIND_ALARM_MS), as the video backup does.
 *
 * Invariants: only packs this node wrote are announced (copies it holds of its peers'
 * are theirs to send); the cursor moves only over packs whose final extent the target's
 * stream acknowledged; a pack covered here before it was sent is passed (nothing left
 * to send). Out of scope: a writer that dies is not stood in for (its packs reach the
 * target when it is back, from its cursor), unlike segments.
 */
import { JSONCodec, type NatsConnection } from 'nats';
import type { PackRecord } from '../index/pictures.ts';
import { BackupRounds, JS_TIMEOUT_MS, targetLabel, type BackedUpPool, type BackupDeps, type BackupRound } from './backup-rounds.ts';
import { picturePackGrant } from './copies.ts';
import { announcementSubject, type PictureCopyAnnouncement } from './picture-copies.ts';

/** How often the packs being written are looked at (as picture copies announce: once a second). */
const ROUND_MS = 1000;
/** A pool whose announcements have failed this long: `backup-behind` (at most once per this), as for segments. */
const BEHIND_ALARM_MS = 5 * 60_000;

const json = JSONCodec();

/** The picture sender needs no more than the shared deps (cluster/backup-rounds.ts). */
export type PictureBackupDeps = BackupDeps;

/** What `GET /api/cluster/nodes` shows of this node's picture backups, per pool. */
export interface PictureBackupStatus {
  pool: string;
  target: string;
  /** Announcements the target's stream took since this node started. */
  announced: number;
  /** The cursor: every own pack of the pool up to this id is closed and sent (-1: none yet). */
  sentThrough: number;
  lastError: string | null;
}

/** The KV key of a pool's cursor for a node (keys hold letters, digits, `-`, `_`, `=`, `.`, `/`). */
export function pictureCursorKey(pool: string, node: string): string {
  const safe = (v: string): string => v.replace(/[^A-Za-z0-9_-]/g, (c) => `=${c.charCodeAt(0).toString(16)}`);
  return `pictures.${safe(pool)}.${safe(node)}.packs`;
}

/** The announcement of one own pack to a target cluster (pure: what goes on the target's stream). */
export function backupAnnouncement(
  p: Pick<PackRecord, 'id' | 'bytes' | 'closed'>,
  o: { nodeId: string; http: string; token: string; targetPool: string },
): PictureCopyAnnouncement {
  return {
    origin: o.nodeId,
    pack: p.id,
    pool: o.targetPool,
    to: p.bytes,
    closed: p.closed,
    source: o.nodeId,
    holders: [],
    backup: { http: o.http, grant: picturePackGrant(o.token, o.nodeId, p.id) },
  };
}

/**
 * Walks a pool's own packs after the cursor, in id order: those whose extent differs from
 * what the target acknowledged are to send; the cursor may move over the leading run of
 * packs that are done (closed and acknowledged at their closed extent, empty and closed,
 * being covered, or not this pool's own). Pure, so the rule is tested without NATS.
 */
export function planPictureBackup(
  pool: string,
  cursor: number,
  packs: readonly PackRecord[],
  acked: ReadonlyMap<number, string>,
): { send: PackRecord[]; cursor: (sent: ReadonlySet<number>) => number } {
  const send: PackRecord[] = [];
  for (const p of packs) if (p.pool === pool && !p.copyOf && !p.covering && p.count > 0 && acked.get(p.id) !== extentOf(p)) send.push(p);
  return {
    send,
    cursor: (sent) => {
      let to = cursor;
      for (const p of packs) {
        const notOurs = p.pool !== pool || p.copyOf !== undefined || p.covering === true;
        const done = notOurs || (p.closed && (p.count === 0 || acked.get(p.id) === extentOf(p) || sent.has(p.id)));
        if (!done) break;
        to = p.id;
      }
      return to;
    },
  };
}

/** What the target's stream acknowledged of a pack: its durable length and whether it is closed. */
export function extentOf(p: Pick<PackRecord, 'bytes' | 'closed'>): string {
  return `${p.bytes}/${p.closed}`;
}

export class PictureBackupSender {
  private readonly rounds: BackupRounds;
  /** Per pool: the cursor (read once from the KV, then held), the target it is for, and the extents acknowledged after it. */
  private readonly pools = new Map<string, { target: string; cursor: number; acked: Map<number, string> }>();
  private readonly status = new Map<string, PictureBackupStatus>();
  /** Per pool: since when its announcements fail (performance.now()), and when `backup-behind` was last raised. */
  private readonly failingSince = new Map<string, number>();
  private readonly alarmedAt = new Map<string, number>();

  constructor(private readonly d: PictureBackupDeps) {
    this.rounds = new BackupRounds(d, {
      what: 'picture backup',
      connectionName: `recorder-picture-backup-${d.nodeId}`,
      roundMs: ROUND_MS,
      round: (r) => this.round(r),
    });
  }

  start(nc: NatsConnection): void {
    this.rounds.start(nc);
  }

  statuses(): PictureBackupStatus[] {
    return [...this.status.values()];
  }

  close(): Promise<void> {
    return this.rounds.close();
  }

  /** One round (cluster/backup-rounds.ts): each pool's packs the target has not acknowledged. */
  private async round({ pools, token, http }: BackupRound): Promise<void> {
    for (const pool of pools) {
      if (this.rounds.signal.aborted) return;
      const st = this.statusOf(pool);
      try {
        await this.sendPool(pool, token, http, st);
        st.lastError = null;
        this.failingSince.delete(pool.id);
      } catch (err) {
        const message = (err as Error).message;
        // Logged when it changes: a target down for an hour is one line, not 3600.
        if (st.lastError !== message) {
          this.d.log.warn(
            { pool: pool.id, target: st.target, err: message },
            'picture backup: the target cluster did not take an announcement; tried again each round',
          );
        }
        st.lastError = message;
        this.checkBehind(pool.id, st);
      }
    }
  }

  /** Announcements of a pool failing for BEHIND_ALARM_MS: `backup-behind`, then at most once per BEHIND_ALARM_MS. */
  private checkBehind(pool: string, st: PictureBackupStatus): void {
    const now = performance.now();
    const since = this.failingSince.get(pool) ?? now;
    this.failingSince.set(pool, since);
    if (now - since < BEHIND_ALARM_MS || now - (this.alarmedAt.get(pool) ?? -Infinity) < BEHIND_ALARM_MS) return;
    this.alarmedAt.set(pool, now);
    this.d.raiseAlarm?.({
      kind: 'backup-behind',
      pool,
      message: `picture backup of pool ${pool} to ${st.target} has failed for ${Math.round((now - since) / 60_000)} min: ${st.lastError ?? ''}`,
      details: { target: st.target, sentThrough: st.sentThrough },
    });
  }

  /** Announces the pool's own packs whose extent the target has not acknowledged, then moves the cursor over those done. */
  private async sendPool(pool: BackedUpPool, token: string, http: string, st: PictureBackupStatus): Promise<void> {
    const state = await this.stateOf(pool, st.target);
    const nc = await this.rounds.target(pool.backupCluster);
    const js = nc.jetstream({ timeout: JS_TIMEOUT_MS });
    const targetPool = pool.backupCluster.pool ?? pool.id;
    const prefix = pool.backupCluster.prefix ?? 'rec';
    const packs = this.d.index.pictures.packsAfter(state.cursor);
    const plan = planPictureBackup(pool.id, state.cursor, packs, state.acked);
    const sent = new Set<number>();
    try {
      for (const p of plan.send) {
        if (this.rounds.signal.aborted) return;
        const a = backupAnnouncement(p, { nodeId: this.d.nodeId, http, token, targetPool });
        // Acknowledged by the target's stream: only then is the extent counted as sent.
        await js.publish(announcementSubject(prefix, a), json.encode(a));
        state.acked.set(p.id, extentOf(p));
        sent.add(p.id);
        st.announced++;
      }
    } finally {
      const to = plan.cursor(sent);
      if (to !== state.cursor) await this.saveCursor(pool.id, state, to);
      st.sentThrough = state.cursor;
    }
  }

  /** The pool's cursor (read from the KV once; started again when the pool's target changes). */
  private async stateOf(pool: BackedUpPool, target: string): Promise<{ target: string; cursor: number; acked: Map<number, string> }> {
    const have = this.pools.get(pool.id);
    if (have && have.target === target) return have;
    const e = await this.rounds.kv.get(pictureCursorKey(pool.id, this.d.nodeId));
    // A target changed since the cursor was written: the new one has none of it yet, so from the start.
    const cursor = have === undefined && e && e.operation === 'PUT' ? Number(e.string()) : -1;
    const state = { target, cursor: Number.isSafeInteger(cursor) ? cursor : -1, acked: new Map<number, string>() };
    this.pools.set(pool.id, state);
    return state;
  }

  /** Moves the cursor; a write that fails (no quorum here) only repeats announcements after a restart, which cost nothing. */
  private async saveCursor(pool: string, state: { cursor: number; acked: Map<number, string> }, to: number): Promise<void> {
    state.cursor = to;
    for (const id of state.acked.keys()) if (id <= to) state.acked.delete(id);
    await this.rounds.kv.put(pictureCursorKey(pool, this.d.nodeId), String(to)).catch((err: unknown) => {
      this.d.log.debug({ pool, err: (err as Error).message }, 'picture backup: cursor not saved');
    });
  }

  private statusOf(pool: BackedUpPool): PictureBackupStatus {
    const target = targetLabel(pool);
    let st = this.status.get(pool.id);
    if (!st || st.target !== target) {
      st = { pool: pool.id, target, announced: 0, sentThrough: -1, lastError: null };
      this.status.set(pool.id, st);
    }
    return st;
  }
}
