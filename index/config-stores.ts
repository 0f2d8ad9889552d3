/**
 * The records a VMS or an admin configures, keyed by one string: cameras, schedules,
 * pools, users, and what a camera's recording state keeps over a restart. These are
 * also what the config journal copies (index/journal.ts: the files cannot say them).
 */
import type { Database } from 'lmdb';
import { intentKey } from './intent-store.ts';
import type { CameraConfig, IntentRecord, PoolPolicy, SavedRecording, SchedulePlan, UserRecord } from './records.ts';
import type { Tables } from './tables.ts';

/** Records of one kind by id. */
export class KeyedStore<V> {
  constructor(
    protected readonly db: Database<V, string>,
    /** Tables.commit of the index: a failed commit rejects as STORAGE_IO. */
    protected readonly commit: <T>(p: Promise<T>) => Promise<T>,
  ) {}

  get(id: string): V | undefined {
    return this.db.get(id);
  }

  async put(id: string, value: V): Promise<void> {
    await this.commit(this.db.put(id, value));
  }

  async remove(id: string): Promise<void> {
    await this.commit(this.db.remove(id));
  }

  /** Every record, by id. */
  list(): V[] {
    return [...this.db.getRange({})].map((e) => e.value);
  }

  count(): number {
    return this.db.getKeysCount();
  }
}

export class CameraStore extends KeyedStore<CameraConfig> {
  constructor(private readonly t: Tables) {
    super(t.cameras, t.commit);
  }

  /** A camera's config, its schedule and its saved recording state go in one commit. */
  override async remove(id: string): Promise<void> {
    await this.t.commit(this.t.root.transaction(() => this.removeRecords(id)));
  }

  /**
   * Step 1 of a camera purge (actors/storage-supervisor.ts purgeCamera): the camera's
   * records go and a `purge` intent is recorded, in one commit, so a purge cut by a
   * crash is finished at the next start instead of leaving a deleted camera's video.
   */
  async removeWithPurgeIntent(id: string): Promise<IntentRecord> {
    const intent: IntentRecord = { kind: 'purge', camera: id };
    await this.t.commit(
      this.t.root.transaction(() => {
        this.removeRecords(id);
        void this.t.intents.put(intentKey(intent), intent);
      }),
    );
    return intent;
  }

  private removeRecords(id: string): void {
    void this.t.cameras.remove(id);
    void this.t.schedules.remove(id);
    void this.t.recording.remove(id);
  }
}

export type ScheduleStore = KeyedStore<SchedulePlan>;
export type RecordingStore = KeyedStore<SavedRecording>;
export type PoolStore = KeyedStore<PoolPolicy>;
export type UserTable = KeyedStore<UserRecord>;
