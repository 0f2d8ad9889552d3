/**
 * Records kept in the index. Plain data (msgpack-encoded by lmdb-js); units in names.
 * Changing a shape means a numbered migration (index/migrations/) that rewrites the
 * records an older build wrote; docs/design/index-layout.md says how.
 */

export type StreamName = 'main' | 'sub';
export type SegmentFormat = 'mp4' | 'ps';

/** A camera as the VMS configured it (docs/api/nats.md `rec.v1.camera.put`). */
export interface CameraConfig {
  id: string;
  name?: string;
  pool: string;
  streams: { main: string; sub?: string };
  /** `format` unset: the pool's `format`, else `mp4` (resolved when a session starts). */
  record: { stream: StreamName; format?: SegmentFormat };
  /** Edge storage (SD card) to back-fill gaps from (docs/design/backfill.md). */
  edge?: EdgeConfig;
  /** Transient cameras (the demo) are kept in memory only. */
  transient?: boolean;
  /** RTSP lower transport (rtsp/rtsp-transport.ts); unset: `auto` (TCP, UDP once TCP is refused). */
  transport?: 'auto' | 'tcp' | 'udp' | 'http';
}

/**
 * A camera's edge storage. `onvif`: ONVIF replay of `replayUrl` (`Range: clock=`);
 * `url`: the interval is in the URL ({start}/{end} placeholders, rtsp/edge-url.ts).
 */
export interface EdgeConfig {
  replayUrl: string;
  /** Default `onvif` (records written before the field existed have none). */
  mode?: 'onvif' | 'url';
  /** false (default): ask for `Rate-Control: no`, i.e. faster than real time. */
  rateControl?: boolean;
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
  /** Equal keys mean the inits are interchangeable (see media/mp4/init-info.ts). */
  codecKey: string;
  width?: number;
  height?: number;
  types: TypeRun[];
  gops: Uint8Array;
  open: boolean;
  flags: { backfill?: boolean; iframesOnly?: boolean };
  /** In a cluster: the node that wrote it and the ownership grant it wrote under (docs/design/cluster.md). */
  fence?: FenceStamp;
}

/**
 * The fence token of a cluster node's writes: its node id and the KV revision of the
 * compare-and-set that granted it the camera (a higher `rev` is a later grant).
 */
export interface FenceStamp {
  node: string;
  rev: number;
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
  /** Why the last back-fill attempt did not fill it (a RecorderError code and message). */
  lastError?: { code: string; message: string };
  /** When the next back-fill attempt is due (epoch ms); absent: as soon as a slot is free. */
  nextAttemptMs?: number;
}

// ---- storage lifecycle (pools, locks, labels; retention and thinning) ----------

/**
 * What a pool does when it is full (seed: resource pools):
 * - `none`: stop writing its cameras (gap + alarm) until space is made;
 * - `capacity`: delete the oldest unlocked segments first;
 * - `cycle`: delete what ended more than `cycleDays` ago, and also keep to capacity.
 */
export type OverwriteMode = 'none' | 'capacity' | 'cycle';

export interface PoolPolicy {
  id: string;
  /** Bytes the pool's segment files may occupy; null: bounded only by the disk (emergency overwrite). */
  capacityBytes: number | null;
  overwrite: OverwriteMode;
  /** Only for `cycle`: segments that ended this many days ago go. */
  cycleDays?: number;
  /** Share of capacity (0..1] that locked video may hold; default 0.5. */
  maxLockShare: number;
  /** Segments older than this are thinned to their I-frames (frame-extracting storage). */
  thinAfterDays?: number;
  /** A second data dir (another disk) that holds a copy of every closed segment. */
  backupDir?: string;
  /** Segment format of the pool's cameras that set none themselves (default `mp4`). */
  format?: SegmentFormat;
  /** Bytes the pool's picture packs may hold before the oldest are covered (pictures/cover.ts); unset: bounded by the cycle and the disk. */
  pictureCapacityBytes?: number;
  /**
   * In a cluster: how many nodes hold each closed segment (1-3; unset: 1). The writer
   * keeps its own; the others pull theirs (cluster/copies.ts).
   */
  copies?: number;
  /**
   * This pool takes backups from another cluster (cluster/backup-sender.ts): an
   * announcement with an `origin` for any other pool is refused.
   */
  receivesBackups?: boolean;
  /** Another cluster of recorders that receives a copy of every closed segment of the pool (cluster/backup-sender.ts). */
  backupCluster?: BackupClusterTarget;
}

/** Where a pool's backup to another cluster goes: that cluster's NATS and its pool. */
export interface BackupClusterTarget {
  /** The target cluster's NATS servers (`nats://host:port`). */
  servers: string[];
  /** NATS credentials on the target (its operator gives them; shown to admins only). */
  user?: string;
  pass?: string;
  /** The target's subject prefix (its `RECORDER_SUBJECT_PREFIX`; default `rec`). */
  prefix?: string;
  /** The target's pool that keeps the copies (default: this pool's id). */
  pool?: string;
}

/**
 * A lock: [startMs, endMs) of one camera is never deleted or thinned (invariant 3)
 * until `untilMs` (null: until unlocked). Overlapping or touching locks of a camera are
 * merged on creation, so stored locks of a camera never overlap; key [camera, startMs].
 */
export interface LockRecord {
  id: string;
  camera: string;
  startMs: number;
  endMs: number;
  untilMs: number | null;
  createdMs: number;
}

/** An annotation over [startMs, endMs) of one camera (seed: video annotation). */
export interface LabelRecord {
  id: string;
  camera: string;
  startMs: number;
  endMs: number;
  text: string;
  createdMs: number;
  updatedMs: number;
}

/**
 * A file mutation recorded before it happens, so a crash in the middle is finished on
 * the next start (storage/segment-delete.ts, storage/thin.ts).
 * - `delete`: the index entry is already gone (same commit as the intent); unlink `files`.
 * - `thin`: `tmp` is being written; if it was renamed over `file`, re-index `file`.
 * - `purge`: the camera's config is already gone (same commit); delete every segment
 *   of it (each as a `delete`), its gap records and its smart files (schema 5).
 */
export type IntentRecord =
  | { kind: 'delete'; camera: string; startMs: number; files: string[] }
  | { kind: 'thin'; camera: string; startMs: number; file: string; tmp: string }
  | { kind: 'purge'; camera: string };

/** Key of an intent: [kind, camera, startMs] (a purge: startMs 0); one of each per segment at most. */
export type IntentKey = [IntentRecord['kind'], string, number];

/**
 * What of a camera's recording state survives a restart (db `recording`): the event
 * runs by type (schedule/events.ts TypeState) and whether manual recording is on.
 */
export interface SavedRecording {
  events: Record<string, { startedMs: number; open: boolean; endMs: number }>;
  manual: boolean;
}

export type UserRole = 'admin' | 'operator' | 'viewer';

/** A user of the HTTP interface (security/users.ts decides what it may do). */
export interface UserRecord {
  name: string;
  role: UserRole;
  /** Pool ids, or `*` for all; ignored for admins (they are global). */
  pools: string[];
  /** Salted scrypt (security/passwords.ts). */
  passwordHash?: string;
  /** SHA-256 of the API token's secret part, hex. */
  tokenSha256?: string;
  createdAt: string;
  updatedAt: string;
}

// ---- smart stream (index/smart.ts) --------------------------------------------

/** What a packet carries, decided from its bytes (smart/onvif-meta.ts classify). */
export const SMART_KINDS = ['onvif', 'klv', 'sei', 'data'] as const;
export type SmartKind = (typeof SMART_KINDS)[number];

export type SmartKey = [string, number, number];

export interface SmartRecord {
  /** startMs of the smart file that holds the packet (key of `smartfiles`). */
  fileMs: number;
  /** Offset of the record (its header) in that file, and header + payload bytes. */
  offset: number;
  size: number;
  kind: SmartKind;
  classes?: string[];
  rules?: string[];
  topics?: string[];
  objects?: number;
  /** The time the packet states for itself (ONVIF Frame/@UtcTime), if any. */
  contentMs?: number;
}

export interface SmartFileRecord {
  camera: string;
  startMs: number;
  /** ms of the last committed record. */
  endMs: number;
  /** Relative to the data dir: smart/<camera>/<yyyy-mm-dd>/<startMs>.smart */
  file: string;
  /** Durable bytes the index covers (header + committed records). */
  bytes: number;
  records: number;
  open: boolean;
}
