/**
 * The node's LMDB index (one environment under <data>/index). Files are the source of
 * truth; this is the fast path to them (docs/design/architecture.md section 5).
 *
 * Key layout, schema version 1 (lmdb-js orders array keys element by element):
 *   meta       'schema'               → SCHEMA_VERSION
 *   cameras    cameraId               → CameraConfig
 *   schedules  cameraId               → SchedulePlan
 *   segments   [cameraId, startMs]    → SegmentRecord (GOP table inside, 12 B per GOP)
 *   segtimes   [cameraId, startMs]    → SegmentTimes [endMs, type, fromMs, type, fromMs…]:
 *                                       what search needs, written with every segment put
 *                                       (same commit batch), so a month of search does not
 *                                       decode GOP tables
 *   gaps       [cameraId, startMs]    → GapRecord
 *   recording  cameraId               → live events + manual flag (survive a restart)
 *   users      userName               → UserRecord (security/users.ts opens it: role, pools,
 *                                       scrypt password hash, SHA-256 of the API token)
 *   smart      [cameraId, ms, seq]    → SmartRecord, one per smart-stream packet (index/smart.ts)
 *   smartfiles [cameraId, startMs]    → SmartFileRecord, one per smart file (index/smart.ts)
 *   daysum     [cameraId, dayStartMs] → DaySummary: the day's recorded time as exact type
 *                                       runs (index/day-summary.ts), kept in the same commit
 *                                       batch as every segment put/remove; search reads
 *                                       one record per day
 *   pools      poolId                 → PoolPolicy
 *   poolusage  poolId                 → bytes of the pool's indexed segments, kept in the
 *                                       same commit batch as every segment put/remove, so
 *                                       it is exact and survives restarts
 *   locks      [cameraId, startMs]    → LockRecord (a camera's locks never overlap)
 *   labels     labelId                → LabelRecord
 *   labelidx   [cameraId, startMs, id] → null (labels of a camera by time)
 *   intents    [kind, cameraId, startMs] → IntentRecord (file work to finish after a crash)
 *   sampletables [cameraId, startMs]  → binary: the closed segment's per-sample tables
 *                                       (playback/sample-table-codec.ts), a cache of its moofs
 *                                       for the first request of a range; removed in the
 *                                       same commit batch as the segment, dropped by any
 *                                       re-put of a closed segment (thinning, repair)
 * Writes resolve after the commit is durable (lmdb-js default sync mode), which is
 * what invariant 2 needs: callers fdatasync the file first, then await the put.
 *
 * Failed commits (issue 13): a full disk fails the commit of a whole batch. Every
 * database opened on this environment (also later, through `root.openDB`: the users)
 * is wrapped so that each write's promise is observed: a failure reaches
 * `onWriteFailure` once per failed commit with its cause (the node releases the index
 * reserve, alarms and overwrites: actors/storage-supervisor.ts), and process-wide the
 * rejections lmdb-js leaves unhandled are taken (index/commit-guard.ts), so no write
 * path can end the process. Segment, gap and removal writes reject with STORAGE_IO
 * (`index commit failed: ENOSPC …`), which the camera treats as a write error (alarm,
 * retry with backoff). A segment entry whose commit failed is put again with backoff
 * until it commits or is superseded (its bytes were durable before the first put).
 * Reads go on meanwhile. Successful writes to the databases the config journal keeps
 * (JOURNALED) reach `onJournaledChange` (index/journal.ts).
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { RecorderError } from '../lib/errors.ts';
import type { CameraConfig, GapRecord, IntentRecord, LabelRecord, LockRecord, PoolPolicy, SchedulePlan, SegmentRecord } from './records.ts';
import type { DirectorState } from '../actors/recording-director.ts';
import { addRuns, cutRuns, daysOf, decodeSummary, encodeSummary, runsInDay, type DaySummary, type Run } from './day-summary.ts';
import type { SmartFileRecord, SmartKey, SmartRecord } from './smart.ts';
import { commitCause, guardCommitRejections, indexWriteError, isCommitFailure, type CommitCause } from './commit-guard.ts';

export const SCHEMA_VERSION = 1;

/** Segments read per LMDB range read when walking many (allSegments). */
const SEGMENT_BATCH = 256;

/** Databases whose records the files cannot say, kept in the config journal (index/journal.ts). */
export const JOURNALED = ['cameras', 'schedules', 'users', 'pools', 'locks', 'labels'] as const;
export type JournaledDb = (typeof JOURNALED)[number];
const JOURNALED_SET = new Set<string>(JOURNALED);

/** Write methods of an lmdb-js database whose promises are observed (guardDb). */
const WRITE_METHODS = ['put', 'remove', 'clearAsync', 'drop', 'ifVersion', 'batch'] as const;

/** Re-put of a segment entry whose commit failed: first delay, doubling to the cap. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;

type SegKey = [string, number];

/** Compact search view of a segment: endMs, then its type runs flattened. */
export type SegmentTimes = (number | string)[];

export interface SegmentTimesView {
  startMs: number;
  endMs: number;
  types: { type: string; fromMs: number }[];
}

export class RecorderIndex {
  readonly root: RootDatabase;
  readonly cameras: Database<CameraConfig, string>;
  readonly schedules: Database<SchedulePlan, string>;
  readonly segments: Database<SegmentRecord, SegKey>;
  readonly gaps: Database<GapRecord, SegKey>;
  readonly recording: Database<DirectorState, string>;
  readonly segtimes: Database<SegmentTimes, SegKey>;
  readonly smart: Database<SmartRecord, SmartKey>;
  readonly smartfiles: Database<SmartFileRecord, SegKey>;
  readonly pools: Database<PoolPolicy, string>;
  readonly daysum: Database<DaySummary, SegKey>;
  /**
   * Day summaries with writes not yet committed: read-modify-write must start from the
   * last value put, not the older committed one. An entry leaves once its last put commits.
   */
  private readonly daysumPending = new Map<string, { runs: Run[]; pending: number }>();
  readonly locks: Database<LockRecord, SegKey>;
  readonly labels: Database<LabelRecord, string>;
  readonly labelidx: Database<null, [string, number, string]>;
  readonly intents: Database<IntentRecord, [string, string, number]>;
  /** Binary records, written only through putSampleTables (storage/segment-tables.ts). */
  readonly sampletables: Database<Buffer, SegKey>;
  /** Users (security/users.ts writes them through its own handle); read by the journal. */
  readonly users: Database<unknown, string>;
  private readonly poolusage: Database<number, string>;
  private readonly meta: Database<number | string, string>;
  private readonly failureListeners: ((cause: CommitCause) => void)[] = [];
  private readonly changeListeners: (() => void)[] = [];
  /** Write promises already observed (many writes of a batch share one), and whether a journaled db was written. */
  private readonly observed = new WeakMap<object, { journaled: boolean; txns: { journaled: boolean }[] }>();
  /** Failed commits already reported (one `commitError` per failed batch). */
  private readonly reported = new WeakSet<object>();
  /** Set while a transaction callback of ours runs: writes inside it belong to its commit. */
  private txnState: { journaled: boolean } | null = null;
  /** Segment entries whose last put failed, to put again (key → the record as it was put). */
  private readonly retry = new Map<string, SegmentRecord>();
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelayMs = RETRY_FIRST_MS;
  private closed = false;
  /** The last failed commit's cause and when (metrics, tests). */
  lastWriteFailure: { cause: CommitCause; atMs: number } | null = null;
  /** Bytes per pool, mirrored in `poolusage`. */
  private readonly usage = new Map<string, number>();
  /**
   * Pool and bytes of segments whose latest put may not be committed yet, and of every
   * open segment: a read of `segments` would return the older committed bytes, and the
   * usage delta must be taken from what was last put.
   */
  private readonly lastPut = new Map<string, { pool: string; bytes: number; endMs: number }>();

  private constructor(root: RootDatabase) {
    this.root = root;
    this.guardDb(root, '');
    // Databases opened later on this environment (the users store) are guarded too.
    const openDB = root.openDB.bind(root) as (...args: unknown[]) => Database;
    (root as { openDB: unknown }).openDB = (...args: unknown[]): Database => {
      const first = args[0] as string | { name?: string } | undefined;
      const name = typeof first === 'string' ? first : (first?.name ?? '');
      return this.guardDb(openDB(...args), name);
    };
    this.meta = root.openDB<number | string, string>({ name: 'meta' });
    this.cameras = root.openDB<CameraConfig, string>({ name: 'cameras' });
    this.schedules = root.openDB<SchedulePlan, string>({ name: 'schedules' });
    // Shared msgpack structures: records of one shape decode several times faster (search).
    this.segments = root.openDB<SegmentRecord, SegKey>({ name: 'segments', sharedStructuresKey: Symbol.for('structures') });
    this.gaps = root.openDB<GapRecord, SegKey>({ name: 'gaps' });
    this.recording = root.openDB<DirectorState, string>({ name: 'recording' });
    this.segtimes = root.openDB<SegmentTimes, SegKey>({ name: 'segtimes' });
    this.smart = root.openDB<SmartRecord, SmartKey>({ name: 'smart', sharedStructuresKey: Symbol.for('structures') });
    this.smartfiles = root.openDB<SmartFileRecord, SegKey>({ name: 'smartfiles' });
    this.pools = root.openDB<PoolPolicy, string>({ name: 'pools' });
    this.daysum = root.openDB<DaySummary, SegKey>({ name: 'daysum' });
    this.poolusage = root.openDB<number, string>({ name: 'poolusage' });
    this.locks = root.openDB<LockRecord, SegKey>({ name: 'locks' });
    this.labels = root.openDB<LabelRecord, string>({ name: 'labels' });
    this.labelidx = root.openDB<null, [string, number, string]>({ name: 'labelidx' });
    this.intents = root.openDB<IntentRecord, [string, string, number]>({ name: 'intents' });
    this.sampletables = root.openDB<Buffer, SegKey>({ name: 'sampletables', encoding: 'binary' });
    this.users = root.openDB<unknown, string>({ name: 'users' });
  }

  static async open(dataDir: string): Promise<RecorderIndex> {
    guardCommitRejections();
    const path = join(dataDir, 'index');
    mkdirSync(path, { recursive: true });
    const root = open({ path, maxDbs: 32, mapSize: 8 * 1024 ** 3 });
    const index = new RecorderIndex(root);
    const version = index.meta.get('schema');
    if (version === undefined) await index.meta.put('schema', SCHEMA_VERSION);
    else if (version !== SCHEMA_VERSION) {
      await root.close();
      throw new RecorderError('INDEX_SCHEMA_MISMATCH', `index schema ${version}, this build reads ${SCHEMA_VERSION}: run reindex`);
    }
    // Indexes written before segtimes existed get it built once.
    if (index.segtimes.getKeysCount({ limit: 1 }) === 0 && index.segments.getKeysCount({ limit: 1 }) > 0) {
      for (const { value } of index.segments.getRange({})) void index.segtimes.put([value.camera, value.startMs], segmentTimes(value));
      await index.segtimes.flushed;
    }
    await index.loadUsage();
    if (index.daysum.getKeysCount({ limit: 1 }) === 0 && index.segtimes.getKeysCount({ limit: 1 }) > 0) await index.buildDaySummaries();
    return index;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retry.clear();
    await this.root.close();
  }

  /**
   * This index's identity (meta `id`, a UUID given once): the config journal names the
   * index it was written from, so an index that was deleted, replaced or emptied is
   * told from the one the journal describes (index/journal.ts).
   */
  get id(): string | undefined {
    const v = this.meta.get('id');
    return typeof v === 'string' ? v : undefined;
  }

  /** Gives the index its id if it has none (undefined when that commit failed: a full disk). */
  async ensureId(): Promise<string | undefined> {
    const had = this.id;
    if (had) return had;
    const id = randomUUID();
    try {
      // Only if none: a CLI command and the node giving ids at once must agree on one.
      await this.meta.ifNoExists('id', () => void this.meta.put('id', id));
      return this.id;
    } catch {
      return undefined;
    }
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
    return this.retry.size;
  }

  /** Wraps a database's write methods so every write's promise is observed (returns it unchanged). */
  private guardDb<D>(db: D, name: string): D {
    const journaled = JOURNALED_SET.has(name);
    const target = db as unknown as Record<string, unknown>;
    for (const m of WRITE_METHODS) {
      const orig = target[m];
      if (typeof orig !== 'function') continue;
      const index = this;
      target[m] = function (this: unknown, ...args: unknown[]): unknown {
        const result: unknown = orig.apply(this, args);
        index.observe(result, journaled);
        return result;
      };
    }
    const txn = target.transaction;
    if (typeof txn === 'function') {
      const index = this;
      target.transaction = function (this: unknown, callback: (...a: unknown[]) => unknown): unknown {
        const state = { journaled: false };
        const wrapped = (...a: unknown[]): unknown => {
          const outer = index.txnState;
          index.txnState = state;
          try {
            return callback(...a);
          } finally {
            index.txnState = outer;
          }
        };
        const result: unknown = txn.call(this, wrapped);
        index.observe(result, state);
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
    void commitCause(err).then((cause) => {
      this.lastWriteFailure = { cause, atMs: Date.now() };
      for (const l of this.failureListeners) safely(() => l(cause));
    });
  }

  /** A write's promise whose commit failure rejects as STORAGE_IO with its errno. */
  private typed<T>(p: Promise<T>): Promise<T> {
    return p.then(undefined, async (err: unknown) => {
      throw isCommitFailure(err) ? indexWriteError(await commitCause(err), err) : err;
    });
  }

  private scheduleRetry(k: string, seg: SegmentRecord): void {
    if (this.closed) return;
    this.retry.set(k, seg);
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => void this.retryPuts(), this.retryDelayMs);
    this.retryTimer.unref();
  }

  /** Puts again the segment entries whose commit failed (a put of the same key since has superseded them). */
  private async retryPuts(): Promise<void> {
    this.retryTimer = null;
    const batch = [...this.retry.values()];
    this.retry.clear();
    let failed = false;
    await Promise.all(batch.map((seg) => this.putSegment(seg).catch(() => (failed = true))));
    this.retryDelayMs = failed ? Math.min(this.retryDelayMs * 2, RETRY_MAX_MS) : RETRY_FIRST_MS;
  }

  // ---- segments -------------------------------------------------------------

  /** The segment, its search view and its pool's usage land in the same lmdb-js commit batch. */
  putSegment(seg: SegmentRecord): Promise<boolean> {
    const k = segKeyString(seg.camera, seg.startMs);
    this.retry.delete(k);
    // What was durable when this put was made (the writer goes on changing its record).
    const asPut: SegmentRecord = { ...seg, types: seg.types.map((t) => ({ ...t })), flags: { ...seg.flags } };
    const prev = this.lastPut.get(k) ?? this.committedBytes(seg.camera, seg.startMs);
    if (prev) this.addUsage(prev.pool, -prev.bytes);
    this.addUsage(seg.pool, seg.bytes);
    const mine = { pool: seg.pool, bytes: seg.bytes, endMs: seg.endMs };
    this.lastPut.set(k, mine);
    void this.segtimes.put([seg.camera, seg.startMs], segmentTimes(seg));
    // Tables exist only for closed segments and describe the file as it was then: a
    // closed segment put again (thinned, repaired) may point at other bytes.
    if (!seg.open) void this.sampletables.remove([seg.camera, seg.startMs]);
    // The new record replaces the old one's time: cut what the old covered, add the new runs.
    const coveredEnd = Math.max(seg.endMs, prev?.endMs ?? seg.endMs);
    this.updateDays(seg.camera, seg.startMs, coveredEnd, (runs, day) => addRuns(cutRuns(runs, seg.startMs, coveredEnd), runsInDay(segmentRuns(seg), day)));
    const done = this.segments.put([seg.camera, seg.startMs], seg);
    // Once committed (and closed) the stored record is the truth again.
    if (!seg.open) void done.then(() => this.lastPut.get(k) === mine && this.lastPut.delete(k), () => undefined);
    return this.typed(done).catch((err: unknown) => {
      // Not superseded by a later put or a removal: put it again when the disk has room.
      if (this.lastPut.get(k) === mine) this.scheduleRetry(k, asPut);
      throw err;
    });
  }

  /** Removes a segment entry (and its bytes from its pool's usage); `extra` puts go in the same commit. */
  removeSegment(camera: string, startMs: number, extra?: () => void): Promise<boolean> {
    const k = segKeyString(camera, startMs);
    this.retry.delete(k);
    const prev = this.lastPut.get(k) ?? this.committedBytes(camera, startMs);
    this.lastPut.delete(k);
    if (prev) this.addUsage(prev.pool, -prev.bytes);
    extra?.();
    const times = this.segtimes.get([camera, startMs]);
    const endMs = prev?.endMs ?? (times ? (times[0] as number) : startMs);
    if (endMs > startMs) this.updateDays(camera, startMs, endMs, (runs) => cutRuns(runs, startMs, endMs));
    void this.segtimes.remove([camera, startMs]);
    void this.sampletables.remove([camera, startMs]);
    return this.typed(this.segments.remove([camera, startMs]));
  }

  /**
   * Stores a closed segment's sample tables, only if the segment's entry is still the
   * one they were read for (`expected`: same file, bytes, init and GOP table, closed).
   * Checked inside the write transaction, so a removal or re-put queued before it wins
   * and one queued after it removes the record in its own commit. Resolves to whether
   * the record was stored.
   */
  async putSampleTables(expected: SegmentRecord, record: Buffer): Promise<boolean> {
    const key: SegKey = [expected.camera, expected.startMs];
    let stored = false;
    await this.root.transaction(() => {
      const now = this.segments.get(key);
      if (!now || now.open || now.file !== expected.file || now.bytes !== expected.bytes || now.initSize !== expected.initSize || !Buffer.from(now.gops).equals(Buffer.from(expected.gops))) return;
      void this.sampletables.put(key, record);
      stored = true;
    });
    return stored;
  }

  async clearSegments(): Promise<void> {
    await this.sampletables.clearAsync();
    await this.segtimes.clearAsync();
    await this.segments.clearAsync();
    await this.poolusage.clearAsync();
    await this.daysum.clearAsync();
    this.usage.clear();
    this.lastPut.clear();
    this.daysumPending.clear();
  }

  /** Recorded runs of one camera-day (pending writes included). */
  daySummary(camera: string, day: number): Run[] {
    return this.daysumPending.get(`${camera}\u0000${day}`)?.runs ?? decodeSummary(this.daysum.get([camera, day]));
  }

  private updateDays(camera: string, fromMs: number, toMs: number, change: (runs: Run[], day: number) => Run[]): void {
    for (const day of daysOf(fromMs, toMs)) {
      const k = `${camera}\u0000${day}`;
      const entry = this.daysumPending.get(k) ?? { runs: decodeSummary(this.daysum.get([camera, day])), pending: 0 };
      entry.runs = change(entry.runs, day);
      entry.pending++;
      this.daysumPending.set(k, entry);
      const done = entry.runs.length > 0 ? this.daysum.put([camera, day], encodeSummary(entry.runs)) : this.daysum.remove([camera, day]);
      // Also when the commit failed: the runs held are what was last put, and the
      // segment entry's re-put (or its removal) writes them again.
      const settled = (): void => {
        entry.pending--;
        if (entry.pending === 0 && this.daysumPending.get(k) === entry) this.daysumPending.delete(k);
      };
      void done.then(settled, settled);
    }
  }

  /** Builds the day summaries of an index written before they existed (once, at open). */
  private async buildDaySummaries(): Promise<void> {
    const days = new Map<string, { camera: string; day: number; runs: Run[] }>();
    for (const { key, value } of this.segtimes.getRange({})) {
      const seg = { startMs: key[1], endMs: value[0] as number, types: [] as { type: string; fromMs: number }[] };
      for (let i = 1; i + 1 < value.length; i += 2) seg.types.push({ type: value[i] as string, fromMs: value[i + 1] as number });
      for (const day of daysOf(seg.startMs, seg.endMs)) {
        const k = `${key[0]}\u0000${day}`;
        const e = days.get(k) ?? { camera: key[0], day, runs: [] };
        e.runs = addRuns(e.runs, runsInDay(segmentRuns(seg), day));
        days.set(k, e);
      }
    }
    for (const e of days.values()) void this.daysum.put([e.camera, e.day], encodeSummary(e.runs));
    await this.daysum.flushed;
  }

  /** Bytes of the pool's indexed segments (open ones as far as they are durable). */
  poolUsage(pool: string): number {
    return this.usage.get(pool) ?? 0;
  }

  private committedBytes(camera: string, startMs: number): { pool: string; bytes: number; endMs: number } | undefined {
    const seg = this.segments.get([camera, startMs]);
    return seg ? { pool: seg.pool, bytes: seg.bytes, endMs: seg.endMs } : undefined;
  }

  private addUsage(pool: string, delta: number): void {
    if (delta === 0) return;
    const bytes = Math.max(0, (this.usage.get(pool) ?? 0) + delta);
    this.usage.set(pool, bytes);
    void this.poolusage.put(pool, bytes);
  }

  /** Loads usage; an index written before `poolusage` existed gets it counted once. */
  private async loadUsage(): Promise<void> {
    for (const { key, value } of this.poolusage.getRange({})) this.usage.set(key, value);
    if (this.usage.size === 0 && this.segments.getKeysCount({ limit: 1 }) > 0) {
      for (const { value } of this.segments.getRange({})) this.usage.set(value.pool, (this.usage.get(value.pool) ?? 0) + value.bytes);
      for (const [pool, bytes] of this.usage) void this.poolusage.put(pool, bytes);
      await this.poolusage.flushed;
    }
  }

  /**
   * LMDB reader slots in use by this process (the lock table's rows). A slot held
   * for good is a leak that ends in MDB_READERS_FULL (126 slots by default); the
   * soak bench and the retention test watch this, and metrics export it.
   */
  readerSlots(): number {
    return this.root.readerList().split('\n').filter((line) => /^\s*\d+\s/.test(line)).length;
  }

  /** Cameras that have segments (including cameras deleted without purge), by key order. */
  *segmentCameras(): Iterable<string> {
    let start: SegKey | undefined = undefined;
    for (;;) {
      let next: string | undefined;
      for (const key of this.segments.getKeys(start ? { start, limit: 1 } : { limit: 1 })) next = key[0];
      if (next === undefined) return;
      yield next;
      start = [next, Number.MAX_VALUE];
    }
  }

  /** Start, end and type runs of the segments overlapping [fromMs, toMs), in time order. */
  segmentTimesInRange(camera: string, fromMs: number, toMs: number): SegmentTimesView[] {
    const out: SegmentTimesView[] = [];
    const view = (key: SegKey, v: SegmentTimes): SegmentTimesView => {
      const types: { type: string; fromMs: number }[] = [];
      for (let i = 1; i + 1 < v.length; i += 2) types.push({ type: v[i] as string, fromMs: v[i + 1] as number });
      return { startMs: key[1], endMs: v[0] as number, types };
    };
    for (const { key, value } of this.segtimes.getRange({ start: [camera, fromMs], end: [camera, -1], reverse: true, limit: 1 })) {
      if (key[0] === camera && (value[0] as number) > fromMs) out.push(view(key, value));
    }
    for (const { key, value } of this.segtimes.getRange({ start: [camera, fromMs], end: [camera, toMs] })) {
      if (out.length > 0 && out[out.length - 1]!.startMs === key[1]) continue;
      out.push(view(key, value));
    }
    return out;
  }

  /** Segments of `camera` that overlap [fromMs, toMs), in time order. */
  segmentsInRange(camera: string, fromMs: number, toMs: number): SegmentRecord[] {
    const out: SegmentRecord[] = [];
    // The segment that starts before `from` may still cover it.
    for (const { value } of this.segments.getRange({ start: [camera, fromMs], end: [camera, -1], reverse: true, limit: 1 })) {
      if (value.camera === camera && value.endMs > fromMs) out.push(value);
    }
    for (const { value } of this.segments.getRange({ start: [camera, fromMs], end: [camera, toMs] })) {
      if (out.length > 0 && out[out.length - 1]!.startMs === value.startMs) continue;
      out.push(value);
    }
    return out;
  }

  lastSegment(camera: string): SegmentRecord | undefined {
    for (const { value } of this.segments.getRange({ start: [camera, Number.MAX_SAFE_INTEGER], end: [camera, -1], reverse: true, limit: 1 })) {
      return value;
    }
    return undefined;
  }

  /**
   * Every segment (of `camera`, or of all cameras), in key order, read in batches.
   *
   * Invariant: no LMDB cursor outlives one synchronous batch read. A range iterator
   * left open (a consumer that stops early without closing the generator, or one
   * held across an await) pins its read transaction and one of the environment's
   * reader slots; a retention pass that did so on every tick filled the reader
   * table within minutes (MDB_READERS_FULL, issue 12). Batches of materialised
   * records make abandoning this generator at any point free.
   */
  *allSegments(camera?: string): Iterable<SegmentRecord> {
    const end: SegKey | undefined = camera === undefined ? undefined : [camera, Number.MAX_SAFE_INTEGER];
    let start: SegKey | undefined = camera === undefined ? undefined : [camera, -1];
    let skipFirst = false;
    for (;;) {
      const batch = [...this.segments.getRange({ ...(start ? { start } : {}), ...(end ? { end } : {}), limit: SEGMENT_BATCH })];
      for (let i = skipFirst ? 1 : 0; i < batch.length; i++) yield batch[i]!.value;
      if (batch.length < SEGMENT_BATCH) return;
      // The next batch starts at the last key read, which it then skips.
      start = batch[batch.length - 1]!.key;
      skipFirst = true;
    }
  }

  // ---- gaps -----------------------------------------------------------------

  putGap(gap: GapRecord): Promise<boolean> {
    return this.typed(this.gaps.put([gap.camera, gap.startMs], gap));
  }

  gapsInRange(camera: string, fromMs: number, toMs: number, nowMs: number): GapRecord[] {
    const out: GapRecord[] = [];
    for (const { value } of this.gaps.getRange({ start: [camera, -1], end: [camera, toMs] })) {
      const end = value.endMs ?? nowMs;
      if (end > fromMs) out.push(value);
    }
    return out;
  }

  openGaps(camera: string): GapRecord[] {
    const out: GapRecord[] = [];
    for (const { value } of this.gaps.getRange({ start: [camera, -1], end: [camera, Number.MAX_SAFE_INTEGER] })) {
      if (value.endMs === null) out.push(value);
    }
    return out;
  }

  // ---- cameras and schedules ------------------------------------------------

  listCameras(): CameraConfig[] {
    return [...this.cameras.getRange({})].map((e) => e.value);
  }
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    /* a listener's fault is not the index's */
  }
}

function segKeyString(camera: string, startMs: number): string {
  return `${camera}\u0000${startMs}`;
}

/** A segment's record-type runs with their ends. */
export function segmentRuns(seg: { startMs: number; endMs: number; types: { type: string; fromMs: number }[] }): Run[] {
  return seg.types.map((t, i) => ({ fromMs: t.fromMs, toMs: seg.types[i + 1]?.fromMs ?? seg.endMs, type: t.type }));
}

export function segmentTimes(seg: SegmentRecord): SegmentTimes {
  const out: SegmentTimes = [seg.endMs];
  for (const run of seg.types) out.push(run.type, run.fromMs);
  return out;
}
