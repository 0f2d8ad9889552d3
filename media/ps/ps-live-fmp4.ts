/**
 * A live program stream's GOPs (media/ps/ps-gop-reader.ts) as the fMP4 chunks the rest of
 * ingest consumes (media/mp4/fmp4-splitter.ts's `Fmp4Chunk`): an init whenever the codec
 * configuration changes, then one fragment (moof+mdat) per GOP. Each GOP is demuxed
 * alone by our PS reader (media/ps/ps-demux.ts, seeded with the PSM in force) and written
 * by our fMP4 muxer (media/mp4/fmp4-mux.ts), as psGopToFmp4 does for stored PS.
 *
 * Tracks: video (track 1, 90 kHz, H.264 `avc1` / H.265 `hvc1`, configuration from the
 * parameter sets before the keyframe, which stay in band) and at most one audio track
 * (track 2): AAC as raw frames with an AudioSpecificConfig made from the ADTS header,
 * timescale its sample rate, 1024 samples per frame; G.711 A-law (PSM type 0x90) as an
 * `alaw` entry at 8 kHz, one sample per PES, its byte count the sample count, when
 * `g711: 'keep'` (segment format PS, which carries it as is); with `g711: 'aac'`
 * (segment format MP4, which cannot carry it) as AAC-LC 8 kHz mono made from it by the
 * caller's encoder (ffmpeg/g711-aac.ts): prepare() hands out the GOP's G.711 placed on
 * the output timeline (`g711`), the caller feeds its encoder and passes the AAC frames
 * made so far to write(), each already timed (media/ps/g711-aac-timing.ts); an encoder
 * that failed (`failure`) makes the track go (a new init, video only). `drop` leaves
 * G.711 out. Any other audio is left out. What happens to the audio is `audio` (for
 * the camera's status); an audio problem never costs the video: a GOP whose audio does
 * not parse is written without it.
 *
 * Time: PS timestamps are 33-bit. The demuxer unwraps within a GOP from its first
 * timestamp; across GOPs each track's times are placed at the 64-bit value nearest the
 * last video DTS, so a wrap of 2^33 (26.5 h) never shows. The output timeline starts at
 * the first GOP's first video DTS (0, as ffmpeg's output does). A video sample lasts
 * until the next one's DTS; the last of a GOP until the next keyframe's DTS (the reader
 * saw it when it cut) or as long as the one before. Audio is laid end to end by its
 * codec durations and only re-placed on its timestamps when they drift from that by
 * more than AUDIO_TOLERANCE_90K (a hole is bridged by lengthening the sample before it;
 * audio overlapping what is already written is dropped), so rounding never makes gaps
 * or overlaps. Audio before the first video DTS is dropped.
 *
 * A new init is made when the video parameter sets or codec change, or the audio
 * configuration does (a GOP without audio keeps the audio track), as the splitter
 * re-emits a camera's new moov.
 */
import { joinLengthPrefixed, parameterSetsIn, splitAnnexB, type ParameterSets } from '../codec/annexb.ts';
import { aacTrackFromAsc, readAdts, videoTrackFromParams, type EsTrack } from '../codec/codec-config.ts';
import type { Fmp4Chunk } from '../mp4/fmp4-splitter.ts';
import { buildFragment, buildInit, type MuxSample, type MuxTrackRun } from '../mp4/fmp4-mux.ts';
import { parseInit, type InitInfo } from '../mp4/init-info.ts';
import { MediaFormatError } from '../media-error.ts';
import { parseMoof } from '../mp4/moof.ts';
import { demuxPs, type PsCounters, type PsTrack } from './ps-demux.ts';
import type { PsGop } from './ps-gop-reader.ts';
import { STREAM_TYPE } from './ps-mux.ts';
import { AAC_FRAME_SAMPLES, G711_RATE, samplesFrom90k, type AacFrame, type G711Piece } from './g711-aac-timing.ts';

export const VIDEO_TIMESCALE = 90_000;
const TS_MOD = 2n ** 33n;
/** Audio further than this from where its codec durations put it is re-placed on its timestamps. */
export const AUDIO_TOLERANCE_90K = 4500n; // 50 ms
/** A last-sample duration from the next keyframe beyond this is not believed. */
const MAX_FRAME_90K = 10n * 90_000n;

/** What is done with the camera's audio (the shape of the camera status's `audio`). */
export interface PsAudioStatus {
  /** The codec the camera sends (ffmpeg's name, else `stream type 0x..`); null: none. */
  source: string | null;
  /** `copy`: stored as sent; `aac`: AAC made from it; `none`: not stored. */
  stored: 'copy' | 'aac' | 'none';
  reason?: string;
}

export interface PsLiveFmp4Options {
  /**
   * G.711 A-law: kept as an `alaw` track (PS segments carry it), made into AAC by the
   * caller's encoder (MP4 segments: G.711 cannot be stored in them, browsers cannot play
   * it), or left out. Default keep.
   */
  g711?: 'keep' | 'aac' | 'drop';
}

export interface PsLiveCounters extends PsCounters {
  gops: number;
  fragments: number;
  inits: number;
  /** GOPs without video, or whose video configuration could not be read. */
  skippedGops: number;
  /** Audio samples dropped (before the first video, overlapping, unreadable). */
  droppedAudio: number;
  /** Holes in the audio bridged by lengthening the sample before. */
  audioHoles: number;
}

/** A GOP read and its video placed (prepare()), waiting for write(). */
export interface PreparedGop {
  gop: PsGop;
  tracks: PsTrack[];
  psm: Map<number, number>;
  video: { params: ParameterSets; track: EsTrack };
  /** Output decode time of the first video sample (90 kHz). */
  baseDecodeTime: bigint;
  samples: MuxSample[];
  /** The last video DTS (64-bit, PS clock), the reference its audio is unwrapped against. */
  lastDts: bigint;
  /** With `g711: 'aac'`: the GOP's G.711, placed on the output timeline, for the caller's encoder. */
  g711: G711Piece[];
}

/** What the caller's encoder made of the G.711 so far (`g711: 'aac'`). */
export interface AacFromG711 {
  frames: AacFrame[];
  /** Why it makes no more (it failed); null while it works. */
  failure: string | null;
}

/** AudioSpecificConfig of AAC-LC, 8 kHz, mono: what ffmpeg's encoder makes of G.711. */
const G711_AAC_ASC = Buffer.from([0x15, 0x88]);
const G711_AAC_KEY = 'aac-from-g711';

/** Names of PSM audio stream types (ffmpeg's codec names where there is one). */
const AUDIO_TYPES: Record<number, string> = {
  0x03: 'mp2',
  0x04: 'mp2',
  0x0f: 'aac',
  0x11: 'aac_latm',
  0x81: 'ac3',
  0x90: 'pcm_alaw',
  0x91: 'pcm_mulaw',
  0x92: 'g722_1',
  0x93: 'g723_1',
  0x99: 'g729',
  0x9b: 'svac_audio',
};

/** Video stream types of a PSM that we record; the others (MPEG-2, MPEG-4 part 2, SVAC) are named. */
export const VIDEO_TYPES: Record<number, string> = {
  0x01: 'MPEG-1 video',
  0x02: 'MPEG-2 video',
  0x10: 'MPEG-4 part 2 video',
  0x1b: 'H.264',
  0x24: 'H.265',
  0x80: 'SVAC video',
};

function audioTypeName(t: number): string {
  return AUDIO_TYPES[t] ?? `stream type 0x${t.toString(16).padStart(2, '0')}`;
}

/** The 64-bit time congruent to `raw` modulo 2^33 that is nearest `ref`. */
export function nearestUnwrap(ref: bigint, raw: bigint): bigint {
  const m = ((raw % TS_MOD) + TS_MOD) % TS_MOD;
  let v = m + ((ref - m) / TS_MOD) * TS_MOD;
  while (v - ref > TS_MOD / 2n) v -= TS_MOD;
  while (ref - v > TS_MOD / 2n) v += TS_MOD;
  return v;
}

function paramsKey(p: ParameterSets): string {
  return [p.codec, ...p.vps, ...p.sps, ...p.pps].map((x) => (typeof x === 'string' ? x : x.toString('hex'))).join(':');
}

interface AudioConfig {
  track: EsTrack & { kind: 'audio' };
  key: string;
}

export class PsLiveFmp4 {
  readonly counters: PsLiveCounters = {
    resyncBytes: 0,
    unknownStreamPackets: 0,
    truncatedPackets: 0,
    untimedUnits: 0,
    badAudioBytes: 0,
    gops: 0,
    fragments: 0,
    inits: 0,
    skippedGops: 0,
    droppedAudio: 0,
    audioHoles: 0,
  };
  /** What is done with the audio, as of the last GOP. */
  audio: PsAudioStatus = { source: null, stored: 'none', reason: 'no audio in the program stream' };
  private readonly g711: 'keep' | 'aac' | 'drop';
  private video: { params: ParameterSets; track: EsTrack } | null = null;
  private audioConfig: AudioConfig | null = null;
  private initKey = '';
  private init: InitInfo | null = null;
  private sequence = 0;
  /** Last video DTS placed (64-bit, on the PS clock), the unwrap reference. */
  private ref: bigint | null = null;
  /** PS time of output time 0. */
  private origin: bigint | null = null;
  private lastVideoDuration = 3600n;
  /** Where the next audio sample goes if nothing drifted, in the audio timescale. */
  private audioNext: bigint | null = null;

  constructor(opts: PsLiveFmp4Options = {}) {
    this.g711 = opts.g711 ?? 'keep';
  }

  /** The init in force, if any. */
  get currentInit(): InitInfo | null {
    return this.init;
  }

  /** One GOP → [init?, fragment], or nothing when the GOP cannot be written (counted). With `g711: 'aac'` use prepare() and write(). */
  push(gop: PsGop): Fmp4Chunk[] {
    const p = this.prepare(gop);
    return p ? this.write(p) : [];
  }

  /**
   * Reads a GOP and places its video on the output timeline (GOPs in order, each
   * prepared then written before the next is prepared); null when the GOP cannot be
   * written (counted).
   */
  prepare(gop: PsGop): PreparedGop | null {
    this.counters.gops++;
    try {
      return this.read(gop);
    } catch (err) {
      // Parameter sets our muxer cannot describe: this GOP is skipped.
      if (!(err instanceof MediaFormatError)) throw err;
      this.counters.skippedGops++;
      return null;
    }
  }

  /** A prepared GOP → [init?, fragment]; `aac`: what the caller's encoder made so far (`g711: 'aac'`). */
  write(p: PreparedGop, aac?: AacFromG711): Fmp4Chunk[] {
    try {
      return this.convert(p, aac);
    } catch (err) {
      // A configuration our muxer cannot describe: this GOP is skipped.
      if (!(err instanceof MediaFormatError)) throw err;
      this.counters.skippedGops++;
      return [];
    }
  }

  private read(gop: PsGop): PreparedGop | null {
    const d = demuxPs(gop.bytes, { psm: gop.psm });
    for (const k of Object.keys(d.counters) as (keyof PsCounters)[]) this.counters[k] += d.counters[k];
    const v = d.tracks.find((t) => (t.codec === 'h264' || t.codec === 'h265') && t.samples.length > 0);
    if (!v) {
      this.counters.skippedGops++;
      return null;
    }
    const video = this.videoConfig(v);
    if (!video) {
      this.counters.skippedGops++;
      return null;
    }
    const placed = this.placeVideo(gop, v);
    return { gop, tracks: d.tracks, psm: d.psm, video, ...placed, g711: this.g711 === 'aac' ? this.g711Pieces(d.tracks, placed.lastDts) : [] };
  }

  private convert(p: PreparedGop, aac: AacFromG711 | undefined): Fmp4Chunk[] {
    const out: Fmp4Chunk[] = [];
    const { video } = p;
    const audio = this.audioFor(p.psm, p.tracks, aac?.failure ?? null);
    const key = `${paramsKey(video.params)}|${audio?.key ?? ''}`;
    if (key !== this.initKey || !this.init) {
      const bytes = buildInit(audio ? [video.track, audio.track] : [video.track]);
      this.init = parseInit(bytes);
      this.initKey = key;
      this.audioConfig = audio;
      this.counters.inits++;
      out.push({ kind: 'init', bytes, info: this.init });
    }
    this.video = video;
    out.push(this.fragment(p, aac?.frames ?? []));
    return out;
  }

  /** The video configuration of this GOP (its keyframe's parameter sets, else the one in force). */
  private videoConfig(v: PsTrack): { params: ParameterSets; track: EsTrack } | null {
    const codec = v.codec as 'h264' | 'h265';
    const key = v.samples[0]!.keyframe ? v.samples[0]! : null;
    if (key) {
      const params = parameterSetsIn(codec, splitAnnexB(key.data));
      const complete = params.sps.length > 0 && params.pps.length > 0 && (codec === 'h264' || params.vps.length > 0);
      if (complete) {
        if (this.video && paramsKey(this.video.params) === paramsKey(params)) return this.video;
        try {
          return { params, track: videoTrackFromParams(params, 1, VIDEO_TIMESCALE) };
        } catch (err) {
          if (!(err instanceof MediaFormatError)) throw err;
        }
      }
    }
    // No (readable) parameter sets in band: the configuration in force, if it is this codec's.
    return this.video && this.video.params.codec === codec ? this.video : null;
  }

  /** The audio track to write (and why not, in `audio`). */
  private audioFor(psm: Map<number, number>, tracks: PsTrack[], aacFailure: string | null): AudioConfig | null {
    const declared = [...psm.entries()].filter(([id]) => id >= 0xc0 && id <= 0xdf).sort((a, b) => a[0] - b[0]);
    const a = tracks.find((t) => t.codec === 'aac' || t.codec === 'g711a');
    if (aacFailure !== null && (this.audioConfig?.key === G711_AAC_KEY || a?.codec === 'g711a')) {
      // The encoder failed: video only (a new init without the track), saying why.
      this.audio = {
        source: 'pcm_alaw',
        stored: 'none',
        reason: `G.711 A-law cannot be stored as it is in MP4 and making AAC of it failed (${aacFailure}): video only until the camera's next session`,
      };
      return null;
    }
    if (!a || a.samples.length === 0) {
      // Nothing readable in this GOP: keep the track in force (a GOP without audio).
      if (this.audioConfig) return this.audioConfig;
      const other = declared.find(([, t]) => t !== STREAM_TYPE.AAC && t !== STREAM_TYPE.G711A);
      if (other)
        this.audio = {
          source: audioTypeName(other[1]),
          stored: 'none',
          reason: `${audioTypeName(other[1])} in MPEG-PS is not recorded (AAC and G.711 A-law are)`,
        };
      else if (declared.length === 0) this.audio = { source: null, stored: 'none', reason: 'no audio in the program stream' };
      return null;
    }
    if (a.codec === 'g711a') {
      if (this.g711 === 'aac') {
        this.audio = { source: 'pcm_alaw', stored: 'aac', reason: 'G.711 A-law cannot be stored as it is in MP4: AAC made from it (8 kHz, by ffmpeg)' };
        if (this.audioConfig?.key === G711_AAC_KEY) return this.audioConfig;
        const track = aacTrackFromAsc(G711_AAC_ASC, 2, G711_RATE);
        return { track: { ...track, timescale: G711_RATE }, key: G711_AAC_KEY };
      }
      if (this.g711 === 'drop') {
        this.audio = {
          source: 'pcm_alaw',
          stored: 'none',
          reason: 'G.711 A-law is left out of MP4 segments (browsers cannot play it, and the video with it); record.format "ps" keeps it',
        };
        return null;
      }
      this.audio = { source: 'pcm_alaw', stored: 'copy', reason: 'G.711 A-law stored as sent (stream type 0x90 in PS segments)' };
      if (this.audioConfig?.track.codec === 'g711a') return this.audioConfig;
      return { track: { kind: 'audio', codec: 'g711a', trackId: 2, timescale: 8000, sampleRate: 8000, channels: 1 }, key: 'g711a' };
    }
    const h = readAdts(a.samples[0]!.data, 0);
    if (!h) {
      this.counters.droppedAudio += a.samples.length;
      return this.audioConfig;
    }
    const key = `aac:${h.asc.toString('hex')}`;
    if (this.audioConfig?.key === key) return this.audioConfig;
    try {
      const track = aacTrackFromAsc(h.asc, 2, h.sampleRate);
      this.audio = { source: 'aac', stored: 'copy' };
      return { track: { ...track, timescale: track.sampleRate }, key };
    } catch (err) {
      if (!(err instanceof MediaFormatError)) throw err;
      this.audio = { source: 'aac', stored: 'none', reason: err.message };
      return null;
    }
  }

  /** Places a GOP's video on the output timeline. */
  private placeVideo(gop: PsGop, v: PsTrack): { baseDecodeTime: bigint; samples: MuxSample[]; lastDts: bigint } {
    const s = v.samples;
    // Place the GOP's video on the 64-bit timeline.
    const first = this.ref === null ? s[0]!.dts : nearestUnwrap(this.ref, s[0]!.dts);
    const shift = first - s[0]!.dts;
    this.origin ??= first;
    const last = s[s.length - 1]!.dts + shift;
    let lastDuration = this.lastVideoDuration;
    if (gop.nextDts !== null) {
      const next = nearestUnwrap(last, gop.nextDts);
      if (next > last && next - last <= MAX_FRAME_90K) lastDuration = next - last;
    }
    const samples: MuxSample[] = s.map((x, i) => {
      const next = i + 1 < s.length ? s[i + 1]!.dts : x.dts + lastDuration;
      const duration = next > x.dts ? next - x.dts : 1n;
      return { duration: Number(duration), cto: Number(x.pts - x.dts), keyframe: x.keyframe, data: joinLengthPrefixed(splitAnnexB(x.data)) };
    });
    // The frame interval, for a last frame whose end is not known (the end of input).
    if (s.length >= 2 && s[s.length - 1]!.dts > s[s.length - 2]!.dts) this.lastVideoDuration = s[s.length - 1]!.dts - s[s.length - 2]!.dts;
    this.ref = last;
    return { baseDecodeTime: first - this.origin, samples, lastDts: last };
  }

  /** The G.711 of a GOP on the output timeline (8 kHz samples), for the caller's encoder; before the first video, dropped. */
  private g711Pieces(tracks: PsTrack[], ref: bigint): G711Piece[] {
    const a = tracks.find((t) => t.codec === 'g711a');
    if (!a || a.samples.length === 0) return [];
    const shift = nearestUnwrap(ref, a.samples[0]!.dts) - a.samples[0]!.dts;
    const out: G711Piece[] = [];
    for (const x of a.samples) {
      const t90 = x.dts + shift - this.origin!;
      if (t90 < 0n) {
        this.counters.droppedAudio++;
        continue;
      }
      if (x.data.length > 0) out.push({ at: samplesFrom90k(t90), data: x.data });
    }
    return out;
  }

  private fragment(p: PreparedGop, frames: AacFrame[]): Fmp4Chunk {
    const { samples } = p;
    const runs: MuxTrackRun[] = [{ trackId: 1, baseDecodeTime: p.baseDecodeTime, samples }];
    let audio: MuxTrackRun | null = null;
    if (this.audioConfig?.key === G711_AAC_KEY) audio = this.layAudio(frames.map((f) => ({ at: BigInt(f.at), duration: AAC_FRAME_SAMPLES, data: f.data })));
    else if (this.audioConfig) audio = this.audioRun(p.tracks, p.lastDts);
    if (audio) runs.push(audio);
    const bytes = buildFragment(++this.sequence, runs);
    const moofSize = bytes.readUInt32BE(0);
    const moof = parseMoof(bytes.subarray(0, moofSize), this.init!.trexDefaults);
    this.counters.fragments++;
    return {
      kind: 'fragment',
      bytes,
      moofSize,
      moof,
      durationTicks: samples.reduce((n, x) => n + x.duration, 0),
      timescale: VIDEO_TIMESCALE,
      keyframe: samples[0]!.keyframe,
    };
  }

  /** This GOP's audio samples, laid end to end (see the module comment). */
  private audioRun(tracks: PsTrack[], ref: bigint): MuxTrackRun | null {
    const track = this.audioConfig!.track;
    const want = track.codec === 'aac' ? 'aac' : 'g711a';
    const a = tracks.find((t) => t.codec === want);
    if (!a || a.samples.length === 0) return null;
    const rate = BigInt(track.timescale);
    const shift = nearestUnwrap(ref, a.samples[0]!.dts) - a.samples[0]!.dts;
    const entries: { at: bigint; duration: number; data: Buffer }[] = [];
    for (const x of a.samples) {
      const t90 = x.dts + shift - this.origin!;
      if (t90 < 0n) {
        this.counters.droppedAudio++;
        continue;
      }
      let data: Buffer = x.data;
      let duration: number;
      if (track.codec === 'aac') {
        const h = readAdts(x.data, 0);
        if (!h || h.sampleRate !== track.sampleRate) {
          this.counters.droppedAudio++;
          continue;
        }
        data = x.data.subarray(h.headerBytes, h.frameBytes);
        duration = 1024;
      } else {
        duration = x.data.length;
      }
      if (duration === 0 || data.length === 0) continue;
      entries.push({ at: (t90 * rate) / 90_000n, duration, data });
    }
    return this.layAudio(entries);
  }

  /** Audio samples (times in the track's timescale) laid end to end (see the module comment). */
  private layAudio(entries: { at: bigint; duration: number; data: Buffer }[]): MuxTrackRun | null {
    const rate = BigInt(this.audioConfig!.track.timescale);
    const tolerance = (AUDIO_TOLERANCE_90K * rate) / 90_000n;
    const samples: MuxSample[] = [];
    let base: bigint | null = null;
    for (const { at, duration, data } of entries) {
      let next = this.audioNext ?? at;
      if (at > next + tolerance) {
        // A hole (audio lost or paused): the sample before lasts until this one.
        if (samples.length > 0) samples[samples.length - 1]!.duration += Number(at - next);
        this.counters.audioHoles++;
        next = at;
      } else if (at < next - tolerance) {
        this.counters.droppedAudio++; // overlaps audio already written
        continue;
      }
      base ??= next;
      samples.push({ duration, cto: 0, keyframe: true, data });
      this.audioNext = next + BigInt(duration);
    }
    return base === null ? null : { trackId: 2, baseDecodeTime: base, samples };
  }
}
