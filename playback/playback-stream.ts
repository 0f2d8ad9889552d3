/**
 * A pull-based fragmented-MP4 playback stream over segment files: an init, then one
 * fragment per `next()` call, in any trick mode (media/mp4/fmp4-trick.ts). Pull-based so
 * HTTP (a Readable) and WebSocket sessions (pause, pacing, back-pressure) drive it the
 * same way; at most one GOP is held in memory per stream.
 *
 * Segments come from an iterator the caller feeds lazily from the index, fragments
 * already in output order (reverse play hands them backwards). The stream ends at the
 * end of the iterator or at the first segment whose codec config differs from the
 * first one (`endReason`), since one init cannot describe both.
 *
 * A recording whose audio browsers cannot play (G.711 kept as it is in PS segments,
 * media/mp4/video-only.ts) is sent as video only at any speed (`droppedAudio` names
 * what was left out): MSE would refuse the video with it.
 */
import type { FileHandle } from 'node:fs/promises';
import { openSegmentFile } from './segment-source.ts';
import { RecorderError } from '../lib/errors.ts';
import { Mp4FormatError } from '../media/mp4/boxes.ts';
import { fragmentHeader, NON_SYNC_FLAGS, Rescaler, singleTrackInit, SYNC_FLAGS, type OutSample, type TrickMode } from '../media/mp4/fmp4-trick.ts';
import type { InitInfo } from '../media/mp4/init-info.ts';
import { isSyncSample, rewriteMoof } from '../media/mp4/moof.ts';
import { checkUnchanged, type FragmentRef, type FragmentTable, type SampleTableCache, type SegmentTables } from './sample-table.ts';
import { OutputTimeline } from './timeline.ts';
import { readExactly } from '../media/mp4/file-read.ts';
import { withoutDurations } from '../media/mp4/init-duration.ts';
import { unplayableAudio } from '../media/mp4/video-only.ts';

export interface PlaybackFragment extends FragmentRef {
  /** Wall-clock start of the GOP (UTC ms). */
  timeMs: number;
}

export interface PlaybackSegment {
  path: string;
  /** File size in the index when looked up (a smaller file was rewritten since). */
  bytes?: number;
  initSize: number;
  codecKey: string;
  fragments: PlaybackFragment[];
}

export type EndReason = 'end' | 'codec-change';

/** Maps a vanished file (retention) to a typed error; other errors pass through. */
export function segmentError(err: unknown, path: string): unknown {
  const code = (err as { code?: string }).code;
  if (code === 'ENOENT') return new RecorderError('SEGMENT_GONE', `segment ${path} was removed while being read`, { cause: err });
  if (err instanceof Mp4FormatError && err.code === 'MP4_TRUNCATED')
    return new RecorderError('SEGMENT_GONE', `segment ${path} was truncated while being read`, { cause: err });
  return err;
}

export class PlaybackStream {
  /** Output media time (seconds) reached so far; the next stream of a session starts here. */
  mediaEndSec: number;
  /** Wall-clock start of the last GOP sent (null before the first). */
  positionMs: number | null = null;
  /** Wall-clock start of the first GOP the stream sends (the instant at its first decode time). */
  readonly firstMs: number;
  endReason: EndReason | null = null;

  private seg: SegmentTables | null = null;
  private segFrags: PlaybackFragment[] = [];
  private fragIndex = 0;
  private fh: FileHandle | null = null;
  private fhPath = '';
  private sequence = 1;
  private readonly rescaler: Rescaler | null;
  private readonly timeline: OutputTimeline;
  private readonly baseTicks: number;
  private segShift: ReadonlyMap<number, bigint> = new Map();
  private closed = false;

  private constructor(
    private readonly segments: Iterator<PlaybackSegment>,
    private readonly cache: SampleTableCache,
    readonly mode: TrickMode,
    readonly info: InitInfo,
    readonly init: Buffer,
    readonly mimeType: string,
    private readonly codecKey: string,
    private readonly videoId: number,
    first: { seg: SegmentTables; frags: PlaybackFragment[] },
    startSec: number,
    /** Audio codecs left out because browsers cannot play them (empty: every track is sent). */
    readonly droppedAudio: readonly string[] = [],
  ) {
    this.seg = first.seg;
    this.segFrags = first.frags;
    this.firstMs = first.frags[0]!.timeMs;
    const timescales = new Map(info.tracks.map((t) => [t.id, t.timescale]));
    this.timeline = new OutputTimeline(timescales, videoId, startSec);
    this.rescaler = this.allTracks ? null : new Rescaler(mode.kind === 'normal' ? 1 : mode.speed);
    this.baseTicks = Math.round(startSec * (timescales.get(videoId) ?? 1));
    this.mediaEndSec = startSec;
  }

  /** Every track as stored, times exact (speed 1 with audio browsers play); else video only, rescaled. */
  private get allTracks(): boolean {
    return this.mode.kind === 'normal' && this.droppedAudio.length === 0;
  }

  /**
   * Opens a stream on the first segment with fragments; null when there is none.
   * `startSec` is the output time of the first sample (0 for a fresh player).
   */
  static async open(segments: Iterator<PlaybackSegment>, mode: TrickMode, cache: SampleTableCache, startSec = 0): Promise<PlaybackStream | null> {
    for (let r = segments.next(); !r.done; r = segments.next()) {
      const s = r.value;
      if (s.fragments.length === 0) continue;
      let seg: SegmentTables;
      try {
        seg = await cache.read(s.path, s.initSize, s.fragments, s.bytes);
      } catch (err) {
        throw segmentError(err, s.path);
      }
      const info = seg.info;
      const video = info.tracks.find((t) => t.kind === 'video');
      if (mode.kind !== 'normal' && !video) throw new RecorderError('VALIDATION_FAILED', 'trick play needs a video track');
      const dropped = video ? unplayableAudio(info) : [];
      const videoId = video?.id ?? info.tracks[0]!.id;
      // Without the durations a closed segment's init carries: an MSE player would take
      // that one segment's length for the stream's (and the same range would send other
      // bytes once its segment closed).
      const plain = withoutDurations(seg.init);
      const all = mode.kind === 'normal' && dropped.length === 0;
      const init = all ? plain : singleTrackInit(plain, videoId);
      const mimeType = all ? info.mimeType : `video/mp4; codecs="${video!.codec}"`;
      return new PlaybackStream(segments, cache, mode, info, init, mimeType, s.codecKey, videoId, { seg, frags: s.fragments }, startSec, dropped);
    }
    return null;
  }

  /** The next fragment's bytes (moof + mdat, as parts), or null at the end. */
  async next(): Promise<Buffer[] | null> {
    for (;;) {
      if (this.closed) return null;
      if (!this.seg || this.fragIndex >= this.segFrags.length) {
        if (!(await this.advanceSegment())) return null;
        continue;
      }
      const i = this.fragIndex++;
      const table = this.seg.fragments[i]!;
      const ref = this.segFrags[i]!;
      if (i === 0) this.segShift = this.timeline.enterSegment(table.tracks);
      let out: Buffer[] | null;
      try {
        out = await this.render(this.seg.path, table);
      } catch (err) {
        throw segmentError(err, this.seg.path);
      }
      this.timeline.afterFragment(table.tracks);
      if (this.allTracks) this.mediaEndSec = this.timeline.endSec;
      this.positionMs = ref.timeMs;
      if (out) return out;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    // Ends the segment walk (a generator over the index): nothing of it stays suspended.
    this.segments.return?.(undefined);
    await this.fh?.close().catch(() => undefined);
    this.fh = null;
  }

  private async advanceSegment(): Promise<boolean> {
    for (;;) {
      const r = this.segments.next();
      if (r.done) {
        this.endReason = 'end';
        await this.close();
        return false;
      }
      const s = r.value;
      if (s.fragments.length === 0) continue;
      if (s.codecKey !== this.codecKey) {
        this.endReason = 'codec-change';
        await this.close();
        return false;
      }
      try {
        this.seg = await this.cache.read(s.path, s.initSize, s.fragments, s.bytes);
      } catch (err) {
        throw segmentError(err, s.path);
      }
      this.segFrags = s.fragments;
      this.fragIndex = 0;
      return true;
    }
  }

  private async handle(path: string): Promise<FileHandle> {
    if (this.fh && this.fhPath === path) return this.fh;
    await this.fh?.close().catch(() => undefined);
    this.fh = null;
    this.fh = await openSegmentFile(path, this.cache.views);
    await checkUnchanged(this.fh, path, this.seg?.fileBytes);
    this.fhPath = path;
    return this.fh;
  }

  private async render(path: string, table: FragmentTable): Promise<Buffer[] | null> {
    const fh = await this.handle(path);
    const timescale = this.info.tracks.find((t) => t.id === this.videoId)?.timescale ?? 1;
    if (this.allTracks) {
      const bytes = await readExactly(fh, table.offset, table.size);
      const decode = new Map(table.tracks.map((t) => [t.trackId, t.baseDecodeTime + (this.segShift.get(t.trackId) ?? 0n)]));
      const moof = rewriteMoof(bytes.subarray(0, table.moofSize), { sequence: this.sequence++, baseDecodeTime: decode });
      return [moof, bytes.subarray(table.moofSize)];
    }
    const video = table.tracks.find((t) => t.trackId === this.videoId);
    if (!video || video.durations.length === 0) return null;
    const rescaler = this.rescaler!;
    const base = BigInt(this.baseTicks + rescaler.elapsed);
    let out: Buffer[];
    if (this.mode.kind === 'iframes') {
      // The GOP's I-frame stands for the whole GOP, shown for its duration / speed.
      if (!isSyncSample(video.flags[0]!)) return null;
      const size = video.sizes[0]!;
      const sample: OutSample = { duration: rescaler.duration(video.durationTicks), size, flags: SYNC_FLAGS, compositionOffset: 0 };
      out = [fragmentHeader(this.sequence++, this.videoId, base, [sample]), await readExactly(fh, video.runs[0]!.fileOffset, size)];
    } else {
      const samples: OutSample[] = [];
      for (let k = 0; k < video.durations.length; k++) {
        samples.push({
          duration: rescaler.duration(video.durations[k]!),
          size: video.sizes[k]!,
          flags: isSyncSample(video.flags[k]!) ? SYNC_FLAGS : NON_SYNC_FLAGS,
          compositionOffset: rescaler.offset(video.compositionOffsets[k]!),
        });
      }
      out = [fragmentHeader(this.sequence++, this.videoId, base, samples)];
      for (const run of video.runs) out.push(await readExactly(fh, run.fileOffset, run.bytes));
    }
    this.mediaEndSec = (this.baseTicks + rescaler.elapsed) / timescale;
    return out;
  }
}
