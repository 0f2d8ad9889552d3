/**
 * Turns one ingest session's init + fragments into segment files and index entries.
 *
 * Time (DESIGN.md section 6): the first fragment of a session is anchored on the wall
 * clock as arrival time minus its media duration (ffmpeg hands a GOP over only when
 * the next keyframe arrives). After that, times come from media timestamps, so a
 * segment's GOP times are exact relative to each other. A new segment starts when the
 * current one reaches its target length, when the codec config changes (new init with
 * another codecKey), when media timestamps jump, or when media time and wall clock
 * drift apart by more than MAX_DRIFT_MS (a wall-clock step); then it is re-anchored.
 *
 * Durability order per fragment (invariant 2): append bytes → fdatasync → commit the
 * index entry that covers them. A crash loses at most the fragment being written.
 */
import { join } from 'node:path';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import type { RecorderIndex } from '../index/db.ts';
import { encodeGops, type GopEntry } from '../index/gop-table.ts';
import type { CameraConfig, RecordType, SegmentRecord } from '../index/records.ts';
import type { Fmp4Chunk } from '../media/fmp4-splitter.ts';
import type { InitInfo } from '../media/init-info.ts';
import { SegmentFile } from './segment-file.ts';
import { segmentRelPath } from './layout.ts';

/** Media timestamps that jump by more than this start a new segment. */
const MAX_TIMESTAMP_JUMP_MS = 1000;
/** Media time and wall clock further apart than this re-anchor (new segment). */
const MAX_DRIFT_MS = 5000;

export interface SegmentWriterDeps {
  index: RecorderIndex;
  dataDir: string;
  clock: Clock;
  log: Logger;
  segmentMs: number;
  /** Called once with the wall-clock start of the first fragment written. */
  onFirstFragment?: (startMs: number) => void;
  onSegmentClosed?: (segment: SegmentRecord) => void;
}

interface OpenSegment {
  file: SegmentFile;
  record: SegmentRecord;
  gops: GopEntry[];
  /** Video (or first) track decode time of the first fragment, in ticks. */
  firstTicks: bigint;
  /** Expected decode time of the next fragment, in ticks. */
  nextTicks: bigint;
  timescale: number;
}

export class SegmentWriter {
  private init: { bytes: Buffer; info: InitInfo } | null = null;
  private current: OpenSegment | null = null;
  private wroteAny = false;
  /** End of the last fragment written, wall-clock ms (null before the first). */
  lastEndMs: number | null;
  recordType: RecordType = 'timing';

  constructor(
    private readonly camera: CameraConfig,
    private readonly deps: SegmentWriterDeps,
    previousEndMs: number | null,
  ) {
    this.lastEndMs = previousEndMs;
  }

  async handle(chunk: Fmp4Chunk): Promise<void> {
    if (chunk.kind === 'init') {
      if (this.current && this.init && this.init.info.codecKey !== chunk.info.codecKey) {
        this.deps.log.info({ camera: this.camera.id, from: this.init.info.mimeType, to: chunk.info.mimeType }, 'codec change: new segment');
        await this.closeCurrent();
      }
      this.init = { bytes: chunk.bytes, info: chunk.info };
      return;
    }
    if (!this.init) throw new Error('fragment before init');
    await this.writeFragment(chunk);
  }

  private async writeFragment(frag: Extract<Fmp4Chunk, { kind: 'fragment' }>): Promise<void> {
    const init = this.init!;
    const videoId = init.info.videoTrackId ?? init.info.tracks[0]?.id;
    const traf = frag.moof.tracks.find((t) => t.trackId === videoId) ?? frag.moof.tracks[0];
    if (!traf) throw new Error('fragment without tracks');
    const ticks = traf.baseDecodeTime;
    const durationMs = (frag.durationTicks * 1000) / frag.timescale;
    const arrivalStartMs = this.deps.clock.nowMs() - durationMs;

    let seg = this.current;
    let fragStartMs: number;
    if (seg) {
      fragStartMs = seg.record.startMs + (Number(ticks - seg.firstTicks) * 1000) / seg.timescale;
      const jumpMs = Math.abs(Number(ticks - seg.nextTicks) * 1000) / seg.timescale;
      const driftMs = Math.abs(fragStartMs - arrivalStartMs);
      const lengthMs = fragStartMs - seg.record.startMs;
      if (jumpMs > MAX_TIMESTAMP_JUMP_MS || driftMs > MAX_DRIFT_MS) {
        this.deps.log.warn({ camera: this.camera.id, jumpMs, driftMs }, 'timestamp jump or clock step: re-anchoring in a new segment');
        await this.closeCurrent();
        seg = null;
        fragStartMs = arrivalStartMs;
      } else if (lengthMs >= this.deps.segmentMs) {
        await this.closeCurrent();
        seg = null; // continuous: the next segment starts where this one's media time says
      }
    } else {
      fragStartMs = arrivalStartMs;
    }
    // Keys are [camera, startMs]: never overlap or precede what is already stored.
    if (this.lastEndMs !== null && fragStartMs < this.lastEndMs) fragStartMs = this.lastEndMs;
    fragStartMs = Math.round(fragStartMs);

    if (!seg) seg = await this.openSegment(fragStartMs, ticks, frag.timescale);
    const offset = await seg.file.append(frag.bytes);
    seg.gops.push({ offset, size: frag.bytes.byteLength, timeMs: fragStartMs - seg.record.startMs });
    seg.nextTicks = ticks + BigInt(frag.durationTicks);
    const endMs = Math.round(fragStartMs + durationMs);
    seg.record.endMs = endMs;
    seg.record.bytes = seg.file.size;
    seg.record.gops = encodeGops(seg.gops);
    await seg.file.sync();
    await this.deps.index.putSegment(seg.record);
    this.lastEndMs = endMs;
    if (!this.wroteAny) {
      this.wroteAny = true;
      this.deps.onFirstFragment?.(seg.record.startMs);
    }
  }

  private async openSegment(startMs: number, firstTicks: bigint, timescale: number): Promise<OpenSegment> {
    const init = this.init!;
    const rel = segmentRelPath(this.camera.pool, this.camera.id, startMs, 'mp4');
    const file = await SegmentFile.create(join(this.deps.dataDir, rel), init.bytes);
    const video = init.info.tracks.find((t) => t.id === init.info.videoTrackId);
    const record: SegmentRecord = {
      camera: this.camera.id,
      startMs,
      endMs: startMs,
      file: rel,
      format: 'mp4',
      pool: this.camera.pool,
      stream: this.camera.record.stream,
      bytes: file.size,
      initSize: init.bytes.byteLength,
      mimeType: init.info.mimeType,
      codecKey: init.info.codecKey,
      ...(video?.width !== undefined ? { width: video.width } : {}),
      ...(video?.height !== undefined ? { height: video.height } : {}),
      types: [{ type: this.recordType, fromMs: startMs }],
      gops: new Uint8Array(0),
      open: true,
      flags: {},
    };
    const seg: OpenSegment = { file, record, gops: [], firstTicks, nextTicks: firstTicks, timescale };
    this.current = seg;
    return seg;
  }

  private async closeCurrent(): Promise<void> {
    const seg = this.current;
    if (!seg) return;
    this.current = null;
    await seg.file.close();
    if (seg.gops.length === 0) return; // never indexed; nothing points at it
    seg.record.open = false;
    await this.deps.index.putSegment(seg.record);
    this.deps.onSegmentClosed?.(seg.record);
  }

  /** Closes the open segment (end of session or shutdown). Safe to call twice. */
  async close(): Promise<void> {
    await this.closeCurrent();
  }
}
