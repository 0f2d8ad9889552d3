/**
 * MPEG program stream reader (MPEG-2 PS, and MPEG-1 system streams as ffmpeg's
 * `-f mpeg` writes them) back to access units with PTS/DTS, stream type and keyframe
 * flag. Used to index and repair `.ps` segments and to serve them through the MP4
 * playback paths.
 *
 * Tolerance (bad input never stops the video): bytes that are not a packet start are
 * skipped up to the next pack header (`resyncBytes`); a PES of a stream the PSM does
 * not describe and that cannot be recognised is skipped (`unknownStreamPackets`); a
 * packet cut by the end of the data is dropped (`truncatedPackets`) and `validBytes`
 * says where the last whole packet ended. A stream without a PSM entry on a video
 * stream id is sniffed (H.264 or H.265 from its NAL headers), as ffmpeg's PS has none.
 *
 * Access units: a PES may hold several units or part of one. Video is cut into units
 * by its NAL units (delimiter, parameter sets or SEI after a slice, a slice starting a
 * picture); AAC by its ADTS headers; G.711 is one unit per PES. A PES timestamp
 * belongs to the first unit that starts in that PES; units without one get the
 * previous unit's DTS plus its duration (`untimedUnits`).
 */
import { isAccessUnitDelimiter, isFirstSliceOfPicture, isKeyframeAccessUnit, isSliceNal, nalType, type VideoCodec } from '../codec/annexb.ts';
import { readAdts } from '../codec/codec-config.ts';
import { PRIVATE_STREAM_2, STREAM_TYPE, parseGopInfo, type GopInfo } from './ps-mux.ts';

export type PsCodec = VideoCodec | 'aac' | 'g711a';

export interface PsSample {
  streamId: number;
  streamType: number;
  codec: PsCodec;
  /** 90 kHz, unwrapped across 2^33 (relative to the first timestamp's wrap). */
  pts: bigint;
  dts: bigint;
  keyframe: boolean;
  data: Buffer;
  /** Offset of the pack header in force where the unit's first byte was. */
  packOffset: number;
}

export interface PsTrack {
  streamId: number;
  streamType: number;
  codec: PsCodec;
  samples: PsSample[];
}

export interface PsCounters {
  resyncBytes: number;
  unknownStreamPackets: number;
  truncatedPackets: number;
  untimedUnits: number;
  badAudioBytes: number;
}

export interface PsGopInfoAt extends GopInfo {
  /** Offset of the pack header that starts the GOP (the one before the info packet). */
  offset: number;
}

export interface PsDemuxResult {
  tracks: PsTrack[];
  /** GOP info packets of our own writer, where they were. */
  gopInfos: PsGopInfoAt[];
  /** stream id → stream type, from the last PSM. */
  psm: Map<number, number>;
  counters: PsCounters;
  /** End of the last complete packet. */
  validBytes: number;
  /** A pack header was found at offset 0. */
  startsWithPack: boolean;
  /** A PSM was found before the first PES. */
  psmFirst: boolean;
}

const CODEC_OF_TYPE = new Map<number, PsCodec>([
  [STREAM_TYPE.H264, 'h264'],
  [STREAM_TYPE.H265, 'h265'],
  [STREAM_TYPE.AAC, 'aac'],
  [STREAM_TYPE.G711A, 'g711a'],
]);
const TS_MOD = 2n ** 33n;
const PACK = Buffer.from([0, 0, 1, 0xba]);

interface PesChunk {
  esStart: number;
  esEnd: number;
  pts: bigint | null;
  dts: bigint | null;
  packOffset: number;
}

interface StreamState {
  streamId: number;
  streamType: number | null;
  es: Buffer[];
  esBytes: number;
  chunks: PesChunk[];
}

function readTs(b: Buffer, p: number): bigint {
  return (BigInt((b[p]! >> 1) & 7) << 30n) | (BigInt(b.readUInt16BE(p + 1) >> 1) << 15n) | BigInt(b.readUInt16BE(p + 3) >> 1);
}

/** The SCR base of the MPEG-2 pack header at `p`, or null when there is none. */
export function readPackScr(b: Buffer, p: number): bigint | null {
  if (p + 14 > b.length || b.readUInt32BE(p) !== 0x000001ba || (b[p + 4]! & 0xc0) !== 0x40) return null;
  return readScrMpeg2(b, p + 4);
}

function readScrMpeg2(b: Buffer, p: number): bigint {
  const hi = (BigInt((b[p]! >> 3) & 7) << 30n) | (BigInt(b[p]! & 3) << 28n) | (BigInt(b[p + 1]!) << 20n) | (BigInt(b[p + 2]! >> 3) << 15n);
  const lo = (BigInt(b[p + 2]! & 3) << 13n) | (BigInt(b[p + 3]!) << 5n) | BigInt(b[p + 4]! >> 3);
  return hi | lo;
}

/** Sniffs the codec of a video PES payload without a PSM entry (ffmpeg writes none): its stream type, or null. */
export function sniffVideo(payload: Buffer): number | null {
  const sc = payload.indexOf(Buffer.from([0, 0, 1]));
  if (sc < 0 || sc + 5 > payload.length) return null;
  const b0 = payload[sc + 3]!;
  const b1 = payload[sc + 4]!;
  // H.265 NAL header: forbidden 0, 6-bit type, 6-bit layer id (0), 3-bit tid+1 (≥1).
  const h265Type = (b0 >> 1) & 0x3f;
  if ((b0 & 0x81) === 0 && b1 === 1 && [32, 33, 34, 35, 39, 40, 19, 20, 21].includes(h265Type)) return STREAM_TYPE.H265;
  const h264Type = b0 & 0x1f;
  if ((b0 & 0x80) === 0 && [1, 5, 6, 7, 8, 9].includes(h264Type)) return STREAM_TYPE.H264;
  return null;
}

export interface DemuxOptions {
  /**
   * Stream types known before these bytes (stream id → type), e.g. from a PSM in an
   * earlier GOP of a live stream; a PSM in the bytes still overrides them.
   */
  psm?: ReadonlyMap<number, number>;
}

/** Demuxes a program stream held in memory (a GOP, a segment, a test file). */
export function demuxPs(input: Uint8Array, opts: DemuxOptions = {}): PsDemuxResult {
  const b = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const counters: PsCounters = { resyncBytes: 0, unknownStreamPackets: 0, truncatedPackets: 0, untimedUnits: 0, badAudioBytes: 0 };
  const psm = new Map<number, number>(opts.psm ?? []);
  const streams = new Map<number, StreamState>();
  const gopInfos: PsGopInfoAt[] = [];
  let packOffset = -1;
  let validBytes = 0;
  let sawPes = false;
  let psmFirst = false;
  const startsWithPack = b.length >= 4 && b.subarray(0, 4).equals(PACK);

  let p = 0;
  const resync = (from: number): number => {
    const next = b.indexOf(PACK, from);
    const to = next < 0 ? b.length : next;
    counters.resyncBytes += to - p;
    return to;
  };
  while (p + 4 <= b.length) {
    if (b[p] !== 0 || b[p + 1] !== 0 || b[p + 2] !== 1) {
      p = resync(p + 1);
      continue;
    }
    const code = b[p + 3]!;
    if (code === 0xb9) {
      p += 4; // program end
      validBytes = p;
      continue;
    }
    if (code === 0xba) {
      if (p + 5 > b.length) break;
      let len: number;
      if ((b[p + 4]! & 0xc0) === 0x40) {
        if (p + 14 > b.length) break;
        len = 14 + (b[p + 13]! & 7);
      } else if ((b[p + 4]! & 0xf0) === 0x20) {
        len = 12; // MPEG-1 pack header
      } else {
        p = resync(p + 4);
        continue;
      }
      if (p + len > b.length) {
        counters.truncatedPackets++;
        break;
      }
      packOffset = p;
      p += len;
      validBytes = p;
      continue;
    }
    if (code < 0xbb) {
      p = resync(p + 4); // an ES start code outside any PES: not a program stream packet
      continue;
    }
    if (p + 6 > b.length) {
      counters.truncatedPackets++;
      break;
    }
    const len = b.readUInt16BE(p + 4);
    const end = p + 6 + len;
    if (end > b.length) {
      counters.truncatedPackets++;
      break;
    }
    const body = b.subarray(p + 6, end);
    if (code === 0xbc) {
      parsePsm(body, psm);
      if (!sawPes) psmFirst = true;
    } else if (code === PRIVATE_STREAM_2) {
      const info = parseGopInfo(body);
      if (info) gopInfos.push({ ...info, offset: packOffset });
    } else if ((code >= 0xc0 && code <= 0xef) || code === 0xbd) {
      sawPes = true;
      pes(code, body, packOffset);
    }
    // 0xbb system header, 0xbe padding and anything else: skipped whole.
    p = end;
    validBytes = p;
  }
  if (p < b.length && p + 4 > b.length) counters.truncatedPackets++;

  function pes(streamId: number, body: Buffer, pack: number): void {
    let q = 0;
    let pts: bigint | null = null;
    let dts: bigint | null = null;
    if ((body[0]! & 0xc0) === 0x80) {
      // MPEG-2 PES header
      if (body.length < 3) return void counters.truncatedPackets++;
      const flags = body[1]! >> 6;
      const hlen = body[2]!;
      if (3 + hlen > body.length) return void counters.truncatedPackets++;
      if (flags >= 2 && hlen >= 5) pts = readTs(body, 3);
      if (flags === 3 && hlen >= 10) dts = readTs(body, 8);
      q = 3 + hlen;
    } else {
      // MPEG-1 packet header: stuffing, optional STD buffer, timestamps
      while (q < body.length && body[q] === 0xff && q < 16) q++;
      if (q < body.length && (body[q]! & 0xc0) === 0x40) q += 2;
      const m = body[q] ?? 0;
      if ((m & 0xf0) === 0x20 && q + 5 <= body.length) {
        pts = readTs(body, q);
        q += 5;
      } else if ((m & 0xf0) === 0x30 && q + 10 <= body.length) {
        pts = readTs(body, q);
        dts = readTs(body, q + 5);
        q += 10;
      } else if (m === 0x0f) q += 1;
      else return void counters.unknownStreamPackets++;
    }
    const payload = body.subarray(q);
    let s = streams.get(streamId);
    if (!s) {
      s = { streamId, streamType: null, es: [], esBytes: 0, chunks: [] };
      streams.set(streamId, s);
    }
    const declared = psm.get(streamId);
    if (declared !== undefined) s.streamType = declared;
    else if (s.streamType === null && streamId >= 0xe0 && payload.length > 0) s.streamType = sniffVideo(payload);
    if (s.streamType === null || !CODEC_OF_TYPE.has(s.streamType)) {
      counters.unknownStreamPackets++;
      return;
    }
    s.chunks.push({ esStart: s.esBytes, esEnd: s.esBytes + payload.length, pts, dts: dts ?? pts, packOffset: pack });
    s.es.push(payload);
    s.esBytes += payload.length;
  }

  const tracks: PsTrack[] = [];
  for (const s of streams.values()) {
    if (s.streamType === null || s.chunks.length === 0) continue;
    const codec = CODEC_OF_TYPE.get(s.streamType);
    if (!codec) continue;
    const es = Buffer.concat(s.es);
    const cuts =
      codec === 'h264' || codec === 'h265'
        ? videoUnits(es, codec)
        : codec === 'aac'
          ? adtsUnits(es, counters)
          : s.chunks.map((c) => ({ start: c.esStart, end: c.esEnd, keyframe: true, duration: (BigInt(c.esEnd - c.esStart) * 90_000n) / 8000n }));
    const samples = timeUnits(s, codec, es, cuts, counters);
    tracks.push({ streamId: s.streamId, streamType: s.streamType, codec, samples });
  }
  tracks.sort((x, y) => x.streamId - y.streamId);
  return { tracks, gopInfos, psm, counters, validBytes, startsWithPack, psmFirst };
}

/** Reads a PSM packet's body (after the 6-byte packet header) into `psm` (stream id → type). */
export function parsePsm(body: Buffer, psm: Map<number, number>): void {
  if (body.length < 6) return;
  const infoLen = body.readUInt16BE(2);
  let q = 4 + infoLen;
  if (q + 2 > body.length) return;
  const mapLen = body.readUInt16BE(q);
  q += 2;
  const end = Math.min(q + mapLen, body.length);
  while (q + 4 <= end) {
    const type = body[q]!;
    const id = body[q + 1]!;
    const esInfo = body.readUInt16BE(q + 2);
    psm.set(id, type);
    q += 4 + esInfo;
  }
}

interface UnitCut {
  start: number;
  end: number;
  keyframe: boolean;
  /** Known from the unit itself (AAC frames, G.711 bytes), 90 kHz. */
  duration?: bigint;
}

/** NAL start positions (of the start code, 3 or 4 bytes) and payload starts. */
function nalStarts(es: Buffer): { at: number; nal: number }[] {
  const out: { at: number; nal: number }[] = [];
  let p = 0;
  const sc = Buffer.from([0, 0, 1]);
  for (;;) {
    const i = es.indexOf(sc, p);
    if (i < 0) break;
    out.push({ at: i > 0 && es[i - 1] === 0 ? i - 1 : i, nal: i + 3 });
    p = i + 3;
  }
  return out;
}

/** H.264 / H.265 NAL types that open a new access unit when they follow a slice. */
export function opensUnit(codec: VideoCodec, nal: Buffer): boolean {
  const t = nalType(codec, nal);
  if (codec === 'h264') return t === 6 || t === 7 || t === 8 || t === 9 || (t >= 14 && t <= 18);
  return t === 32 || t === 33 || t === 34 || t === 35 || t === 39 || (t >= 41 && t <= 44) || (t >= 48 && t <= 55);
}

function videoUnits(es: Buffer, codec: VideoCodec): UnitCut[] {
  const starts = nalStarts(es);
  const cuts: UnitCut[] = [];
  let unitStart = -1;
  let sawSlice = false;
  let nals: Buffer[] = [];
  const close = (end: number): void => {
    if (unitStart >= 0 && nals.length > 0) cuts.push({ start: unitStart, end, keyframe: isKeyframeAccessUnit(codec, nals) });
  };
  starts.forEach((s, i) => {
    const nalEnd = i + 1 < starts.length ? starts[i + 1]!.at : es.length;
    const nal = es.subarray(s.nal, nalEnd);
    if (nal.length === 0) return;
    const newUnit = unitStart < 0 || isAccessUnitDelimiter(codec, nal) || (sawSlice && (opensUnit(codec, nal) || isFirstSliceOfPicture(codec, nal)));
    if (newUnit) {
      close(s.at);
      unitStart = s.at;
      sawSlice = false;
      nals = [];
    }
    nals.push(nal);
    if (isSliceNal(codec, nal)) sawSlice = true;
  });
  close(es.length);
  return cuts;
}

function adtsUnits(es: Buffer, counters: PsCounters): UnitCut[] {
  const cuts: UnitCut[] = [];
  let p = 0;
  while (p < es.length) {
    const h = readAdts(es, p);
    if (!h || p + h.frameBytes > es.length) {
      // Not an ADTS header here: skip to the next syncword.
      const next = es.indexOf(0xff, p + 1);
      const to = next < 0 ? es.length : next;
      counters.badAudioBytes += to - p;
      p = to;
      continue;
    }
    cuts.push({ start: p, end: p + h.frameBytes, keyframe: true, duration: (1024n * 90_000n) / BigInt(h.sampleRate) });
    p += h.frameBytes;
  }
  return cuts;
}

/** Gives each unit its timestamps (see the module comment) and unwraps 33-bit time. */
function timeUnits(s: StreamState, codec: PsCodec, es: Buffer, cuts: UnitCut[], counters: PsCounters): PsSample[] {
  const out: PsSample[] = [];
  let k = 0;
  const used = new Set<number>();
  let prevDts: bigint | null = null;
  let prevDuration = 0n;
  let unwrapBase = 0n;
  let lastRaw: bigint | null = null;
  const unwrap = (raw: bigint): bigint => {
    if (lastRaw !== null) {
      if (raw + TS_MOD / 2n < lastRaw) unwrapBase += TS_MOD;
      else if (raw > lastRaw + TS_MOD / 2n) unwrapBase -= TS_MOD;
    }
    lastRaw = raw;
    return raw + unwrapBase;
  };
  for (const cut of cuts) {
    while (k < s.chunks.length && s.chunks[k]!.esEnd <= cut.start) k++;
    const chunk = s.chunks[k];
    let pts: bigint | null = null;
    let dts: bigint | null = null;
    if (chunk && chunk.esStart <= cut.start && chunk.pts !== null && !used.has(k)) {
      used.add(k);
      const rawDts = chunk.dts ?? chunk.pts;
      dts = unwrap(rawDts);
      pts = dts + ((chunk.pts - rawDts + TS_MOD) % TS_MOD);
      if (pts - dts > TS_MOD / 2n) pts -= TS_MOD; // PTS before DTS is not legal; keep it close
    }
    if (dts === null) {
      if (prevDts === null) {
        counters.untimedUnits++;
        continue; // nothing to place it on
      }
      counters.untimedUnits++;
      dts = prevDts + prevDuration;
      pts = dts;
    }
    if (cut.duration !== undefined) prevDuration = cut.duration;
    else if (prevDts !== null && dts > prevDts) prevDuration = dts - prevDts;
    prevDts = dts;
    out.push({
      streamId: s.streamId,
      streamType: s.streamType!,
      codec,
      pts: pts!,
      dts,
      keyframe: cut.keyframe,
      data: es.subarray(cut.start, cut.end),
      packOffset: chunk?.packOffset ?? -1,
    });
  }
  return out;
}
