/**
 * A small fragmented-MP4 writer: an init (`ftyp`+`moov` with empty sample tables and
 * `mvex`) from elementary-stream track descriptions, and one `moof`+`mdat` per GOP
 * from samples. Used to turn MPEG-PS recordings back into fMP4 for every playback
 * path, so those paths keep one input format.
 *
 * Output is a pure function of its input (no creation times, fixed box layout), so the
 * same PS GOP always becomes the same bytes and its size can be known in advance.
 * Fragments use default-base-is-moof, a version-1 tfdt (64-bit) and a version-1 trun
 * with every per-sample field (duration, size, flags, signed composition offset).
 */
import { buildAvcC, buildHvcC, type EsTrack } from '../codec/codec-config.ts';

function box(type: string, ...payload: Buffer[]): Buffer {
  const size = 8 + payload.reduce((n, p) => n + p.length, 0);
  const h = Buffer.alloc(8);
  h.writeUInt32BE(size, 0);
  h.write(type, 4, 'latin1');
  return Buffer.concat([h, ...payload]);
}

function fullBox(type: string, version: number, flags: number, ...payload: Buffer[]): Buffer {
  const vf = Buffer.alloc(4);
  vf.writeUInt32BE(((version << 24) | flags) >>> 0);
  return box(type, vf, ...payload);
}

function u32s(...values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeUInt32BE(v >>> 0, i * 4));
  return b;
}

const MATRIX = u32s(0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000);

function sampleEntry(t: EsTrack): Buffer {
  if (t.kind === 'video') {
    const fields = Buffer.alloc(78);
    fields.writeUInt16BE(1, 6); // data_reference_index
    fields.writeUInt16BE(t.width, 24);
    fields.writeUInt16BE(t.height, 26);
    fields.writeUInt32BE(0x00480000, 28); // 72 dpi
    fields.writeUInt32BE(0x00480000, 32);
    fields.writeUInt16BE(1, 40); // frame_count
    fields.writeUInt16BE(0x18, 74); // depth
    fields.writeInt16BE(-1, 76);
    return t.codec === 'h264' ? box('avc1', fields, box('avcC', buildAvcC(t.params))) : box('hvc1', fields, box('hvcC', buildHvcC(t.params)));
  }
  const fields = Buffer.alloc(28);
  fields.writeUInt16BE(1, 6);
  fields.writeUInt16BE(t.channels, 16);
  fields.writeUInt16BE(16, 18);
  fields.writeUInt32BE((t.sampleRate & 0xffff) * 0x10000, 24);
  if (t.codec === 'g711a') return box('alaw', fields);
  const asc = t.asc;
  // ES_Descriptor { DecoderConfigDescriptor { DecoderSpecificInfo }, SLConfigDescriptor }
  const dsi = Buffer.concat([Buffer.from([5, asc.length]), asc]);
  const dcd = Buffer.concat([Buffer.from([4, 13 + dsi.length, 0x40, 0x15, 0, 0, 0]), u32s(0, 0), dsi]);
  const sl = Buffer.from([6, 1, 2]);
  const es = Buffer.concat([Buffer.from([3, 3 + dcd.length + sl.length]), Buffer.from([0, t.trackId & 0xff, 0]), dcd, sl]);
  return box('mp4a', fields, fullBox('esds', 0, 0, es));
}

function trak(t: EsTrack): Buffer {
  const video = t.kind === 'video';
  const tkhd = fullBox(
    'tkhd',
    0,
    3, // enabled, in movie
    u32s(0, 0, t.trackId, 0, 0, 0, 0),
    Buffer.from([0, 0, 0, 0, video ? 0 : 1, 0, 0, 0]), // layer, alternate group, volume, reserved
    MATRIX,
    u32s(video ? t.width * 0x10000 : 0, video ? t.height * 0x10000 : 0),
  );
  const mdhd = fullBox('mdhd', 0, 0, u32s(0, 0, t.timescale, 0), Buffer.from([0x55, 0xc4, 0, 0]));
  const hdlr = fullBox(
    'hdlr',
    0,
    0,
    u32s(0),
    Buffer.from(video ? 'vide' : 'soun', 'latin1'),
    u32s(0, 0, 0),
    Buffer.from(video ? 'VideoHandler\0' : 'SoundHandler\0', 'latin1'),
  );
  const mediaHeader = video ? fullBox('vmhd', 0, 1, Buffer.alloc(8)) : fullBox('smhd', 0, 0, Buffer.alloc(4));
  const dinf = box('dinf', fullBox('dref', 0, 0, u32s(1), fullBox('url ', 0, 1)));
  const stbl = box(
    'stbl',
    fullBox('stsd', 0, 0, u32s(1), sampleEntry(t)),
    fullBox('stts', 0, 0, u32s(0)),
    fullBox('stsc', 0, 0, u32s(0)),
    fullBox('stsz', 0, 0, u32s(0, 0)),
    fullBox('stco', 0, 0, u32s(0)),
  );
  return box('trak', tkhd, box('mdia', mdhd, hdlr, box('minf', mediaHeader, dinf, stbl)));
}

/** ftyp + moov for the tracks (in the order given; track ids as given). */
export function buildInit(tracks: readonly EsTrack[]): Buffer {
  const ftyp = box('ftyp', Buffer.from('isom', 'latin1'), u32s(0x200), Buffer.from('isomiso6mp41', 'latin1'));
  const nextId = Math.max(...tracks.map((t) => t.trackId)) + 1;
  const mvhd = fullBox('mvhd', 0, 0, u32s(0, 0, 1000, 0, 0x10000), Buffer.from([1, 0]), Buffer.alloc(10), MATRIX, Buffer.alloc(24), u32s(nextId));
  const mvex = box('mvex', ...tracks.map((t) => fullBox('trex', 0, 0, u32s(t.trackId, 1, 0, 0, 0))));
  return Buffer.concat([ftyp, box('moov', mvhd, ...tracks.map(trak), mvex)]);
}

export interface MuxSample {
  duration: number;
  /** Composition time minus decode time, in the track's timescale (may be negative). */
  cto: number;
  keyframe: boolean;
  data: Uint8Array;
}

export interface MuxTrackRun {
  trackId: number;
  /** Decode time of the first sample, in the track's timescale. */
  baseDecodeTime: bigint;
  samples: MuxSample[];
}

const SYNC_FLAGS = 0x02000000; // depends on nothing
const NON_SYNC_FLAGS = 0x01010000; // depends on others, non-sync

/** Size of the moof buildFragment would write for these sample counts (no sample data needed). */
export function moofSize(sampleCounts: readonly number[]): number {
  return 8 + 16 + sampleCounts.reduce((n, c) => n + 8 + 16 + 20 + 20 + 16 * c, 0);
}

/** One moof+mdat. Tracks without samples are left out. */
export function buildFragment(sequence: number, runs: readonly MuxTrackRun[]): Buffer {
  const used = runs.filter((r) => r.samples.length > 0);
  const headSize = moofSize(used.map((r) => r.samples.length));
  let dataOffset = headSize + 8;
  const trafs: Buffer[] = [];
  for (const r of used) {
    const tfhd = fullBox('tfhd', 0, 0x020000, u32s(r.trackId)); // default-base-is-moof
    const tfdtValue = Buffer.alloc(8);
    tfdtValue.writeBigUInt64BE(r.baseDecodeTime);
    const tfdt = fullBox('tfdt', 1, 0, tfdtValue);
    const table = Buffer.alloc(8 + 16 * r.samples.length);
    table.writeUInt32BE(r.samples.length, 0);
    table.writeInt32BE(dataOffset, 4);
    r.samples.forEach((s, i) => {
      const p = 8 + 16 * i;
      table.writeUInt32BE(s.duration >>> 0, p);
      table.writeUInt32BE(s.data.byteLength, p + 4);
      table.writeUInt32BE(s.keyframe ? SYNC_FLAGS : NON_SYNC_FLAGS, p + 8);
      table.writeInt32BE(s.cto, p + 12);
      dataOffset += s.data.byteLength;
    });
    const trun = fullBox('trun', 1, 0x000f01, table);
    trafs.push(box('traf', tfhd, tfdt, trun));
  }
  const moof = box('moof', fullBox('mfhd', 0, 0, u32s(sequence)), ...trafs);
  // One copy of the sample bytes: the mdat header and the samples straight after the moof.
  const samples = used.flatMap((r) => r.samples.map((s) => Buffer.from(s.data.buffer, s.data.byteOffset, s.data.byteLength)));
  const mdatSize = 8 + samples.reduce((n, s) => n + s.length, 0);
  const mdatHeader = Buffer.alloc(8);
  mdatHeader.writeUInt32BE(mdatSize, 0);
  mdatHeader.write('mdat', 4, 'latin1');
  return Buffer.concat([moof, mdatHeader, ...samples], moof.length + mdatSize);
}
