/**
 * A camera's RTP video (H.264/H.265) and AAC audio as the fMP4 chunks the rest of
 * ingest consumes (media/mp4/fmp4-splitter.ts's `Fmp4Chunk`), as ffmpeg's output and
 * media/ps/ps-live-fmp4.ts give them: an init whenever the configuration changes, then
 * one fragment (moof+mdat) per GOP, from a keyframe to the frame before the next.
 *
 * Tracks: video track 1 (timescale the RTP clock, 90 kHz), `avc1`/`hvc1` from the
 * parameter sets (the SDP's until the camera sends its own in band); AAC track 2 at
 * its RTP clock (the sample rate). Every keyframe sample carries the parameter sets in
 * band (annexb.ts's invariant: each GOP decodes alone); they are put in front of it
 * when the camera sent them only in the SDP. Frames before the first keyframe, and
 * GOPs while no parameter sets are known, are dropped and counted.
 *
 * Video time: RTP timestamps (32-bit) are unwrapped to the nearest value; the output
 * timeline starts at 0 at the first keyframe. They are presentation times: with
 * B-frames they go back and forth in decode order. Decode times are the GOP's
 * presentation times sorted, moved back by the smallest shift that keeps every decode
 * time at or before its presentation time (the composition offset, trun v1, signed);
 * the shift only grows, and a GOP never starts before the previous one ended. A frame
 * lasts until the next one's decode time; the last of a GOP until the next keyframe's.
 *
 * Audio time: each track's RTP clock starts at its own random value. Once both tracks
 * have an RTCP sender report (`anchor`), audio is placed on the camera's wall clock
 * against the video; before that, the first audio frame is placed at the video time of
 * its arrival (the presentation time of the last video frame received: as ffmpeg does
 * until RTCP, off by the network's jitter), and the ones after by their RTP distance
 * from it. A frame lasts 1024 samples of the ASC's rate, in the track's timescale (the
 * RTP clock, which cameras make the sample rate). Frames are laid end to end and re-placed on
 * that time only when they drift from it by more than AUDIO_TOLERANCE_MS (a hole
 * lengthens the sample before it, audio overlapping what is written is dropped), so
 * rounding never makes gaps or overlaps. Audio before the first keyframe is dropped.
 *
 * Init: before the first fragment and whenever the GOP's parameter sets differ from
 * the last init's (in band, or the SDP's). The audio configuration is the SDP's and is
 * fixed for a session (a new SDP is a new RtpFmp4, whose first fragment has an init).
 *
 * Memory: the video is rebuilt in one NalArena per camera (no Buffer per packet, NAL
 * unit or frame; it grows by doubling and never shrinks). Per GOP: the fragment
 * buildFragment writes (one Buffer the consumers keep: pre-record, live view), its
 * parsed moof, one small object per frame (MuxSample), the parameter sets of a keyframe
 * that carries them (copies, a few hundred bytes) and, when the camera sends them only
 * in the SDP, the bytes put in front of its keyframe. Audio frames are small copies.
 * Bounds: a GOP over `maxGopBytes` or `maxGopFrames` is cut there (written as it is,
 * counted in `cutGops`); the frames after it, up to the next keyframe, are dropped
 * (they would not decode alone).
 *
 * Errors: nothing a camera sends makes video()/audio()/end() throw: what cannot be
 * read is skipped and counted.
 */
import { joinLengthPrefixed, type ParameterSets } from '../codec/annexb.ts';
import { aacTrackFromAsc, videoTrackFromParams, type EsTrack } from '../codec/codec-config.ts';
import type { Fmp4Chunk } from '../mp4/fmp4-splitter.ts';
import { buildFragment, buildInit, type MuxSample, type MuxTrackRun } from '../mp4/fmp4-mux.ts';
import { parseInit, type InitInfo } from '../mp4/init-info.ts';
import { parseMoof } from '../mp4/moof.ts';
import { MediaFormatError } from '../media-error.ts';
import { AAC_FRAME_SAMPLES, AacDepacketizer, type AacDepacketizerCounters } from './aac-depacketizer.ts';
import { H26xDepacketizer, type AccessUnit, type DepacketizerCounters } from './h26x-depacketizer.ts';
import { NalArena } from './nal-arena.ts';
import type { RtpAudioConfig, RtpVideoConfig } from './rtp-config.ts';

/** Audio further than this from where its clock puts it is re-placed. */
export const AUDIO_TOLERANCE_MS = 50;
/** A last-frame duration beyond this (a camera paused) is not believed. */
const MAX_FRAME_MS = 10_000;
const INITIAL_ARENA_BYTES = 1024 * 1024;
export const MAX_GOP_BYTES = 64 * 1024 * 1024;
/** 5 minutes at 100 fps: beyond any camera's GOP; bounds the per-frame objects held. */
export const MAX_GOP_FRAMES = 30_000;

export interface RtpFmp4Options {
  /** Largest GOP held (default MAX_GOP_BYTES, 64 MiB): the arena's bound. */
  maxGopBytes?: number;
  /** Most frames in a GOP (default MAX_GOP_FRAMES). */
  maxGopFrames?: number;
}

export interface RtpFmp4Counters extends DepacketizerCounters {
  gops: number;
  inits: number;
  /** Frames before the first keyframe (or after a dropped GOP), dropped. */
  framesBeforeKeyframe: number;
  /** GOPs dropped: no parameter sets known, or unreadable ones. */
  skippedGops: number;
  /** GOPs cut short at maxGopBytes / maxGopFrames. */
  cutGops: number;
  audio: AacDepacketizerCounters;
  /** Audio frames dropped: before the first video, or overlapping what is written. */
  droppedAudio: number;
  /** Holes in the audio bridged by lengthening the frame before. */
  audioHoles: number;
}

interface VideoSample {
  start: number;
  size: number;
  /** Presentation time, unwrapped, before the origin is taken off. */
  pts: number;
  keyframe: boolean;
}

interface AudioSample {
  /** Placed decode time, in the audio clock, on the output timeline before `offset` is added. */
  at: number;
  duration: number;
  data: Buffer;
}

interface Anchor {
  rtp: number;
  ntpMs: number;
}

/** `a - b` of two 32-bit RTP timestamps, as the nearest signed difference. */
function diff32(a: number, b: number): number {
  return (a - b) | 0;
}

function paramsKey(p: ParameterSets): string {
  return [...p.vps, ...p.sps, ...p.pps].map((b) => b.toString('hex')).join('.');
}

export class RtpFmp4 {
  readonly counters: RtpFmp4Counters;
  private readonly arena: NalArena;
  private readonly depacketizer: H26xDepacketizer;
  private readonly aac: AacDepacketizer | null;
  private readonly audioTrack: EsTrack | null;
  private params: ParameterSets;
  /** Chunks made by the packet being handled. */
  private out: Fmp4Chunk[] = [];
  private samples: VideoSample[] = [];
  private gopParams: ParameterSets | null = null;
  private initKey = '';
  private init: InitInfo | null = null;
  private sequence = 0;
  /** The first keyframe's presentation time: output time 0. */
  private origin: number | null = null;
  /** The last video RTP timestamp and its unwrapped value. */
  private lastTs = 0;
  private lastPts: number | null = null;
  private shift = 0;
  /**
   * Added to every output time: the first GOP's decode times would start before 0 with
   * B-frames (the first frames shown after the keyframe are decoded before it is shown).
   */
  private offset = 0;
  /** Where the last fragment's video ended (output decode time). */
  private videoEnd = 0;
  private audioPending: AudioSample[] = [];
  /** Where the next audio frame goes if laid end to end; null before the first. */
  private audioNext: number | null = null;
  /** Before sender reports: the first audio frame's RTP time and the video time (from the origin) it was placed at. */
  private arrival: { rtp: number; at90k: number } | null = null;
  private videoSr: Anchor | null = null;
  private audioSr: Anchor | null = null;
  /** One AAC frame's duration in the audio track's timescale (the RTP clock). */
  private readonly audioFrameTicks: number = AAC_FRAME_SAMPLES;
  private readonly maxGopFrames: number;

  /** `audioConfig` null: video only. Throws MediaFormatError only for an AAC configuration audioConfig() would have refused. */
  constructor(
    private readonly videoConfig: RtpVideoConfig,
    private readonly audioConfig: RtpAudioConfig | null,
    opts: RtpFmp4Options = {},
  ) {
    this.params = videoConfig.params;
    this.maxGopFrames = opts.maxGopFrames ?? MAX_GOP_FRAMES;
    const maxGopBytes = opts.maxGopBytes ?? MAX_GOP_BYTES;
    this.arena = new NalArena(Math.min(INITIAL_ARENA_BYTES, maxGopBytes), maxGopBytes);
    this.depacketizer = new H26xDepacketizer(videoConfig.codec, this.arena, (u) => this.unit(u));
    this.audioTrack = audioConfig ? aacTrackFromAsc(audioConfig.asc, 2, audioConfig.clockRate) : null;
    if (audioConfig && this.audioTrack?.kind === 'audio' && this.audioTrack.codec === 'aac') {
      this.audioFrameTicks = Math.round((AAC_FRAME_SAMPLES * audioConfig.clockRate) / this.audioTrack.sampleRate);
    }
    this.aac = audioConfig ? new AacDepacketizer(audioConfig, (ts, data) => this.audioFrame(ts, data), this.audioFrameTicks) : null;
    this.counters = {
      ...this.depacketizer.counters,
      gops: 0,
      inits: 0,
      framesBeforeKeyframe: 0,
      skippedGops: 0,
      cutGops: 0,
      audio: this.aac?.counters ?? { frames: 0, badPackets: 0, droppedFrames: 0 },
      droppedAudio: 0,
      audioHoles: 0,
    };
  }

  /** Whether the audio track is recorded (an AAC configuration that reads). */
  get hasAudio(): boolean {
    return this.audioTrack !== null;
  }

  /** One video RTP packet's payload (in sequence order); the chunks it completes. */
  video(payload: Buffer, rtpTimestamp: number, marker: boolean, gap: boolean): Fmp4Chunk[] {
    this.out = [];
    const full = this.depacketizer.counters.oversizedUnits;
    this.depacketizer.push(payload, rtpTimestamp, marker, gap);
    if (this.depacketizer.counters.oversizedUnits > full && this.depacketizer.arenaFull && this.samples.length > 0) {
      // The GOP outgrew maxGopBytes: written as it is; up to the next keyframe, frames are dropped.
      this.counters.cutGops++;
      this.cut(null, this.arena.used, false);
    }
    Object.assign(this.counters, this.depacketizer.counters);
    return this.out;
  }

  /** One audio RTP packet's payload (in sequence order; `marker` ends a fragmented AU); its frames wait for their GOP. */
  audio(payload: Buffer, rtpTimestamp: number, marker: boolean, gap: boolean): void {
    this.aac?.push(payload, rtpTimestamp, marker, gap);
  }

  /** A sender report of a track: its RTP time `rtp` was the camera's wall clock `ntpMs`. */
  anchor(track: 'video' | 'audio', rtp: number, ntpMs: number): void {
    if (track === 'video') this.videoSr = { rtp, ntpMs };
    else this.audioSr = { rtp, ntpMs };
  }

  /** The camera hung up: the GOP held is whole up to its last frame. */
  end(): Fmp4Chunk[] {
    this.out = [];
    this.depacketizer.flush();
    if (this.samples.length > 0) this.cut(null, this.arena.used, true);
    return this.out;
  }

  private unwrap(ts: number): number {
    const pts = this.lastPts === null ? ts : this.lastPts + diff32(ts, this.lastTs);
    this.lastTs = ts;
    this.lastPts = pts;
    return pts;
  }

  private unit(u: AccessUnit): void {
    const pts = this.unwrap(u.rtpTimestamp);
    if (u.params) {
      // In-band parameter sets replace the SDP's (a camera may change them at a keyframe).
      const merged: ParameterSets = {
        codec: this.videoConfig.codec,
        vps: u.params.vps.length > 0 ? u.params.vps : this.params.vps,
        sps: u.params.sps.length > 0 ? u.params.sps : this.params.sps,
        pps: u.params.pps.length > 0 ? u.params.pps : this.params.pps,
      };
      if (paramsKey(merged) !== paramsKey(this.params)) this.params = merged;
    }
    if (!u.vcl) {
      // Parameter sets (or SEI) sent with a timestamp of their own: not a frame.
      this.arena.used = u.start;
      return;
    }
    if (u.keyframe) {
      let start = u.start;
      if (this.samples.length > 0) start -= this.cut(pts, u.start, false);
      else if (start > 0) start -= this.arena.moveToStart(start); // bytes of dropped frames before it
      if (!this.startGop(start, u)) return;
      this.samples.push({ start, size: this.arena.used - start, pts, keyframe: true });
      this.origin ??= pts;
      return;
    }
    if (this.samples.length >= this.maxGopFrames) {
      // A GOP that never ends: written as it is; this frame and the ones up to the next
      // keyframe are dropped (the arena is left empty: this frame's bytes were its last).
      this.counters.cutGops++;
      this.cut(pts, u.end, false);
      this.counters.framesBeforeKeyframe++;
      return;
    }
    if (this.samples.length === 0) {
      this.counters.framesBeforeKeyframe++;
      this.arena.used = u.start;
      return;
    }
    this.samples.push({ start: u.start, size: u.end - u.start, pts, keyframe: false });
  }

  /** Checks that a GOP can start with the keyframe at `start` (parameter sets known, in band). */
  private startGop(start: number, u: AccessUnit): boolean {
    const p = this.params;
    const missing = p.sps.length === 0 || p.pps.length === 0 || (p.codec === 'h265' && p.vps.length === 0);
    // Not all of them in band (none, or the camera repeats only some): the whole set goes in
    // front, so the sample decodes alone; repeating one it carries does no harm.
    const inBand = u.params !== null && u.params.sps.length > 0 && u.params.pps.length > 0 && (p.codec === 'h264' || u.params.vps.length > 0);
    if (missing || (!inBand && !this.arena.insert(start, this.paramBytes(p)))) {
      this.counters.skippedGops++;
      this.counters.framesBeforeKeyframe++;
      this.arena.used = start;
      return false;
    }
    this.gopParams = p;
    return true;
  }

  /** The parameter sets as length-prefixed NAL units, to put in front of a keyframe. */
  private paramBytes(p: ParameterSets): Buffer {
    return joinLengthPrefixed([...p.vps, ...p.sps, ...p.pps]);
  }

  /**
   * Writes the GOP held as one fragment (with an init first when the configuration
   * changed). `nextPts`: the next frame's presentation time (null when unknown: the
   * end, or a GOP cut at maxGopBytes); `keep`: where the next keyframe's sample starts in
   * the arena, moved to its start; `allAudio`: write every audio frame held (the end),
   * not only those within the video written. Returns how far `keep` moved.
   */
  private cut(nextPts: number | null, keep: number, allAudio: boolean): number {
    const samples = this.samples;
    this.samples = [];
    const clock = this.videoConfig.clockRate;
    try {
      const origin = this.origin!;
      const first = this.sequence === 0;
      let pts = samples.map((s) => s.pts - origin + this.offset);
      const sorted = [...pts].sort((a, b) => a - b);
      for (let i = 0; i < pts.length; i++) this.shift = Math.max(this.shift, sorted[i]! - pts[i]!);
      let dts = sorted.map((p) => p - this.shift);
      if (first && dts[0]! < 0) {
        const by = -dts[0]!;
        this.offset += by;
        pts = pts.map((p) => p + by);
        dts = dts.map((d) => d + by);
      }
      dts[0] = Math.max(dts[0]!, this.videoEnd);
      for (let i = 1; i < dts.length; i++) dts[i] = Math.max(dts[i]!, dts[i - 1]! + 1);
      const last = dts.length - 1;
      const maxFrame = (MAX_FRAME_MS * clock) / 1000;
      let lastDuration = nextPts === null ? 0 : nextPts - origin + this.offset - this.shift - dts[last]!;
      if (lastDuration <= 0 || lastDuration > maxFrame) lastDuration = last > 0 ? dts[last]! - dts[last - 1]! : clock / 25;
      const muxed: MuxSample[] = samples.map((s, i) => ({
        duration: i < last ? dts[i + 1]! - dts[i]! : lastDuration,
        cto: pts[i]! - dts[i]!,
        keyframe: s.keyframe,
        data: this.arena.buf.subarray(s.start, s.start + s.size),
      }));
      this.videoEnd = dts[last]! + lastDuration;
      const runs: MuxTrackRun[] = [{ trackId: 1, baseDecodeTime: BigInt(dts[0]), samples: muxed }];
      const audio = this.audioRun(allAudio);
      if (audio) runs.push(audio);
      this.emitInit(this.gopParams!);
      const bytes = buildFragment(++this.sequence, runs);
      const moofSize = bytes.readUInt32BE(0);
      this.out.push({
        kind: 'fragment',
        bytes,
        moofSize,
        moof: parseMoof(bytes.subarray(0, moofSize), this.init!.trexDefaults),
        durationTicks: this.videoEnd - dts[0],
        timescale: clock,
        keyframe: true,
      });
      this.counters.gops++;
    } catch (err) {
      // Parameter sets that do not parse (no init can be made): the GOP is dropped.
      if (!(err instanceof MediaFormatError)) throw err;
      this.counters.skippedGops++;
      this.initKey = '';
    }
    return this.arena.moveToStart(keep);
  }

  private emitInit(params: ParameterSets): void {
    const key = paramsKey(params);
    if (key === this.initKey && this.init) return;
    const tracks: EsTrack[] = [videoTrackFromParams(params, 1, this.videoConfig.clockRate)];
    if (this.audioTrack) tracks.push(this.audioTrack);
    const bytes = buildInit(tracks);
    this.init = parseInit(bytes);
    this.initKey = key;
    this.counters.inits++;
    this.out.push({ kind: 'init', bytes, info: this.init });
  }

  /** Audio frames that start within the video written so far (`all`: every one held, at the end), as one run. */
  private audioRun(all: boolean): MuxTrackRun | null {
    if (!this.audioConfig || this.audioPending.length === 0) return null;
    const rate = this.audioConfig.clockRate;
    const offset = (this.offset * rate) / this.videoConfig.clockRate;
    const endAt = (this.videoEnd * rate) / this.videoConfig.clockRate - offset;
    let n = 0;
    while (n < this.audioPending.length && (all || this.audioPending[n]!.at < endAt)) n++;
    if (n === 0) return null;
    const taken = this.audioPending.splice(0, n);
    return {
      trackId: 2,
      baseDecodeTime: BigInt(Math.round(taken[0]!.at + offset)),
      samples: taken.map((a) => ({ duration: a.duration, cto: 0, keyframe: true, data: a.data })),
    };
  }

  /**
   * Where an audio frame of RTP time `rtp` belongs, in the audio clock, from the video's
   * origin (the first keyframe's presentation time; `offset` is added when it is
   * written, as it is fixed only when the first GOP is cut); null before the video starts.
   */
  private audioTime(rtp: number): number | null {
    const rate = this.audioConfig!.clockRate;
    const clock = this.videoConfig.clockRate;
    if (this.origin === null || this.lastPts === null) return null;
    if (this.videoSr && this.audioSr) {
      const wallMs = this.audioSr.ntpMs + (diff32(rtp, this.audioSr.rtp) * 1000) / rate;
      const videoPts = this.lastPts + diff32(this.videoSr.rtp, this.lastTs) + ((wallMs - this.videoSr.ntpMs) * clock) / 1000;
      return Math.round(((videoPts - this.origin) * rate) / clock);
    }
    this.arrival ??= { rtp, at90k: this.lastPts - this.origin };
    return Math.round((this.arrival.at90k * rate) / clock) + diff32(rtp, this.arrival.rtp);
  }

  private audioFrame(rtp: number, data: Buffer): void {
    const at = this.audioTime(rtp);
    if (at === null || at < 0) return void this.counters.droppedAudio++;
    const rate = this.audioConfig!.clockRate;
    const tolerance = (AUDIO_TOLERANCE_MS * rate) / 1000;
    let place = this.audioNext ?? at;
    if (at > place + tolerance) {
      // A hole: the frame before lasts until this one, when it is still held.
      const before = this.audioPending[this.audioPending.length - 1];
      if (before) before.duration += Math.round(at - place);
      this.counters.audioHoles++;
      place = at;
    } else if (at < place - tolerance) {
      this.counters.droppedAudio++; // overlaps audio already placed
      return;
    }
    this.audioPending.push({ at: place, duration: this.audioFrameTicks, data });
    this.audioNext = place + this.audioFrameTicks;
  }
}
