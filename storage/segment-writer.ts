/**
 * Turns one ingest session's init + fragments into segment files and index entries.
 *
 * Time (docs/design/time.md): the session's timeline is anchored on the wall clock at its
 * first fragment as arrival time minus the fragment's media duration (ffmpeg hands a
 * GOP over only when the next keyframe arrives); after that, times come from media
 * timestamps, so consecutive fragments abut exactly. A decode-time jump over
 * MAX_TIMESTAMP_JUMP_MS or a drift from the wall clock over MAX_DRIFT_MS (a clock
 * step) re-anchors the timeline and starts a new segment.
 *
 * What is written (docs/design/architecture.md, schedules issue): for each fragment `decide(startMs)`
 * says write (with a record type) or hold. Held fragments stay in a pre-record ring of
 * at most `preMs` (and PRE_RECORD_MAX_BYTES); the next written fragment writes the ring
 * first, so an event's clip starts before the event, GOP-aligned. A new segment starts
 * at the target length, on a codec change (new init with another codecKey), after a
 * discontinuity, and whenever writing resumes after a pause. A record-type change
 * inside a segment adds a type run at that fragment.
 *
 * Durability order (invariant 2): append bytes → fdatasync → commit the index entry
 * that covers them. Fragments are appended as they come; the fdatasync + commit pair
 * runs when holding back one more GOP would leave more than `syncMs` of media unsynced
 * (invariant 2, docs/design/architecture.md: "at least at segment close and every few seconds"), and always at close.
 * A killed process loses nothing more for it: the appended bytes are in the page cache
 * and reconcile adds fragments that reached the file after the last commit. A power
 * cut loses at most `syncMs` plus the fragment being assembled. One sync and one commit
 * per `syncMs` instead of per GOP is what the ingest bench measured as worth it.
 *
 * Close: the header's duration fields (mp4: mehd, mvhd, tkhd; media/mp4/init-duration.ts)
 * are patched in place from the media stored, then the close's fdatasync, then the
 * index entry marked closed: the same order, so an entry never says closed over a file
 * whose header is not durable. A file a crash leaves open keeps zero durations (players
 * scan its fragments, as for files written before this); reconcile closes its entry
 * and fills them in.
 *
 * File format (fMP4 or MPEG-PS, the camera's `record.format`) is the encoder's business
 * (storage/segment-format.ts): this class decides when and what, never how bytes look.
 */
import { join } from 'node:path';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import type { RecorderIndex } from '../index/db.ts';
import { encodeGops, type GopEntry } from '../index/gop-table.ts';
import type { CameraConfig, FenceStamp, RecordType, SegmentRecord } from '../index/records.ts';
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import type { InitInfo } from '../media/mp4/init-info.ts';
import { SegmentFile } from './segment-file.ts';
import { segmentEncoder, type SegmentEncoder } from './segment-format.ts';
import { MediaFormatError } from '../media/media-error.ts';
import { segmentRelPath } from './layout.ts';

/** Media timestamps that jump by more than this start a new segment. */
const MAX_TIMESTAMP_JUMP_MS = 1000;
/** Media time and wall clock further apart than this re-anchor (new segment). */
const MAX_DRIFT_MS = 5000;
/** Fragments this far apart in time do not share a segment. */
const CONTIGUOUS_MS = 500;
/** Upper bound of the pre-record ring whatever `preMs` says (60 s of 8 Mbps ≈ 60 MB). */
export const PRE_RECORD_MAX_BYTES = 96 * 1024 * 1024;

export interface WriteDecision {
  write: boolean;
  type: RecordType;
  preMs: number;
  /** For an event's write: when the event began; the held pre-record is cut to `preMs` before it. */
  sinceMs?: number;
}

const ALWAYS_TIMING: WriteDecision = { write: true, type: 'timing', preMs: 0 };

export interface SegmentWriterDeps {
  index: RecorderIndex;
  dataDir: string;
  clock: Clock;
  log: Logger;
  segmentMs: number;
  /** Whether (and as what) the fragment starting at `startMs` is written; default: always, `timing`. */
  decide?: (startMs: number) => WriteDecision;
  /** Called once with the wall-clock start of the first fragment received. */
  onFirstFragment?: (startMs: number) => void;
  onSegmentClosed?: (segment: SegmentRecord) => void;
  /**
   * Back-fill (docs/design/backfill.md): the first fragment's media time is this wall-clock
   * instant (the interval asked for, or the camera's own clock), never its arrival;
   * later fragments follow their media time with no drift check, since a replay comes
   * faster than real time.
   */
  anchorMs?: number;
  /**
   * Where a fragment may go (back-fill: inside a hole between stored segments); may
   * trim its times by less than a GOP; null drops it. Default: as timed.
   */
  fit?: (startMs: number, endMs: number) => { startMs: number; endMs: number } | null;
  /** Flags of every segment this writer creates (back-fill: `{ backfill: true }`). */
  flags?: SegmentRecord['flags'];
  /** Longest media time appended but not yet fdatasync'ed and indexed (default SYNC_MS; 0: every fragment). */
  syncMs?: number;
  /**
   * In a cluster: asked before each fragment is appended; resolves to the fence token
   * stamped on the segment, or rejects (CAMERA_FENCED) when the camera is no longer
   * this node's, so no byte of it reaches the file (docs/design/cluster.md "Fencing").
   */
  fence?: () => Promise<FenceStamp | undefined>;
}

/** Default of `syncMs`: a few seconds, as invariant 2 (docs/design/architecture.md) allows. */
export const SYNC_MS = 4000;

type Fragment = Extract<Fmp4Chunk, { kind: 'fragment' }>;

interface TimedFragment {
  frag: Fragment;
  startMs: number;
  endMs: number;
  /** Starts a new timeline (after a jump or clock step): never joins the previous segment. */
  discontinuous: boolean;
}

interface OpenSegment {
  file: SegmentFile;
  /** Its header as written, and the encoder that wrote it (closingPatches at close). */
  header: Buffer;
  encoder: SegmentEncoder;
  /** Media ticks stored per track (sums of fragment durations: robust to decode-time jumps). */
  durations: Map<number, number>;
  record: SegmentRecord;
  gops: GopEntry[];
  /** End of what the index holds of this segment (synced and committed). */
  committedEndMs: number;
}

export class SegmentWriter {
  private init: { bytes: Buffer; info: InitInfo } | null = null;
  private encoder: SegmentEncoder | null = null;
  private current: OpenSegment | null = null;
  private anchor: { ticks: bigint; ms: number; nextTicks: bigint; timescale: number } | null = null;
  private ring: TimedFragment[] = [];
  private ringBytes = 0;
  /** The pre-record the ring was last held for. */
  private ringPreMs = 0;
  private receivedAny = false;
  /** End of the last fragment written, wall-clock ms (null before the first). */
  lastEndMs: number | null;
  /** End of the last fragment received, written or held. */
  lastSeenEndMs: number | null = null;

  constructor(
    private readonly camera: CameraConfig,
    private readonly deps: SegmentWriterDeps,
    previousEndMs: number | null,
  ) {
    this.lastEndMs = previousEndMs;
  }

  /**
   * Wall-clock ms of `mediaSec` seconds on this session's fMP4 decode timeline, by the
   * current anchor (null before the first fragment): the smart stream's packets are
   * timed exactly like the video they travel with (docs/design/time.md).
   */
  wallMsAt(mediaSec: number): number | null {
    const a = this.anchor;
    return a ? a.ms + (mediaSec - Number(a.ticks) / a.timescale) * 1000 : null;
  }

  /** Bytes held for pre-record (for metrics and the memory bench). */
  get preRecordBytes(): number {
    return this.ringBytes;
  }

  /**
   * The camera's format's encoder; MPEG-PS carries H.264/H.265 only, so a camera sending
   * another video codec (Motion JPEG) is recorded as fMP4 rather than not at all.
   */
  private encoderFor(init: { bytes: Buffer; info: InitInfo }): SegmentEncoder {
    const format = this.camera.record.format ?? 'mp4';
    try {
      return segmentEncoder(format, init);
    } catch (err) {
      if (format !== 'ps' || !(err instanceof MediaFormatError) || err.code !== 'CODEC_UNSUPPORTED') throw err;
      this.deps.log.warn({ camera: this.camera.id, mimeType: init.info.mimeType, why: err.message }, 'MPEG-PS cannot carry this video: recorded as fMP4');
      return segmentEncoder('mp4', init);
    }
  }

  async handle(chunk: Fmp4Chunk): Promise<void> {
    if (chunk.kind === 'init') {
      if (this.init && this.init.info.codecKey !== chunk.info.codecKey) {
        this.deps.log.info({ camera: this.camera.id, from: this.init.info.mimeType, to: chunk.info.mimeType }, 'codec change: new segment');
        await this.closeCurrent();
        this.dropRing(); // held GOPs belong to the old init
      }
      this.init = { bytes: chunk.bytes, info: chunk.info };
      this.encoder = this.encoderFor(this.init);
      const left = this.encoder.unsupported;
      if (left.length > 0) this.deps.log.warn({ camera: this.camera.id, tracks: left }, 'tracks the segment format cannot carry are not recorded');
      return;
    }
    if (!this.init) throw new Error('fragment before init');
    const timed = this.time(chunk);
    this.lastSeenEndMs = timed.endMs;
    if (!this.receivedAny) {
      this.receivedAny = true;
      this.deps.onFirstFragment?.(timed.startMs);
    }
    if (this.deps.fit) {
      const placed = this.deps.fit(timed.startMs, timed.endMs);
      if (!placed) return this.closeCurrent();
      timed.startMs = placed.startMs;
      timed.endMs = placed.endMs;
    }
    const decision = (this.deps.decide ?? (() => ALWAYS_TIMING))(timed.startMs);
    if (!decision.write) {
      await this.closeCurrent();
      this.hold(timed, decision.preMs);
      return;
    }
    for (const held of this.preRecordFor(decision.sinceMs ?? timed.startMs)) await this.write(held, decision.type);
    await this.write(timed, decision.type);
  }

  /** Places a fragment on the session timeline (docs/design/time.md). */
  private time(frag: Fragment): TimedFragment {
    const init = this.init!;
    const videoId = init.info.videoTrackId ?? init.info.tracks[0]?.id;
    const traf = frag.moof.tracks.find((t) => t.trackId === videoId) ?? frag.moof.tracks[0];
    if (!traf) throw new Error('fragment without tracks');
    const ticks = traf.baseDecodeTime;
    const durationMs = (frag.durationTicks * 1000) / frag.timescale;
    const fixed = this.deps.anchorMs;
    // Its last frame arrived `heldMs` before it reached us (0 unless its producer held it).
    const arrivalStartMs = fixed ?? this.deps.clock.nowMs() - (frag.heldMs ?? 0) - durationMs;
    let discontinuous = false;
    let a = this.anchor;
    if (a && a.timescale === frag.timescale) {
      const predicted = a.ms + (Number(ticks - a.ticks) * 1000) / a.timescale;
      const jumpMs = Math.abs(Number(ticks - a.nextTicks) * 1000) / a.timescale;
      const driftMs = fixed === undefined ? Math.abs(predicted - arrivalStartMs) : 0;
      if (jumpMs > MAX_TIMESTAMP_JUMP_MS || driftMs > MAX_DRIFT_MS) {
        this.deps.log.warn({ camera: this.camera.id, jumpMs, driftMs }, 'timestamp jump or clock step: re-anchoring in a new segment');
        // Back-fill keeps mapping media time to the camera's timeline: a jump there is
        // a hole in the edge recording, not a clock step.
        if (fixed === undefined) a = null;
        discontinuous = true;
      }
    } else {
      a = null;
    }
    if (!a) {
      a = { ticks, ms: arrivalStartMs, nextTicks: ticks, timescale: frag.timescale };
      this.anchor = a;
    }
    a.nextTicks = ticks + BigInt(frag.durationTicks);
    let startMs = a.ms + (Number(ticks - a.ticks) * 1000) / a.timescale;
    // Keys are [camera, startMs]: never overlap or precede what is already stored.
    if (this.lastEndMs !== null && startMs < this.lastEndMs) startMs = this.lastEndMs;
    return { frag, startMs: Math.round(startMs), endMs: Math.round(startMs + durationMs), discontinuous };
  }

  /**
   * Holds a fragment in the pre-record ring. Invariant (once filled, within the byte
   * cap): the ring's first GOP starts at or before `preMs` before the newest held GOP's
   * *start*. An event that makes the next fragment written began after that start (the
   * newest GOP was judged before it), so the ring always reaches `preMs` before the event.
   */
  private hold(timed: TimedFragment, preMs: number): void {
    if (preMs <= 0) return this.dropRing();
    if (timed.discontinuous) this.dropRing();
    this.ring.push(timed);
    this.ringBytes += timed.frag.bytes.byteLength;
    this.ringPreMs = preMs;
    const newestStart = timed.startMs;
    while (this.ring.length > 1 && (this.ring[1]!.startMs <= newestStart - preMs || this.ringBytes > PRE_RECORD_MAX_BYTES)) {
      this.ringBytes -= this.ring.shift()!.frag.bytes.byteLength;
    }
  }

  /** Empties the ring, returning the held GOPs from the last that starts `preMs` before `sinceMs` on. */
  private preRecordFor(sinceMs: number): TimedFragment[] {
    const from = sinceMs - this.ringPreMs;
    let first = 0;
    while (first + 1 < this.ring.length && this.ring[first + 1]!.startMs <= from) first++;
    const held = this.ring.slice(first);
    this.dropRing();
    return held;
  }

  private dropRing(): void {
    this.ring = [];
    this.ringBytes = 0;
  }

  private async write(timed: TimedFragment, type: RecordType): Promise<void> {
    const fence = await this.deps.fence?.();
    let seg = this.current;
    if (seg) {
      const contiguous = !timed.discontinuous && Math.abs(timed.startMs - seg.record.endMs) <= CONTIGUOUS_MS;
      if (!contiguous || timed.startMs - seg.record.startMs >= this.deps.segmentMs) {
        await this.closeCurrent();
        seg = null;
      }
    }
    if (!seg) this.encoder!.startFile();
    const bytes = this.encoder!.encode(timed.frag);
    if (!seg) seg = await this.openSegment(timed.startMs, type, bytes);
    if (fence) seg.record.fence = fence;
    const runs = seg.record.types;
    if (runs[runs.length - 1]!.type !== type) runs.push({ type, fromMs: timed.startMs });
    const offset = await seg.file.append(bytes);
    for (const t of timed.frag.moof.tracks) seg.durations.set(t.trackId, (seg.durations.get(t.trackId) ?? 0) + t.durationTicks);
    seg.gops.push({ offset, size: bytes.byteLength, timeMs: timed.startMs - seg.record.startMs });
    seg.record.endMs = timed.endMs;
    seg.record.bytes = seg.file.size;
    this.lastEndMs = timed.endMs;
    const syncMs = this.deps.syncMs ?? SYNC_MS;
    const gopMs = timed.endMs - timed.startMs;
    // Commit now if waiting for one more GOP of this length would leave over syncMs unsynced.
    if (timed.endMs + gopMs - seg.committedEndMs > syncMs) await this.commit(seg);
  }

  /** fdatasync, then index everything appended so far (invariant 2's order). */
  private async commit(seg: OpenSegment): Promise<void> {
    seg.record.gops = encodeGops(seg.gops);
    await seg.file.sync();
    await this.deps.index.segments.put(seg.record);
    seg.committedEndMs = seg.record.endMs;
  }

  /** Creates the file for a segment whose first stored fragment is `first` (not yet written). */
  private async openSegment(startMs: number, type: RecordType, first: Buffer): Promise<OpenSegment> {
    const encoder = this.encoder!;
    const rel = segmentRelPath(this.camera.pool, this.camera.id, startMs, encoder.format);
    const header = encoder.fileHeader(first);
    const file = await SegmentFile.create(join(this.deps.dataDir, rel), header);
    const record: SegmentRecord = {
      camera: this.camera.id,
      startMs,
      endMs: startMs,
      file: rel,
      format: encoder.format,
      pool: this.camera.pool,
      stream: this.camera.record.stream,
      bytes: file.size,
      ...encoder.describe(first),
      types: [{ type, fromMs: startMs }],
      gops: new Uint8Array(0),
      open: true,
      flags: { ...this.deps.flags },
    };
    const seg: OpenSegment = { file, header, encoder, durations: new Map(), record, gops: [], committedEndMs: startMs };
    this.current = seg;
    return seg;
  }

  private async closeCurrent(): Promise<void> {
    const seg = this.current;
    if (!seg) return;
    this.current = null;
    try {
      // The header's durations, durable with the close's fdatasync, before the entry says closed.
      if (seg.gops.length > 0) for (const p of seg.encoder.closingPatches(seg.header, seg.durations)) await seg.file.patch(p.at, p.bytes);
    } catch (err) {
      await seg.file.close().catch(() => undefined);
      throw err;
    }
    await seg.file.close(); // fdatasyncs what the last commit did not cover
    if (seg.gops.length === 0) return; // never indexed; reconcile removes the empty file
    seg.record.open = false;
    seg.record.gops = encodeGops(seg.gops);
    await this.deps.index.segments.put(seg.record);
    this.deps.onSegmentClosed?.(seg.record);
  }

  /** Closes the open segment (end of session or shutdown). Safe to call twice. */
  async close(): Promise<void> {
    await this.closeCurrent();
    this.dropRing();
  }
}
