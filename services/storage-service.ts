/**
 * Domain functions for pools, locks and labels behind HTTP and NATS (docs/api/nats.md
 * `pool.*`, `lock`/`unlock`, `label.*`), and the lock/label annotation of search
 * results. Every lock change runs under the storage mutex, so a retention pass never
 * deletes what a lock acknowledged a moment ago protects.
 */
import { randomUUID } from 'node:crypto';
import { resolve, relative, isAbsolute } from 'node:path';
import type { StorageSupervisor, PoolView } from '../actors/storage-supervisor.ts';
import type { CameraPlacement } from '../cluster/cluster.ts';
import type { RecorderIndex } from '../index/db.ts';
import { cutLocks, mergeLock, type LockChange } from '../index/locks.ts';
import type { LabelRecord, LockRecord, PoolPolicy } from '../index/records.ts';
import { DEFAULT_MAX_LOCK_SHARE, lockActive } from '../storage/retention-policy.ts';
import { NoVideoError, RecorderError, ValidationError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { REDACTED } from '../lib/redact.ts';
import { iso, parseRangeMs, parseTimeMs, type Clock } from '../lib/time.ts';
import {
  labelAddSchema,
  labelIdSchema,
  labelSearchSchema,
  labelUpdateSchema,
  lockSchema,
  poolIdSchema,
  poolPutSchema,
  unlockSchema,
  validate,
} from './schemas.ts';

export interface LockView {
  id: string;
  camera: string;
  from: string;
  to: string;
  until: string | null;
}

export interface LabelView {
  id: string;
  camera: string;
  from: string;
  to: string;
  text: string;
  created: string;
  updated: string;
}

/** Labels matched by one search at most (a UI page; narrow the range for more). */
const LABEL_SEARCH_LIMIT = 1000;

export class StorageService {
  constructor(
    private readonly index: RecorderIndex,
    private readonly storage: StorageSupervisor,
    private readonly clock: Clock,
    private readonly dataDir: string,
    private readonly log: Logger,
    private readonly requireCamera: (id: string) => { id: string; pool: string },
  ) {}

  /** In a cluster (cluster/shared-config.ts): pools, locks and labels go to the shared config first. */
  private cluster: CameraPlacement | null = null;

  attachCluster(cluster: CameraPlacement): void {
    this.cluster = cluster;
  }

  /**
   * Applies a lock change decided by `decide` on a camera's current locks: here alone,
   * or in a cluster by compare-and-set on the camera's shared lock set first (decided on
   * that set, which every node mirrors), then here.
   */
  private async changeLocks<R extends LockChange>(camera: string, decide: (current: LockRecord[]) => R): Promise<R> {
    if (!this.cluster) {
      const change = decide(this.index.locks.ofCamera(camera));
      await this.index.locks.apply(change);
      return change;
    }
    const { change, locks } = await this.cluster.config().changeLocks(camera, (current) => {
      const c = decide(current);
      const next = [...current.filter((l) => !c.remove.some((r) => r.id === l.id && r.startMs === l.startMs)), ...c.put];
      return { locks: next, result: { change: c, locks: next } };
    });
    await this.index.locks.apply({ remove: this.index.locks.ofCamera(camera), put: locks });
    return change;
  }

  // ---- pools ----------------------------------------------------------------

  listPools(): PoolView[] {
    return this.storage.pools().map((p) => this.poolView(p));
  }

  getPool(body: unknown): PoolView {
    const { id } = validate(poolIdSchema, body);
    return this.poolView(this.requirePool(id));
  }

  /** A pool as shown: the backup cluster's NATS password never leaves (the mark instead). */
  private poolView(p: PoolPolicy): PoolView {
    const view = this.storage.view(p);
    return p.backupCluster?.pass !== undefined ? { ...view, backupCluster: { ...p.backupCluster, pass: REDACTED } } : view;
  }

  async putPool(body: unknown): Promise<PoolView> {
    const p = validate(poolPutSchema, body);
    if (p.backupDir !== undefined) {
      const backup = resolve(p.backupDir);
      const data = resolve(this.dataDir);
      // `/` holds every data dir: compare by relative path, not by a `${dir}/` prefix.
      const inside = (dir: string, of: string): boolean => {
        const rel = relative(of, dir);
        return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
      };
      if (inside(backup, data) || inside(data, backup)) {
        throw new ValidationError(`backupDir ${p.backupDir} must be outside the data dir (another disk), not inside it or around it`);
      }
    }
    // A client that sends back the mark it was shown keeps the stored password (same target and user).
    if (p.backupCluster?.pass === REDACTED) {
      const stored = this.storage.pool(p.id)?.backupCluster;
      if (!stored?.pass || stored.user !== p.backupCluster.user || stored.servers.join() !== p.backupCluster.servers.join()) {
        throw new ValidationError(`backupCluster.pass: ${REDACTED} stands for a stored password, and pool ${p.id} has none for this user and servers`);
      }
      p.backupCluster.pass = stored.pass;
    }
    const policy: PoolPolicy = {
      id: p.id,
      capacityBytes: p.capacityBytes,
      overwrite: p.overwrite,
      maxLockShare: p.maxLockShare ?? DEFAULT_MAX_LOCK_SHARE,
      ...(p.cycleDays !== undefined ? { cycleDays: p.cycleDays } : {}),
      ...(p.thinAfterDays !== undefined ? { thinAfterDays: p.thinAfterDays } : {}),
      ...(p.backupDir !== undefined ? { backupDir: resolve(p.backupDir) } : {}),
      ...(p.format !== undefined ? { format: p.format } : {}),
      ...(p.pictureCapacityBytes !== undefined ? { pictureCapacityBytes: p.pictureCapacityBytes } : {}),
      ...(p.copies !== undefined ? { copies: p.copies } : {}),
      ...(p.backupCluster !== undefined ? { backupCluster: p.backupCluster } : {}),
      ...(p.receivesBackups !== undefined ? { receivesBackups: p.receivesBackups } : {}),
    };
    await this.cluster?.config().put('pool', policy.id, policy);
    await this.storage.putPool(policy);
    this.log.info({ pool: policy.id, capacityBytes: policy.capacityBytes, overwrite: policy.overwrite }, 'pool configured');
    return this.poolView(policy);
  }

  requirePool(id: string): PoolPolicy {
    const pool = this.storage.pool(id);
    if (!pool) throw new RecorderError('POOL_NOT_FOUND', `no pool ${JSON.stringify(id)}: create it with pool.put first`);
    return pool;
  }

  /** Deletes every segment, gap record and smart file of a camera whose actor has stopped, and its records (StorageSupervisor.purgeCamera). */
  purgeCamera(camera: string): Promise<number> {
    return this.storage.purgeCamera(camera);
  }

  // ---- locks ----------------------------------------------------------------

  async lock(body: unknown): Promise<LockView> {
    const q = validate(lockSchema, body);
    const camera = this.requireCamera(q.camera);
    const { fromMs, toMs } = parseRangeMs(q.from, q.to);
    const now = this.clock.nowMs();
    const untilMs = q.until === undefined || q.until === null ? null : parseTimeMs(q.until, 'until');
    if (untilMs !== null && untilMs <= now) throw new ValidationError(`until (${iso(untilMs)}) is already past`);
    return this.storage.exclusive(async () => {
      // In a cluster the video may be on another node that held the camera: only a single node requires it here.
      if (!this.cluster && this.index.segments.inRange(camera.id, fromMs, toMs).length === 0)
        throw new NoVideoError(`no video of camera ${camera.id} between ${iso(fromMs)} and ${iso(toMs)} to lock`);
      const pool = this.storage.pool(camera.pool);
      if (pool && pool.capacityBytes !== null) {
        const after = this.storage.lockedBytes(camera.pool, { camera: camera.id, startMs: fromMs, endMs: toMs });
        const allowed = pool.maxLockShare * pool.capacityBytes;
        if (after > allowed) {
          throw new RecorderError(
            'LOCK_SHARE_EXCEEDED',
            `locking would hold ${after} bytes of pool ${pool.id}, over its maxLockShare ${pool.maxLockShare} of ${pool.capacityBytes} bytes`,
          );
        }
      }
      const change = await this.changeLocks(camera.id, (current) =>
        mergeLock(
          current.filter((l) => lockActive(l, now)),
          { camera: camera.id, startMs: fromMs, endMs: toMs, untilMs },
          now,
        ),
      );
      this.log.info({ camera: camera.id, lock: change.lock.id, from: iso(change.lock.startMs), to: iso(change.lock.endMs) }, 'video locked');
      return lockView(change.lock);
    });
  }

  /** Releases a lock by id, or a range of a camera's locks. */
  async unlock(body: unknown): Promise<{ released: LockView[]; kept: LockView[] }> {
    const q = validate(unlockSchema, body);
    return this.storage.exclusive(async () => {
      let change: LockChange;
      if ('id' in q) {
        const found = this.index.locks.byId(q.id);
        if (!found) throw new RecorderError('LOCK_NOT_FOUND', `no lock ${q.id}`);
        change = await this.changeLocks(found.camera, (current) => {
          const lock = current.find((l) => l.id === q.id);
          if (!lock) throw new RecorderError('LOCK_NOT_FOUND', `no lock ${q.id}`);
          return { put: [], remove: [lock] };
        });
      } else {
        const camera = this.requireCamera(q.camera);
        const { fromMs, toMs } = parseRangeMs(q.from, q.to);
        change = await this.changeLocks(camera.id, (current) => {
          const cut = cutLocks(current, fromMs, toMs);
          if (cut.remove.length === 0) throw new RecorderError('LOCK_NOT_FOUND', `no lock of camera ${camera.id} between ${iso(fromMs)} and ${iso(toMs)}`);
          return cut;
        });
      }
      for (const l of change.remove) this.storage.kick(this.requireCameraPool(l.camera));
      return { released: change.remove.map(lockView), kept: change.put.map(lockView) };
    });
  }

  listLocks(camera?: string): LockView[] {
    const now = this.clock.nowMs();
    const locks = camera ? this.index.locks.ofCamera(this.requireCamera(camera).id) : this.index.locks.all();
    return locks.filter((l) => lockActive(l, now)).map(lockView);
  }

  private requireCameraPool(camera: string): string {
    try {
      return this.requireCamera(camera).pool;
    } catch {
      return 'default';
    }
  }

  // ---- labels ---------------------------------------------------------------

  async addLabel(body: unknown): Promise<LabelView> {
    const q = validate(labelAddSchema, body);
    const camera = this.requireCamera(q.camera);
    const { fromMs, toMs } = parseRangeMs(q.from, q.to);
    const now = this.clock.nowMs();
    const label: LabelRecord = { id: randomUUID(), camera: camera.id, startMs: fromMs, endMs: toMs, text: q.text, createdMs: now, updatedMs: now };
    await this.cluster?.config().put('label', label.id, label);
    await this.index.labels.put(label);
    return labelView(label);
  }

  async updateLabel(body: unknown): Promise<LabelView> {
    const q = validate(labelUpdateSchema, body);
    const old = this.requireLabel(q.id);
    const startMs = q.from !== undefined ? parseTimeMs(q.from, 'from') : old.startMs;
    const endMs = q.to !== undefined ? parseTimeMs(q.to, 'to') : old.endMs;
    if (endMs <= startMs) throw new ValidationError(`to (${iso(endMs)}) must be after from (${iso(startMs)})`);
    const label: LabelRecord = { ...old, startMs, endMs, text: q.text ?? old.text, updatedMs: this.clock.nowMs() };
    await this.cluster?.config().put('label', label.id, label);
    await this.index.labels.put(label, old);
    return labelView(label);
  }

  async deleteLabel(body: unknown): Promise<{ id: string }> {
    const { id } = validate(labelIdSchema, body);
    const old = this.requireLabel(id);
    await this.cluster?.config().remove('label', id);
    await this.index.labels.remove(old);
    return { id };
  }

  searchLabels(body: unknown): LabelView[] {
    const q = validate(labelSearchSchema, body);
    const fromMs = q.from !== undefined ? parseTimeMs(q.from, 'from') : -Infinity;
    const toMs = q.to !== undefined ? parseTimeMs(q.to, 'to') : Infinity;
    if (toMs <= fromMs) throw new ValidationError('to must be after from');
    const cameras = q.camera ? [this.requireCamera(q.camera).id] : null;
    return this.labelsIn(cameras, fromMs, toMs, q.text)
      .slice(0, q.limit ?? LABEL_SEARCH_LIMIT)
      .map(labelView);
  }

  /** Labels overlapping [fromMs, toMs) of the cameras (all when null) whose text contains `text`. */
  labelsIn(cameras: string[] | null, fromMs: number, toMs: number, text?: string): LabelRecord[] {
    const needle = text?.toLowerCase();
    const out: LabelRecord[] = [];
    const keep = (l: LabelRecord | undefined): void => {
      if (!l || l.endMs <= fromMs || l.startMs >= toMs) return;
      if (needle && !l.text.toLowerCase().includes(needle)) return;
      out.push(l);
    };
    if (cameras === null) {
      for (const l of this.index.labels.all()) keep(l);
    } else {
      for (const camera of cameras) {
        for (const l of this.index.labels.ofCameraBefore(camera, toMs)) keep(l);
      }
    }
    return out.sort((a, b) => a.startMs - b.startMs);
  }

  private requireLabel(id: string): LabelRecord {
    const l = this.index.labels.get(id);
    if (!l) throw new RecorderError('LABEL_NOT_FOUND', `no label ${id}`);
    return l;
  }

  // ---- search annotation ----------------------------------------------------

  /** Active locks of a camera overlapping [fromMs, toMs). */
  locksIn(camera: string, fromMs: number, toMs: number): LockRecord[] {
    const now = this.clock.nowMs();
    return this.index.locks.ofCamera(camera).filter((l) => lockActive(l, now) && l.startMs < toMs && l.endMs > fromMs);
  }
}

export function lockView(l: LockRecord): LockView {
  return { id: l.id, camera: l.camera, from: iso(l.startMs), to: iso(l.endMs), until: l.untilMs === null ? null : iso(l.untilMs) };
}

export function labelView(l: LabelRecord): LabelView {
  return { id: l.id, camera: l.camera, from: iso(l.startMs), to: iso(l.endMs), text: l.text, created: iso(l.createdMs), updated: iso(l.updatedMs) };
}
