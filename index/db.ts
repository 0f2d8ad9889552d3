/**
 * The node's LMDB index (one environment under <data>/index). Files are the source of
 * truth; this is the fast path to them (DESIGN.md section 5).
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
 * Writes resolve after the commit is durable (lmdb-js default sync mode), which is
 * what invariant 2 needs: callers fdatasync the file first, then await the put.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { RecorderError } from '../lib/errors.ts';
import type { CameraConfig, GapRecord, SchedulePlan, SegmentRecord } from './records.ts';
import type { DirectorState } from '../actors/recording-director.ts';

export const SCHEMA_VERSION = 1;

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
  private readonly meta: Database<number, string>;

  private constructor(root: RootDatabase) {
    this.root = root;
    this.meta = root.openDB<number, string>({ name: 'meta' });
    this.cameras = root.openDB<CameraConfig, string>({ name: 'cameras' });
    this.schedules = root.openDB<SchedulePlan, string>({ name: 'schedules' });
    // Shared msgpack structures: records of one shape decode several times faster (search).
    this.segments = root.openDB<SegmentRecord, SegKey>({ name: 'segments', sharedStructuresKey: Symbol.for('structures') });
    this.gaps = root.openDB<GapRecord, SegKey>({ name: 'gaps' });
    this.recording = root.openDB<DirectorState, string>({ name: 'recording' });
    this.segtimes = root.openDB<SegmentTimes, SegKey>({ name: 'segtimes' });
  }

  static async open(dataDir: string): Promise<RecorderIndex> {
    const path = join(dataDir, 'index');
    mkdirSync(path, { recursive: true });
    const root = open({ path, maxDbs: 16, mapSize: 8 * 1024 ** 3 });
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
    return index;
  }

  async close(): Promise<void> {
    await this.root.close();
  }

  // ---- segments -------------------------------------------------------------

  /** Both puts land in the same lmdb-js commit batch. */
  putSegment(seg: SegmentRecord): Promise<boolean> {
    void this.segtimes.put([seg.camera, seg.startMs], segmentTimes(seg));
    return this.segments.put([seg.camera, seg.startMs], seg);
  }

  removeSegment(camera: string, startMs: number): Promise<boolean> {
    void this.segtimes.remove([camera, startMs]);
    return this.segments.remove([camera, startMs]);
  }

  async clearSegments(): Promise<void> {
    await this.segtimes.clearAsync();
    await this.segments.clearAsync();
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

  *allSegments(camera?: string): Iterable<SegmentRecord> {
    const range = camera === undefined ? {} : { start: [camera, -1] as SegKey, end: [camera, Number.MAX_SAFE_INTEGER] as SegKey };
    for (const { value } of this.segments.getRange(range)) yield value;
  }

  // ---- gaps -----------------------------------------------------------------

  putGap(gap: GapRecord): Promise<boolean> {
    return this.gaps.put([gap.camera, gap.startMs], gap);
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

export function segmentTimes(seg: SegmentRecord): SegmentTimes {
  const out: SegmentTimes = [seg.endMs];
  for (const run of seg.types) out.push(run.type, run.fromMs);
  return out;
}
