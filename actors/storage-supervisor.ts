/**
 * Owns the storage lifecycle of the node: one retention actor per pool (kicked by
 * `segment.closed`, passing on its own after `tickMs` idle), the emergency overwrite when the data disk runs low,
 * backup copies for pools that want a second disk, and the one mutex under which
 * every deletion, thinning and lock change runs (so a lock taken while a pass runs is
 * seen by the pass before it deletes: invariant 3).
 *
 * Start order (RecorderNode): startOnFullDisk → finishIntents → restoreFromBackups →
 * reconcile → start().
 *
 * A full disk (issue 13 item 1): `diskFull()` (an index commit or a segment write
 * failed with ENOSPC, the disk is full at start-up, or a pass finds less free than
 * the reserve) deletes the index's reserve
 * file and gives its space to the index file's preallocated tail
 * (storage/index-reserve.ts) so the index can commit deletions, raises one `disk-full`
 * alarm per episode, raises the free-space floor for the rest of the run to
 * `fullHeadroom` (the configured threshold had let the disk fill) and runs the
 * emergency overwrite. The reserve is written again once the disk has room for it
 * above the threshold. When even the deletion's commit fails (no reserve: a disk
 * filled before this build), the oldest unlocked file is unlinked first and its entry
 * removed after (a crash in between leaves an entry without a file, which reconcile
 * drops with an `index` alarm).
 */
import { mkdir, stat, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createActor, type ActorRefFrom } from 'xstate';
import type { RecorderIndex } from '../index/db.ts';
import { oldestFirst } from '../index/oldest-first.ts';
import type { IntentRecord, LockRecord, PoolPolicy, SegmentRecord } from '../index/records.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import { deleteSegment, finishIntents, segmentCopies } from '../storage/segment-delete.ts';
import { deleteSmartRange } from '../smart/smart-retention.ts';
import type { IndexReserve } from '../storage/index-reserve.ts';
import { isIndexFullError } from '../index/commit-guard.ts';
import { isLocked, lockActive, planRetention, DEFAULT_MAX_LOCK_SHARE } from '../storage/retention-policy.ts';
import { finishThin, replaceCopy, thinSegment } from '../storage/thin.ts';
import { provideRetention } from './retention-actor.ts';
import { followSignal } from '../lib/lifecycle.ts';

export const DEFAULT_POOL: PoolPolicy = { id: 'default', capacityBytes: null, overwrite: 'capacity', maxLockShare: DEFAULT_MAX_LOCK_SHARE };

export interface StorageDeps {
  index: RecorderIndex;
  dataDir: string;
  clock: Clock;
  log: Logger;
  raiseAlarm: (alarm: AlarmInput) => void;
  /** Writing of the pool's cameras must stop (reason) or may go on (null). */
  onPoolBlocked: (pool: string, reason: string | null) => void;
  /** Called after a segment's files are gone (the smart stream of the range goes with it). */
  onSegmentDeleted?: (seg: SegmentRecord) => Promise<void>;
  tickMs: number;
  minFreeBytes: number;
  minFreeRatio: number;
  backupAuditMs: number;
  /** The index's reserve, released when the disk fills (none: tests, tools). */
  reserve?: IndexReserve;
  /**
   * In a cluster (cluster/shared-config.ts `barrier`): resolves true once this node's
   * index holds every lock the cluster acknowledged. A retention pass asks before it
   * deletes and, on false, deletes nothing this time (the emergency overwrite of a
   * full disk does not wait: it goes by the locks mirrored so far).
   */
  syncLocks?: () => Promise<boolean>;
  /** The node's shutdown signal (lib/lifecycle.ts): once aborted no pass, audit or cover starts. */
  signal?: AbortSignal;
}

/** A disk that keeps filling raises `disk-full` at most this often (each pass that deletes logs). */
export const DISK_FULL_ALARM_EVERY_MS = 10 * 60_000;

/** Free space kept after a full disk: 5 % of the disk, at least twice the reserve, at most 1 GiB. */
export function fullHeadroom(diskBytes: number, reserveBytes: number): number {
  return Math.min(1024 ** 3, Math.max(2 * reserveBytes, Math.floor(diskBytes * 0.05)));
}

/** The picture storage as retention sees it (pictures/cover.ts), attached once it is open. */
export interface PictureCover {
  /** Covers what each pool's policy says goes now (capacity, cycle). */
  cover(pools: readonly PoolPolicy[], nowMs: number): Promise<void>;
  /** Newest picture time of the oldest closed pack on the node, or null: none. */
  oldestPackMs(): number | null;
  /** Covers that pack (its locked pictures kept); the bytes freed. */
  coverOldest(nowMs: number): Promise<number>;
  /** Bytes of a pool's picture packs. */
  poolBytes(pool: string): number;
}

export interface PoolView extends PoolPolicy {
  usageBytes: number;
  /** Bytes of the pool's picture packs (beside `usageBytes` of video). */
  pictureBytes: number;
  lockedBytes: number;
  deletedSegments: number;
  thinnedSegments: number;
  blocked: string | null;
}

type RetentionActor = ActorRefFrom<ReturnType<typeof provideRetention>>;

export class StorageSupervisor {
  private readonly actors = new Map<string, RetentionActor>();
  private readonly blocked = new Map<string, string>();
  private readonly stats = new Map<string, { deleted: number; thinned: number }>();
  private readonly passes = new Set<Promise<void>>();
  private mutex: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private auditTimer: NodeJS.Timeout | null = null;
  private lowDisk = false;
  /** Aborted by stop() or with the node's signal: no pass, audit or cover starts after. */
  private readonly life: AbortController;
  /** The last pass waited for the cluster's lock barrier (logged once until it passes again). */
  private unsynced = false;
  /** Free space the emergency pass keeps on top of the threshold, raised by a full disk. */
  private fullFloor = 0;
  private fullRun: Promise<void> | null = null;
  private lastFullAlarmMs = -Infinity;
  private sameDisk: boolean | null = null;
  private pictures: PictureCover | null = null;

  constructor(private readonly deps: StorageDeps) {
    this.life = followSignal(deps.signal);
  }

  private get stopped(): boolean {
    return this.life.signal.aborted;
  }

  /** Crash replay: finish interrupted deletions, purges and thinnings (before reconcile). */
  async finishIntents(): Promise<number> {
    const { index, dataDir, log } = this.deps;
    const finish = {
      thin: (intent: Extract<IntentRecord, { kind: 'thin' }>) => finishThin(index, dataDir, intent),
      purge: async (intent: Extract<IntentRecord, { kind: 'purge' }>) => {
        await this.purgeRest(intent.camera);
      },
    };
    return finishIntents(index, finish, log);
  }

  /**
   * Camera delete with purge (its actor has stopped): the camera's records go with a
   * `purge` intent in one commit, then every segment is deleted as retention deletes
   * (storage/segment-delete.ts: intent, primary and backup copy, end of intent), then
   * its gap records and smart files; the intent ends last. All under the storage
   * mutex, so no retention pass runs meanwhile on the pool's usage. A crash on the way
   * is finished at the next start (finishIntents). Returns how many segments went.
   */
  async purgeCamera(camera: string): Promise<number> {
    const intent = await this.deps.index.cameras.removeWithPurgeIntent(camera);
    const purged = await this.purgeRest(camera);
    await this.deps.index.intents.finish(intent);
    return purged;
  }

  /** What is left of a purged camera: segments, gap records, smart files. */
  private purgeRest(camera: string): Promise<number> {
    const { index, dataDir, log } = this.deps;
    return this.exclusive(async () => {
      let purged = 0;
      for (const seg of index.segments.all(camera)) {
        await deleteSegment(index, seg, segmentCopies(dataDir, seg, this.pool(seg.pool)?.backupDir));
        purged++;
      }
      const gaps = await index.gaps.removeCamera(camera);
      const smart = await deleteSmartRange(index, dataDir, camera, -1, Number.MAX_SAFE_INTEGER, true);
      log.info({ camera, segments: purged, gaps, smartFiles: smart.files }, 'camera purged');
      return purged;
    });
  }

  /**
   * Copies of other nodes' segments that the pool holds once too often
   * (cluster/copy-trim.ts) deleted as retention deletes: only once this node mirrors
   * every acknowledged lock (the barrier retention waits for), then each under the
   * storage mutex, read again and deleted only if it is still closed, unlocked and
   * `stillSurplus` says so. Returns how many went.
   */
  async dropSurplusCopies(segs: readonly SegmentRecord[], stillSurplus: (fresh: SegmentRecord) => boolean): Promise<number> {
    if (this.deps.syncLocks && !(await this.deps.syncLocks())) return 0;
    const { index, log } = this.deps;
    let dropped = 0;
    for (const seg of segs) {
      if (this.stopped) break;
      const gone = await this.exclusive(async () => {
        const fresh = index.segments.get(seg.camera, seg.startMs);
        if (!fresh || fresh.open || isLocked(index.locks.ofCamera(fresh.camera), fresh.startMs, fresh.endMs, this.deps.clock.nowMs())) return false;
        if (!stillSurplus(fresh)) return false;
        await deleteSegment(index, fresh, segmentCopies(this.deps.dataDir, fresh, this.pool(fresh.pool)?.backupDir));
        await this.deps
          .onSegmentDeleted?.(fresh)
          .catch((err: unknown) => log.warn({ err, file: fresh.file }, 'could not delete what belongs to a deleted segment'));
        log.debug({ camera: fresh.camera, file: fresh.file }, 'surplus copy deleted');
        return true;
      });
      if (gone) dropped++;
    }
    return dropped;
  }

  /** A primary copy lost while its backup survives is copied back (before reconcile drops its entry). */
  async restoreFromBackups(): Promise<number> {
    let restored = 0;
    for (const pool of this.pools()) {
      if (!pool.backupDir) continue;
      for (const seg of this.closedSegmentsOf(pool.id)) {
        const [primary, backup] = segmentCopies(this.deps.dataDir, seg, pool.backupDir) as [string, string];
        if (await exists(primary)) continue;
        if (!(await exists(backup))) continue;
        await mkdir(dirname(primary), { recursive: true });
        await replaceCopy(backup, primary);
        restored++;
        this.deps.log.warn({ file: seg.file }, 'segment file lost: restored from its backup copy');
      }
    }
    return restored;
  }

  async start(): Promise<void> {
    if (!this.deps.index.pools.get(DEFAULT_POOL.id)) {
      // On a full disk this commit may fail: the pool is created at a later start.
      await this.deps.index.pools
        .put(DEFAULT_POOL.id, DEFAULT_POOL)
        .catch((err: unknown) => this.deps.log.error({ err }, 'the default pool could not be stored'));
    }
    for (const pool of this.pools()) this.ensureActor(pool.id);
    // Each pool's actor passes on its own after tickMs idle; the disk is watched here.
    this.timer = setInterval(() => {
      void this.emergencyPass().catch((err: unknown) => this.deps.log.error({ err }, 'emergency overwrite failed'));
      void this.coverPictures().catch((err: unknown) => this.deps.log.error({ err }, 'picture cover failed'));
    }, this.deps.tickMs);
    this.timer.unref();
    this.auditTimer = setInterval(
      () => void this.auditBackups().catch((err: unknown) => this.deps.log.error({ err }, 'backup audit failed')),
      this.deps.backupAuditMs,
    );
    this.auditTimer.unref();
    this.kickAll();
    void this.auditBackups().catch((err: unknown) => this.deps.log.error({ err }, 'backup audit failed'));
  }

  async stop(): Promise<void> {
    this.life.abort();
    if (this.timer) clearInterval(this.timer);
    if (this.auditTimer) clearInterval(this.auditTimer);
    for (const a of this.actors.values()) a.stop();
    await Promise.allSettled([...this.passes]);
    await this.mutex.catch(() => undefined);
  }

  /** The picture storage, once open: its packs are covered by the pools' policies and by the emergency overwrite. */
  attachPictures(pictures: PictureCover): void {
    this.pictures = pictures;
  }

  /** Covers the pictures each pool's policy says go (under the mutex, so a picture lock taken meanwhile is seen). */
  async coverPictures(): Promise<void> {
    const pictures = this.pictures;
    if (!pictures || this.stopped) return;
    await this.exclusive(() => pictures.cover(this.pools(), this.deps.clock.nowMs()));
  }

  pools(): PoolPolicy[] {
    return this.deps.index.pools.list();
  }

  pool(id: string): PoolPolicy | undefined {
    return this.deps.index.pools.get(id);
  }

  view(pool: PoolPolicy): PoolView {
    const s = this.stats.get(pool.id);
    return {
      ...pool,
      usageBytes: this.deps.index.segments.poolUsage(pool.id),
      pictureBytes: this.pictures?.poolBytes(pool.id) ?? 0,
      lockedBytes: this.lockedBytes(pool.id),
      deletedSegments: s?.deleted ?? 0,
      thinnedSegments: s?.thinned ?? 0,
      blocked: this.blocked.get(pool.id) ?? null,
    };
  }

  /** Stores a policy and runs a pass at once (a shrunk pool overwrites now, a grown one unblocks). */
  async putPool(policy: PoolPolicy): Promise<void> {
    await this.deps.index.pools.put(policy.id, policy);
    this.ensureActor(policy.id);
    this.kick(policy.id);
  }

  segmentClosed(seg: SegmentRecord): void {
    if (this.stopped) return;
    const pool = this.pool(seg.pool);
    if (pool?.backupDir) {
      const backupDir = pool.backupDir;
      void this.exclusive(() => this.copyToBackup(seg, backupDir)).catch((err: unknown) => {
        this.deps.raiseAlarm({
          kind: 'backup-failed',
          camera: seg.camera,
          pool: seg.pool,
          message: `backup copy of ${seg.file} failed: ${(err as Error).message}`,
        });
      });
    }
    this.kick(seg.pool);
  }

  kick(poolId: string): void {
    if (this.stopped) return;
    this.ensureActor(poolId).send({ type: 'KICK' });
  }

  /** Runs `work` under the storage mutex (deletions, thinning, lock changes). */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.mutex.then(work, work);
    this.mutex = run.catch(() => undefined);
    return run;
  }

  /** Bytes of the pool's segments that overlap an active lock. */
  lockedBytes(poolId: string, extra?: { camera: string; startMs: number; endMs: number }): number {
    const now = this.deps.clock.nowMs();
    const byCamera = new Map<string, LockRecord[]>();
    for (const value of this.deps.index.locks.all()) {
      if (!lockActive(value, now)) continue;
      byCamera.set(value.camera, [...(byCamera.get(value.camera) ?? []), value]);
    }
    if (extra) byCamera.set(extra.camera, [...(byCamera.get(extra.camera) ?? []), { id: 'new', ...extra, untilMs: null, createdMs: now }]);
    let bytes = 0;
    for (const [camera, locks] of byCamera) {
      const seen = new Set<number>();
      for (const l of locks) {
        for (const seg of this.deps.index.segments.inRange(camera, l.startMs, l.endMs)) {
          if (seg.pool !== poolId || seen.has(seg.startMs)) continue;
          seen.add(seg.startMs);
          bytes += seg.bytes;
        }
      }
    }
    return bytes;
  }

  private ensureActor(poolId: string): RetentionActor {
    let actor = this.actors.get(poolId);
    if (!actor) {
      actor = createActor(
        provideRetention((p) => this.trackPass(p)),
        { input: { pool: poolId, tickMs: this.deps.tickMs } },
      );
      actor.on('pass.failed', (e) => this.deps.log.error({ pool: e.pool, err: e.error }, 'retention pass failed; the next kick retries'));
      this.actors.set(poolId, actor);
      actor.start();
    }
    return actor;
  }

  private kickAll(): void {
    for (const id of this.actors.keys()) this.kick(id);
    void this.emergencyPass().catch((err: unknown) => this.deps.log.error({ err }, 'emergency overwrite failed'));
  }

  /** One retention pass of `poolId` now, under the storage mutex (operators, tests). */
  retentionPass(poolId: string): Promise<void> {
    return this.trackPass(poolId);
  }

  private trackPass(poolId: string): Promise<void> {
    // The barrier runs outside the mutex: mirroring a lock change takes the mutex too.
    const p = (async () => {
      if (this.deps.syncLocks && !(await this.deps.syncLocks())) {
        if (!this.unsynced) this.deps.log.warn({ pool: poolId }, 'retention waits: the cluster cannot confirm this node has every lock');
        this.unsynced = true;
        return;
      }
      this.unsynced = false;
      await this.exclusive(() => this.runPass(poolId));
    })();
    this.passes.add(p);
    void p.finally(() => this.passes.delete(p)).catch(() => undefined);
    return p;
  }

  /** One retention pass of a pool (runs under the mutex). */
  private async runPass(poolId: string): Promise<void> {
    if (this.stopped) return;
    const { index, clock, log } = this.deps;
    const policy = this.pool(poolId);
    if (!policy) return;
    const now = clock.nowMs();
    await this.releaseExpiredLocks(now);
    const locks = new Map<string, LockRecord[]>();
    const locksOfCamera = (camera: string): LockRecord[] => {
      let l = locks.get(camera);
      if (!l) locks.set(camera, (l = index.locks.ofCamera(camera)));
      return l;
    };
    const plan = planRetention(
      policy,
      index.segments.poolUsage(poolId),
      oldestFirst(index, (s) => s.pool === poolId),
      locksOfCamera,
      now,
    );
    const stats = this.stats.get(poolId) ?? { deleted: 0, thinned: 0 };
    this.stats.set(poolId, stats);
    for (const { seg, why } of plan.delete) {
      if (this.stopped) return;
      await deleteSegment(index, seg, segmentCopies(this.deps.dataDir, seg, policy.backupDir));
      stats.deleted++;
      log.info({ pool: poolId, camera: seg.camera, file: seg.file, why }, 'segment overwritten');
      await this.deps.onSegmentDeleted?.(seg).catch((err: unknown) => log.warn({ err, file: seg.file }, 'could not delete what belongs to a deleted segment'));
    }
    for (const seg of plan.thin) {
      if (this.stopped) return;
      const fresh = index.segments.get(seg.camera, seg.startMs);
      if (!fresh || isLocked(locksOfCamera(seg.camera), fresh.startMs, fresh.endMs, now)) continue;
      try {
        const r = await thinSegment(index, this.deps.dataDir, fresh, policy.backupDir);
        stats.thinned++;
        log.info({ pool: poolId, file: seg.file, before: r.bytesBefore, after: r.bytesAfter }, 'segment thinned to its I-frames');
      } catch (err) {
        log.error({ err, file: seg.file }, 'thinning failed; the segment is left as it was');
      }
    }
    this.setBlocked(poolId, plan.blocked);
  }

  private async releaseExpiredLocks(now: number): Promise<void> {
    const expired = this.deps.index.locks.all().filter((l) => !lockActive(l, now));
    if (expired.length === 0) return;
    await this.deps.index.locks.apply({ put: [], remove: expired });
    for (const l of expired) this.deps.log.info({ camera: l.camera, lock: l.id }, 'lock expired and was released');
  }

  private setBlocked(poolId: string, reason: string | null): void {
    const was = this.blocked.get(poolId) ?? null;
    if (was === reason || (was !== null && reason !== null)) return;
    if (reason === null) this.blocked.delete(poolId);
    else {
      this.blocked.set(poolId, reason);
      this.deps.raiseAlarm({ kind: 'pool-full', pool: poolId, message: `${reason}: recording of its cameras stops until space is made` });
    }
    this.deps.log.warn({ pool: poolId, blocked: reason }, reason ? 'pool blocked' : 'pool unblocked');
    this.deps.onPoolBlocked(poolId, reason);
  }

  /**
   * The disk is full (`what` says how it showed): release the index's reserve, alarm
   * once per episode, keep `fullHeadroom` free from now on, and overwrite. Calls while
   * one runs join it.
   */
  diskFull(what: string): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.fullRun ??= this.onDiskFull(what).finally(() => (this.fullRun = null));
    return this.fullRun;
  }

  private async onDiskFull(what: string): Promise<void> {
    const released = (await this.deps.reserve?.release().catch(() => false)) ?? false;
    const reserveBytes = (await this.deps.reserve?.bytes().catch(() => 0)) ?? 0;
    const indexTailBytes = (await this.deps.reserve?.tail().catch(() => 0)) ?? 0;
    const s = await statfs(this.poolsDir());
    const floor = fullHeadroom(s.blocks * s.bsize, reserveBytes);
    if (floor > this.fullFloor) {
      this.fullFloor = floor;
      this.deps.log.warn({ floorBytes: floor }, 'disk full: free-space floor raised for this run');
    }
    if (!this.lowDisk && this.fullAlarmDue()) {
      this.lowDisk = true;
      this.deps.raiseAlarm({
        kind: 'disk-full',
        message: `data disk full (${what}): ${released ? `index reserve released (${reserveBytes} bytes) so the index can commit deletions; ` : ''}emergency overwrite of the oldest unlocked video until ${floor} bytes are free; recording retries meanwhile`,
        details: { cause: what, reserveReleased: released, indexTailBytes, floorBytes: floor, freeBytes: s.bavail * s.bsize },
      });
    }
    await this.emergencyPass().catch((err: unknown) => this.deps.log.error({ err }, 'emergency overwrite failed'));
  }

  /** Whether a `disk-full` alarm may be raised now (one per episode, at most one per DISK_FULL_ALARM_EVERY_MS). */
  private fullAlarmDue(): boolean {
    const now = this.deps.clock.nowMs();
    if (now - this.lastFullAlarmMs < DISK_FULL_ALARM_EVERY_MS) return false;
    this.lastFullAlarmMs = now;
    return true;
  }

  /**
   * Start-up on a disk too full to hold the reserve: the emergency overwrite runs
   * before reconcile (whose commits need room); else the reserve is written if missing.
   */
  async startOnFullDisk(): Promise<void> {
    const reserve = this.deps.reserve;
    if (!reserve) return;
    await mkdir(this.poolsDir(), { recursive: true });
    const s = await statfs(this.deps.dataDir);
    const free = s.bavail * s.bsize;
    if (free < (await reserve.bytes())) await this.diskFull(`${free} bytes free at start-up`);
    else await reserve.ensure();
  }

  private poolsDir(): string {
    // The pools dir, not the data dir: it may be a mount of its own (the disk the video is on).
    return join(this.deps.dataDir, 'pools');
  }

  /** Whether the reserve (beside the index) is on the disk the video is on. */
  private async reserveOnVideoDisk(): Promise<boolean> {
    if (this.sameDisk === null) {
      const [a, b] = await Promise.all([stat(this.poolsDir()), stat(this.deps.dataDir)]);
      this.sameDisk = a.dev === b.dev;
    }
    return this.sameDisk;
  }

  /**
   * Emergency overwrite: when the data disk's free space falls under
   * max(minFreeBytes, minFreeRatio × size) or, after a full disk, the floor it raised
   * plus what the reserve lacks (so there is room to restore it; this part at most half
   * of our own video's bytes) — delete the oldest unlocked closed segments on it
   * whatever their pool's mode, until it is back over that. With room, the reserve is
   * restored (the index file's tail topped up, the file written).
   */
  async emergencyPass(): Promise<void> {
    if (this.stopped) return;
    const poolsDir = this.poolsDir();
    await mkdir(poolsDir, { recursive: true });
    const reserve = this.deps.reserve;
    // What the reserve lacks (its file, its part of the index file's tail), when it is on this disk.
    const reserveBytes = reserve && (await this.reserveOnVideoDisk()) ? await reserve.shortBytes() : 0;
    const threshold = async (): Promise<{ free: number; need: number }> => {
      const s = await statfs(poolsDir);
      const configured = Math.max(this.deps.minFreeBytes, this.deps.minFreeRatio * s.blocks * s.bsize);
      // The headroom a full disk asked for is kept with at most half of our own video:
      // on a disk filled by something else, deleting every segment as it closes keeps
      // nothing and frees nothing lasting.
      const ours = this.pools().reduce((sum, p) => sum + this.deps.index.segments.poolUsage(p.id), 0);
      return { free: s.bavail * s.bsize, need: Math.max(configured, Math.min(this.fullFloor + reserveBytes, Math.floor(ours / 2))) };
    };
    let { free, need } = await threshold();
    // A disk with less free than the reserve is full, whoever filled it: release the
    // reserve now, before the index's commits have run its tail out (a segment write's
    // ENOSPC may come later than those commits, or never: another writer filled it).
    // (Not from within a full-disk run: that run released it, or could not.)
    if (reserve && !this.fullRun && (await this.reserveOnVideoDisk()) && free < (await reserve.bytes()) && (await reserve.present())) {
      return this.diskFull(`${free} bytes free, less than the index reserve`);
    }
    if (free >= need) {
      this.lowDisk = false;
      await reserve?.ensure(Math.max(0, need - reserveBytes));
      return;
    }
    await this.exclusive(async () => {
      // Another pass may have run while this one waited for the mutex.
      ({ free, need } = await threshold());
      const now = this.deps.clock.nowMs();
      let deleted = 0;
      // Pictures and video go oldest first: a picture pack whose newest picture is older
      // than the next segment is covered before it.
      const coverOlderPictures = async (thanMs: number): Promise<void> => {
        const pictures = this.pictures;
        while (pictures && free < need && !this.stopped) {
          const oldest = pictures.oldestPackMs();
          if (oldest === null || oldest > thanMs) return;
          if ((await pictures.coverOldest(this.deps.clock.nowMs())) <= 0) return;
          deleted++;
          ({ free, need } = await threshold());
        }
      };
      for (const seg of oldestFirst(this.deps.index, (s) => !s.open)) {
        await coverOlderPictures(seg.startMs);
        if (free >= need || this.stopped) break;
        if (isLocked(this.deps.index.locks.ofCamera(seg.camera), seg.startMs, seg.endMs, now)) continue;
        const files = segmentCopies(this.deps.dataDir, seg, this.pool(seg.pool)?.backupDir);
        try {
          await deleteSegment(this.deps.index, seg, files);
        } catch (err) {
          if (!isIndexFullError(err)) throw err;
          // Not even a deletion commits: free the file's bytes first, then drop its entry.
          this.deps.log.warn({ file: seg.file }, 'disk full: the index cannot commit a deletion; unlinking the oldest file before its entry');
          const committed = await deleteSegment(this.deps.index, seg, files, { unlinkFirst: true }).then(
            () => true,
            () => false,
          );
          ({ free, need } = await threshold());
          if (!committed) continue;
        }
        await this.deps.onSegmentDeleted?.(seg).catch(() => undefined);
        deleted++;
        // The pool view counts every deletion of its video, emergency ones included.
        const stats = this.stats.get(seg.pool) ?? { deleted: 0, thinned: 0 };
        stats.deleted++;
        this.stats.set(seg.pool, stats);
        ({ free, need } = await threshold());
      }
      await coverOlderPictures(Infinity);
      if (deleted > 0) this.deps.log.warn({ deleted, freeBytes: free, needBytes: Math.round(need) }, 'emergency overwrite');
      if (!this.lowDisk && this.fullAlarmDue()) {
        this.lowDisk = true;
        this.deps.raiseAlarm({
          kind: 'disk-full',
          message: `data disk has ${free} bytes free (threshold ${Math.round(need)}): emergency overwrite deleted ${deleted} oldest unlocked segments`,
          details: { free, need, deleted },
        });
      }
    });
  }

  private async copyToBackup(seg: SegmentRecord, backupDir: string): Promise<void> {
    const to = join(backupDir, seg.file);
    await mkdir(dirname(to), { recursive: true });
    await replaceCopy(join(this.deps.dataDir, seg.file), to);
  }

  /**
   * The pool's closed segments: only the cameras that have video in the pool (a keyed
   * read), each walked in batches that hold no read transaction between them, so the
   * caller may wait (a copy, the mutex) between segments.
   */
  private *closedSegmentsOf(poolId: string): Iterable<SegmentRecord> {
    for (const camera of this.deps.index.segments.poolCameras(poolId)) {
      for (const seg of this.deps.index.segments.all(camera)) if (seg.pool === poolId && !seg.open) yield seg;
    }
  }

  /**
   * Re-creates missing or short backup copies (seed: copy loss and automatic supplement).
   * Reads only the segments of pools with a backup dir (closedSegmentsOf).
   */
  async auditBackups(): Promise<number> {
    let fixed = 0;
    for (const pool of this.pools()) {
      if (!pool.backupDir || this.stopped) continue;
      const backupDir = pool.backupDir;
      for (const seg of this.closedSegmentsOf(pool.id)) {
        if (this.stopped) break;
        const [primary, backup] = segmentCopies(this.deps.dataDir, seg, backupDir) as [string, string];
        const size = await stat(backup).then(
          (s) => s.size,
          () => -1,
        );
        if (size === seg.bytes || !(await exists(primary))) continue;
        await this.exclusive(() => this.copyToBackup(seg, backupDir));
        fixed++;
        this.deps.log.warn({ file: seg.file, pool: pool.id }, 'backup copy missing or short: re-created');
      }
    }
    return fixed;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
