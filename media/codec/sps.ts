/**
 * Just enough of an H.264 / H.265 sequence parameter set to describe a track: the
 * picture size (after the conformance/cropping window), chroma format and bit depths.
 * An MPEG-PS file carries no sample entry, so a track's width and height and the
 * fields of an hvcC record come from here when PS is turned back into MP4.
 */
import { unescapeRbsp, type VideoCodec } from './annexb.ts';
import { MediaFormatError } from '../media-error.ts';

export interface SpsInfo {
  width: number;
  height: number;
  /** 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4 */
  chromaFormat: number;
  bitDepthLuma: number;
  bitDepthChroma: number;
}

class Bits {
  private bit = 0;
  constructor(private readonly b: Buffer) {}
  u(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) {
      const byte = this.b[this.bit >> 3];
      if (byte === undefined) throw new MediaFormatError('BAD_CODEC_CONFIG', 'SPS ends early');
      v = v * 2 + ((byte >> (7 - (this.bit & 7))) & 1);
      this.bit++;
    }
    return v;
  }
  skip(n: number): void {
    this.bit += n;
  }
  ue(): number {
    let zeros = 0;
    while (this.u(1) === 0) {
      if (++zeros > 31) throw new MediaFormatError('BAD_CODEC_CONFIG', 'SPS exp-Golomb code too long');
    }
    return 2 ** zeros - 1 + this.u(zeros);
  }
  se(): number {
    const k = this.ue();
    return k % 2 === 1 ? (k + 1) / 2 : -(k / 2);
  }
}

/** Profiles whose SPS carries chroma format, bit depths and scaling matrices (7.3.2.1.1). */
const H264_HIGH_PROFILES = new Set([100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135]);

function h264(rbsp: Buffer): SpsInfo {
  const r = new Bits(rbsp.subarray(1)); // after the NAL header
  const profile = r.u(8);
  r.skip(16); // constraint flags, level
  r.ue(); // seq_parameter_set_id
  let chromaFormat = 1;
  let bitDepthLuma = 8;
  let bitDepthChroma = 8;
  let separateColourPlane = 0;
  if (H264_HIGH_PROFILES.has(profile)) {
    chromaFormat = r.ue();
    if (chromaFormat === 3) separateColourPlane = r.u(1);
    bitDepthLuma = r.ue() + 8;
    bitDepthChroma = r.ue() + 8;
    r.skip(1); // qpprime_y_zero_transform_bypass_flag
    if (r.u(1)) {
      for (let i = 0; i < (chromaFormat === 3 ? 12 : 8); i++) {
        if (!r.u(1)) continue;
        const size = i < 6 ? 16 : 64;
        let last = 8;
        let next = 8;
        for (let j = 0; j < size && next !== 0; j++) {
          next = (last + r.se() + 256) % 256;
          if (next !== 0) last = next;
        }
      }
    }
  }
  r.ue(); // log2_max_frame_num_minus4
  const pocType = r.ue();
  if (pocType === 0) r.ue();
  else if (pocType === 1) {
    r.skip(1);
    r.se();
    r.se();
    const n = r.ue();
    for (let i = 0; i < n; i++) r.se();
  }
  r.ue(); // max_num_ref_frames
  r.skip(1);
  const widthMbs = r.ue() + 1;
  const heightMapUnits = r.ue() + 1;
  const frameMbsOnly = r.u(1);
  if (!frameMbsOnly) r.skip(1);
  r.skip(1); // direct_8x8_inference_flag
  let crop = [0, 0, 0, 0];
  if (r.u(1)) crop = [r.ue(), r.ue(), r.ue(), r.ue()];
  const arrayType = separateColourPlane ? 0 : chromaFormat;
  const cropX = arrayType === 0 ? 1 : arrayType === 3 ? 1 : 2;
  const cropY = (arrayType === 0 ? 1 : arrayType === 1 ? 2 : 1) * (2 - frameMbsOnly);
  return {
    width: widthMbs * 16 - cropX * (crop[0]! + crop[1]!),
    height: (2 - frameMbsOnly) * heightMapUnits * 16 - cropY * (crop[2]! + crop[3]!),
    chromaFormat,
    bitDepthLuma,
    bitDepthChroma,
  };
}

function h265(rbsp: Buffer): SpsInfo {
  const r = new Bits(rbsp.subarray(2)); // after the 2-byte NAL header
  r.skip(4); // sps_video_parameter_set_id
  const maxSubLayersMinus1 = r.u(3);
  r.skip(1);
  // profile_tier_level(1, maxSubLayersMinus1): 88 bits general profile + 8 bits level.
  r.skip(96);
  const profilePresent: number[] = [];
  const levelPresent: number[] = [];
  for (let i = 0; i < maxSubLayersMinus1; i++) {
    profilePresent.push(r.u(1));
    levelPresent.push(r.u(1));
  }
  if (maxSubLayersMinus1 > 0) for (let i = maxSubLayersMinus1; i < 8; i++) r.skip(2);
  for (let i = 0; i < maxSubLayersMinus1; i++) {
    if (profilePresent[i]) r.skip(88);
    if (levelPresent[i]) r.skip(8);
  }
  r.ue(); // sps_seq_parameter_set_id
  const chromaFormat = r.ue();
  if (chromaFormat === 3) r.skip(1);
  const width = r.ue();
  const height = r.ue();
  let crop = [0, 0, 0, 0];
  if (r.u(1)) crop = [r.ue(), r.ue(), r.ue(), r.ue()];
  const bitDepthLuma = r.ue() + 8;
  const bitDepthChroma = r.ue() + 8;
  const subW = chromaFormat === 1 || chromaFormat === 2 ? 2 : 1;
  const subH = chromaFormat === 1 ? 2 : 1;
  return {
    width: width - subW * (crop[0]! + crop[1]!),
    height: height - subH * (crop[2]! + crop[3]!),
    chromaFormat,
    bitDepthLuma,
    bitDepthChroma,
  };
}

/** Parses an SPS NAL (with its header, emulation prevention still in). Throws BAD_CODEC_CONFIG. */
export function parseSps(codec: VideoCodec, sps: Uint8Array): SpsInfo {
  const rbsp = unescapeRbsp(sps);
  const info = codec === 'h264' ? h264(rbsp) : h265(rbsp);
  if (!(info.width > 0 && info.height > 0 && info.width <= 16384 && info.height <= 16384)) {
    throw new MediaFormatError('BAD_CODEC_CONFIG', `SPS gives a ${info.width}x${info.height} picture`);
  }
  return info;
}
