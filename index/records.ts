/**
 * Records kept in the index. Plain data (msgpack-encoded by lmdb-js); units in names.
 * Changing a shape means bumping SCHEMA_VERSION in db.ts and writing a migration.
 */

export type StreamName = 'main' | 'sub';
export type SegmentFormat = 'mp4' | 'ps';

/** A camera as the VMS configured it (CONTRACT.md `camera.put`). */
export interface CameraConfig {
  id: string;
  name?: string;
  pool: string;
  streams: { main: string; sub?: string };
  record: { stream: StreamName; format: SegmentFormat };
  edge?: { replayUrl: string };
  /** Transient cameras (the demo) are kept in memory only. */
  transient?: boolean;
}

export type RecordType = string; // 'timing' | 'event' | 'motion' | 'alarm' | 'manual' | 'backfill' | custom

export interface ScheduleSlot {
  days: number[]; // 0 = Sunday … 6 = Saturday
  start: string; // HH:MM
  end: string; // HH:MM; end <= start means the slot runs past midnight
  type: 'timing' | 'event';
  /** Which RTSP stream to record in this slot; default: the camera's `record.stream`. */
  stream?: StreamName;
}

export interface SchedulePlan {
  camera: string;
  slots: ScheduleSlot[];
  timeZone: string; // IANA name; 'UTC' by default
  preSeconds: number;
  postSeconds: number;
}

/** A run of one record type inside a segment, from `fromMs` to the next run or the segment end. */
export interface TypeRun {
  type: RecordType;
  fromMs: number;
}

/**
 * One segment file. `gops` is the compact GOP table (see gop-table.ts): one entry per
 * fragment with its byte offset, size and start time relative to `startMs`.
 * While `open` is true the writer still appends; the entry covers only bytes that were
 * fdatasync'ed before the entry was committed (invariant 2).
 */
export interface SegmentRecord {
  camera: string;
  startMs: number;
  endMs: number;
  /** Path relative to the data dir: pools/<pool>/<camera>/<yyyy-mm-dd>/<startMs>.mp4 */
  file: string;
  format: SegmentFormat;
  pool: string;
  stream: StreamName;
  bytes: number;
  initSize: number;
  /** RFC 6381 MIME type with codecs, as a player's SourceBuffer wants it. */
  mimeType: string;
  /** Equal keys mean the inits are interchangeable (see media/init-info.ts). */
  codecKey: string;
  width?: number;
  height?: number;
  types: TypeRun[];
  gops: Uint8Array;
  open: boolean;
  flags: { backfill?: boolean; iframesOnly?: boolean };
}

export type GapState = 'open' | 'pending' | 'fetching' | 'filled' | 'partial' | 'unavailable';

/** A time range that should have been recorded and was not. `endMs` null while still open. */
export interface GapRecord {
  camera: string;
  startMs: number;
  endMs: number | null;
  state: GapState;
  reason: string;
  attempts: number;
}
