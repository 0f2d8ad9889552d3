/**
 * The node's LMDB index (one environment under <data>/index). Files are the source of
 * truth; this is the fast path to them (DESIGN.md section 5).
 *
 * Key layout, schema version 1 (lmdb-js orders array keys element by element):
 *   meta       'schema'               → SCHEMA_VERSION
 *   cameras    cameraId               → CameraConfig
 *   schedules  cameraId               → SchedulePlan
 *   segments   [cameraId, startMs]    → SegmentRecord (GOP table inside, 12 B per GOP)
 *   gaps       [cameraId, startMs]    → GapRecord
 *   recording  cameraId               → live events + manual flag (survive a restart)
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

export class RecorderIndex {
  readonly root: RootDatabase;
  readonly cameras: Database<CameraConfig, string>;
  readonly schedules: Database<SchedulePlan, string>;
  readonly segments: Database<SegmentRecord, SegKey>;
  readonly gaps: Database<GapRecord, SegKey>;
  readonly recording: Database<DirectorState, string>;
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
    return index;
  }

  async close(): Promise<void> {
    await this.root.close();
  }

  // ---- segments -------------------------------------------------------------

  putSegment(seg: SegmentRecord): Promise<boolean> {
    return this.segments.put([seg.camera, seg.startMs], seg);
  }

  removeSegment(camera: string, startMs: number): Promise<boolean> {
    return this.segments.remove([camera, startMs]);
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
