/**
 * Prometheus metrics (`GET /metrics`), on a registry of this node (not prom-client's
 * global one, so several nodes in one process do not mix).
 *
 * Per camera: state, bitrate, fragments and bytes written, gaps, last write time,
 * ffmpeg restarts. Per pool: usage, capacity, deletions. Process CPU and memory are
 * prom-client's default metrics. Alarms raised, by kind.
 *
 * What was written is read from the index at scrape time, never from the write path:
 * for each camera a cursor remembers the last segment seen (start, bytes, GOPs) and a
 * scrape adds what the index holds beyond it (the cursor segment's growth plus every
 * segment after it), so the recording path pays nothing for metrics. Counters count
 * from the moment this node started. ffmpeg restarts and alarms come from the node's
 * status and alarm streams (`onStatus`, `onAlarm`); pool deletions from the retention
 * code through `recordDeletion`.
 *
 * Process health for long runs, read at scrape time: LMDB reader slots in use
 * (`RecorderIndex.readerSlots()`; a slot pinned for good ends in MDB_READERS_FULL at
 * 126) and this process's live children by command (ffmpeg ingest, previews, frame
 * decodes, an embedded nats-server), as lib/child-process.ts, the one module that
 * starts them, counts them: from the spawn until the exit is reaped, so a zombie
 * counts too. Open descriptors, RSS and heap are the default metrics
 * (`process_open_fds`, `process_resident_memory_bytes`, `nodejs_heap_size_used_bytes`).
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { CameraStatus, CameraStateName } from '../actors/deps.ts';
import type { RecorderIndex } from '../index/db.ts';
import { decodeGops, gopCount } from '../index/gop-table.ts';
import type { SegmentRecord } from '../index/records.ts';
import type { Alarm } from '../lib/alarms.ts';
import { liveChildren } from '../lib/child-process.ts';

const STATES: readonly CameraStateName[] = ['stopped', 'connecting', 'recording', 'backoff'];
/** Bitrate is measured over the last GOPs of the newest segment, up to this much media time. */
const BITRATE_WINDOW_MS = 10_000;
/** No video written for this long: the bitrate is 0, whatever the last GOPs said. */
const STALE_MS = 30_000;

export interface CameraSnapshot {
  id: string;
  pool: string;
  status: CameraStateName;
}

export interface PoolStats {
  pool: string;
  usedBytes: number;
  capacityBytes: number | null;
}

export interface MetricsDeps {
  index: RecorderIndex;
  /** Every configured camera with its live state. */
  cameras: () => CameraSnapshot[];
  nowMs: () => number;
}

interface Cursor {
  startMs: number;
  bytes: number;
  gops: number;
}

export interface StreamStats {
  active: number;
  max: number;
  refused: number;
}

export class RecorderMetrics {
  readonly registry = new Registry();
  private readonly cursors = new Map<string, Cursor>();
  private readonly lastState = new Map<string, CameraStateName>();
  private poolSource: () => Iterable<PoolStats>;

  private readonly state = this.gauge('recorder_camera_state', 'camera state: 1 for the current one', ['camera', 'pool', 'state']);
  private readonly bitrate = this.gauge('recorder_camera_bitrate_bits_per_second', 'bits per second of media over the last GOPs written', ['camera', 'pool']);
  private readonly lastWrite = this.gauge('recorder_camera_last_write_timestamp_seconds', 'wall-clock end of the newest video in the index', [
    'camera',
    'pool',
  ]);
  private readonly gaps = this.gauge('recorder_camera_gaps', 'gaps recorded for the camera, by state', ['camera', 'pool', 'state']);
  private readonly fragments = new Counter({
    name: 'recorder_camera_fragments_total',
    help: 'fragments (GOPs) written since the node started',
    labelNames: ['camera', 'pool'],
    registers: [this.registry],
  });
  private readonly bytes = new Counter({
    name: 'recorder_camera_bytes_written_total',
    help: 'segment bytes written since the node started',
    labelNames: ['camera', 'pool'],
    registers: [this.registry],
  });
  private readonly restarts = new Counter({
    name: 'recorder_ffmpeg_restarts_total',
    help: 'ingest restarts after a failure (ffmpeg or the native RTSP client; the name is v1)',
    labelNames: ['camera'],
    registers: [this.registry],
  });
  private readonly poolUsage = this.gauge('recorder_pool_usage_bytes', "bytes of the pool's segments", ['pool']);
  private readonly poolCapacity = this.gauge('recorder_pool_capacity_bytes', 'pool capacity (absent: bounded by the disk only)', ['pool']);
  private readonly deletedSegments = new Counter({
    name: 'recorder_pool_deleted_segments_total',
    help: 'segments deleted by retention',
    labelNames: ['pool'],
    registers: [this.registry],
  });
  private readonly deletedBytes = new Counter({
    name: 'recorder_pool_deleted_bytes_total',
    help: 'bytes deleted by retention',
    labelNames: ['pool'],
    registers: [this.registry],
  });
  private readonly alarms = new Counter({ name: 'recorder_alarms_total', help: 'alarms raised, by kind', labelNames: ['kind'], registers: [this.registry] });
  private readonly streams = this.gauge('recorder_media_streams', 'media streams (downloads, playback, live) served right now', []);
  private readonly streamsMax = this.gauge('recorder_media_streams_max', 'bound on media streams served at once (RECORDER_MAX_STREAMS)', []);
  private readonly streamsRefused = new Counter({
    name: 'recorder_media_streams_refused_total',
    help: 'media stream requests refused with 503 TOO_MANY_STREAMS',
    registers: [this.registry],
  });
  private readonly readerSlots = this.gauge(
    'recorder_lmdb_reader_slots',
    "rows of the index's LMDB reader table (read transactions held); MDB_READERS_FULL at 126",
    [],
  );
  private readonly children = this.gauge(
    'recorder_child_processes',
    'live child processes of the recorder by command (lib/child-process.ts), zombies included',
    ['command'],
  );
  private streamSource: (() => StreamStats) | null = null;
  private streamsRefusedSeen = 0;

  constructor(private readonly deps: MetricsDeps) {
    collectDefaultMetrics({ register: this.registry });
    this.poolSource = () => defaultPoolStats(deps.index, deps.cameras());
    // Counters start at this node's start: cursors begin at what the index holds now.
    for (const c of deps.cameras()) this.cursorFor(c.id);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The pool figures; retention replaces the default (pools db + index usage) if it knows better. */
  setPoolSource(source: () => Iterable<PoolStats>): void {
    this.poolSource = source;
  }

  /** The HTTP layer's stream limiter (api/stream-limit.ts). */
  setStreamSource(source: () => StreamStats): void {
    this.streamSource = source;
  }

  /** Retention calls this for every segment it deletes. */
  recordDeletion(pool: string, segments: number, bytes: number): void {
    this.deletedSegments.inc({ pool }, segments);
    this.deletedBytes.inc({ pool }, bytes);
  }

  /** Every status change of a camera: backoff → connecting is an ingest restart. */
  onStatus(status: CameraStatus): void {
    const prev = this.lastState.get(status.camera);
    if (prev === 'backoff' && status.state === 'connecting') this.restarts.inc({ camera: status.camera });
    this.lastState.set(status.camera, status.state);
  }

  onAlarm(alarm: Alarm): void {
    this.alarms.inc({ kind: alarm.kind });
  }

  /** The text exposition, refreshed from the index and the live states. */
  async render(): Promise<string> {
    this.refresh();
    this.children.set({ command: 'ffmpeg' }, 0); // the usual child: its series exists from the first scrape
    for (const [command, n] of liveChildren()) this.children.set({ command }, n);
    return this.registry.metrics();
  }

  private refresh(): void {
    const now = this.deps.nowMs();
    const cameras = this.deps.cameras();
    for (const g of [this.state, this.bitrate, this.lastWrite, this.gaps, this.poolUsage, this.poolCapacity, this.children]) g.reset();
    this.readerSlots.set(this.deps.index.readerSlots());
    const live = new Set<string>();
    for (const c of cameras) {
      live.add(c.id);
      const labels = { camera: c.id, pool: c.pool };
      for (const s of STATES) this.state.set({ ...labels, state: s }, s === c.status ? 1 : 0);
      const written = this.advance(c.id);
      if (written.fragments > 0) this.fragments.inc(labels, written.fragments);
      else this.fragments.inc(labels, 0); // the series exists from the first scrape
      this.bytes.inc(labels, written.bytes);
      const last = this.deps.index.segments.last(c.id);
      if (last) this.lastWrite.set(labels, last.endMs / 1000);
      this.bitrate.set(labels, last && now - last.endMs < STALE_MS ? bitrateOf(last) : 0);
      const byState = new Map<string, number>();
      for (const value of this.deps.index.gaps.ofCamera(c.id)) {
        byState.set(value.state, (byState.get(value.state) ?? 0) + 1);
      }
      for (const [state, n] of byState) this.gaps.set({ ...labels, state }, n);
    }
    for (const id of this.cursors.keys()) if (!live.has(id)) this.cursors.delete(id);
    for (const p of this.poolSource()) {
      this.poolUsage.set({ pool: p.pool }, p.usedBytes);
      if (p.capacityBytes !== null) this.poolCapacity.set({ pool: p.pool }, p.capacityBytes);
    }
    const streams = this.streamSource?.();
    if (streams) {
      this.streams.set(streams.active);
      this.streamsMax.set(streams.max);
      this.streamsRefused.inc(Math.max(0, streams.refused - this.streamsRefusedSeen));
      this.streamsRefusedSeen = streams.refused;
    }
  }

  private cursorFor(camera: string): Cursor {
    let cur = this.cursors.get(camera);
    if (!cur) {
      const last = this.deps.index.segments.last(camera);
      cur = last ? { startMs: last.startMs, bytes: last.bytes, gops: gopCount(last.gops) } : { startMs: -1, bytes: 0, gops: 0 };
      this.cursors.set(camera, cur);
    }
    return cur;
  }

  /** What the index holds beyond the camera's cursor; moves the cursor to the newest segment. */
  private advance(camera: string): { fragments: number; bytes: number } {
    const cur = this.cursorFor(camera);
    let fragments = 0;
    let bytes = 0;
    for (const seg of this.deps.index.segments.all(camera, Math.max(cur.startMs, 0))) {
      const gops = gopCount(seg.gops);
      if (seg.startMs === cur.startMs) {
        fragments += Math.max(0, gops - cur.gops);
        bytes += Math.max(0, seg.bytes - cur.bytes);
      } else {
        fragments += gops;
        bytes += seg.bytes;
      }
      cur.startMs = seg.startMs;
      cur.bytes = seg.bytes;
      cur.gops = gops;
    }
    return { fragments, bytes };
  }

  private gauge(name: string, help: string, labelNames: string[]): Gauge {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }
}

/** Bits per second over the newest GOPs of a segment (up to BITRATE_WINDOW_MS of media). */
export function bitrateOf(seg: Pick<SegmentRecord, 'gops' | 'startMs' | 'endMs'>): number {
  const gops = decodeGops(seg.gops);
  if (gops.length === 0) return 0;
  const endMs = seg.endMs - seg.startMs;
  let bytes = 0;
  let fromMs = endMs;
  for (let i = gops.length - 1; i >= 0 && endMs - fromMs < BITRATE_WINDOW_MS; i--) {
    bytes += gops[i]!.size;
    fromMs = gops[i]!.timeMs;
  }
  return endMs > fromMs ? Math.round((bytes * 8 * 1000) / (endMs - fromMs)) : 0;
}

/** Pools as the index knows them (policies and usage); pools that only cameras name are included. */
function defaultPoolStats(index: RecorderIndex, cameras: CameraSnapshot[]): PoolStats[] {
  const capacity = new Map<string, number | null>();
  for (const p of index.pools.list()) capacity.set(p.id, p.capacityBytes);
  for (const c of cameras) if (!capacity.has(c.pool)) capacity.set(c.pool, null);
  return [...capacity].map(([pool, capacityBytes]) => ({ pool, capacityBytes, usedBytes: index.segments.poolUsage(pool) }));
}
