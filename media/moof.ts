/**
 * Parsing and patching of `moof` boxes (ISO/IEC 14496-12 8.8): per track fragment the
 * base decode time (tfdt), and per sample its duration, size, flags and composition
 * offset, with defaults resolved tfhd → trex. Patching (rewriteMoof) changes only
 * fixed-width fields in a copy, so byte counts and data offsets stay valid.
 */
import { Mp4FormatError, childBoxes, dataView, findAll } from './boxes.ts';
import type { TrexDefaults } from './init-info.ts';

export interface TrafInfo {
  trackId: number;
  baseDecodeTime: bigint;
  sampleCount: number;
  durations: number[];
  sizes: number[];
  flags: number[];
  compositionOffsets: number[];
  /** Sum of sample durations, in the track's timescale. */
  durationTicks: number;
  firstSampleSync: boolean;
  /** data_offset of the first trun (relative to the moof start with default-base-is-moof). */
  dataOffset: number;
  /** Where the tfdt value sits in the moof, and its width; -1 when there is no tfdt. */
  tfdtValueOffset: number;
  tfdtVersion: 0 | 1;
}

export interface MoofInfo {
  sequence: number;
  /** Offset of the mfhd sequence number within the moof. */
  sequenceOffset: number;
  tracks: TrafInfo[];
}

const NON_SYNC = 0x00010000;

export function isSyncSample(flags: number): boolean {
  return (flags & NON_SYNC) === 0;
}

export function parseMoof(moof: Buffer, trex: Map<number, TrexDefaults>): MoofInfo {
  const top = childBoxes(moof);
  const box = top[0];
  if (!box || box.type !== 'moof') throw new Mp4FormatError('MP4_UNEXPECTED_BOX', `expected moof, got ${box?.type ?? 'nothing'}`);
  const v = dataView(moof);
  let sequence = 0;
  let sequenceOffset = -1;
  const tracks: TrafInfo[] = [];
  for (const child of childBoxes(moof, box.offset + box.headerSize, box.offset + box.size)) {
    const body = child.offset + child.headerSize;
    if (child.type === 'mfhd') {
      sequenceOffset = body + 4;
      sequence = v.getUint32(sequenceOffset);
      continue;
    }
    if (child.type !== 'traf') continue;
    const tfhd = findAll(moof, 'tfhd', child)[0];
    if (!tfhd) throw new Mp4FormatError('MP4_BAD_BOX', 'traf without tfhd');
    let p = tfhd.offset + tfhd.headerSize;
    const tfFlags = v.getUint32(p) & 0xffffff;
    const trackId = v.getUint32(p + 4);
    p += 8;
    if (tfFlags & 0x01) p += 8; // base_data_offset
    if (tfFlags & 0x02) p += 4; // sample_description_index
    const defaults = trex.get(trackId);
    let defDuration = defaults?.sampleDuration ?? 0;
    let defSize = defaults?.sampleSize ?? 0;
    let defFlags = defaults?.sampleFlags ?? 0;
    if (tfFlags & 0x08) (defDuration = v.getUint32(p)), (p += 4);
    if (tfFlags & 0x10) (defSize = v.getUint32(p)), (p += 4);
    if (tfFlags & 0x20) (defFlags = v.getUint32(p)), (p += 4);

    const info: TrafInfo = {
      trackId,
      baseDecodeTime: 0n,
      sampleCount: 0,
      durations: [],
      sizes: [],
      flags: [],
      compositionOffsets: [],
      durationTicks: 0,
      firstSampleSync: false,
      dataOffset: 0,
      tfdtValueOffset: -1,
      tfdtVersion: 0,
    };
    const tfdt = findAll(moof, 'tfdt', child)[0];
    if (tfdt) {
      const tb = tfdt.offset + tfdt.headerSize;
      info.tfdtVersion = v.getUint8(tb) === 1 ? 1 : 0;
      info.tfdtValueOffset = tb + 4;
      info.baseDecodeTime = info.tfdtVersion === 1 ? v.getBigUint64(tb + 4) : BigInt(v.getUint32(tb + 4));
    }
    let firstTrun = true;
    for (const trun of findAll(moof, 'trun', child)) {
      let q = trun.offset + trun.headerSize;
      const version = v.getUint8(q);
      const trFlags = v.getUint32(q) & 0xffffff;
      const count = v.getUint32(q + 4);
      q += 8;
      if (count > (trun.size - 8) ) throw new Mp4FormatError('MP4_BAD_BOX', `trun claims ${count} samples`);
      let dataOffset = 0;
      if (trFlags & 0x01) (dataOffset = v.getInt32(q)), (q += 4);
      let firstFlags: number | null = null;
      if (trFlags & 0x04) (firstFlags = v.getUint32(q)), (q += 4);
      if (firstTrun) info.dataOffset = dataOffset;
      for (let i = 0; i < count; i++) {
        const d = trFlags & 0x100 ? v.getUint32(q) : defDuration;
        if (trFlags & 0x100) q += 4;
        const s = trFlags & 0x200 ? v.getUint32(q) : defSize;
        if (trFlags & 0x200) q += 4;
        let f = trFlags & 0x400 ? v.getUint32(q) : defFlags;
        if (trFlags & 0x400) q += 4;
        if (i === 0 && firstFlags !== null) f = firstFlags;
        let c = 0;
        if (trFlags & 0x800) (c = version === 0 ? v.getUint32(q) : v.getInt32(q)), (q += 4);
        if (q > trun.offset + trun.size) throw new Mp4FormatError('MP4_TRUNCATED', 'trun sample table runs past its box');
        info.durations.push(d);
        info.sizes.push(s);
        info.flags.push(f);
        info.compositionOffsets.push(c);
        info.durationTicks += d;
      }
      info.sampleCount += count;
      firstTrun = false;
    }
    info.firstSampleSync = info.sampleCount > 0 && isSyncSample(info.flags[0]!);
    tracks.push(info);
  }
  return { sequence, sequenceOffset, tracks };
}

/**
 * A copy of `moof` with a new sequence number and/or new base decode times per track.
 * Throws MP4_UNSUPPORTED when a version-0 tfdt cannot hold the new time.
 */
export function rewriteMoof(moof: Buffer, changes: { sequence?: number; baseDecodeTime?: Map<number, bigint> }, info?: MoofInfo): Buffer {
  const parsed = info ?? parseMoof(moof, new Map());
  const out = Buffer.from(moof);
  if (changes.sequence !== undefined && parsed.sequenceOffset >= 0) out.writeUInt32BE(changes.sequence >>> 0, parsed.sequenceOffset);
  for (const t of parsed.tracks) {
    const value = changes.baseDecodeTime?.get(t.trackId);
    if (value === undefined || t.tfdtValueOffset < 0) continue;
    if (value < 0n) throw new Mp4FormatError('MP4_UNSUPPORTED', `negative decode time for track ${t.trackId}`);
    if (t.tfdtVersion === 1) out.writeBigUInt64BE(value, t.tfdtValueOffset);
    else if (value <= 0xffffffffn) out.writeUInt32BE(Number(value), t.tfdtValueOffset);
    else throw new Mp4FormatError('MP4_UNSUPPORTED', `decode time ${value} does not fit a version-0 tfdt`);
  }
  return out;
}
