/**
 * Track configurations from a camera's SDP (the `a=fmtp` parameters of its video and
 * audio media), for media/rtp/rtp-fmp4.ts:
 * - H.264 (RFC 6184 §8.1): `sprop-parameter-sets`, base64 NAL units separated by commas.
 * - H.265 (RFC 7798 §7.1): `sprop-vps`, `sprop-sps`, `sprop-pps`, each a base64 list.
 *   DONL is not supported (`sprop-max-don-diff` must be 0 or absent): a camera that
 *   interleaves NAL units out of decoding order is refused typed.
 * - AAC (RFC 3640 §4.1, mpeg4-generic): `mode` AAC-hbr or AAC-lbr, `config` (the
 *   AudioSpecificConfig in hex), `sizeLength`, `indexLength`, `indexDeltaLength`
 *   (defaults those of the mode: 13/3/3 for AAC-hbr, 6/2/2 for AAC-lbr). The optional
 *   AU-header fields (CTS/DTS deltas, random access, stream state) and the auxiliary
 *   section are refused (CODEC_UNSUPPORTED): neither mode uses them, and reading AU
 *   headers without them would misplace every AU. The channel count is the ASC's.
 * Parameter sets may be missing from the SDP (many cameras send them in band only);
 * they are then learnt from the stream. A value that is there and does not parse is a
 * MediaFormatError (BAD_CODEC_CONFIG) naming the parameter.
 */
import { parameterSetsIn, type ParameterSets, type VideoCodec } from '../codec/annexb.ts';
import { parseAsc } from '../codec/codec-config.ts';
import { MediaFormatError } from '../media-error.ts';

export interface RtpVideoConfig {
  codec: VideoCodec;
  /** RTP clock rate (90000 for H.264/H.265); the video track's timescale. */
  clockRate: number;
  /** From the SDP; empty lists when it has none. */
  params: ParameterSets;
}

export interface RtpAudioConfig {
  codec: 'aac';
  /** RTP clock rate (the sample rate); the audio track's timescale. */
  clockRate: number;
  asc: Buffer;
  /** Bits of an AU-header: the AU size, its index, and the index delta of the ones after. */
  sizeLength: number;
  indexLength: number;
  indexDeltaLength: number;
}

/** `a=fmtp` parameters: `key=value` pairs split at `;`, keys lower-cased, values as written. */
export function parseFmtp(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of value.split(';')) {
    const i = part.indexOf('=');
    if (i <= 0) continue;
    out[part.slice(0, i).trim().toLowerCase()] = part.slice(i + 1).trim();
  }
  return out;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function base64List(name: string, value: string | undefined): Buffer[] {
  if (value === undefined || value === '') return [];
  return value.split(',').map((v) => {
    const s = v.trim();
    if (!BASE64.test(s)) throw new MediaFormatError('BAD_CODEC_CONFIG', `${name}: ${JSON.stringify(s.slice(0, 40))} is not base64`);
    const b = Buffer.from(s, 'base64');
    if (b.length === 0) throw new MediaFormatError('BAD_CODEC_CONFIG', `${name}: an empty NAL unit`);
    return b;
  });
}

export function videoConfig(encoding: string, clockRate: number, fmtp: Record<string, string>): RtpVideoConfig {
  const enc = encoding.toUpperCase();
  if (enc === 'H264') {
    const mode = fmtp['packetization-mode'] ?? '0';
    if (mode !== '0' && mode !== '1') throw new MediaFormatError('CODEC_UNSUPPORTED', `H.264 packetization-mode ${mode} (interleaved) is not supported`);
    const nals = base64List('sprop-parameter-sets', fmtp['sprop-parameter-sets']);
    return { codec: 'h264', clockRate, params: parameterSetsIn('h264', nals) };
  }
  if (enc === 'H265') {
    const don = fmtp['sprop-max-don-diff'];
    if (don !== undefined && don !== '0') throw new MediaFormatError('CODEC_UNSUPPORTED', `H.265 sprop-max-don-diff ${don} (DONL) is not supported`);
    const nals = [...base64List('sprop-vps', fmtp['sprop-vps']), ...base64List('sprop-sps', fmtp['sprop-sps']), ...base64List('sprop-pps', fmtp['sprop-pps'])];
    return { codec: 'h265', clockRate, params: parameterSetsIn('h265', nals) };
  }
  throw new MediaFormatError('CODEC_UNSUPPORTED', `video encoding ${encoding} is not H.264 or H.265`);
}

/** fmtp parameters (lower-cased) that add fields to the AU headers or an auxiliary section. */
const OPTIONAL_AU_FIELDS = ['ctsdeltalength', 'dtsdeltalength', 'randomaccessindication', 'streamstateindication', 'auxiliarydatasizelength'];

/** The AAC configuration of an mpeg4-generic track; null for any other encoding or mode. */
export function audioConfig(encoding: string, clockRate: number, fmtp: Record<string, string>): RtpAudioConfig | null {
  if (encoding.toUpperCase() !== 'MPEG4-GENERIC') return null;
  const mode = (fmtp.mode ?? '').toLowerCase();
  if (mode !== 'aac-hbr' && mode !== 'aac-lbr') return null;
  const hex = fmtp.config ?? '';
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new MediaFormatError('BAD_CODEC_CONFIG', `config: ${JSON.stringify(hex.slice(0, 40))} is not hex`);
  const asc = Buffer.from(hex, 'hex');
  parseAsc(asc); // throws when it cannot be carried
  for (const name of OPTIONAL_AU_FIELDS) {
    const v = fmtp[name];
    if (v !== undefined && v.trim() !== '0') throw new MediaFormatError('CODEC_UNSUPPORTED', `${name}=${v}: AU headers with optional fields are not read`);
  }
  const hbr = mode === 'aac-hbr';
  const int = (name: string, fallback: number): number => {
    const v = fmtp[name.toLowerCase()];
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 16) throw new MediaFormatError('BAD_CODEC_CONFIG', `${name}: ${JSON.stringify(v)}`);
    return n;
  };
  const sizeLength = int('sizeLength', hbr ? 13 : 6);
  if (sizeLength === 0) throw new MediaFormatError('BAD_CODEC_CONFIG', 'sizeLength: 0');
  return { codec: 'aac', clockRate, asc, sizeLength, indexLength: int('indexLength', hbr ? 3 : 2), indexDeltaLength: int('indexDeltaLength', hbr ? 3 : 2) };
}
