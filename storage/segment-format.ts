/**
 * The one seam between the segment writer and the bytes of a segment file: an encoder
 * per session init turns each ingest fragment (fMP4 moof+mdat, one GOP) into the bytes
 * stored for it, and says what the index records about the file. Two formats:
 *   - `mp4`: the file starts with the session's init with a `mehd` added (its duration
 *     fields are filled in at close, media/mp4/init-duration.ts); a fragment is stored as
 *     received.
 *   - `ps`: a file header (pack header, system header, PSM, padding: FILE_HEADER_BYTES)
 *     then one PS GOP per fragment, each starting with pack header, system header and
 *     PSM (so the file, and any GOP of it, stands alone — invariant 1). Each GOP is at
 *     least as big as the fMP4 fragment it converts back to (playback/segment-source.ts
 *     presents the file as fMP4 at the same offsets). The index's codecKey/mimeType
 *     describe that fMP4 init, computed from the first GOP's own bytes, so `reindex`
 *     derives exactly the same values from the file.
 */
import type { CameraConfig, SegmentFormat } from '../index/records.ts';
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import type { InitInfo } from '../media/mp4/init-info.ts';
import { FragmentToPs, describePs } from '../media/ps/ps-convert.ts';
import { demuxPs } from '../media/ps/ps-demux.ts';
import { FILE_HEADER_BYTES } from '../media/ps/ps-mux.ts';
import { durationPatches, withMehd, type TrackDurations } from '../media/mp4/init-duration.ts';

type Fragment = Extract<Fmp4Chunk, { kind: 'fragment' }>;

/**
 * The format a camera's new segments are written in: its own, else its pool's (read
 * when a session starts, so a changed pool applies from the next segment), else mp4.
 * Live ingest and back-fill both ask this.
 */
export function segmentFormatOf(camera: Pick<CameraConfig, 'record'>, poolFormat: SegmentFormat | undefined): SegmentFormat {
  return camera.record.format ?? poolFormat ?? 'mp4';
}

/** What the index record of a segment says about its codec and layout. */
export interface SegmentDescription {
  /** Bytes before the first GOP that belong to the file's header (mp4: the init). */
  initSize: number;
  mimeType: string;
  codecKey: string;
  width?: number;
  height?: number;
}

export interface SegmentEncoder {
  readonly format: SegmentFormat;
  /** Tracks of the init this format leaves out, as `id:entry` (for a log line). */
  readonly unsupported: string[];
  /** Starts a new file: per-file state restarts (call before encoding its first fragment). */
  startFile(): void;
  /** The bytes stored for one fragment. */
  encode(frag: Fragment): Buffer;
  /** Bytes a new file begins with, before its first stored fragment `firstEncoded`. */
  fileHeader(firstEncoded: Buffer): Buffer;
  /** The record fields of a file whose first stored fragment is `firstEncoded`. */
  describe(firstEncoded: Buffer): SegmentDescription;
  /**
   * Writes into a file's header (`header`: what fileHeader gave it) that finish it at
   * close, from the media duration of each track stored in it (ticks of the track's
   * timescale). mp4: the init's duration fields; ps: none.
   */
  closingPatches(header: Buffer, durations: TrackDurations): { at: number; bytes: Buffer }[];
}

function fromInitInfo(info: InitInfo, initSize: number): SegmentDescription {
  const video = info.tracks.find((t) => t.id === info.videoTrackId);
  return {
    initSize,
    mimeType: info.mimeType,
    codecKey: info.codecKey,
    ...(video?.width !== undefined ? { width: video.width } : {}),
    ...(video?.height !== undefined ? { height: video.height } : {}),
  };
}

class Fmp4Encoder implements SegmentEncoder {
  readonly format = 'mp4' as const;
  readonly unsupported: string[] = [];
  /** The init with a mehd of reserved size (zero until the file closes). */
  private readonly header: Buffer;
  constructor(private readonly init: { bytes: Buffer; info: InitInfo }) {
    this.header = withMehd(init.bytes);
  }
  startFile(): void {}
  encode(frag: Fragment): Buffer {
    return frag.bytes;
  }
  fileHeader(): Buffer {
    return this.header;
  }
  describe(): SegmentDescription {
    return fromInitInfo(this.init.info, this.header.byteLength);
  }
  closingPatches(header: Buffer, durations: TrackDurations): { at: number; bytes: Buffer }[] {
    return durationPatches(header, durations);
  }
}

class PsEncoder implements SegmentEncoder {
  readonly format = 'ps' as const;
  private readonly conv: FragmentToPs;
  constructor(init: { bytes: Buffer }) {
    // Throws CODEC_UNSUPPORTED for a video codec PS cannot carry: the attempt fails with that reason.
    this.conv = new FragmentToPs(init.bytes);
  }
  get unsupported(): string[] {
    return this.conv.unsupported;
  }
  startFile(): void {
    this.conv.restart();
  }
  encode(frag: Fragment): Buffer {
    return this.conv.convert(frag).bytes;
  }
  fileHeader(firstEncoded: Buffer): Buffer {
    return this.conv.fileHeader(firstEncoded);
  }
  describe(firstEncoded: Buffer): SegmentDescription {
    return describePsSegment(firstEncoded);
  }
  closingPatches(): { at: number; bytes: Buffer }[] {
    return [];
  }
}

/** Record fields of a PS segment from its first GOP (the writer and reindex share this). */
export function describePsSegment(firstGop: Buffer): SegmentDescription {
  return fromInitInfo(describePs(demuxPs(firstGop)).info, FILE_HEADER_BYTES);
}

export function segmentEncoder(format: SegmentFormat, init: { bytes: Buffer; info: InitInfo }): SegmentEncoder {
  return format === 'ps' ? new PsEncoder(init) : new Fmp4Encoder(init);
}
