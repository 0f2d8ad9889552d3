/**
 * The one seam between the segment writer and the bytes of a segment file: an encoder
 * per session init turns each ingest fragment (fMP4 moof+mdat, one GOP) into the bytes
 * stored for it, and says what the index records about the file. Two formats:
 *   - `mp4`: the file starts with the session's init; a fragment is stored as received.
 *   - `ps`: nothing before the first GOP; each fragment becomes a PS GOP that starts with
 *     a pack header, system header and PSM (so the file, and any GOP of it, stands
 *     alone — invariant 1). The index's codecKey/mimeType describe the fMP4 init this PS
 *     converts back to (media/ps-convert.ts), computed from the first GOP's own bytes, so
 *     `reindex` derives exactly the same values from the file.
 */
import type { SegmentFormat } from '../index/records.ts';
import type { Fmp4Chunk } from '../media/fmp4-splitter.ts';
import type { InitInfo } from '../media/init-info.ts';
import { FragmentToPs, describePs } from '../media/ps-convert.ts';
import { demuxPs } from '../media/ps-demux.ts';

type Fragment = Extract<Fmp4Chunk, { kind: 'fragment' }>;

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
  /** Starts a new file (per-file state restarts); returns the bytes it begins with. */
  startFile(): Buffer;
  /** The bytes stored for one fragment. */
  encode(frag: Fragment): Buffer;
  /** The record fields of a file whose first stored fragment is `firstEncoded`. */
  describe(firstEncoded: Buffer): SegmentDescription;
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
  constructor(private readonly init: { bytes: Buffer; info: InitInfo }) {}
  startFile(): Buffer {
    return this.init.bytes;
  }
  encode(frag: Fragment): Buffer {
    return frag.bytes;
  }
  describe(): SegmentDescription {
    return fromInitInfo(this.init.info, this.init.bytes.byteLength);
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
  startFile(): Buffer {
    this.conv.restart();
    return Buffer.alloc(0);
  }
  encode(frag: Fragment): Buffer {
    return this.conv.convert(frag).bytes;
  }
  describe(firstEncoded: Buffer): SegmentDescription {
    return describePsSegment(firstEncoded);
  }
}

/** Record fields of a PS segment from its first GOP (the writer and reindex share this). */
export function describePsSegment(firstGop: Buffer): SegmentDescription {
  const d = demuxPs(firstGop);
  const desc = describePs(d);
  // The header part: everything before the first PES (pack, system header, PSM, GOP info).
  let initSize = 0;
  for (let p = 0; p + 4 <= firstGop.length; ) {
    const code = firstGop[p + 3]!;
    if (code === 0xba) p += 14 + (firstGop[p + 13]! & 7);
    else if (code === 0xbb || code === 0xbc || code === 0xbf) p += 6 + firstGop.readUInt16BE(p + 4);
    else break;
    initSize = p;
  }
  return fromInitInfo(desc.info, initSize);
}

export function segmentEncoder(format: SegmentFormat, init: { bytes: Buffer; info: InitInfo }): SegmentEncoder {
  return format === 'ps' ? new PsEncoder(init) : new Fmp4Encoder(init);
}
