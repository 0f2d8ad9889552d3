/**
 * What an init segment (`ftyp`+`moov`) says: its tracks, RFC 6381 codec strings for
 * a player's SourceBuffer, a codecKey telling whether two inits are interchangeable,
 * and the `trex` defaults that fragments rely on.
 *
 * Codec strings and track details come from mp4box (it knows every sample entry).
 * Our own box reader first checks the whole moov structure (so garbage is a typed
 * error here, not mp4box's console noise), and gives the codecKey, the trex defaults
 * and the AAC channel count (the mp4a sample entry's count is a fixed 2 in ffmpeg's
 * output; the AudioSpecificConfig has the real one).
 */
import { createHash } from 'node:crypto';
import { createFile, MP4BoxBuffer, type Movie } from 'mp4box';
import { parseAvcC, parseHvcC } from '../codec/codec-config.ts';
import type { VideoCodec } from '../codec/annexb.ts';
import { Mp4FormatError, childBoxes, findAll, findBox, findChild, fullBoxBody, readBoxHeader, type Box } from './boxes.ts';

export interface TrexDefaults {
  sampleDescriptionIndex: number;
  sampleDuration: number;
  sampleSize: number;
  sampleFlags: number;
}

export interface TrackInfo {
  id: number;
  kind: 'video' | 'audio' | 'other';
  timescale: number;
  /** RFC 6381, e.g. avc1.4d401e, hev1.1.6.L93.90, mp4a.40.2 */
  codec: string;
  width?: number;
  height?: number;
  sampleRate?: number;
  channels?: number;
  /** H.264/H.265 video: the codec and the NAL length size its samples are written with. */
  nal?: NalFormat;
}

export interface NalFormat {
  codec: VideoCodec;
  lengthSize: number;
}

export interface InitInfo {
  tracks: TrackInfo[];
  videoTrackId: number | null;
  /** e.g. `video/mp4; codecs="avc1.4d401e,mp4a.40.2"`; names every track, as MSE wants. */
  mimeType: string;
  /**
   * sha1 (hex) of what must match for two inits to be interchangeable: per track its
   * id, handler, timescale, what its sample entry says to a decoder (decoderKey: the
   * configuration record and picture size, or the AudioSpecificConfig; the stsd bytes
   * for other entries) and the trex defaults. Creation times, durations, names and
   * container details are left out, so two recordings of one camera config match,
   * whether ffmpeg or our native ingest wrote them.
   */
  codecKey: string;
  trexDefaults: Map<number, TrexDefaults>;
}

function u32(buf: Buffer, p: number): number {
  return buf.readUInt32BE(p);
}

function u16(buf: Buffer, p: number): number {
  return buf.readUInt16BE(p);
}

/** Boxes whose payload is just child boxes. */
const CONTAINERS = new Set(['moov', 'trak', 'mdia', 'minf', 'stbl', 'dinf', 'mvex', 'edts']);
/** Sample entries whose layout we know (visual: 78 bytes before child boxes, audio: 28, +16 for v1, +36 for v2). */
const VISUAL_ENTRIES = new Set(['avc1', 'avc2', 'avc3', 'avc4', 'hev1', 'hvc1', 'dvh1', 'dvhe', 'av01', 'vp08', 'vp09', 'mp4v', 'encv']);
const AUDIO_ENTRIES = new Set(['mp4a', 'enca', 'ac-3', 'ec-3', 'Opus', 'fLaC', 'alaw', 'ulaw', 'sowt', 'twos', 'ipcm', 'fpcm']);

/** Where the child boxes of a sample entry start (offset from the box start), or -1 if unknown. */
function sampleEntryChildren(buf: Buffer, entry: Box): number {
  const body = entry.offset + entry.headerSize;
  if (VISUAL_ENTRIES.has(entry.type)) return entry.headerSize + 78;
  if (AUDIO_ENTRIES.has(entry.type)) {
    if (entry.size - entry.headerSize < 28) return entry.size + 1; // too short: reported by the caller
    const version = u16(buf, body + 8);
    return entry.headerSize + 28 + (version === 1 ? 16 : version === 2 ? 36 : 0);
  }
  return -1;
}

/** Sample tables: bytes per entry after version/flags + entry_count (stsz: after sample_size + count). */
const TABLES: Record<string, number> = { stts: 8, ctts: 8, stsc: 12, stco: 4, co64: 8, stss: 4, stsz: 4 };

function checkTable(buf: Buffer, box: Box, entryBytes: number): void {
  const isStsz = box.type === 'stsz';
  const { body, end } = fullBoxBody(buf, box, isStsz ? 8 : 4);
  const count = u32(buf, isStsz ? body + 4 : body);
  const fixedSize = isStsz && u32(buf, body) !== 0;
  const need = (isStsz ? 8 : 4) + (fixedSize ? 0 : count * entryBytes);
  if (need > end - body) throw new Mp4FormatError('MP4_BAD_BOX', `${box.type} at ${box.offset} claims ${count} entries in ${box.size} bytes`);
}

/**
 * Checks the structure of `box` and everything below it that we know how to descend:
 * every size fits its parent and every type is printable. Throws Mp4FormatError.
 */
function checkTree(buf: Buffer, box: Box, depth = 0): void {
  if (depth > 16) throw new Mp4FormatError('MP4_BAD_BOX', `boxes nested too deep at ${box.offset}`);
  let start = -1;
  if (CONTAINERS.has(box.type)) start = box.offset + box.headerSize;
  else if (box.type === 'stsd' || box.type === 'dref') start = fullBoxBody(buf, box, 4).body + 4;
  if (start < 0) return;
  const children = childBoxes(buf, start, box.offset + box.size);
  if (box.type === 'stsd' || box.type === 'dref') {
    const count = u32(buf, start - 4);
    if (count !== children.length) throw new Mp4FormatError('MP4_BAD_BOX', `${box.type} at ${box.offset} says ${count} entries, has ${children.length}`);
  }
  for (const child of children) {
    const entryBytes = TABLES[child.type];
    if (entryBytes !== undefined) {
      checkTable(buf, child, entryBytes);
    } else if (box.type === 'stsd') {
      const at = sampleEntryChildren(buf, child);
      if (at > child.size) throw new Mp4FormatError('MP4_BAD_BOX', `sample entry ${child.type} at ${child.offset} too short (${child.size} bytes)`);
      if (at >= 0) childBoxes(buf, child.offset + at, child.offset + child.size);
    } else if (box.type === 'dref' && (child.type === 'url ' || child.type === 'urn ')) {
      // Self-contained (flag 1) or followed by a location string.
      const { flags, body, end } = fullBoxBody(buf, child, 0);
      if (flags !== 1 && end === body)
        throw new Mp4FormatError('MP4_BAD_BOX', `${child.type} at ${child.offset} has neither the self-contained flag nor a location`);
    } else {
      checkTree(buf, child, depth + 1);
    }
  }
}

/** ftyp + moov without its udta (metadata we never use, and the likeliest place for oddities). */
function withoutUdta(init: Buffer, ftyp: Box, moov: Box): Buffer {
  const udta = findChild(init, 'udta', moov);
  if (!udta || moov.headerSize !== 8) return init.subarray(0, moov.offset + moov.size);
  const out = Buffer.concat([
    init.subarray(ftyp.offset, ftyp.offset + ftyp.size),
    init.subarray(moov.offset, udta.offset),
    init.subarray(udta.offset + udta.size, moov.offset + moov.size),
  ]);
  out.writeUInt32BE(moov.size - udta.size, ftyp.size);
  return out;
}

function mp4boxMovie(init: Buffer): Movie {
  const file = createFile();
  let movie: Movie | undefined;
  let error: string | undefined;
  file.onReady = (m: Movie) => {
    movie = m;
  };
  file.onError = (_module: string, message: string) => {
    error = message;
  };
  try {
    // A fresh ArrayBuffer holding exactly the init (mp4box reads from its start).
    const ab = new ArrayBuffer(init.byteLength);
    new Uint8Array(ab).set(init);
    file.appendBuffer(MP4BoxBuffer.fromArrayBuffer(ab, 0));
    file.flush();
  } catch (err) {
    throw new Mp4FormatError('MP4_BAD_BOX', `init segment not understood: ${(err as Error).message}`);
  }
  if (!movie) throw new Mp4FormatError('MP4_NO_INIT', `init segment not understood${error ? `: ${error}` : ''}`);
  return movie;
}

function parseTrex(init: Buffer, moov: Box): Map<number, TrexDefaults> {
  const out = new Map<number, TrexDefaults>();
  const mvex = findChild(init, 'mvex', moov);
  if (!mvex) return out;
  for (const trex of findAll(init, 'trex', mvex)) {
    const { body } = fullBoxBody(init, trex, 20);
    out.set(u32(init, body), {
      sampleDescriptionIndex: u32(init, body + 4),
      sampleDuration: u32(init, body + 8),
      sampleSize: u32(init, body + 12),
      sampleFlags: u32(init, body + 16),
    });
  }
  return out;
}

/** Reads an MPEG-4 descriptor header (tag + expandable length) at `p`; null past `end`. */
function descriptor(buf: Buffer, p: number, end: number): { tag: number; body: number; end: number } | null {
  if (p + 2 > end) return null;
  const tag = buf[p]!;
  let len = 0;
  let q = p + 1;
  for (let i = 0; i < 4; i++) {
    if (q >= end) return null;
    const b = buf[q++]!;
    len = (len << 7) | (b & 0x7f);
    if (!(b & 0x80)) break;
  }
  return q + len <= end ? { tag, body: q, end: q + len } : null;
}

const AAC_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/** Sample rate and channel count from the AudioSpecificConfig in an mp4a entry's esds, if present and plain. */
/** Where an mp4a entry's AudioSpecificConfig lies (esds → ES → DecoderConfig → DecoderSpecificInfo); null when it has none. */
function ascRange(buf: Buffer, entry: Box): { body: number; end: number } | null {
  const at = sampleEntryChildren(buf, entry);
  if (at < 0 || at > entry.size) return null;
  const esds = childBoxes(buf, entry.offset + at, entry.offset + entry.size).find((b) => b.type === 'esds');
  if (!esds) return null;
  const end = esds.offset + esds.size;
  const es = descriptor(buf, esds.offset + esds.headerSize + 4, end);
  if (!es || es.tag !== 3) return null;
  let p = es.body + 2;
  const flags = buf[p++] ?? 0;
  if (flags & 0x80) p += 2;
  if (flags & 0x40) p += 1 + (buf[p] ?? 0);
  if (flags & 0x20) p += 2;
  const dc = descriptor(buf, p, es.end);
  if (!dc || dc.tag !== 4) return null;
  const dsi = descriptor(buf, dc.body + 13, dc.end);
  if (!dsi || dsi.tag !== 5 || dsi.end - dsi.body < 2) return null;
  return { body: dsi.body, end: dsi.end };
}

/**
 * An avcC/hvcC record by what a decoder takes from it: the NAL length size and the
 * parameter sets. The record's other fields are derived from those, and encoders
 * fill them differently (ffmpeg's hvcC and ours differ in flags no decoder reads).
 * null for other records or one that does not parse.
 */
function parameterSetsKey(type: string, body: Buffer): string | null {
  try {
    const parsed = type === 'avcC' ? parseAvcC(body) : type === 'hvcC' ? parseHvcC(body) : null;
    if (!parsed) return null;
    const { vps, sps, pps } = parsed.params;
    return [parsed.lengthSize, ...[...vps, ...sps, ...pps].map((n) => n.toString('hex'))].join(' ');
  } catch {
    return null;
  }
}

/** The NAL format of an avcC/hvcC visual entry; undefined for any other entry or a record that does not parse. */
function nalFormat(buf: Buffer, entry: Box | undefined): NalFormat | undefined {
  if (!entry || !VISUAL_ENTRIES.has(entry.type)) return undefined;
  const at = sampleEntryChildren(buf, entry);
  if (at < 0 || at > entry.size) return undefined;
  const config = childBoxes(buf, entry.offset + at, entry.offset + entry.size).find((b) => b.type === 'avcC' || b.type === 'hvcC');
  if (!config) return undefined;
  const body = buf.subarray(config.offset + config.headerSize, config.offset + config.size);
  try {
    return config.type === 'avcC' ? { codec: 'h264', lengthSize: parseAvcC(body).lengthSize } : { codec: 'h265', lengthSize: parseHvcC(body).lengthSize };
  } catch {
    return undefined;
  }
}

const SAME_FAMILY: Record<string, string> = { avc1: 'avc', avc3: 'avc', hvc1: 'hevc', hev1: 'hevc' };

/** Decoder configuration records of visual sample entries. */
const CONFIG_BOXES = new Set(['avcC', 'hvcC', 'av1C', 'vpcC']);

/**
 * What decides whether two sample entries decode alike: the entry type, the picture
 * size and the decoder configuration record (avcC, hvcC…), or an AAC entry's
 * AudioSpecificConfig. Container details are left out (compressor name, `colr`,
 * `pasp`, `btrt`, how an esds writes its lengths), so the init ffmpeg writes and the
 * one our native ingest writes for the same camera stream are interchangeable, and a
 * download across both plays with either. Any other entry: its bytes, as they are.
 */
function decoderKey(buf: Buffer, stsd: Box, entry: Box | undefined): string {
  const whole = buf.subarray(stsd.offset, stsd.offset + stsd.size).toString('hex');
  if (!entry) return whole;
  const at = sampleEntryChildren(buf, entry);
  if (VISUAL_ENTRIES.has(entry.type) && at >= 0 && at <= entry.size) {
    const config = childBoxes(buf, entry.offset + at, entry.offset + entry.size).find((b) => CONFIG_BOXES.has(b.type));
    if (!config) return whole;
    const size = `${u16(buf, entry.offset + entry.headerSize + 24)}x${u16(buf, entry.offset + entry.headerSize + 26)}`;
    const body = buf.subarray(config.offset + config.headerSize, config.offset + config.size);
    // avc1/avc3 and hvc1/hev1 differ in where parameter sets may be, and ours are in
    // front of every keyframe whichever the entry says: one family each.
    const family = SAME_FAMILY[entry.type] ?? entry.type;
    return `${family} ${size} ${config.type} ${parameterSetsKey(config.type, body) ?? body.toString('hex')}`;
  }
  if (entry.type === 'mp4a') {
    const asc = ascRange(buf, entry);
    return asc ? `mp4a ${buf.subarray(asc.body, asc.end).toString('hex')}` : whole;
  }
  return whole;
}

function aacConfig(buf: Buffer, entry: Box): { sampleRate?: number; channels?: number } {
  const dsi = ascRange(buf, entry);
  if (!dsi) return {};
  // Bit reader over the AudioSpecificConfig.
  let bit = dsi.body * 8;
  const limit = dsi.end * 8;
  const bits = (n: number): number => {
    let v = 0;
    for (let i = 0; i < n; i++, bit++) v = (v << 1) | (bit < limit ? (buf[bit >> 3]! >> (7 - (bit & 7))) & 1 : 0);
    return v >>> 0;
  };
  const aot = bits(5);
  if (aot === 31) bits(6);
  const rateIndex = bits(4);
  const sampleRate = rateIndex === 15 ? bits(24) : AAC_RATES[rateIndex];
  const config = bits(4);
  const channels = config >= 1 && config <= 6 ? config : config === 7 ? 8 : undefined;
  return { ...(sampleRate ? { sampleRate } : {}), ...(channels ? { channels } : {}) };
}

function need(box: Box | undefined, what: string): Box {
  if (!box) throw new Mp4FormatError('MP4_NO_INIT', `trak without ${what}`);
  return box;
}

/** Top-level boxes up to and including the first moov; the first one must be an ftyp. */
function topBoxesUntilMoov(buf: Buffer): Box[] {
  const out: Box[] = [];
  let p = 0;
  while (p < buf.byteLength) {
    const h = readBoxHeader(buf, p);
    if (!h) throw new Mp4FormatError(p === 0 ? 'MP4_NO_INIT' : 'MP4_TRUNCATED', `box header cut at ${p}`);
    if (p === 0 && h.type !== 'ftyp') throw new Mp4FormatError('MP4_NO_INIT', `expected ftyp first, got ${h.type}`);
    if (p + h.size > buf.byteLength)
      throw new Mp4FormatError('MP4_TRUNCATED', `box ${h.type} at ${p} (${h.size} bytes) runs past the data (${buf.byteLength})`);
    out.push({ ...h, offset: p });
    p += h.size;
    if (h.type === 'moov') break;
  }
  return out;
}

/**
 * Parses `ftyp`+`moov` (the buffer may run on into fragments; they are not read).
 * Throws Mp4FormatError: MP4_NO_INIT when there is no ftyp+moov or a track lacks its
 * mandatory boxes, MP4_BAD_BOX / MP4_TRUNCATED on garbage.
 */
export function parseInit(init: Buffer): InitInfo {
  const top = topBoxesUntilMoov(init);
  if (top.length === 0) throw new Mp4FormatError('MP4_NO_INIT', 'no data');
  const moov = top.find((b) => b.type === 'moov');
  if (!moov) throw new Mp4FormatError('MP4_NO_INIT', `no moov after ftyp (boxes: ${top.map((b) => b.type).join(',')})`);
  checkTree(init, moov);
  const ftyp = top[0]!;

  const trexDefaults = parseTrex(init, moov);
  const key = createHash('sha1');
  interface Raw {
    id: number;
    handler: string;
    timescale: number;
    entry: Box | undefined;
    tkhdWidth: number;
    tkhdHeight: number;
  }
  const raw: Raw[] = [];
  for (const trak of findAll(init, 'trak', moov)) {
    const tkhd = need(findChild(init, 'tkhd', trak), 'tkhd');
    const mdia = need(findChild(init, 'mdia', trak), 'mdia');
    const mdhd = need(findChild(init, 'mdhd', mdia), 'mdhd');
    const hdlr = need(findChild(init, 'hdlr', mdia), 'hdlr');
    const stsd = need(findBox(init, 'minf/stbl/stsd', mdia), 'stsd');

    // tkhd: v0 times are 32-bit (width/height at 72), v1 64-bit (at 84).
    const tk = fullBoxBody(init, tkhd, 80);
    if (tk.version === 1 && tk.end - tk.body < 92) throw new Mp4FormatError('MP4_BAD_BOX', 'tkhd v1 too short');
    const id = u32(init, tk.body + (tk.version === 1 ? 16 : 8));
    const sizeAt = tk.body + (tk.version === 1 ? 84 : 72);
    const md = fullBoxBody(init, mdhd, 12);
    if (md.version === 1 && md.end - md.body < 20) throw new Mp4FormatError('MP4_BAD_BOX', 'mdhd v1 too short');
    const timescale = u32(init, md.body + (md.version === 1 ? 16 : 8));
    if (timescale === 0) throw new Mp4FormatError('MP4_BAD_BOX', `track ${id} has timescale 0`);
    const hd = fullBoxBody(init, hdlr, 8);
    const handler = init.toString('latin1', hd.body + 4, hd.body + 8);
    const sd = fullBoxBody(init, stsd, 4);
    const entry = childBoxes(init, sd.body + 4, sd.end)[0];
    if (raw.some((r) => r.id === id)) throw new Mp4FormatError('MP4_BAD_BOX', `two tracks with id ${id}`);

    key.update(`track ${id} ${handler} ${timescale}\n`);
    key.update(decoderKey(init, stsd, entry));
    const trex = trexDefaults.get(id);
    key.update(trex ? `\ntrex ${trex.sampleDescriptionIndex} ${trex.sampleDuration} ${trex.sampleSize} ${trex.sampleFlags}\n` : '\nno trex\n');
    raw.push({ id, handler, timescale, entry, tkhdWidth: u32(init, sizeAt) / 65536, tkhdHeight: u32(init, sizeAt + 4) / 65536 });
  }
  if (raw.length === 0) throw new Mp4FormatError('MP4_NO_INIT', 'init has no tracks');

  const movie = mp4boxMovie(ftyp.offset === 0 && top[1] === moov ? withoutUdta(init, ftyp, moov) : init.subarray(0, moov.offset + moov.size));
  const tracks: TrackInfo[] = raw.map((r) => {
    const t = movie.tracks.find((m) => m.id === r.id);
    const kind: TrackInfo['kind'] = r.handler === 'vide' ? 'video' : r.handler === 'soun' ? 'audio' : 'other';
    const info: TrackInfo = { id: r.id, kind, timescale: r.timescale, codec: t?.codec || r.entry?.type || 'unknown' };
    if (kind === 'video') {
      info.width = t?.video?.width || Math.round(r.tkhdWidth);
      info.height = t?.video?.height || Math.round(r.tkhdHeight);
      const nal = nalFormat(init, r.entry);
      if (nal) info.nal = nal;
    } else if (kind === 'audio') {
      const asc = r.entry?.type === 'mp4a' ? aacConfig(init, r.entry) : {};
      const sampleRate = asc.sampleRate ?? t?.audio?.sample_rate;
      const channels = asc.channels ?? t?.audio?.channel_count;
      if (sampleRate) info.sampleRate = sampleRate;
      if (channels) info.channels = channels;
    }
    return info;
  });
  const video = tracks.find((t) => t.kind === 'video');
  const major = video ? 'video' : tracks.some((t) => t.kind === 'audio') ? 'audio' : 'application';
  return {
    tracks,
    videoTrackId: video?.id ?? null,
    mimeType: `${major}/mp4; codecs="${tracks.map((t) => t.codec).join(',')}"`,
    codecKey: key.digest('hex'),
    trexDefaults,
  };
}
