/**
 * Parsing and patching of `moof` boxes (ISO/IEC 14496-12 8.8). parseMoof gives per
 * track fragment the base decode time (tfdt) and per sample its duration, size, flags
 * and composition offset, with defaults resolved trun → tfhd → trex. rewriteMoof
 * patches fixed-width fields (mfhd sequence, tfdt time) in a copy: byte counts and
 * data offsets stay valid, nothing is re-serialised.
 */
import { Mp4FormatError, type Box, readBoxHeader } from './boxes.ts';
import type { TrexDefaults } from './init-info.ts';

export interface TrafInfo {
  trackId: number;
  /** From tfdt (v0 32-bit, v1 64-bit); 0n when the traf has no tfdt. */
  baseDecodeTime: bigint;
  sampleCount: number;
  durations: number[];
  sizes: number[];
  flags: number[];
  compositionOffsets: number[];
  /** Sum of sample durations, in the track's timescale. */
  durationTicks: number;
  /** Sum of sample sizes (bytes of this track in the mdat). */
  totalSize: number;
  firstSampleSync: boolean;
  /** data_offset of the first trun (relative to the moof start with default-base-is-moof); 0 when absent. */
  dataOffset: number;
  /** Every trun in order: its data_offset (null when absent) and sample count. */
  runs: { dataOffset: number | null; sampleCount: number }[];
  /** tfhd flags (0x020000 default-base-is-moof, 0x01 base-data-offset present…). */
  tfhdFlags: number;
  /** Where the tfdt value sits in the moof; -1 when there is no tfdt. */
  tfdtValueOffset: number;
  tfdtVersion: 0 | 1;
}

export interface MoofInfo {
  sequence: number;
  /** Offset of the mfhd sequence number within the moof; -1 without mfhd. */
  sequenceOffset: number;
  tracks: TrafInfo[];
}

/** sample_is_non_sync_sample bit of the sample flags. */
const NON_SYNC = 0x00010000;

export function isSyncSample(flags: number): boolean {
  return (flags & NON_SYNC) === 0;
}

// tfhd flags
const TFHD_BASE_DATA_OFFSET = 0x01;
const TFHD_SAMPLE_DESCRIPTION_INDEX = 0x02;
const TFHD_DEFAULT_DURATION = 0x08;
const TFHD_DEFAULT_SIZE = 0x10;
const TFHD_DEFAULT_FLAGS = 0x20;
// trun flags
const TRUN_DATA_OFFSET = 0x01;
const TRUN_FIRST_FLAGS = 0x04;
const TRUN_DURATION = 0x100;
const TRUN_SIZE = 0x200;
const TRUN_FLAGS = 0x400;
const TRUN_CTO = 0x800;

function u32(b: Uint8Array, p: number): number {
  return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
}

function i32(b: Uint8Array, p: number): number {
  return (b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!;
}

function u64(b: Uint8Array, p: number): bigint {
  return (BigInt(u32(b, p)) << 32n) | BigInt(u32(b, p + 4));
}

/** Iterates the child boxes of `parent` calling `fn`; checks sizes against the parent. */
function eachChild(b: Uint8Array, parent: Box, fn: (child: Box) => void): void {
  const end = parent.offset + parent.size;
  let p = parent.offset + parent.headerSize;
  while (p < end) {
    const h = readBoxHeader(b, p, end - p);
    if (!h) throw new Mp4FormatError('MP4_TRUNCATED', `box header cut at ${p} inside ${parent.type}`);
    if (p + h.size > end) throw new Mp4FormatError('MP4_TRUNCATED', `${h.type} at ${p} (${h.size} bytes) runs past its ${parent.type}`);
    fn({ type: h.type, size: h.size, headerSize: h.headerSize, offset: p });
    p += h.size;
  }
}

/** The moof box at the start of `b` (which may run on into the mdat). */
function moofBox(b: Uint8Array): Box {
  const h = readBoxHeader(b, 0);
  if (!h) throw new Mp4FormatError('MP4_TRUNCATED', `moof header cut (${b.byteLength} bytes)`);
  if (h.type !== 'moof') throw new Mp4FormatError('MP4_UNEXPECTED_BOX', `expected moof, got ${h.type}`);
  if (h.size > b.byteLength) throw new Mp4FormatError('MP4_TRUNCATED', `moof of ${h.size} bytes, have ${b.byteLength}`);
  return { ...h, offset: 0 };
}

function need(box: Box, bytes: number): number {
  const body = box.offset + box.headerSize;
  if (box.size - box.headerSize < bytes) throw new Mp4FormatError('MP4_BAD_BOX', `${box.type} at ${box.offset} too short (${box.size} bytes)`);
  return body;
}

/**
 * Parses a moof (the buffer may hold the following mdat too; only the moof is read).
 * `trex` supplies per-track defaults from the init. Throws Mp4FormatError on garbage.
 */
export function parseMoof(moof: Uint8Array, trex: Map<number, TrexDefaults>): MoofInfo {
  const box = moofBox(moof);
  const info: MoofInfo = { sequence: 0, sequenceOffset: -1, tracks: [] };
  eachChild(moof, box, (child) => {
    if (child.type === 'mfhd') {
      const body = need(child, 8);
      info.sequenceOffset = body + 4;
      info.sequence = u32(moof, body + 4);
    } else if (child.type === 'traf') {
      info.tracks.push(parseTraf(moof, child, trex));
    }
  });
  return info;
}

function parseTraf(b: Uint8Array, traf: Box, trex: Map<number, TrexDefaults>): TrafInfo {
  let tfhd: Box | undefined;
  let tfdt: Box | undefined;
  const truns: Box[] = [];
  eachChild(b, traf, (c) => {
    if (c.type === 'tfhd') tfhd ??= c;
    else if (c.type === 'tfdt') tfdt ??= c;
    else if (c.type === 'trun') truns.push(c);
  });
  if (!tfhd) throw new Mp4FormatError('MP4_BAD_BOX', `traf at ${traf.offset} without tfhd`);

  let p = need(tfhd, 8);
  const tfFlags = u32(b, p) & 0xffffff;
  const trackId = u32(b, p + 4);
  const tfhdFields =
    (tfFlags & TFHD_BASE_DATA_OFFSET ? 8 : 0) +
    (tfFlags & TFHD_SAMPLE_DESCRIPTION_INDEX ? 4 : 0) +
    (tfFlags & TFHD_DEFAULT_DURATION ? 4 : 0) +
    (tfFlags & TFHD_DEFAULT_SIZE ? 4 : 0) +
    (tfFlags & TFHD_DEFAULT_FLAGS ? 4 : 0);
  need(tfhd, 8 + tfhdFields);
  p += 8;
  if (tfFlags & TFHD_BASE_DATA_OFFSET) p += 8;
  if (tfFlags & TFHD_SAMPLE_DESCRIPTION_INDEX) p += 4;
  const defaults = trex.get(trackId);
  let defDuration = defaults?.sampleDuration ?? 0;
  let defSize = defaults?.sampleSize ?? 0;
  let defFlags = defaults?.sampleFlags ?? 0;
  if (tfFlags & TFHD_DEFAULT_DURATION) {
    defDuration = u32(b, p);
    p += 4;
  }
  if (tfFlags & TFHD_DEFAULT_SIZE) {
    defSize = u32(b, p);
    p += 4;
  }
  if (tfFlags & TFHD_DEFAULT_FLAGS) {
    defFlags = u32(b, p);
    p += 4;
  }

  const info: TrafInfo = {
    trackId,
    baseDecodeTime: 0n,
    sampleCount: 0,
    durations: [],
    sizes: [],
    flags: [],
    compositionOffsets: [],
    durationTicks: 0,
    totalSize: 0,
    firstSampleSync: false,
    dataOffset: 0,
    runs: [],
    tfhdFlags: tfFlags,
    tfdtValueOffset: -1,
    tfdtVersion: 0,
  };

  if (tfdt) {
    const body = need(tfdt, 8);
    const version = b[body]!;
    if (version === 1) {
      need(tfdt, 12);
      info.tfdtVersion = 1;
      info.baseDecodeTime = u64(b, body + 4);
    } else {
      info.baseDecodeTime = BigInt(u32(b, body + 4));
    }
    info.tfdtValueOffset = body + 4;
  }

  let first = true;
  for (const trun of truns) {
    let q = need(trun, 8);
    const version = b[q]!;
    const trFlags = u32(b, q) & 0xffffff;
    const count = u32(b, q + 4);
    q += 8;
    const headBytes = 8 + (trFlags & TRUN_DATA_OFFSET ? 4 : 0) + (trFlags & TRUN_FIRST_FLAGS ? 4 : 0);
    const perSample = (trFlags & TRUN_DURATION ? 4 : 0) + (trFlags & TRUN_SIZE ? 4 : 0) + (trFlags & TRUN_FLAGS ? 4 : 0) + (trFlags & TRUN_CTO ? 4 : 0);
    if (headBytes + count * perSample > trun.size - trun.headerSize) {
      throw new Mp4FormatError('MP4_BAD_BOX', `trun at ${trun.offset} claims ${count} samples, box has ${trun.size} bytes`);
    }
    if (perSample === 0 && count > 1_000_000) throw new Mp4FormatError('MP4_BAD_BOX', `trun at ${trun.offset} claims ${count} samples`);
    let dataOffset = 0;
    if (trFlags & TRUN_DATA_OFFSET) {
      dataOffset = i32(b, q);
      q += 4;
    }
    let firstFlags = -1;
    if (trFlags & TRUN_FIRST_FLAGS) {
      firstFlags = u32(b, q);
      q += 4;
    }
    if (first) info.dataOffset = dataOffset;
    info.runs.push({ dataOffset: trFlags & TRUN_DATA_OFFSET ? dataOffset : null, sampleCount: count });
    const hasDuration = (trFlags & TRUN_DURATION) !== 0;
    const hasSize = (trFlags & TRUN_SIZE) !== 0;
    const hasFlags = (trFlags & TRUN_FLAGS) !== 0;
    const hasCto = (trFlags & TRUN_CTO) !== 0;
    for (let i = 0; i < count; i++) {
      let d = defDuration;
      let s = defSize;
      let f = defFlags;
      let c = 0;
      if (hasDuration) {
        d = u32(b, q);
        q += 4;
      }
      if (hasSize) {
        s = u32(b, q);
        q += 4;
      }
      if (hasFlags) {
        f = u32(b, q);
        q += 4;
      }
      if (hasCto) {
        c = version === 0 ? u32(b, q) : i32(b, q);
        q += 4;
      }
      if (i === 0 && firstFlags !== -1) f = firstFlags;
      info.durations.push(d);
      info.sizes.push(s);
      info.flags.push(f);
      info.compositionOffsets.push(c);
      info.durationTicks += d;
      info.totalSize += s;
    }
    info.sampleCount += count;
    first = false;
  }
  info.firstSampleSync = info.sampleCount > 0 && isSyncSample(info.flags[0]!);
  return info;
}

interface MoofFields {
  sequenceOffset: number;
  tfdt: { trackId: number; offset: number; version: 0 | 1 }[];
  trackIds: number[];
}

/** Finds only the patchable fields (no sample tables are read). */
function locateFields(moof: Uint8Array): MoofFields {
  const box = moofBox(moof);
  const out: MoofFields = { sequenceOffset: -1, tfdt: [], trackIds: [] };
  eachChild(moof, box, (child) => {
    if (child.type === 'mfhd') {
      out.sequenceOffset = need(child, 8) + 4;
    } else if (child.type === 'traf') {
      let trackId = -1;
      let tfdt: Box | undefined;
      eachChild(moof, child, (c) => {
        if (c.type === 'tfhd' && trackId === -1) trackId = u32(moof, need(c, 8) + 4);
        else if (c.type === 'tfdt') tfdt ??= c;
      });
      if (trackId === -1) throw new Mp4FormatError('MP4_BAD_BOX', `traf at ${child.offset} without tfhd`);
      out.trackIds.push(trackId);
      if (tfdt) {
        const body = need(tfdt, 8);
        const version = moof[body] === 1 ? 1 : 0;
        if (version === 1) need(tfdt, 12);
        out.tfdt.push({ trackId, offset: body + 4, version });
      }
    }
  });
  return out;
}

/**
 * A copy of `moof` (the buffer may include the mdat) with a new mfhd sequence number
 * and/or new tfdt base decode times per track id. Tracks in `baseDecodeTime` that the
 * moof does not carry are ignored. Throws MP4_UNSUPPORTED when a value does not fit
 * (a version-0 tfdt holds 32 bits), when a traf to change has no tfdt, or for a
 * sequence outside uint32; MP4_BAD_BOX when there is no mfhd to renumber.
 * `info` (from parseMoof of the same bytes) saves locating the fields again.
 */
export function rewriteMoof(moof: Buffer, changes: { sequence?: number; baseDecodeTime?: Map<number, bigint> }, info?: MoofInfo): Buffer {
  const fields: MoofFields = info
    ? {
        sequenceOffset: info.sequenceOffset,
        tfdt: info.tracks.filter((t) => t.tfdtValueOffset >= 0).map((t) => ({ trackId: t.trackId, offset: t.tfdtValueOffset, version: t.tfdtVersion })),
        trackIds: info.tracks.map((t) => t.trackId),
      }
    : locateFields(moof);
  const out = Buffer.from(moof);
  if (changes.sequence !== undefined) {
    const seq = changes.sequence;
    if (!Number.isInteger(seq) || seq < 0 || seq > 0xffffffff) throw new Mp4FormatError('MP4_UNSUPPORTED', `sequence ${seq} is not a uint32`);
    if (fields.sequenceOffset < 0) throw new Mp4FormatError('MP4_BAD_BOX', 'moof without mfhd');
    out.writeUInt32BE(seq, fields.sequenceOffset);
  }
  if (changes.baseDecodeTime) {
    for (const [trackId, value] of changes.baseDecodeTime) {
      if (!fields.trackIds.includes(trackId)) continue;
      const at = fields.tfdt.filter((f) => f.trackId === trackId);
      if (at.length === 0) throw new Mp4FormatError('MP4_UNSUPPORTED', `track ${trackId} has no tfdt to rewrite`);
      if (value < 0n) throw new Mp4FormatError('MP4_UNSUPPORTED', `negative decode time ${value} for track ${trackId}`);
      for (const f of at) {
        if (f.version === 1) {
          if (value > 0xffffffffffffffffn) throw new Mp4FormatError('MP4_UNSUPPORTED', `decode time ${value} beyond 64 bits`);
          out.writeBigUInt64BE(value, f.offset);
        } else {
          if (value > 0xffffffffn) throw new Mp4FormatError('MP4_UNSUPPORTED', `decode time ${value} does not fit the version-0 tfdt of track ${trackId}`);
          out.writeUInt32BE(Number(value), f.offset);
        }
      }
    }
  }
  return out;
}
