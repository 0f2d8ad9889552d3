/**
 * Re-writing a fragment with other samples (I-frame thinning, a trailing sample that
 * holds no picture dropped): the samples of each track fragment as views into it, and a
 * new moof+mdat in the one shape ffmpeg writes (default-base-is-moof, one trun per
 * traf with every per-sample field, then one mdat). Sample bytes are copied, never
 * changed.
 */
import { Mp4FormatError } from './boxes.ts';
import type { TrafInfo } from './moof.ts';

export interface FragmentTrack {
  trackId: number;
  baseDecodeTime: bigint;
  durations: number[];
  flags: number[];
  compositionOffsets: number[];
  samples: Uint8Array[];
}

/** A track fragment as it is, its samples as views into `frag`. */
export function wholeTrack(frag: Uint8Array, t: TrafInfo): FragmentTrack {
  return {
    trackId: t.trackId,
    baseDecodeTime: t.baseDecodeTime,
    durations: t.durations,
    flags: t.flags,
    compositionOffsets: t.compositionOffsets,
    samples: sliceSamples(frag, t),
  };
}

/** The samples of a track fragment, as views into `frag`. Throws MP4_UNSUPPORTED when they are not inside it. */
export function sliceSamples(frag: Uint8Array, t: TrafInfo): Uint8Array[] {
  if (t.sampleCount === 0) return [];
  if (t.dataOffset <= 0 || t.dataOffset + t.totalSize > frag.byteLength) {
    throw new Mp4FormatError(
      'MP4_UNSUPPORTED',
      `track ${t.trackId}: samples at ${t.dataOffset}+${t.totalSize} are not inside the fragment (${frag.byteLength} bytes)`,
    );
  }
  const out: Uint8Array[] = [];
  let p = t.dataOffset;
  for (const size of t.sizes) {
    out.push(frag.subarray(p, p + size));
    p += size;
  }
  return out;
}

const TFHD_DEFAULT_BASE_IS_MOOF = 0x020000;
const TRUN_FLAGS_ALL = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800;

export function writeFragment(sequence: number, tracks: readonly FragmentTrack[]): Uint8Array {
  const trafSizes = tracks.map((t) => 8 + 16 + 20 + (8 + 4 + 4 + 4 + t.samples.length * 16));
  const moofSize = 8 + 16 + trafSizes.reduce((a, b) => a + b, 0);
  const payload = tracks.reduce((a, t) => a + t.samples.reduce((s, x) => s + x.byteLength, 0), 0);
  const out = new Uint8Array(moofSize + 8 + payload);
  const dv = new DataView(out.buffer);
  let p = 0;
  const box = (size: number, type: string): void => {
    dv.setUint32(p, size);
    for (let i = 0; i < 4; i++) out[p + 4 + i] = type.charCodeAt(i);
    p += 8;
  };
  box(moofSize, 'moof');
  box(16, 'mfhd');
  dv.setUint32(p, 0);
  dv.setUint32(p + 4, sequence);
  p += 8;
  let dataAt = moofSize + 8;
  tracks.forEach((t, i) => {
    box(trafSizes[i]!, 'traf');
    box(16, 'tfhd');
    dv.setUint32(p, TFHD_DEFAULT_BASE_IS_MOOF);
    dv.setUint32(p + 4, t.trackId);
    p += 8;
    box(20, 'tfdt');
    dv.setUint32(p, 0x01000000);
    dv.setBigUint64(p + 4, t.baseDecodeTime);
    p += 12;
    box(8 + 4 + 4 + 4 + t.samples.length * 16, 'trun');
    // Version 1: composition offsets are signed (ffmpeg writes negative ones with B-frames).
    dv.setUint32(p, 0x01000000 | TRUN_FLAGS_ALL);
    dv.setUint32(p + 4, t.samples.length);
    dv.setInt32(p + 8, dataAt);
    p += 12;
    t.samples.forEach((s, j) => {
      dv.setUint32(p, t.durations[j]!);
      dv.setUint32(p + 4, s.byteLength);
      dv.setUint32(p + 8, t.flags[j]!);
      dv.setInt32(p + 12, t.compositionOffsets[j]!);
      p += 16;
      dataAt += s.byteLength;
    });
  });
  box(8 + payload, 'mdat');
  for (const t of tracks) {
    for (const s of t.samples) {
      out.set(s, p);
      p += s.byteLength;
    }
  }
  return out;
}
