/**
 * The LMDB databases of the index, as lmdb-js handles. Private to index/: only the
 * record stores (index/*-store.ts, index/smart.ts), RecorderIndex (index/db.ts) and the
 * migrations (index/migrations/) hold a `Tables`; everything else reads and writes
 * through the stores' methods, so what must share one commit is one method and no
 * caller can split it (`.dependency-cruiser.cjs` refuses an import of this file or of
 * the migrations from outside index/).
 *
 * Layout: docs/design/index-layout.md (one line per db: key → value, and why).
 */
import type { Database, Key, RangeOptions, RootDatabase } from 'lmdb';
import { typedCommit } from './commit-guard.ts';
import type { DaySummary } from './day-summary.ts';
import type {
  CameraConfig,
  GapRecord,
  IntentKey,
  IntentRecord,
  LabelRecord,
  LockRecord,
  PoolPolicy,
  SavedRecording,
  SchedulePlan,
  SegmentRecord,
  SmartFileRecord,
  SmartKey,
  SmartRecord,
  UserRecord,
} from './records.ts';

export type SegKey = [string, number];

/** Compact search view of a segment: endMs, then its type runs flattened. */
export type SegmentTimes = (number | string)[];

export interface Tables {
  /** The environment's directory (<data>/index). */
  readonly path: string;
  /**
   * A write's promise whose commit failure rejects as STORAGE_IO with its cause
   * (index/commit-guard.ts typedCommit; a short write on a full disk is ENOSPC).
   */
  readonly commit: <T>(p: Promise<T>) => Promise<T>;
  readonly root: RootDatabase;
  /** `schema` → the schema version (index/migrations/), `id` → this index's identity. */
  readonly meta: Database<number | string, string>;
  readonly cameras: Database<CameraConfig, string>;
  readonly schedules: Database<SchedulePlan, string>;
  readonly recording: Database<SavedRecording, string>;
  readonly segments: Database<SegmentRecord, SegKey>;
  readonly segtimes: Database<SegmentTimes, SegKey>;
  readonly daysum: Database<DaySummary, SegKey>;
  readonly poolusage: Database<number, string>;
  /** [poolId, cameraId] → bytes of the camera's segments in the pool (schema 5). */
  readonly poolcameras: Database<number, [string, string]>;
  readonly sampletables: Database<Buffer, SegKey>;
  readonly gaps: Database<GapRecord, SegKey>;
  readonly smart: Database<SmartRecord, SmartKey>;
  readonly smartfiles: Database<SmartFileRecord, SegKey>;
  readonly pools: Database<PoolPolicy, string>;
  readonly locks: Database<LockRecord, SegKey>;
  readonly labels: Database<LabelRecord, string>;
  readonly labelidx: Database<null, [string, number, string]>;
  readonly intents: Database<IntentRecord, IntentKey>;
  readonly users: Database<UserRecord, string>;
}

/** Opens every database of the environment (creating the missing ones). */
export function openTables(root: RootDatabase, path: string): Tables {
  return {
    path,
    commit: (p) => typedCommit(p, path),
    root,
    meta: root.openDB<number | string, string>({ name: 'meta' }),
    cameras: root.openDB<CameraConfig, string>({ name: 'cameras' }),
    schedules: root.openDB<SchedulePlan, string>({ name: 'schedules' }),
    recording: root.openDB<SavedRecording, string>({ name: 'recording' }),
    // Shared msgpack structures: records of one shape decode several times faster (search).
    segments: root.openDB<SegmentRecord, SegKey>({ name: 'segments', sharedStructuresKey: Symbol.for('structures') }),
    segtimes: root.openDB<SegmentTimes, SegKey>({ name: 'segtimes' }),
    daysum: root.openDB<DaySummary, SegKey>({ name: 'daysum' }),
    poolusage: root.openDB<number, string>({ name: 'poolusage' }),
    poolcameras: root.openDB<number, [string, string]>({ name: 'poolcameras' }),
    sampletables: root.openDB<Buffer, SegKey>({ name: 'sampletables', encoding: 'binary' }),
    gaps: root.openDB<GapRecord, SegKey>({ name: 'gaps' }),
    smart: root.openDB<SmartRecord, SmartKey>({ name: 'smart', sharedStructuresKey: Symbol.for('structures') }),
    smartfiles: root.openDB<SmartFileRecord, SegKey>({ name: 'smartfiles' }),
    pools: root.openDB<PoolPolicy, string>({ name: 'pools' }),
    locks: root.openDB<LockRecord, SegKey>({ name: 'locks' }),
    labels: root.openDB<LabelRecord, string>({ name: 'labels' }),
    labelidx: root.openDB<null, [string, number, string]>({ name: 'labelidx' }),
    intents: root.openDB<IntentRecord, IntentKey>({ name: 'intents' }),
    users: root.openDB<UserRecord, string>({ name: 'users' }),
  };
}

/** The first value of a range read (the read ends before this returns). */
export function first<K extends Key, V>(db: Database<V, K>, range: RangeOptions): { key: K; value: V } | undefined {
  for (const e of db.getRange({ ...range, limit: 1 })) return e;
  return undefined;
}
