/**
 * Conversions between the two segment formats, one GOP at a time:
 *   - fMP4 fragment (moof sample tables + mdat) → PS GOP: FragmentToPs, used by the
 *     PS segment writer and by `video.ps` for MP4 recordings;
 *   - PS GOP → fMP4 init + fragment: psGopToFmp4, used by every MP4 playback path
 *     (download, /play, frame.jpg) for PS recordings.
 * Time: PS carries 90 kHz; MP4 ticks are converted exactly when the timescale divides
 * evenly (ffmpeg's RTSP video is 90 kHz; AAC 48 kHz → 1920 per frame) and rounded down
 * otherwise. `shift90k` moves a GOP on the output timeline (callers keep it continuous).
 */
import { sampleToAnnexB, splitAnnexB, parameterSetsIn, joinLengthPrefixed } from '../codec/annexb.ts';
import { aacTrackFromAsc, adtsHeader, readAdts, tracksFromInit, videoTrackFromParams, type EsTrack } from '../codec/codec-config.ts';
import { buildFragment, buildInit, moofSize, type MuxSample, type MuxTrackRun } from '../mp4/fmp4-mux.ts';
import { parseInit, type InitInfo } from '../mp4/init-info.ts';
import { MediaFormatError } from '../media-error.ts';
import type { MoofInfo } from '../mp4/moof.ts';
import { demuxPs, readPackScr, type PsDemuxResult, type PsTrack } from './ps-demux.ts';
import { AUDIO_STREAM_ID, FILE_HEADER_BYTES, STREAM_TYPE, VIDEO_STREAM_ID, fileHeader, muxGop, type MuxedGop, type PsStream, type PsUnit } from './ps-mux.ts';

export const PS_TIMESCALE = 90_000;

function to90k(ticks: bigint, timescale: number): bigint {
  return timescale === PS_TIMESCALE ? ticks : (ticks * 90_000n) / BigInt(timescale);
}

function from90k(ts: bigint, timescale: number): bigint {
  return timescale === PS_TIMESCALE ? ts : (ts * BigInt(timescale)) / 90_000n;
}

function streamOf(t: EsTrack): PsStream {
  if (t.kind === 'video') return { streamId: VIDEO_STREAM_ID, streamType: t.codec === 'h264' ? STREAM_TYPE.H264 : STREAM_TYPE.H265 };
  return { streamId: AUDIO_STREAM_ID, streamType: t.codec === 'aac' ? STREAM_TYPE.AAC : STREAM_TYPE.G711A };
}

export interface FragmentInput {
  /** moof+mdat */
  bytes: Buffer;
  moof: MoofInfo;
}

/**
 * fMP4 fragments of one init → PS GOPs. Tracks PS cannot carry (listed in
 * `unsupported`) are left out; a video codec other than H.264/H.265 throws
 * CODEC_UNSUPPORTED when constructed. Keeps the last SCR so SCRs never go back within
 * one output; `restart()` forgets it (a new file).
 */
export class FragmentToPs {
  readonly tracks: EsTrack[];
  readonly unsupported: string[];
  private readonly streams: PsStream[];
  private lastScr: bigint | undefined;

  /** `previousScr`: the last SCR of the output this continues (SCRs never go back). */
  constructor(init: Buffer, previousScr?: bigint) {
    this.lastScr = previousScr;
    const t = tracksFromInit(init);
    // One video and at most one audio track: PS stream ids 0xE0 / 0xC0.
    const video = t.tracks.find((x) => x.kind === 'video')!;
    const audio = t.tracks.find((x) => x.kind === 'audio');
    this.tracks = audio ? [video, audio] : [video];
    this.unsupported = [...t.unsupported, ...t.tracks.filter((x) => !this.tracks.includes(x)).map((x) => `${x.trackId}:${x.codec}`)];
    this.streams = this.tracks.map(streamOf);
    // The fMP4 init this PS converts back to must fit the file header's room.
    const psTracks: EsTrack[] = this.tracks.map((t) =>
      t.kind === 'video' ? { ...t, trackId: 1, timescale: PS_TIMESCALE, lengthSize: 4 } : { ...t, trackId: 2, timescale: t.sampleRate },
    );
    const initBytes = buildInit(psTracks).length;
    if (initBytes + 8 > FILE_HEADER_BYTES)
      throw new MediaFormatError('CODEC_UNSUPPORTED', `codec configuration too big for a PS segment header (${initBytes} bytes)`);
  }

  /** A segment file's header for a file whose first GOP is `firstGop` (same SCR). */
  fileHeader(firstGop: Buffer): Buffer {
    return fileHeader(this.streams, readPackScr(firstGop, 0) ?? 0n);
  }

  /** The last SCR written (to hand on to the next converter of one output). */
  get scr(): bigint | undefined {
    return this.lastScr;
  }

  restart(): void {
    this.lastScr = undefined;
  }

  /**
   * convert() as the GOP that follows an output whose last SCR was `previousScr`: an
   * output planned once can be produced again from any of its GOPs, byte for byte.
   */
  convertAfter(frag: FragmentInput, shift90k: bigint, previousScr: bigint | undefined): MuxedGop {
    this.lastScr = previousScr;
    return this.convert(frag, shift90k);
  }

  convert(frag: FragmentInput, shift90k = 0n): MuxedGop {
    const units: { unit: PsUnit; video: boolean; order: number }[] = [];
    let duration90k = 0;
    // Bytes of the fMP4 fragment this GOP converts back to (see FILE_HEADER_BYTES / segment-source).
    const counts = new Map<number, number>();
    let mp4Bytes = 8;
    for (const traf of frag.moof.tracks) {
      const track = this.tracks.find((t) => t.trackId === traf.trackId);
      if (!track) continue;
      const stream = streamOf(track);
      let dts = traf.baseDecodeTime;
      let at = traf.dataOffset; // default-base-is-moof: relative to the moof start
      if (track.kind === 'video') duration90k = Number(to90k(BigInt(traf.durationTicks), track.timescale));
      for (let i = 0; i < traf.sampleCount; i++) {
        const size = traf.sizes[i]!;
        if (at < 0 || at + size > frag.bytes.length)
          throw new MediaFormatError('NAL_BAD_LENGTH', `sample ${i} of track ${traf.trackId} lies outside its fragment`);
        const raw = frag.bytes.subarray(at, at + size);
        at += size;
        const keyframe = (traf.flags[i]! & 0x00010000) === 0;
        let data: Buffer;
        if (track.kind === 'video') data = sampleToAnnexB(raw, track.lengthSize, keyframe, track.params);
        else if (track.codec === 'aac') data = Buffer.concat([adtsHeader(track, raw.length), raw]);
        else data = Buffer.from(raw);
        mp4Bytes += track.kind === 'video' ? data.length : raw.length;
        counts.set(stream.streamId, (counts.get(stream.streamId) ?? 0) + 1);
        const d90 = to90k(dts, track.timescale) + shift90k;
        const p90 = to90k(dts + BigInt(traf.compositionOffsets[i]!), track.timescale) + shift90k;
        units.push({ unit: { streamId: stream.streamId, pts: p90, dts: d90, data }, video: track.kind === 'video', order: units.length });
        dts += BigInt(traf.durations[i]!);
      }
    }
    if (!units.some((u) => u.video)) throw new MediaFormatError('PS_BAD_STREAM', 'fragment without video samples');
    // Interleave by decode time; the GOP opens with its first video unit (the keyframe).
    units.sort((a, b) => (a.unit.dts < b.unit.dts ? -1 : a.unit.dts > b.unit.dts ? 1 : a.video === b.video ? a.order - b.order : a.video ? -1 : 1));
    const firstVideo = units.findIndex((u) => u.video);
    if (firstVideo > 0) units.unshift(...units.splice(firstVideo, 1));
    mp4Bytes += moofSize([...counts.values()]);
    const gop = muxGop({
      streams: this.streams,
      units: units.map((u) => u.unit),
      duration90k,
      minBytes: mp4Bytes + 8, // room for the fragment plus a free box
      ...(this.lastScr !== undefined ? { previousScr: this.lastScr } : {}),
    });
    this.lastScr = gop.lastScr;
    return gop;
  }
}

/** The MP4 tracks a demuxed PS describes (video 1, audio 2), from its in-band configuration. */
export function tracksFromPs(d: PsDemuxResult): EsTrack[] {
  const v = d.tracks.find((t) => t.codec === 'h264' || t.codec === 'h265');
  if (!v) throw new MediaFormatError('PS_NO_CONFIG', 'no H.264/H.265 stream in the program stream');
  const codec = v.codec as 'h264' | 'h265';
  const key = v.samples.find((s) => s.keyframe);
  if (!key) throw new MediaFormatError('PS_NO_CONFIG', 'no keyframe in the program stream');
  const params = parameterSetsIn(codec, splitAnnexB(key.data));
  const out: EsTrack[] = [videoTrackFromParams(params, 1, PS_TIMESCALE)];
  const a = d.tracks.find((t) => t.codec === 'aac' || t.codec === 'g711a');
  if (a?.codec === 'aac' && a.samples[0]) {
    const h = readAdts(a.samples[0].data, 0);
    if (h) {
      try {
        const track = aacTrackFromAsc(h.asc, 2, 0);
        out.push({ ...track, timescale: track.sampleRate });
      } catch (err) {
        if (!(err instanceof MediaFormatError)) throw err; // an AAC we cannot describe: video only
      }
    }
  } else if (a?.codec === 'g711a') {
    out.push({ kind: 'audio', codec: 'g711a', trackId: 2, timescale: 8000, sampleRate: 8000, channels: 1 });
  }
  return out;
}

export interface PsDescription {
  init: Buffer;
  info: InitInfo;
  tracks: EsTrack[];
}

/** The fMP4 init (and its parsed info: mimeType, codecKey, size) that a PS GOP converts to. */
export function describePs(d: PsDemuxResult): PsDescription {
  const tracks = tracksFromPs(d);
  const init = buildInit(tracks);
  return { init, info: parseInit(init), tracks };
}

function videoSamples(track: PsTrack, gopEnd90k: bigint | null): MuxSample[] {
  const s = track.samples;
  return s.map((x, i) => {
    const next = s[i + 1]?.dts ?? gopEnd90k ?? (i > 0 ? x.dts + (x.dts - s[i - 1]!.dts) : x.dts + 3600n);
    // NAL units as they are (AUD and in-band parameter sets included: avc1/hvc1 allow them),
    // so a sample is exactly as big as its Annex B unit with 4-byte start codes.
    const nals = splitAnnexB(x.data);
    return { duration: Number(next > x.dts ? next - x.dts : 1n), cto: Number(x.pts - x.dts), keyframe: x.keyframe, data: joinLengthPrefixed(nals) };
  });
}

/**
 * One PS GOP (as stored: pack header first) → an fMP4 fragment for `tracks` (from
 * describePs of the same segment). Decode times are the PS times plus `shift90k`,
 * in each track's timescale. The last video sample lasts until the GOP info's end
 * (our files) or as long as the one before it.
 */
export function psGopToFmp4(
  gop: Uint8Array,
  tracks: readonly EsTrack[],
  sequence: number,
  shift90k = 0n,
): { fragment: Buffer; firstDts90k: bigint; end90k: bigint } {
  const d = demuxPs(gop);
  const v = d.tracks.find((t) => t.codec === 'h264' || t.codec === 'h265');
  if (!v || v.samples.length === 0) throw new MediaFormatError('PS_BAD_STREAM', 'GOP without video');
  const info = d.gopInfos[0];
  // Demuxed alone, times are unwrapped from this GOP's first one; the GOP info has the 64-bit time.
  const unwrap = info ? info.firstDts - v.samples[0]!.dts : 0n;
  const first = v.samples[0]!.dts + unwrap;
  const gopEnd = info ? info.firstDts + BigInt(info.duration90k) - unwrap : null;
  const runs: MuxTrackRun[] = [];
  const vt = tracks.find((t) => t.kind === 'video')!;
  const vs = videoSamples(v, gopEnd);
  runs.push({ trackId: vt.trackId, baseDecodeTime: first + shift90k, samples: vs });
  const at = tracks.find((t) => t.kind === 'audio');
  const a = d.tracks.find((t) => t.codec === 'aac' || t.codec === 'g711a');
  if (at && a && a.samples.length > 0) {
    const samples: MuxSample[] = a.samples.map((x) => {
      if (at.codec === 'aac') {
        const h = readAdts(x.data, 0);
        const body = h ? x.data.subarray(h.headerBytes) : x.data;
        return { duration: 1024, cto: 0, keyframe: true, data: body };
      }
      return { duration: x.data.length, cto: 0, keyframe: true, data: x.data };
    });
    const base = from90k(a.samples[0]!.dts + unwrap + shift90k, at.timescale);
    runs.push({ trackId: at.trackId, baseDecodeTime: base < 0n ? 0n : base, samples });
  }
  const end90k = first + BigInt(vs.reduce((n, s) => n + s.duration, 0));
  return { fragment: buildFragment(sequence, runs), firstDts90k: first, end90k };
}
