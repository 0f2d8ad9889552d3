/**
 * The cluster's shared config (docs/design/cluster.md "Shared config"): one replicated
 * KV bucket, `<prefix>-config`, holds what a VMS or an admin configures, and every node
 * mirrors it into its own LMDB, in the bucket's order:
 *
 *   camera.<id>     CameraConfig        → index cameras (the holder reconfigures its actor)
 *   schedule.<id>   SchedulePlan        → index schedules (the holder's actor gets the plan)
 *   pool.<id>       PoolPolicy          → the storage supervisor's putPool (retention kicks)
 *   locks.<camera>  LockRecord[]        → the camera's whole lock set, replaced in one commit
 *   label.<id>      LabelRecord         → index labels
 *   user.<name>     UserRecord          → index users (password and token hashes only)
 *
 * Writes go to the bucket first and the local index after (a change the bucket did not
 * confirm is refused: CLUSTER_UNAVAILABLE, 503). A camera's lock set changes only by
 * compare-and-set on its key, so two nodes merging or cutting locks at once cannot lose
 * either change.
 *
 * Barrier: `barrier()` reads the bucket's last sequence from its stream leader and
 * waits until this node's mirror has applied it. The storage supervisor runs it before
 * each retention pass deletes (actors/storage-supervisor.ts `syncLocks`), so a lock a
 * node acknowledged is in every node's mirror before that node's next deletion; a
 * barrier that cannot be confirmed (quorum lost) skips the deletion until it can.
 */
import { JSONCodec, type KV, type KvEntry, type QueuedIterator } from 'nats';
import type { Supervisor } from '../actors/supervisor.ts';
import type { StorageSupervisor } from '../actors/storage-supervisor.ts';
import type { RecorderIndex } from '../index/db.ts';
import type { CameraConfig, LabelRecord, LockRecord, PoolPolicy, SchedulePlan, UserRecord } from '../index/records.ts';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';

/** A config write waits this long for the bucket's confirmation. */
const WRITE_TIMEOUT_MS = 4000;
/** Compare-and-set attempts of a lock change before it is refused. */
const CAS_ATTEMPTS = 5;

export type ConfigKind = 'camera' | 'schedule' | 'pool' | 'locks' | 'label' | 'user';

export interface MirrorDeps {
  index: RecorderIndex;
  supervisor: Supervisor;
  /** Null until storage is up (it always is before NATS connects: node.ts). */
  storage: () => StorageSupervisor | null;
  log: Logger;
  /** Whether this node records the camera now. */
  holds: (camera: string) => boolean;
  /** A camera's config changed (or was put again unchanged): the holder reconfigures its actor if it differs. */
  cameraChanged: (camera: CameraConfig) => void;
  /** A user changed on another node: cached logins are checked again (security/users.ts forget). */
  usersChanged: () => void;
  /** A camera deleted from the cluster: stop it here and give up its ownership. */
  cameraDeleted: (camera: string) => Promise<void>;
}

const json = JSONCodec();

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function unavailable(what: string, err: unknown): RecorderError {
  return new RecorderError(
    'CLUSTER_UNAVAILABLE',
    `${what}: the shared config did not confirm the change (${(err as Error).message}); it may still apply: read it back before retrying`,
    { cause: err },
  );
}

export class SharedConfig {
  /** The bucket's stream sequence this node's mirror has applied up to. */
  appliedSeq = 0;
  /** Set once what the bucket held at start is mirrored (and local records it lacked are shared). */
  synced = false;
  private watch: QueuedIterator<KvEntry> | null = null;
  private ended: ((err?: unknown) => void) | null = null;

  constructor(
    readonly kv: KV,
    private readonly d: MirrorDeps,
  ) {}

  /**
   * Mirrors what the bucket holds now (a record deleted while this node was down goes;
   * one this node has and the bucket never had is shared: a node joining with config),
   * then every change as it comes. Resolves once the first part is done; `onEnd` is
   * called if the watch ends by itself (its server died and it could not resume).
   */
  async start(onEnd: (err?: unknown) => void): Promise<void> {
    const initial: KvEntry[] = [];
    let initialized!: () => void;
    const ready = new Promise<void>((r) => (initialized = r));
    let live = false;
    const it = await this.kv.watch({ key: '>', initializedFn: () => initialized() });
    this.watch = it;
    this.ended = onEnd;
    void (async () => {
      try {
        for await (const e of it) {
          if (!live) initial.push(e);
          else await this.apply(e);
        }
        if (this.watch === it) this.ended?.();
      } catch (err) {
        if (this.watch === it) this.ended?.(err);
      }
    })();
    await ready;
    for (const e of initial) await this.apply(e);
    await this.shareMissing(new Set(initial.map((e) => e.key)));
    live = true;
    this.synced = true;
  }

  stop(): void {
    const it = this.watch;
    this.watch = null;
    it?.stop();
  }

  /** Puts a record in the bucket (CLUSTER_UNAVAILABLE when not confirmed); returns its revision. */
  async put(kind: ConfigKind, id: string, value: unknown): Promise<number> {
    this.assertSynced();
    try {
      return await timeout(this.kv.put(`${kind}.${id}`, json.encode(value)), WRITE_TIMEOUT_MS, 'config write');
    } catch (err) {
      throw unavailable(`${kind} ${id}`, err);
    }
  }

  async remove(kind: ConfigKind, id: string): Promise<void> {
    this.assertSynced();
    try {
      await timeout(this.kv.delete(`${kind}.${id}`), WRITE_TIMEOUT_MS, 'config delete');
    } catch (err) {
      throw unavailable(`${kind} ${id}`, err);
    }
  }

  /**
   * Changes a camera's lock set by compare-and-set: `change` gets the set as the bucket
   * holds it (this node's mirror when the bucket has none yet) and returns the new one
   * (or throws: LOCK_NOT_FOUND, LOCK_SHARE_EXCEEDED…). Retried when another node changed
   * the set in between; CLUSTER_UNAVAILABLE when the bucket does not answer.
   */
  async changeLocks<R>(camera: string, change: (current: LockRecord[]) => { locks: LockRecord[]; result: R }): Promise<R> {
    this.assertSynced();
    const key = `locks.${camera}`;
    let lastErr: unknown;
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      let entry: KvEntry | null;
      try {
        entry = await timeout(this.kv.get(key), WRITE_TIMEOUT_MS, 'locks read');
      } catch (err) {
        throw unavailable(`locks of ${camera}`, err);
      }
      const current = entry?.operation === 'PUT' ? (json.decode(entry.value) as LockRecord[]) : entry ? [] : this.d.index.locks.ofCamera(camera);
      const { locks, result } = change(current);
      try {
        const value = json.encode(locks);
        await timeout(entry ? this.kv.update(key, value, entry.revision) : this.kv.create(key, value), WRITE_TIMEOUT_MS, 'locks write');
        return result;
      } catch (err) {
        lastErr = err;
        // Another node's change came first (wrong last sequence): read again and redo ours on it.
        if (!/wrong last sequence|key exists/i.test((err as Error).message)) throw unavailable(`locks of ${camera}`, err);
      }
    }
    throw unavailable(`locks of ${camera} (changed by others ${CAS_ATTEMPTS} times meanwhile)`, lastErr);
  }

  /**
   * Waits until this node's mirror holds every change the bucket has (its stream
   * leader's last sequence): true when it does within `timeoutMs`, false when the
   * leader cannot say (quorum lost, election) or the mirror does not catch up.
   */
  async barrier(timeoutMs = 2000): Promise<boolean> {
    if (!this.synced) return false;
    const deadline = Date.now() + timeoutMs;
    let last: number;
    try {
      const status = await timeout(this.kv.status(), timeoutMs, 'config status');
      last = status.streamInfo.state.last_seq;
    } catch {
      return false;
    }
    while (this.appliedSeq < last) {
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  private assertSynced(): void {
    if (!this.synced) throw new RecorderError('CLUSTER_UNAVAILABLE', 'the cluster config is not mirrored yet (JetStream not ready); try again');
  }

  /** One change of the bucket into this node's index, in order. */
  private async apply(e: KvEntry): Promise<void> {
    try {
      await this.applyOne(e);
    } catch (err) {
      this.d.log.error({ key: e.key, err }, 'cluster: a shared config change could not be mirrored');
    }
    this.appliedSeq = Math.max(this.appliedSeq, e.revision);
  }

  private async applyOne(e: KvEntry): Promise<void> {
    const dot = e.key.indexOf('.');
    const kind = e.key.slice(0, dot) as ConfigKind;
    const id = e.key.slice(dot + 1);
    const gone = e.operation !== 'PUT';
    const value = gone ? null : json.decode(e.value);
    const { index, supervisor, log } = this.d;
    switch (kind) {
      case 'camera': {
        const camera = value as CameraConfig | null;
        if (camera && camera.id === id) {
          await index.cameras.put(id, camera);
          this.d.cameraChanged(camera);
        } else if (gone) {
          await this.d.cameraDeleted(id);
          if (index.cameras.get(id)) await index.cameras.remove(id);
        }
        return;
      }
      case 'schedule': {
        const plan = value as SchedulePlan | null;
        if (plan && plan.camera === id) {
          await index.schedules.put(id, plan);
          if (this.d.holds(id)) supervisor.setPlan(plan);
        } else if (gone && index.schedules.get(id)) await index.schedules.remove(id);
        return;
      }
      case 'pool': {
        const policy = value as PoolPolicy | null;
        if (policy && policy.id === id) await this.d.storage()?.putPool(policy);
        return;
      }
      case 'locks': {
        const locks = (value as LockRecord[] | null) ?? [];
        const storage = this.d.storage();
        const replace = async (): Promise<void> => {
          await index.locks.apply({ remove: index.locks.ofCamera(id), put: locks.filter((l) => l.camera === id) });
        };
        // Under the storage mutex: a retention pass never sees half a change.
        await (storage ? storage.exclusive(replace) : replace());
        const pool = index.cameras.get(id)?.pool;
        if (pool) storage?.kick(pool);
        return;
      }
      case 'label': {
        const label = value as LabelRecord | null;
        const old = index.labels.get(id);
        if (label && label.id === id) await index.labels.put(label, old);
        else if (gone && old) await index.labels.remove(old);
        return;
      }
      case 'user': {
        const user = value as UserRecord | null;
        if (user && user.name === id) await index.users.put(id, user);
        else if (gone && index.users.get(id)) await index.users.remove(id);
        this.d.usersChanged();
        return;
      }
      default:
        log.warn({ key: e.key }, 'cluster: unknown shared config key ignored');
    }
  }

  /** Records this node has that the bucket never had (no key, not even a deletion): shared. */
  private async shareMissing(keys: Set<string>): Promise<void> {
    const { index, log } = this.d;
    const missing: [string, unknown][] = [];
    for (const c of index.cameras.list()) if (!c.transient && !keys.has(`camera.${c.id}`)) missing.push([`camera.${c.id}`, c]);
    for (const s of index.schedules.list()) if (!keys.has(`schedule.${s.camera}`)) missing.push([`schedule.${s.camera}`, s]);
    for (const p of index.pools.list()) if (!keys.has(`pool.${p.id}`)) missing.push([`pool.${p.id}`, p]);
    const lockCameras = new Set(index.locks.all().map((l) => l.camera));
    for (const camera of lockCameras) if (!keys.has(`locks.${camera}`)) missing.push([`locks.${camera}`, index.locks.ofCamera(camera)]);
    for (const l of index.labels.all()) if (!keys.has(`label.${l.id}`)) missing.push([`label.${l.id}`, l]);
    for (const u of index.users.list()) if (!keys.has(`user.${u.name}`)) missing.push([`user.${u.name}`, u]);
    for (const [key, value] of missing) {
      // create(): a node that shared the same record a moment earlier wins; ours is mirrored from it.
      await timeout(this.kv.create(key, json.encode(value)), WRITE_TIMEOUT_MS, 'share').catch((err: unknown) =>
        log.warn({ key, err: (err as Error).message }, 'cluster: a local record was not shared'),
      );
    }
  }
}
