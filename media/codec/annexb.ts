/**
 * H.264 / H.265 NAL units in their two framings: length-prefixed as MP4 stores them
 * (AVCC/HVCC samples, the length size given by the avcC/hvcC record) and Annex B as
 * MPEG-PS carries them (each NAL after a 00 00 00 01 start code).
 *
 * Invariant of what we write: every access unit that starts a GOP (an IDR / IRAP)
 * carries the parameter sets in front of its first slice, so any GOP of a PS file
 * decodes on its own. Samples that already carry an SPS in band are left as they are.
 * Emulation prevention bytes are part of the NAL payload in both framings: nothing is
 * escaped or unescaped here, except in `unescapeRbsp` for parameter-set parsing.
 */
import { MediaFormatError } from '../media-error.ts';

export type VideoCodec = 'h264' | 'h265';

/** Parameter sets of a video track, in the order a decoder wants them. */
export interface ParameterSets {
  codec: VideoCodec;
  /** H.265 only. */
  vps: Buffer[];
  sps: Buffer[];
  pps: Buffer[];
}

const START_CODE = Buffer.from([0, 0, 0, 1]);

export function nalType(codec: VideoCodec, nal: Uint8Array): number {
  const b = nal[0] ?? 0;
  return codec === 'h264' ? b & 0x1f : (b >> 1) & 0x3f;
}

// H.264 (14496-10 table 7-1) and H.265 (23008-2 table 7-1) NAL unit types we act on.
const H264 = { IDR: 5, SPS: 7, PPS: 8, AUD: 9 } as const;
const H265 = { VPS: 32, SPS: 33, PPS: 34, AUD: 35, IRAP_FIRST: 16, IRAP_LAST: 23 } as const;

export function isParameterSet(codec: VideoCodec, nal: Uint8Array): boolean {
  const t = nalType(codec, nal);
  return codec === 'h264' ? t === H264.SPS || t === H264.PPS : t === H265.VPS || t === H265.SPS || t === H265.PPS;
}

export function isAccessUnitDelimiter(codec: VideoCodec, nal: Uint8Array): boolean {
  return nalType(codec, nal) === (codec === 'h264' ? H264.AUD : H265.AUD);
}

/** A NAL that makes its access unit a random access point (IDR for H.264, IRAP for H.265). */
export function isRandomAccessNal(codec: VideoCodec, nal: Uint8Array): boolean {
  const t = nalType(codec, nal);
  return codec === 'h264' ? t === H264.IDR : t >= H265.IRAP_FIRST && t <= H265.IRAP_LAST;
}

/** A slice NAL (VCL): H.264 types 1-5, H.265 types 0-31. */
export function isSliceNal(codec: VideoCodec, nal: Uint8Array): boolean {
  const t = nalType(codec, nal);
  return codec === 'h264' ? t >= 1 && t <= 5 : t <= 31;
}

/**
 * True when this slice is the first of a new picture: H.264 first_mb_in_slice = 0
 * (ue(v) of value 0 is a single 1 bit), H.265 first_slice_segment_in_pic_flag = 1.
 */
export function isFirstSliceOfPicture(codec: VideoCodec, nal: Uint8Array): boolean {
  if (!isSliceNal(codec, nal)) return false;
  const b = codec === 'h264' ? nal[1] : nal[2];
  return b !== undefined && (b & 0x80) !== 0;
}

/** The NAL units of a length-prefixed sample (views into it). Throws NAL_BAD_LENGTH. */
export function splitLengthPrefixed(sample: Uint8Array, lengthSize: number): Buffer[] {
  if (lengthSize !== 1 && lengthSize !== 2 && lengthSize !== 4) throw new MediaFormatError('BAD_CODEC_CONFIG', `NAL length size ${lengthSize}`);
  const buf = Buffer.from(sample.buffer, sample.byteOffset, sample.byteLength);
  const out: Buffer[] = [];
  let p = 0;
  while (p < buf.length) {
    if (p + lengthSize > buf.length) throw new MediaFormatError('NAL_BAD_LENGTH', `NAL length field cut at ${p} of ${buf.length}`);
    const len = lengthSize === 4 ? buf.readUInt32BE(p) : lengthSize === 2 ? buf.readUInt16BE(p) : buf[p]!;
    p += lengthSize;
    if (len === 0) continue;
    if (p + len > buf.length) throw new MediaFormatError('NAL_BAD_LENGTH', `NAL of ${len} bytes at ${p} runs past the sample (${buf.length})`);
    out.push(buf.subarray(p, p + len));
    p += len;
  }
  return out;
}

/**
 * The NAL units of an Annex B byte stream (views into it, start codes removed).
 * Bytes before the first start code are ignored; trailing zero bytes of a NAL (the
 * leading zero of a 4-byte start code, trailing_zero_8bits) are trimmed.
 */
export function splitAnnexB(stream: Uint8Array): Buffer[] {
  const buf = Buffer.from(stream.buffer, stream.byteOffset, stream.byteLength);
  const out: Buffer[] = [];
  let start = -1;
  let p = 0;
  for (;;) {
    const sc = buf.indexOf(START_CODE.subarray(1), p); // 00 00 01
    if (sc < 0) break;
    if (start >= 0) pushTrimmed(out, buf, start, sc);
    start = sc + 3;
    p = start;
  }
  if (start >= 0) pushTrimmed(out, buf, start, buf.length);
  return out;
}

function pushTrimmed(out: Buffer[], buf: Buffer, start: number, end: number): void {
  while (end > start && buf[end - 1] === 0) end--;
  if (end > start) out.push(buf.subarray(start, end));
}

/** NAL units back to back, each after a 4-byte start code. */
export function joinAnnexB(nals: readonly Uint8Array[]): Buffer {
  const parts: Uint8Array[] = [];
  for (const n of nals) parts.push(START_CODE, n);
  return Buffer.concat(parts);
}

/** NAL units back to back, each after a 4-byte big-endian length (lengthSizeMinusOne = 3). */
export function joinLengthPrefixed(nals: readonly Uint8Array[]): Buffer {
  const total = nals.reduce((n, x) => n + 4 + x.byteLength, 0);
  const out = Buffer.allocUnsafe(total);
  let p = 0;
  for (const n of nals) {
    out.writeUInt32BE(n.byteLength, p);
    out.set(n, p + 4);
    p += 4 + n.byteLength;
  }
  return out;
}

/**
 * One MP4 video sample as an Annex B access unit. On a keyframe without an in-band
 * SPS, the parameter sets are inserted after any access unit delimiter and before the
 * first other NAL, as both standards order them.
 */
export function sampleToAnnexB(sample: Uint8Array, lengthSize: number, keyframe: boolean, params: ParameterSets): Buffer {
  const nals = splitLengthPrefixed(sample, lengthSize);
  if (keyframe && !nals.some((n) => nalType(params.codec, n) === (params.codec === 'h264' ? H264.SPS : H265.SPS))) {
    const at = nals.length > 0 && isAccessUnitDelimiter(params.codec, nals[0]!) ? 1 : 0;
    nals.splice(at, 0, ...params.vps, ...params.sps, ...params.pps);
  }
  return joinAnnexB(nals);
}

/** Whether an Annex B access unit holds a random-access slice. */
export function isKeyframeAccessUnit(codec: VideoCodec, nals: readonly Uint8Array[]): boolean {
  return nals.some((n) => isRandomAccessNal(codec, n));
}

/**
 * Parameter sets found in band in an access unit (empty lists when there are none).
 * Repeats are dropped (encoders and RTP depayloaders may send them twice in one unit),
 * so the same configuration always gives the same lists.
 */
export function parameterSetsIn(codec: VideoCodec, nals: readonly Buffer[]): ParameterSets {
  const ps: ParameterSets = { codec, vps: [], sps: [], pps: [] };
  const seen = new Set<string>();
  for (const n of nals) {
    if (!isParameterSet(codec, n)) continue;
    const key = n.toString('hex');
    if (seen.has(key)) continue;
    seen.add(key);
    const t = nalType(codec, n);
    if (codec === 'h264') {
      if (t === H264.SPS) ps.sps.push(n);
      else if (t === H264.PPS) ps.pps.push(n);
    } else if (t === H265.VPS) ps.vps.push(n);
    else if (t === H265.SPS) ps.sps.push(n);
    else if (t === H265.PPS) ps.pps.push(n);
  }
  return ps;
}

/** A NAL payload without emulation prevention bytes (00 00 03 → 00 00), for parsing. */
export function unescapeRbsp(nal: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(nal.byteLength);
  let n = 0;
  let zeros = 0;
  for (let i = 0; i < nal.byteLength; i++) {
    const b = nal[i]!;
    if (zeros >= 2 && b === 3) {
      zeros = 0;
      continue;
    }
    zeros = b === 0 ? zeros + 1 : 0;
    out[n++] = b;
  }
  return out.subarray(0, n);
}
