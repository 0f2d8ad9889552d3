/**
 * Elementary-stream tracks as MPEG-PS and our fMP4 muxer see them: codec, the
 * decoder configuration (parameter sets, AudioSpecificConfig) and timescale. Read from
 * an MP4 init (avcC / hvcC / esds in the sample entries) or assembled from what a PS
 * carries in band (parameter sets before an IDR, ADTS headers), and written back as
 * avcC / hvcC / AudioSpecificConfig / ADTS. One description, both directions, so a
 * recording converted MP4 → PS → MP4 keeps its codec configuration.
 */
import { childBoxes, findBox, findChild, fullBoxBody, type Box } from '../mp4/boxes.ts';
import type { ParameterSets, VideoCodec } from './annexb.ts';
import { unescapeRbsp } from './annexb.ts';
import { MediaFormatError } from '../media-error.ts';
import { parseSps } from './sps.ts';

export interface VideoTrack {
  kind: 'video';
  codec: VideoCodec;
  trackId: number;
  timescale: number;
  params: ParameterSets;
  /** NAL length field size of the MP4 samples (4 for what we write). */
  lengthSize: number;
  width: number;
  height: number;
}

export interface AacTrack {
  kind: 'audio';
  codec: 'aac';
  trackId: number;
  timescale: number;
  /** AudioSpecificConfig bytes. */
  asc: Buffer;
  objectType: number;
  sampleRate: number;
  channels: number;
}

export interface G711aTrack {
  kind: 'audio';
  codec: 'g711a';
  trackId: number;
  timescale: number;
  sampleRate: 8000;
  channels: 1;
}

export type EsTrack = VideoTrack | AacTrack | G711aTrack;

const AAC_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/** Parses an avcC record (ISO/IEC 14496-15 5.3.3.1). */
export function parseAvcC(b: Buffer): { params: ParameterSets; lengthSize: number } {
  if (b.length < 7 || b[0] !== 1) throw new MediaFormatError('BAD_CODEC_CONFIG', 'avcC: bad version or too short');
  const lengthSize = (b[4]! & 3) + 1;
  const params: ParameterSets = { codec: 'h264', vps: [], sps: [], pps: [] };
  let p = 5;
  const read = (list: Buffer[], count: number): void => {
    for (let i = 0; i < count; i++) {
      if (p + 2 > b.length) throw new MediaFormatError('BAD_CODEC_CONFIG', 'avcC cut');
      const len = b.readUInt16BE(p);
      if (p + 2 + len > b.length) throw new MediaFormatError('BAD_CODEC_CONFIG', 'avcC parameter set cut');
      list.push(Buffer.from(b.subarray(p + 2, p + 2 + len)));
      p += 2 + len;
    }
  };
  read(params.sps, b[p++]! & 0x1f);
  if (p >= b.length) throw new MediaFormatError('BAD_CODEC_CONFIG', 'avcC without PPS count');
  read(params.pps, b[p++]!);
  return { params, lengthSize };
}

/** Parses an hvcC record (ISO/IEC 14496-15 8.3.3.1). */
export function parseHvcC(b: Buffer): { params: ParameterSets; lengthSize: number } {
  if (b.length < 23) throw new MediaFormatError('BAD_CODEC_CONFIG', 'hvcC too short');
  const lengthSize = (b[21]! & 3) + 1;
  const params: ParameterSets = { codec: 'h265', vps: [], sps: [], pps: [] };
  let p = 23;
  for (let a = 0; a < b[22]!; a++) {
    if (p + 3 > b.length) throw new MediaFormatError('BAD_CODEC_CONFIG', 'hvcC array cut');
    const type = b[p]! & 0x3f;
    const count = b.readUInt16BE(p + 1);
    p += 3;
    for (let i = 0; i < count; i++) {
      if (p + 2 > b.length) throw new MediaFormatError('BAD_CODEC_CONFIG', 'hvcC cut');
      const len = b.readUInt16BE(p);
      if (p + 2 + len > b.length) throw new MediaFormatError('BAD_CODEC_CONFIG', 'hvcC NAL cut');
      const nal = Buffer.from(b.subarray(p + 2, p + 2 + len));
      if (type === 32) params.vps.push(nal);
      else if (type === 33) params.sps.push(nal);
      else if (type === 34) params.pps.push(nal);
      p += 2 + len;
    }
  }
  return { params, lengthSize };
}

function lengthPrefixed16(list: Buffer[]): Buffer[] {
  return list.flatMap((n) => {
    const h = Buffer.alloc(2);
    h.writeUInt16BE(n.length);
    return [h, n];
  });
}

/** An avcC record for 4-byte NAL lengths. */
export function buildAvcC(params: ParameterSets): Buffer {
  const sps = params.sps[0];
  if (!sps || sps.length < 4 || params.pps.length === 0) throw new MediaFormatError('PS_NO_CONFIG', 'H.264 needs an SPS and a PPS');
  return Buffer.concat([
    Buffer.from([1, sps[1]!, sps[2]!, sps[3]!, 0xff, 0xe0 | params.sps.length]),
    ...lengthPrefixed16(params.sps),
    Buffer.from([params.pps.length]),
    ...lengthPrefixed16(params.pps),
  ]);
}

/** An hvcC record for 4-byte NAL lengths; profile/tier/level come from the SPS. */
export function buildHvcC(params: ParameterSets): Buffer {
  const sps = params.sps[0];
  if (!sps || params.vps.length === 0 || params.pps.length === 0) throw new MediaFormatError('PS_NO_CONFIG', 'H.265 needs a VPS, an SPS and a PPS');
  const rbsp = unescapeRbsp(sps);
  if (rbsp.length < 15) throw new MediaFormatError('BAD_CODEC_CONFIG', 'H.265 SPS too short');
  const info = parseSps('h265', sps);
  const head = Buffer.alloc(23);
  head[0] = 1;
  rbsp.copy(head, 1, 3, 15); // general_profile_space … general_level_idc (12 bytes)
  head.writeUInt16BE(0xf000, 13); // min_spatial_segmentation_idc 0
  head[15] = 0xfc; // parallelismType unknown
  head[16] = 0xfc | (info.chromaFormat & 3);
  head[17] = 0xf8 | ((info.bitDepthLuma - 8) & 7);
  head[18] = 0xf8 | ((info.bitDepthChroma - 8) & 7);
  head[21] = (1 << 3) | (1 << 2) | 3; // 1 temporal layer, temporal id nested, 4-byte lengths
  const arrays: [number, Buffer[]][] = [
    [32, params.vps],
    [33, params.sps],
    [34, params.pps],
  ];
  head[22] = arrays.length;
  return Buffer.concat([
    head,
    ...arrays.flatMap(([type, list]) => {
      const h = Buffer.alloc(3);
      h[0] = 0x80 | type;
      h.writeUInt16BE(list.length, 1);
      return [h, ...lengthPrefixed16(list)];
    }),
  ]);
}

/** A video track description from parameter sets (size from the SPS). */
export function videoTrackFromParams(params: ParameterSets, trackId: number, timescale: number, lengthSize = 4): VideoTrack {
  const sps = params.sps[0];
  if (!sps) throw new MediaFormatError('PS_NO_CONFIG', `${params.codec} without an SPS`);
  const info = parseSps(params.codec, sps);
  return { kind: 'video', codec: params.codec, trackId, timescale, params, lengthSize, width: info.width, height: info.height };
}

export function parseAsc(asc: Buffer): { objectType: number; sampleRate: number; channels: number } {
  if (asc.length < 2) throw new MediaFormatError('BAD_CODEC_CONFIG', 'AudioSpecificConfig too short');
  const objectType = asc[0]! >> 3;
  const rateIndex = ((asc[0]! & 7) << 1) | (asc[1]! >> 7);
  const channels = (asc[1]! >> 3) & 0xf;
  const sampleRate = AAC_RATES[rateIndex];
  // ADTS can only say object types 1-4 with a table rate and a channel configuration.
  if (objectType < 1 || objectType > 4 || sampleRate === undefined || channels === 0) {
    throw new MediaFormatError('CODEC_UNSUPPORTED', `AAC object type ${objectType}, rate index ${rateIndex}, channels ${channels} cannot be carried in ADTS`);
  }
  return { objectType, sampleRate, channels };
}

export function aacTrackFromAsc(asc: Buffer, trackId: number, timescale: number): AacTrack {
  return { kind: 'audio', codec: 'aac', trackId, timescale, asc: Buffer.from(asc), ...parseAsc(asc) };
}

/** The 7-byte ADTS header (no CRC) for one raw AAC frame of `payloadBytes`. */
export function adtsHeader(track: AacTrack, payloadBytes: number): Buffer {
  const len = payloadBytes + 7;
  if (len > 0x1fff) throw new MediaFormatError('CODEC_UNSUPPORTED', `AAC frame of ${payloadBytes} bytes is too big for ADTS`);
  const rateIndex = AAC_RATES.indexOf(track.sampleRate);
  const h = Buffer.alloc(7);
  h[0] = 0xff;
  h[1] = 0xf1; // MPEG-4, layer 0, no CRC
  h[2] = ((track.objectType - 1) << 6) | (rateIndex << 2) | (track.channels >> 2);
  h[3] = ((track.channels & 3) << 6) | (len >> 11);
  h[4] = (len >> 3) & 0xff;
  h[5] = ((len & 7) << 5) | 0x1f;
  h[6] = 0xfc;
  return h;
}

export interface AdtsFrame {
  /** AudioSpecificConfig this header describes. */
  asc: Buffer;
  sampleRate: number;
  headerBytes: number;
  frameBytes: number;
}

/** Reads the ADTS header at `p`; null when there is none (or it is cut). */
export function readAdts(b: Buffer, p: number): AdtsFrame | null {
  if (p + 7 > b.length || b[p] !== 0xff || (b[p + 1]! & 0xf6) !== 0xf0) return null;
  const protectionAbsent = b[p + 1]! & 1;
  const objectType = (b[p + 2]! >> 6) + 1;
  const rateIndex = (b[p + 2]! >> 2) & 0xf;
  const channels = ((b[p + 2]! & 1) << 2) | (b[p + 3]! >> 6);
  const frameBytes = ((b[p + 3]! & 3) << 11) | (b[p + 4]! << 3) | (b[p + 5]! >> 5);
  const headerBytes = protectionAbsent ? 7 : 9;
  if (frameBytes < headerBytes || AAC_RATES[rateIndex] === undefined) return null;
  const asc = Buffer.from([(objectType << 3) | (rateIndex >> 1), ((rateIndex & 1) << 7) | (channels << 3)]);
  return { asc, sampleRate: AAC_RATES[rateIndex], headerBytes, frameBytes };
}

/** Reads an MPEG-4 descriptor (tag + expandable length) at `p`. */
function descriptor(b: Buffer, p: number, end: number): { tag: number; body: number; end: number } | null {
  if (p + 2 > end) return null;
  const tag = b[p]!;
  let len = 0;
  let q = p + 1;
  for (let i = 0; i < 4; i++) {
    if (q >= end) return null;
    const x = b[q++]!;
    len = (len << 7) | (x & 0x7f);
    if (!(x & 0x80)) break;
  }
  return q + len <= end ? { tag, body: q, end: q + len } : null;
}

/** The DecoderSpecificInfo (AudioSpecificConfig) inside an esds box. */
function ascFromEsds(b: Buffer, esds: Box): Buffer {
  const { body, end } = fullBoxBody(b, esds, 0);
  const es = descriptor(b, body, end);
  if (!es || es.tag !== 3) throw new MediaFormatError('BAD_CODEC_CONFIG', 'esds without ES_Descriptor');
  let p = es.body + 2;
  const flags = b[p++] ?? 0;
  if (flags & 0x80) p += 2;
  if (flags & 0x40) p += 1 + (b[p] ?? 0);
  if (flags & 0x20) p += 2;
  const dc = descriptor(b, p, es.end);
  if (!dc || dc.tag !== 4) throw new MediaFormatError('BAD_CODEC_CONFIG', 'esds without DecoderConfigDescriptor');
  if (b[dc.body] !== 0x40) throw new MediaFormatError('CODEC_UNSUPPORTED', `esds object type 0x${(b[dc.body] ?? 0).toString(16)} is not MPEG-4 audio`);
  const dsi = descriptor(b, dc.body + 13, dc.end);
  if (!dsi || dsi.tag !== 5) throw new MediaFormatError('BAD_CODEC_CONFIG', 'esds without AudioSpecificConfig');
  return Buffer.from(b.subarray(dsi.body, dsi.end));
}

export interface InitTracks {
  tracks: EsTrack[];
  /** Tracks PS cannot carry (kept out of PS recordings), as `id:entry`. */
  unsupported: string[];
}

/**
 * The tracks of an MP4 init (ftyp+moov) as elementary streams. A video track of
 * another codec than H.264/H.265 throws CODEC_UNSUPPORTED (there is nothing to record
 * without it); other unsupported tracks are listed and left out.
 */
export function tracksFromInit(init: Buffer): InitTracks {
  const moov = findChild(init, 'moov');
  if (!moov) throw new MediaFormatError('BAD_CODEC_CONFIG', 'init without moov');
  const out: InitTracks = { tracks: [], unsupported: [] };
  for (const trak of childBoxes(init, moov.offset + moov.headerSize, moov.offset + moov.size).filter((x) => x.type === 'trak')) {
    const tkhd = findChild(init, 'tkhd', trak);
    const mdhd = findBox(init, 'mdia/mdhd', trak);
    const hdlr = findBox(init, 'mdia/hdlr', trak);
    const stsd = findBox(init, 'mdia/minf/stbl/stsd', trak);
    if (!tkhd || !mdhd || !hdlr || !stsd) throw new MediaFormatError('BAD_CODEC_CONFIG', 'trak without tkhd/mdhd/hdlr/stsd');
    const tk = fullBoxBody(init, tkhd, 20);
    const trackId = init.readUInt32BE(tk.body + (tk.version === 1 ? 16 : 8));
    const md = fullBoxBody(init, mdhd, 20);
    const timescale = init.readUInt32BE(md.body + (md.version === 1 ? 16 : 8));
    const handler = init.toString('latin1', fullBoxBody(init, hdlr, 8).body + 4, fullBoxBody(init, hdlr, 8).body + 8);
    const sd = fullBoxBody(init, stsd, 4);
    const entry = childBoxes(init, sd.body + 4, sd.end)[0];
    if (!entry) throw new MediaFormatError('BAD_CODEC_CONFIG', `track ${trackId} without sample entry`);
    const children = (skip: number): Box[] => childBoxes(init, entry.offset + entry.headerSize + skip, entry.offset + entry.size);
    if (handler === 'vide') {
      if (entry.type === 'avc1' || entry.type === 'avc3') {
        const avcC = children(78).find((x) => x.type === 'avcC');
        if (!avcC) throw new MediaFormatError('BAD_CODEC_CONFIG', 'avc1 without avcC');
        const c = parseAvcC(init.subarray(avcC.offset + avcC.headerSize, avcC.offset + avcC.size));
        out.tracks.push(videoTrackFromParams(c.params, trackId, timescale, c.lengthSize));
      } else if (entry.type === 'hvc1' || entry.type === 'hev1') {
        const hvcC = children(78).find((x) => x.type === 'hvcC');
        if (!hvcC) throw new MediaFormatError('BAD_CODEC_CONFIG', `${entry.type} without hvcC`);
        const c = parseHvcC(init.subarray(hvcC.offset + hvcC.headerSize, hvcC.offset + hvcC.size));
        out.tracks.push(videoTrackFromParams(c.params, trackId, timescale, c.lengthSize));
      } else {
        throw new MediaFormatError('CODEC_UNSUPPORTED', `video ${entry.type}: MPEG-PS recording takes H.264 or H.265`);
      }
    } else if (handler === 'soun' && entry.type === 'mp4a') {
      const version = init.readUInt16BE(entry.offset + entry.headerSize + 8);
      const esds = children(28 + (version === 1 ? 16 : version === 2 ? 36 : 0)).find((x) => x.type === 'esds');
      if (!esds) throw new MediaFormatError('BAD_CODEC_CONFIG', 'mp4a without esds');
      try {
        out.tracks.push(aacTrackFromAsc(ascFromEsds(init, esds), trackId, timescale));
      } catch (err) {
        if (!(err instanceof MediaFormatError) || err.code !== 'CODEC_UNSUPPORTED') throw err;
        out.unsupported.push(`${trackId}:mp4a`);
      }
    } else if (handler === 'soun' && entry.type === 'alaw') {
      out.tracks.push({ kind: 'audio', codec: 'g711a', trackId, timescale, sampleRate: 8000, channels: 1 });
    } else {
      out.unsupported.push(`${trackId}:${entry.type}`);
    }
  }
  if (!out.tracks.some((t) => t.kind === 'video')) throw new MediaFormatError('CODEC_UNSUPPORTED', 'no H.264/H.265 video track');
  return out;
}
