/**
 * The node's LMDB index (one environment under <data>/index). Files are the source of
 * truth; this is the fast path to them (docs/design/architecture.md section 5). The
 * layout, one line per database, and the schema versions are in
 * docs/design/index-layout.md.
 *
 * The databases are private to index/ (index/tables.ts). Callers use one store per
 * record kind, each with its own methods; what must share one commit is one method:
 *
 *   segments   SegmentStore (index/segment-store.ts): a segment with its search view,
 *              day summaries, pool usage and sample tables; a deletion with its intent
 *   gaps       GapStore (index/gap-store.ts)           locks   LockStore (index/locks.ts)
 *   labels     LabelStore (index/label-store.ts)       smart   SmartStore (index/smart.ts)
 *   intents    IntentStore (index/intent-store.ts)         s3*     BucketStore (index/buckets.ts)
 *   cameras, schedules, recording, pools, users: KeyedStore (index/config-stores.ts)
 *
 * Opening runs the schema migrations (index/migrations/run.ts) before anything reads.
 *
 * Failed commits (issue 13): a full disk fails the commit of a whole batch. Every
 * database of this environment is wrapped so that each write's promise is observed: a
 * failure reaches `onWriteFailure` once per failed commit with its cause (the node
 * releases the index reserve, alarms and overwrites: actors/storage-supervisor.ts),
 * and process-wide the rejections lmdb-js leaves unhandled are taken
 * (index/commit-guard.ts), so no write path can end the process. Writes reject with
 * STORAGE_IO (`index commit failed: ENOSPC …`), which the camera treats as a write
 * error (alarm, retry with backoff). Reads go on meanwhile. Successful writes to the
 * databases the config journal keeps (JOURNALED) reach `onJournaledChange`
 * (index/journal.ts).
 */
import { open, type Database, type Key, type RootDatabase } from 'lmdb';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { commitCause, guardCommitRejections, isCommitFailure, type CommitCause } from './commit-guard.ts';
import { CameraStore, KeyedStore, type PoolStore, type RecordingStore, type ScheduleStore, type UserTable } from './config-stores.ts';
import { GapStore } from './gap-store.ts';
import { IntentStore } from './intent-store.ts';
import { LabelStore } from './label-store.ts';
import { LockStore } from './locks.ts';
import { PictureStore } from './pictures.ts';
import { BucketStore } from './buckets.ts';
import { assertSchemaReadable, migrate, type MigrationReport } from './migrations/run.ts';
import type { LabelRecord } from './records.ts';
import { SegmentStore } from './segment-store.ts';
import { SmartStore } from './smart.ts';
import { openTables, type Tables } from './tables.ts';

export { SCHEMA_VERSION } from './migrations/run.ts';

/** Databases whose records the files cannot say, kept in the config journal (index/journal.ts). */
export const JOURNALED = ['cameras', 'schedules', 'users', 'pools', 'locks', 'labels'] as const;
export type JournaledDb = (typeof JOURNALED)[number];
const JOURNALED_SET = new Set<string>(JOURNALED);

/** A journaled database's records as the index holds them: [key, value] pairs. */
export type JournalRows = Record<JournaledDb, [Key, unknown][]>;

/** Write methods of an lmdb-js database whose promises are observed (guardDb). */
const WRITE_METHODS = ['put', 'remove', 'clearAsync', 'drop', 'ifVersion', 'batch'] as const;

export class RecorderIndex {
  readonly segments: SegmentStore;
  readonly gaps: GapStore;
  readonly locks: LockStore;
  readonly labels: LabelStore;
  readonly smart: SmartStore;
  readonly intents: IntentStore;
  /** Pictures and their pack files (index/pictures.ts, issue 16). */
  readonly pictures: PictureStore;
  readonly cameras: CameraStore;
  readonly schedules: ScheduleStore;
  /** What of each camera's recording state survives a restart (events, manual). */
  readonly recording: RecordingStore;
  readonly pools: PoolStore;
  /** Users of the HTTP interface (security/users.ts decides what they may do). */
  readonly users: UserTable;
  /** S3 buckets and objects (index/buckets.ts, issue 17). */
  readonly buckets: BucketStore;
  /** What the migrations did when this index was opened. */
  migrations: MigrationReport = { from: 0, to: 0, applied: [] };
  private readonly t: Tables;
  private readonly failureListeners: ((cause: CommitCause) => void)[] = [];
  private readonly changeListeners: (() => void)[] = [];
  /** Write promises already observed (many writes of a batch share one), and whether a journaled db was written. */
  private readonly observed = new WeakMap<object, { journaled: boolean; txns: { journaled: boolean }[] }>();
  /** Failed commits already reported (one `commitError` per failed batch). */
  private readonly reported = new WeakSet<object>();
  /** Set while a transaction callback of ours runs: writes inside it belong to its commit. */
  private txnState: { journaled: boolean } | null = null;
  /** The last failed commit's cause and when (metrics, tests). */
  lastWriteFailure: { cause: CommitCause; atMs: number } | null = null;

  private constructor(root: RootDatabase, path: string) {
    this.guardDb(root, '');
    const openDB = root.openDB.bind(root) as (...args: unknown[]) => Database;
    (root as { openDB: unknown }).openDB = (...args: unknown[]): Database => {
      const first = args[0] as string | { name?: string } | undefined;
      const name = typeof first === 'string' ? first : (first?.name ?? '');
      return this.guardDb(openDB(...args), name);
    };
    const t = (this.t = openTables(root, path));
    this.segments = new SegmentStore(t);
    this.gaps = new GapStore(t);
    this.locks = new LockStore(t);
    this.labels = new LabelStore(t);
    this.smart = new SmartStore(t);
    this.intents = new IntentStore(t);
    this.pictures = new PictureStore(t);
    this.cameras = new CameraStore(t);
    this.schedules = new KeyedStore(t.schedules, t.commit);
    this.recording = new KeyedStore(t.recording, t.commit);
    this.pools = new KeyedStore(t.pools, t.commit);
    this.users = new KeyedStore(t.users, t.commit);
    this.buckets = new BucketStore(t);
  }

  /** Opens (or creates) the index of `dataDir` and brings its schema up to this build's. */
  static async open(dataDir: string): Promise<RecorderIndex> {
    guardCommitRejections();
    const path = join(dataDir, 'index');
    mkdirSync(path, { recursive: true });
    const root = open({ path, maxDbs: 64, mapSize: 8 * 1024 ** 3 });
    let index: RecorderIndex;
    try {
      // Before any database is opened (which would create the missing ones in it).
      assertSchemaReadable(root.openDB<number | string, string>({ name: 'meta' }).get('schema'));
      index = new RecorderIndex(root, path);
      index.migrations = await migrate(index.t);
    } catch (err) {
      await root.close();
      throw err;
    }
    index.segments.load();
    return index;
  }

  async close(): Promise<void> {
    this.segments.close();
    await this.t.root.close();
  }

  /**
   * This index's identity (meta `id`, a UUID given once): the config journal names the
   * index it was written from, so an index that was deleted, replaced or emptied is
   * told from the one the journal describes (index/journal.ts).
   */
  get id(): string | undefined {
    const v = this.t.meta.get('id');
    return typeof v === 'string' ? v : undefined;
  }

  /** Gives the index its id if it has none (undefined when that commit failed: a full disk). */
  async ensureId(): Promise<string | undefined> {
    const had = this.id;
    if (had) return had;
    const id = randomUUID();
    try {
      // Only if none: a CLI command and the node giving ids at once must agree on one.
      await this.t.meta.ifNoExists('id', () => void this.t.meta.put('id', id));
      return this.id;
    } catch {
      return undefined;
    }
  }

  /** The schema version stored in the index. */
  get schemaVersion(): number {
    return this.t.meta.get('schema') as number;
  }

  /**
   * LMDB reader slots in use by this process (the lock table's rows). A slot held
   * for good is a leak that ends in MDB_READERS_FULL (126 slots by default); the
   * soak bench and the retention test watch this, and metrics export it.
   */
  readerSlots(): number {
    return this.t.root
      .readerList()
      .split('\n')
      .filter((line) => /^\s*\d+\s/.test(line)).length;
  }

  // ---- the config journal ---------------------------------------------------

  /** The journaled records as committed now, as [key, value] pairs (index/journal.ts). */
  journaledRows(): JournalRows {
    const rows = {} as JournalRows;
    for (const name of JOURNALED) rows[name] = [...this.journaledDb(name).getRange({})].map((e) => [e.key, e.value] as [Key, unknown]);
    return rows;
  }

  /** Keys of a journaled database. */
  journaledKeys(name: JournaledDb): Key[] {
    return [...this.journaledDb(name).getKeys({})];
  }

  /** Puts journal rows back (reindex), labels with their time index, in one commit. */
  async restoreJournaled(name: JournaledDb, rows: readonly [Key, unknown][]): Promise<void> {
    const db = this.journaledDb(name);
    await this.t.root.transaction(() => {
      for (const [key, value] of rows) {
        void db.put(key, value);
        if (name === 'labels') {
          const l = value as LabelRecord;
          void this.t.labelidx.put([l.camera, l.startMs, l.id], null);
        }
      }
    });
  }

  private journaledDb(name: JournaledDb): Database<unknown, Key> {
    return this.t[name];
  }

  // ---- failed commits and changes -------------------------------------------

  /** Called once per failed commit with its cause (never throws into the index). */
  onWriteFailure(listener: (cause: CommitCause) => void): void {
    this.failureListeners.push(listener);
  }

  /** Called after each commit that changed a journaled database. */
  onJournaledChange(listener: () => void): void {
    this.changeListeners.push(listener);
  }

  /** Segment entries waiting to be put again after a failed commit. */
  get pendingRetries(): number {
    return this.segments.pendingRetries;
  }

  /** Wraps a database's write methods so every write's promise is observed (returns it unchanged). */
  private guardDb<D>(db: D, name: string): D {
    const journaled = JOURNALED_SET.has(name);
    const target = db as unknown as Record<string, unknown>;
    const observe = (result: unknown, how: boolean | { journaled: boolean }): void => this.observe(result, how);
    for (const m of WRITE_METHODS) {
      const orig = target[m];
      if (typeof orig !== 'function') continue;
      target[m] = function (this: unknown, ...args: unknown[]): unknown {
        const result: unknown = orig.apply(this, args);
        observe(result, journaled);
        return result;
      };
    }
    const txn = target.transaction;
    if (typeof txn === 'function') {
      // Writes inside the callback belong to its commit (observe reads txnState).
      const inside = <T>(state: { journaled: boolean }, run: () => T): T => {
        const outer = this.txnState;
        this.txnState = state;
        try {
          return run();
        } finally {
          this.txnState = outer;
        }
      };
      target.transaction = function (this: unknown, callback: (...a: unknown[]) => unknown): unknown {
        const state = { journaled: false };
        const result: unknown = txn.call(this, (...a: unknown[]): unknown => inside(state, () => callback(...a)));
        observe(result, state);
        return result;
      };
    }
    return db;
  }

  private observe(result: unknown, journaled: boolean | { journaled: boolean }): void {
    if (journaled === true && this.txnState) {
      // Inside a transaction callback: the write commits with the transaction.
      this.txnState.journaled = true;
      return;
    }
    if (this.txnState && typeof journaled === 'boolean') return;
    if (!result || typeof (result as { then?: unknown }).then !== 'function') return;
    const promise = result as Promise<unknown>;
    let entry = this.observed.get(promise);
    if (!entry) {
      const e = { journaled: false, txns: [] as { journaled: boolean }[] };
      entry = e;
      this.observed.set(promise, e);
      promise.then(
        () => {
          if (e.journaled || e.txns.some((t) => t.journaled)) for (const l of this.changeListeners) safely(l);
        },
        (err: unknown) => this.failed(err),
      );
    }
    if (journaled === true) entry.journaled = true;
    else if (typeof journaled === 'object') entry.txns.push(journaled);
  }

  private failed(err: unknown): void {
    if (!isCommitFailure(err)) return;
    err.commitError.catch(() => undefined);
    if (this.reported.has(err.commitError)) return;
    this.reported.add(err.commitError);
    void commitCause(err, this.t.path).then((cause) => {
      this.lastWriteFailure = { cause, atMs: Date.now() };
      for (const l of this.failureListeners) safely(() => l(cause));
    });
  }
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    /* a listener's fault is not the index's */
  }
}
