/**
 * MPEG-2 program stream writer (ISO/IEC 13818-1 2.5), one GOP at a time.
 *
 * A segment file opens with a file header (pack header · system header · PSM · padding
 * packet, FILE_HEADER_BYTES in all): the room where playback/segment-source.ts presents
 * the file's fMP4 init. Then GOPs follow.
 *
 * Layout of a GOP, the unit segment files and `video.ps` are made of:
 *   pack header (SCR) · system header · PSM · GOP info · PES…
 *   pack header (SCR) · PES…              (one pack per further access unit)
 * so every GOP starts with everything a demuxer needs (invariant 1: a `.ps` segment
 * starts with a pack header and a PSM, and so does any GOP cut out of it).
 *
 * - PSM stream types: 0x1B H.264, 0x24 H.265, 0x0F AAC (ADTS), 0x90 G.711 A-law;
 *   video on stream id 0xE0, audio on 0xC0 (as GB28181 devices do).
 * - One access unit per PES, with PTS (and DTS when it differs). A unit bigger than
 *   MAX_PES_PAYLOAD is split; the continuation PES packets carry no timestamps, which
 *   is how demuxers (ours, ffmpeg's) know they continue the unit.
 * - Timestamps are 90 kHz and written modulo 2^33. SCR is the unit's DTS minus
 *   SCR_LEAD (never below the previous SCR), so the SCR never passes a DTS it precedes.
 * - The GOP info packet (private_stream_2, which players skip) says how many bytes the
 *   GOP has, its first video DTS (unwrapped, 64-bit) and duration: scanning a file hops
 *   from GOP to GOP, and a GOP cut by a crash is recognised by its length.
 */

export const STREAM_TYPE = { H264: 0x1b, H265: 0x24, AAC: 0x0f, G711A: 0x90 } as const;
export const VIDEO_STREAM_ID = 0xe0;
export const AUDIO_STREAM_ID = 0xc0;
export const PRIVATE_STREAM_2 = 0xbf;

/** Largest PES payload we write (PES_packet_length is 16 bits; 13 bytes of header at most). */
export const MAX_PES_PAYLOAD = 65_500;
/** SCR runs this far ahead of the DTS it precedes (0.1 s of buffering). */
const SCR_LEAD = 9000;
/** program_mux_rate and rate_bound, in units of 50 bytes/s: 20 Mbit/s. */
const MUX_RATE = 50_000;
const TS_MOD = 2n ** 33n;
export const GOP_INFO_MAGIC = 'RGOP';
export const GOP_INFO_VERSION = 1;
/** Bytes of the GOP info payload. */
export const GOP_INFO_BYTES = 30;

export interface PsStream {
  streamId: number;
  streamType: number;
}

export interface PsUnit {
  streamId: number;
  /** 90 kHz, unwrapped (written modulo 2^33). */
  pts: bigint;
  dts: bigint;
  /** Annex B access unit, ADTS frame(s), or G.711 bytes. */
  data: Uint8Array;
}

export interface GopInfo {
  /** Bytes of the whole GOP from its pack header. */
  gopBytes: number;
  /** DTS of the GOP's first video unit, 90 kHz, unwrapped. */
  firstDts: bigint;
  /** Video duration of the GOP, 90 kHz. */
  duration90k: number;
  videoUnits: number;
  audioUnits: number;
}

function packHeader(scr: bigint): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt32BE(0x000001ba, 0);
  const base = scr % TS_MOD;
  const hi = Number(base >> 15n); // bits 32..15
  const lo = Number(base & 0x7fffn); // bits 14..0
  b[4] = 0x44 | (((hi >> 15) & 7) << 3) | ((hi >> 13) & 0x03);
  b[5] = (hi >> 5) & 0xff;
  b[6] = ((hi & 0x1f) << 3) | 0x04 | ((lo >> 13) & 0x03);
  b[7] = (lo >> 5) & 0xff;
  b[8] = ((lo & 0x1f) << 3) | 0x04; // SCR extension 0
  b[9] = 0x01;
  b[10] = (MUX_RATE >> 14) & 0xff;
  b[11] = (MUX_RATE >> 6) & 0xff;
  b[12] = ((MUX_RATE & 0x3f) << 2) | 0x03;
  b[13] = 0xf8; // no stuffing
  return b;
}

function systemHeader(streams: readonly PsStream[]): Buffer {
  const b = Buffer.alloc(12 + 3 * streams.length);
  b.writeUInt32BE(0x000001bb, 0);
  b.writeUInt16BE(6 + 3 * streams.length, 4);
  b[6] = 0x80 | ((MUX_RATE >> 15) & 0x7f);
  b[7] = (MUX_RATE >> 7) & 0xff;
  b[8] = ((MUX_RATE & 0x7f) << 1) | 1;
  const audio = streams.filter((s) => s.streamId >= 0xc0 && s.streamId <= 0xdf).length;
  const video = streams.filter((s) => s.streamId >= 0xe0 && s.streamId <= 0xef).length;
  b[9] = (audio << 2) | 0; // not fixed rate, not CSPS
  b[10] = 0x20 | video; // no locks, marker
  b[11] = 0x7f;
  streams.forEach((s, i) => {
    const p = 12 + 3 * i;
    const isVideo = s.streamId >= 0xe0;
    b[p] = s.streamId;
    // P-STD buffer bound: video 1024-byte units (1 MiB), audio 128-byte units (8 KiB).
    const scale = isVideo ? 1 : 0;
    const size = isVideo ? 1024 : 64;
    b[p + 1] = 0xc0 | (scale << 5) | (size >> 8);
    b[p + 2] = size & 0xff;
  });
  return b;
}

/** CRC-32/MPEG-2 (poly 0x04C11DB7, init ~0, no reflection, no final xor). */
export function crc32Mpeg(b: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of b) {
    crc ^= byte << 24;
    for (let k = 0; k < 8; k++) crc = crc & 0x80000000 ? (crc << 1) ^ 0x04c11db7 : crc << 1;
  }
  return crc >>> 0;
}

function psm(streams: readonly PsStream[]): Buffer {
  const esMap = 4 * streams.length;
  const b = Buffer.alloc(16 + esMap);
  b.writeUInt32BE(0x000001bc, 0);
  b.writeUInt16BE(10 + esMap, 4);
  b[6] = 0xe0; // current_next_indicator 1, version 0
  b[7] = 0xff;
  b.writeUInt16BE(0, 8); // program_stream_info_length
  b.writeUInt16BE(esMap, 10);
  streams.forEach((s, i) => {
    b[12 + 4 * i] = s.streamType;
    b[13 + 4 * i] = s.streamId;
    b.writeUInt16BE(0, 14 + 4 * i);
  });
  b.writeUInt32BE(crc32Mpeg(b.subarray(0, 12 + esMap)), 12 + esMap);
  return b;
}

function gopInfoPacket(info: GopInfo): Buffer {
  const b = Buffer.alloc(6 + GOP_INFO_BYTES);
  b.writeUInt32BE(0x00000100 | PRIVATE_STREAM_2, 0);
  b.writeUInt16BE(GOP_INFO_BYTES, 4);
  b.write(GOP_INFO_MAGIC, 6, 'latin1');
  b[10] = GOP_INFO_VERSION;
  b[11] = 0;
  b.writeUInt32BE(info.gopBytes, 12);
  b.writeBigUInt64BE(info.firstDts, 16);
  b.writeUInt32BE(info.duration90k, 24);
  b.writeUInt32BE(info.videoUnits, 28);
  b.writeUInt32BE(info.audioUnits, 32);
  return b;
}

/** Parses a GOP info payload (after the 6-byte packet header); null if it is not ours. */
export function parseGopInfo(payload: Uint8Array): GopInfo | null {
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (b.length < GOP_INFO_BYTES || b.toString('latin1', 0, 4) !== GOP_INFO_MAGIC || b[4] !== GOP_INFO_VERSION) return null;
  return {
    gopBytes: b.readUInt32BE(6),
    firstDts: b.readBigUInt64BE(10),
    duration90k: b.readUInt32BE(18),
    videoUnits: b.readUInt32BE(22),
    audioUnits: b.readUInt32BE(26),
  };
}

/** Writes a 33-bit timestamp in the 5-byte PES form with the 4-bit prefix. */
function writeTimestamp(b: Buffer, p: number, prefix: number, ts: bigint): void {
  const v = ts % TS_MOD;
  b[p] = (prefix << 4) | (Number(v >> 29n) & 0x0e) | 1;
  b.writeUInt16BE(((Number((v >> 15n) & 0x7fffn) << 1) | 1) & 0xffff, p + 1);
  b.writeUInt16BE(((Number(v & 0x7fffn) << 1) | 1) & 0xffff, p + 3);
}

/** PES packets of one access unit (split when big). */
function pesPackets(unit: PsUnit): Buffer[] {
  const out: Buffer[] = [];
  const data = Buffer.from(unit.data.buffer, unit.data.byteOffset, unit.data.byteLength);
  const withDts = unit.dts !== unit.pts;
  let p = 0;
  do {
    const first = p === 0;
    const tsBytes = first ? (withDts ? 10 : 5) : 0;
    const n = Math.min(MAX_PES_PAYLOAD, data.length - p);
    const h = Buffer.alloc(9 + tsBytes);
    h.writeUInt32BE(0x00000100 | unit.streamId, 0);
    h.writeUInt16BE(3 + tsBytes + n, 4);
    h[6] = first ? 0x84 : 0x80; // '10', data_alignment_indicator on the unit's first packet
    h[7] = first ? (withDts ? 0xc0 : 0x80) : 0;
    h[8] = tsBytes;
    if (first) {
      writeTimestamp(h, 9, withDts ? 3 : 2, unit.pts);
      if (withDts) writeTimestamp(h, 14, 1, unit.dts);
    }
    out.push(h, data.subarray(p, p + n));
    p += n;
  } while (p < data.length);
  return out;
}

/** Size of a segment file's header (room for the fMP4 init the file converts to). */
export const FILE_HEADER_BYTES = 4096;
export const PADDING_STREAM = 0xbe;

/** A padding packet of exactly `bytes` (at least 6) bytes; players skip it. */
export function paddingPacket(bytes: number): Buffer {
  if (bytes < 6 || bytes > 65535 + 6) throw new Error(`padding packet of ${bytes} bytes`);
  const b = Buffer.alloc(bytes, 0xff);
  b.writeUInt32BE(0x00000100 | PADDING_STREAM, 0);
  b.writeUInt16BE(bytes - 6, 4);
  return b;
}

/** A segment file's header: pack header (`scr`: the first GOP's), system header, PSM, padding to FILE_HEADER_BYTES. */
export function fileHeader(streams: readonly PsStream[], scr: bigint): Buffer {
  const head = Buffer.concat([packHeader(scr), systemHeader(streams), psm(streams)]);
  return Buffer.concat([head, paddingPacket(FILE_HEADER_BYTES - head.length)]);
}

export interface MuxGopInput {
  streams: readonly PsStream[];
  /** In write order; the first is the GOP's video keyframe. */
  units: readonly PsUnit[];
  /** Video duration of the GOP in 90 kHz (the GOP info says it; PS has no durations). */
  duration90k: number;
  /** SCR of the previous pack written to the same stream (SCRs never go back); default none. */
  previousScr?: bigint;
  /** Pad the GOP (padding packet at its end) to at least this many bytes. */
  minBytes?: number;
}

export interface MuxedGop {
  bytes: Buffer;
  info: GopInfo;
  lastScr: bigint;
}

/** One GOP as program stream bytes (see the layout at the top). */
export function muxGop(input: MuxGopInput): MuxedGop {
  const first = input.units[0];
  if (!first) throw new Error('muxGop: no units');
  const parts: Buffer[] = [];
  let scrFloor = input.previousScr ?? -1n;
  const scrFor = (u: PsUnit): bigint => {
    let scr = u.dts - BigInt(SCR_LEAD);
    if (scr < 0n) scr = 0n;
    if (scr < scrFloor) scr = scrFloor;
    scrFloor = scr;
    return scr;
  };
  const video = input.units.filter((u) => u.streamId >= 0xe0 && u.streamId <= 0xef);
  const info: GopInfo = {
    gopBytes: 0,
    firstDts: (video[0] ?? first).dts,
    duration90k: input.duration90k,
    videoUnits: video.length,
    audioUnits: input.units.length - video.length,
  };
  parts.push(packHeader(scrFor(first)), systemHeader(input.streams), psm(input.streams));
  const infoAt = parts.length;
  parts.push(Buffer.alloc(0)); // the GOP info, once the size is known
  input.units.forEach((u, i) => {
    if (i > 0) parts.push(packHeader(scrFor(u)));
    parts.push(...pesPackets(u));
  });
  info.gopBytes = parts.reduce((n, b) => n + b.length, 0) + 6 + GOP_INFO_BYTES;
  const short = (input.minBytes ?? 0) - info.gopBytes;
  if (short > 0) {
    const pad = paddingPacket(Math.max(6, short));
    parts.push(pad);
    info.gopBytes += pad.length;
  }
  parts[infoAt] = gopInfoPacket(info);
  return { bytes: Buffer.concat(parts), info, lastScr: scrFloor };
}
