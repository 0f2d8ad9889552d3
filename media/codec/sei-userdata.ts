/**
 * Analytics that cameras put inside the video bitstream: SEI "user data unregistered"
 * messages (H.264 payload type 5 in SEI NAL 6; H.265 in prefix/suffix SEI NAL 39/40),
 * a 16-byte UUID naming the vendor format, then the vendor's bytes. Read from the
 * fMP4 fragments ffmpeg hands us (length-prefixed samples, moof sample tables), so
 * the smart stream also gets what travels in the video itself; the video bytes are
 * never changed.
 *
 * Encoder self-descriptions are not analytics and are left out (x264 writes its
 * version and options as user data in the first IDR). Registered user data (type 4,
 * ITU-T T.35) is mostly closed captions and is not taken.
 *
 * Malformed SEI throws MediaFormatError from the helpers; `fragmentUserData` catches
 * per sample and reports the count, so one bad sample costs only itself.
 */
import { nalType, splitLengthPrefixed, unescapeRbsp, type VideoCodec } from './annexb.ts';
import type { Fmp4Chunk } from '../mp4/fmp4-splitter.ts';
import { tracksFromInit } from './codec-config.ts';

/** UUIDs of encoder self-descriptions, not analytics (x264's "x264 - core …"). */
const IGNORED_UUIDS = new Set(['dc45e9bde6d948b7962cd820d923eeef']);
const USER_DATA_UNREGISTERED = 5;
/** A message larger than this is not metadata we index. */
const MAX_MESSAGE_BYTES = 256 * 1024;

export interface SeiUserData {
  uuid: string;
  /** The bytes after the UUID. */
  data: Buffer;
}

export interface TimedUserData extends SeiUserData {
  /** Decode time of the sample, in `timescale` ticks on the fMP4 timeline. */
  decodeTicks: bigint;
  timescale: number;
}

/** The user-data-unregistered messages of one SEI NAL (empty for any other NAL). */
export function seiUserData(codec: VideoCodec, nal: Uint8Array): SeiUserData[] {
  const type = nalType(codec, nal);
  const isSei = codec === 'h264' ? type === 6 : type === 39 || type === 40;
  if (!isSei) return [];
  const rbsp = unescapeRbsp(nal.subarray(codec === 'h264' ? 1 : 2));
  const out: SeiUserData[] = [];
  let p = 0;
  // sei_message()s until the rbsp trailing bits (0x80) or the end.
  while (p < rbsp.length && !(rbsp[p] === 0x80 && p === rbsp.length - 1)) {
    let payloadType = 0;
    while (rbsp[p] === 0xff) {
      payloadType += 255;
      p++;
    }
    if (p >= rbsp.length) break;
    payloadType += rbsp[p++]!;
    let size = 0;
    while (rbsp[p] === 0xff) {
      size += 255;
      p++;
    }
    if (p >= rbsp.length) break;
    size += rbsp[p++]!;
    if (p + size > rbsp.length) break; // cut message: nothing more to read
    if (payloadType === USER_DATA_UNREGISTERED && size >= 16 && size <= MAX_MESSAGE_BYTES) {
      const uuid = rbsp.subarray(p, p + 16).toString('hex');
      if (!IGNORED_UUIDS.has(uuid)) out.push({ uuid, data: Buffer.from(rbsp.subarray(p + 16, p + size)) });
    }
    p += size;
  }
  return out;
}

type Fragment = Extract<Fmp4Chunk, { kind: 'fragment' }>;

export interface VideoSampleFormat {
  codec: VideoCodec;
  trackId: number;
  timescale: number;
  lengthSize: number;
}

/** User data of every video sample of a fragment (moof+mdat), with decode times; `bad` counts unreadable samples. */
export function fragmentUserData(frag: Fragment, fmt: VideoSampleFormat): { messages: TimedUserData[]; bad: number } {
  const traf = frag.moof.tracks.find((t) => t.trackId === fmt.trackId);
  const messages: TimedUserData[] = [];
  let bad = 0;
  if (!traf) return { messages, bad };
  let sample = 0;
  let ticks = traf.baseDecodeTime;
  let pos = 0;
  for (const run of traf.runs.length > 0 ? traf.runs : [{ dataOffset: traf.dataOffset, sampleCount: traf.sampleCount }]) {
    // default-base-is-moof (ffmpeg's default_base_moof): offsets count from the moof start.
    if (run.dataOffset !== null) pos = run.dataOffset;
    for (let i = 0; i < run.sampleCount && sample < traf.sampleCount; i++, sample++) {
      const size = traf.sizes[sample]!;
      if (pos + size <= frag.bytes.length) {
        try {
          for (const nal of splitLengthPrefixed(frag.bytes.subarray(pos, pos + size), fmt.lengthSize)) {
            for (const m of seiUserData(fmt.codec, nal)) messages.push({ ...m, decodeTicks: ticks, timescale: fmt.timescale });
          }
        } catch {
          bad++;
        }
      } else {
        bad++;
      }
      pos += size;
      ticks += BigInt(traf.durations[sample] ?? 0);
    }
  }
  return { messages, bad };
}

/** How to walk the video samples of fragments after this init; null when there is no H.264/H.265 track. */
export function videoSampleFormat(init: Buffer): VideoSampleFormat | null {
  try {
    const video = tracksFromInit(init).tracks.find((t) => t.kind === 'video');
    if (!video || video.kind !== 'video') return null;
    return { codec: video.codec, trackId: video.trackId, timescale: video.timescale, lengthSize: video.lengthSize };
  } catch {
    return null; // another codec: no SEI to read
  }
}
