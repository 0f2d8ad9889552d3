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
 * Video time: RTP timestamps (32-bit) are unwrapped frame to frame to the nearest
 * value (RtpTimeline); the output timeline starts at 0 at the first keyframe. They are
 * presentation times: with B-frames they go back and forth in decode order, but never
 * further back than the reordering seen (twice; 2 frames without B-frames), or up to
 * what a decoder reorders (MAX_REORDER_FRAMES) into a place no recent frame took, nor
 * further ahead than MAX_FRAME_MS. A timestamp beyond these (the camera's clock
 * stepped, its encoder restarted) or from a new SSRC is taken as one typical frame
 * interval after the newest frame, plus the reordering seen unless it is a keyframe
 * (re-based, counted in `videoRebases`), so that a step never shows:
 * decode times keep increasing by about a frame (without re-basing, a step back made
 * every later frame last 1 tick, and a jump made one frame last the jump). The typical
 * frame interval is the GOP held's presentation span over its frames (else the last
 * GOP's). Wall-clock time is not the fMP4's business: storage/segment-writer.ts anchors
 * fragments on arrival and re-anchors on drift. Decode times are the GOP's
 * presentation times sorted, moved back by the smallest shift that keeps every decode
 * time at or before its presentation time (the composition offset, trun v1, signed);
 * the shift only grows, and a GOP never starts before the previous one ended. A frame
 * lasts until the next one's decode time; the last of a GOP until the next keyframe's.
 * A frame is known whole when a packet of another timestamp comes (h26x-depacketizer.ts:
 * the marker bit may be on every slice), so a GOP is written one packet after its next
 * keyframe; end() writes the last one.
 *
 * Audio time: each track's RTP clock starts at its own random value. Once both tracks
 * have an RTCP sender report (`anchor`), audio is placed on the camera's wall clock
 * against the video; before that, the first audio frame is placed at the video time of
 * its arrival (the newest video packet's timestamp on the video timeline: as ffmpeg does
 * until RTCP, off by the network's jitter and up to a frame interval), and the ones after by their RTP distance
 * from it, unwrapped frame to frame like the video (so it never flips sign: a fixed
 * 32-bit difference did after 2^31 ticks, 12 h at 48 kHz; a step of its clock is
 * re-based, counted in `audioRebases`). Invariant: audio is placed within
 * AUDIO_RESYNC_MS and two video frame intervals of the video time of its arrival. Sender reports that put it further
 * (stale after a clock step, or wrong) are not followed, and the arrival reference is
 * moved to the frame's arrival when it drifts that far (counted in `audioReanchors`);
 * audio held past the new place is dropped. A frame lasts 1024 samples of the ASC's
 * rate, in the track's timescale (the RTP clock, which cameras make the sample rate).
 * Frames are laid end to end and re-placed on that time only when they drift from it
 * by more than AUDIO_TOLERANCE_MS (a hole lengthens the sample before it, audio
 * overlapping what is written is dropped), so rounding never makes gaps or overlaps.
 * Audio before the first keyframe is dropped. Audio waits for the fragment of the GOP
 * it falls in: at most `maxPendingAudio` frames (the oldest are dropped, counted in
 * `overflowAudio`).
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
/** Audio placed further than this from the video time of its arrival is re-anchored there. */
export const AUDIO_RESYNC_MS = 2_000;
/**
 * Audio whose timestamp goes back less than this is a late or repeated packet (dropped
 * as overlapping what is placed; the frames after it are unaffected); further back, its
 * clock stepped: re-based.
 */
const AUDIO_STEP_BACK_MS = 1_000;
/** A frame duration beyond this (a camera paused) is not believed: a timestamp further ahead is re-based. */
const MAX_FRAME_MS = 10_000;
/**
 * The most frames a decoder reorders (the largest H.264/H.265 DPB): in decode order a
 * frame is never shown this many frames before the newest one shown; further back is a
 * clock step.
 */
const MAX_REORDER_FRAMES = 16;
/** The frame interval assumed before one is measured (25 fps). */
const DEFAULT_FPS = 25;
/** Most audio frames waiting for their GOP: about 3 minutes at 48 kHz, 9 at 16 kHz (a few MB at most). */
export const MAX_PENDING_AUDIO = 8192;
const INITIAL_ARENA_BYTES = 1024 * 1024;
export const MAX_GOP_BYTES = 64 * 1024 * 1024;
/** 5 minutes at 100 fps: beyond any camera's GOP; bounds the per-frame objects held. */
export const MAX_GOP_FRAMES = 30_000;

export interface RtpFmp4Options {
  /** Largest GOP held (default MAX_GOP_BYTES, 64 MiB): the arena's bound. */
  maxGopBytes?: number;
  /** Most frames in a GOP (default MAX_GOP_FRAMES). */
  maxGopFrames?: number;
  /** Most audio frames held waiting for their GOP (default MAX_PENDING_AUDIO). */
  maxPendingAudio?: number;
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
  /** Audio frames dropped, oldest first, because more than maxPendingAudio waited for their GOP. */
  overflowAudio: number;
  /** Video timestamps that stepped (back, or ahead by more than MAX_FRAME_MS) or came from a new SSRC: re-based. */
  videoRebases: number;
  /** The same for audio timestamps (back by more than AUDIO_STEP_BACK_MS, or ahead by more than MAX_FRAME_MS, or a new SSRC). */
  audioRebases: number;
  /** Audio re-anchored at its arrival: placed more than AUDIO_RESYNC_MS from the video. */
  audioReanchors: number;
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

/** How far a track's timestamps may move from the newest one before they are taken as a step (ticks). */
interface StepBounds {
  /** Behind the newest (B-frames as deep as seen; a late audio packet): taken as they are. */
  back: number;
  /**
   * Further behind, up to this (0: none): taken only when it lands in a hole among the
   * recent values (no recent value within `hole`): a B-frame deeper than any seen fills
   * a place no frame took, a clock step lands on places frames already took.
   */
  reorder: number;
  hole: number;
  /** Ahead of the newest. */
  ahead: number;
  /**
   * Where a step continues, after the newest: one typical frame interval, and the
   * reorder depth seen for a frame that frames after it in decode order may be shown
   * before (not a keyframe).
   */
  frame: number;
}

/** Recent values kept for the hole test (StepBounds.reorder): more than the deepest reorder at 60 fps. */
const RECENT_VALUES = 64;

/**
 * One track's 32-bit RTP timestamps as a timeline that goes on: each is unwrapped from
 * the one before (their nearest signed difference, so 2^32 wraps do not show). One that
 * lands more than `back` behind (and is no reordering: StepBounds.reorder) or `ahead`
 * in front of the newest value given (a clock step, an encoder restart), and the first
 * after restart() (a new SSRC), is re-based: taken as `frame` after the newest (the
 * caller adds the deepest reordering seen, `depth`, so that the frames after it in
 * decode order shown before it, B-frames, still come after the newest shown before the
 * step), and the ones after it follow from it. Invariant: no value is more than `reorder` (or
 * `back`) behind, or `ahead` in front of, the newest before it.
 */
export class RtpTimeline {
  rebases = 0;
  /** The last timestamp given, and its value on the timeline (null before the first). */
  lastTs = 0;
  last: number | null = null;
  /** The highest value given. */
  newest = 0;
  /** The furthest a value taken as it is has been behind the newest (reordering seen, ticks; only when StepBounds.reorder > 0). */
  depth = 0;
  private restarted = false;
  /** The last RECENT_VALUES values (a ring), for the hole test. */
  private readonly recent: number[] = [];
  private recentAt = 0;

  next(ts: number, b: StepBounds): number {
    if (this.last === null) {
      this.newest = ts;
      return this.take(ts, ts);
    }
    let value = this.last + diff32(ts, this.lastTs);
    const behind = this.newest - value;
    if (this.restarted || behind > Math.max(b.back, b.reorder) || value > this.newest + b.ahead || (behind > b.back && !this.inHole(value, b.hole))) {
      value = this.newest + b.frame;
      this.rebases++;
    } else if (b.reorder > 0 && behind > this.depth) {
      this.depth = behind; // (a track that does not reorder, audio, has none: a late packet is no depth)
    }
    this.restarted = false;
    this.newest = Math.max(this.newest, value);
    return this.take(ts, value);
  }

  /**
   * What next(ts) would give, without taking it (a packet of a frame not yet whole):
   * the newest value when it would be re-based or lands behind it.
   */
  peek(ts: number, b: StepBounds): number | null {
    if (this.last === null) return null;
    const value = this.last + diff32(ts, this.lastTs);
    if (this.restarted || value > this.newest + b.ahead || value < this.newest) return this.newest;
    return value;
  }

  /** No recent value within `hole` of `value`. */
  private inHole(value: number, hole: number): boolean {
    return this.recent.every((v) => Math.abs(v - value) >= hole);
  }

  private take(ts: number, value: number): number {
    this.lastTs = ts;
    this.last = value;
    this.recent[this.recentAt] = value;
    this.recentAt = (this.recentAt + 1) % RECENT_VALUES;
    return value;
  }

  /** The timestamps start again from another origin (a new SSRC): the next is re-based. */
  restart(): void {
    this.restarted = this.last !== null;
  }
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
  /** Video presentation times, unwrapped and re-based (`last`: the last frame's). */
  private readonly videoClock = new RtpTimeline();
  /** One typical frame interval of the last GOP written (90 kHz ticks): where a re-based timestamp continues. */
  private frameTicks: number;
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
  /** Where the audio written so far ends (as `at`); null before any. */
  private audioWritten: number | null = null;
  /** Audio RTP times, unwrapped frame to frame and re-based like the video's. */
  private readonly audioClock = new RtpTimeline();
  /**
   * Where audio is placed without (believable) sender reports: the unwrapped audio time
   * `u` was placed at `at` (audio clock, from the origin); the ones after by their
   * distance from it.
   */
  private arrival: { u: number; at: number } | null = null;
  /** The newest video packet's RTP timestamp (its frame may not be whole yet); null before any. */
  private videoPacketTs: number | null = null;
  private videoSr: Anchor | null = null;
  private audioSr: Anchor | null = null;
  /** The SSRC of each track's last packet, when the caller gives it; null before. */
  private videoSsrc: number | null = null;
  private audioSsrc: number | null = null;
  /** One AAC frame's duration in the audio track's timescale (the RTP clock). */
  private readonly audioFrameTicks: number = AAC_FRAME_SAMPLES;
  private readonly maxGopFrames: number;
  private readonly maxPendingAudio: number;

  /** `audioConfig` null: video only. Throws MediaFormatError only for an AAC configuration audioConfig() would have refused. */
  constructor(
    private readonly videoConfig: RtpVideoConfig,
    private readonly audioConfig: RtpAudioConfig | null,
    opts: RtpFmp4Options = {},
  ) {
    this.params = videoConfig.params;
    this.maxGopFrames = opts.maxGopFrames ?? MAX_GOP_FRAMES;
    this.maxPendingAudio = Math.max(1, opts.maxPendingAudio ?? MAX_PENDING_AUDIO);
    this.frameTicks = Math.round(videoConfig.clockRate / DEFAULT_FPS);
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
      overflowAudio: 0,
      videoRebases: 0,
      audioRebases: 0,
      audioReanchors: 0,
    };
  }

  /** Whether the audio track is recorded (an AAC configuration that reads). */
  get hasAudio(): boolean {
    return this.audioTrack !== null;
  }

  /**
   * One video RTP packet's payload (in sequence order); the chunks it completes. `ssrc`
   * (optional): the packet's source; when it changes, the unit in progress ends and the
   * timestamps are re-based (a new source's clock has nothing to do with the old one's).
   */
  video(payload: Buffer, rtpTimestamp: number, marker: boolean, gap: boolean, ssrc?: number): Fmp4Chunk[] {
    this.out = [];
    this.videoPacketTs = rtpTimestamp;
    if (this.newSource('video', ssrc)) {
      this.depacketizer.flush();
      this.videoClock.restart();
    }
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

  /** One audio RTP packet's payload (in sequence order; `marker` ends a fragmented AU); its frames wait for their GOP. `ssrc`: as for video(). */
  audio(payload: Buffer, rtpTimestamp: number, marker: boolean, gap: boolean, ssrc?: number): void {
    if (!this.aac) return;
    const restart = this.newSource('audio', ssrc);
    if (restart) this.audioClock.restart();
    // A fragmented AU of the old source cannot go on in the new one: as after a loss.
    this.aac.push(payload, rtpTimestamp, marker, gap || restart);
  }

  /**
   * Notes the SSRC of a track's packet; true when it differs from the one before (not
   * for the first). The old source's sender report no longer applies: forgotten.
   */
  private newSource(track: 'video' | 'audio', ssrc: number | undefined): boolean {
    if (ssrc === undefined) return false;
    const before = track === 'video' ? this.videoSsrc : this.audioSsrc;
    if (track === 'video') this.videoSsrc = ssrc;
    else this.audioSsrc = ssrc;
    if (before === null || before === ssrc) return false;
    if (track === 'video') this.videoSr = null;
    else this.audioSr = null;
    return true;
  }

  /**
   * A sender report of a track: its RTP time `rtp` was the camera's wall clock `ntpMs`.
   * `ssrc` (optional): the report's source; one of another source than the track's
   * packets (a late report of a source replaced) is ignored.
   */
  anchor(track: 'video' | 'audio', rtp: number, ntpMs: number, ssrc?: number): void {
    const current = track === 'video' ? this.videoSsrc : this.audioSsrc;
    if (ssrc !== undefined && current !== null && ssrc !== current) return;
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

  /** A frame's presentation time: its RTP timestamp unwrapped, re-based on a step (see the module comment). */
  private unwrap(ts: number, keyframe: boolean): number {
    const frame = this.typicalFrame();
    const pts = this.videoClock.next(ts, this.videoBounds(frame, keyframe));
    this.counters.videoRebases = this.videoClock.rebases;
    return pts;
  }

  /**
   * The video's step bounds, `frame` one typical frame interval. Behind the newest: as
   * far as reordering was seen (twice, and half a frame of jitter; 2 frames at least)
   * without question; further, up to a decoder's deepest reordering (half a second at
   * least: a frame interval measured short must not make B-frames look like steps),
   * only into a hole (a B-frame deeper than any before: the first ones of a stream). A
   * stream without B-frames thus re-bases a step back of more than 2 frames. A step
   * continues a frame after the newest, and after the reordering seen unless at a
   * keyframe (`keyframe`: nothing after it in decode order is shown before it).
   */
  private videoBounds(frame: number, keyframe: boolean): StepBounds {
    const clock = this.videoConfig.clockRate;
    return {
      back: Math.max(2 * frame, 2 * this.videoClock.depth + frame / 2),
      reorder: Math.max(MAX_REORDER_FRAMES * frame, clock / 2),
      hole: (3 * frame) / 4,
      ahead: (MAX_FRAME_MS * clock) / 1000,
      frame: keyframe ? frame : frame + this.videoClock.depth,
    };
  }

  /**
   * One frame interval, as the GOP held shows it so far (its presentation times span
   * over its frames: B-frames' order does not matter), else as the last GOP written did.
   */
  private typicalFrame(): number {
    const n = this.samples.length;
    const newest = this.videoClock.newest;
    if (n >= 2 && newest > this.samples[0]!.pts) return Math.max(1, Math.round((newest - this.samples[0]!.pts) / (n - 1)));
    return this.frameTicks;
  }

  private unit(u: AccessUnit): void {
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
      // Parameter sets (or SEI) sent with a timestamp of their own: not a frame (nor a
      // time: a camera may stamp them with anything).
      this.arena.used = u.start;
      return;
    }
    const pts = this.unwrap(u.rtpTimestamp, u.keyframe);
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
      if (sorted.length >= 2 && sorted[sorted.length - 1]! > sorted[0]!) {
        this.frameTicks = Math.max(1, Math.round((sorted[sorted.length - 1]! - sorted[0]!) / (sorted.length - 1)));
      }
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
    const last = taken[taken.length - 1]!;
    this.audioWritten = last.at + last.duration;
    return {
      trackId: 2,
      baseDecodeTime: BigInt(Math.round(taken[0]!.at + offset)),
      samples: taken.map((a) => ({ duration: a.duration, cto: 0, keyframe: true, data: a.data })),
    };
  }

  /**
   * The video time now (from the origin), in the audio clock; null before the video
   * starts: the newest video packet's timestamp on the video timeline (a frame is known
   * whole only at the next frame's first packet: the last whole frame is a frame
   * interval old), never before the newest frame (a B-frame's packet: the encoder
   * waited for the frames shown after it).
   */
  private videoNow(): number | null {
    if (this.origin === null || this.videoPacketTs === null) return null;
    const now = this.videoClock.peek(this.videoPacketTs, this.videoBounds(this.typicalFrame(), false));
    if (now === null) return null;
    return Math.round(((now - this.origin) * this.audioConfig!.clockRate) / this.videoConfig.clockRate);
  }

  /**
   * How far audio may be placed from the video time of its arrival (audio clock ticks):
   * AUDIO_RESYNC_MS, and twice the video frame interval (the video time moves by whole
   * frames: at 1/3 fps it is up to 3 s behind the audio's arrival). The frame interval
   * is the typical one, or the newest packet's distance from the last whole frame when
   * longer (the first GOP's frame interval is not measured yet).
   */
  private audioSlack(): number {
    const rate = this.audioConfig!.clockRate;
    const clock = this.videoConfig.clockRate;
    let frame = this.typicalFrame();
    const last = this.videoClock.last;
    if (this.videoPacketTs !== null && last !== null)
      frame = Math.max(frame, (this.videoClock.peek(this.videoPacketTs, this.videoBounds(frame, false)) ?? last) - last);
    return (AUDIO_RESYNC_MS * rate) / 1000 + (2 * frame * rate) / clock;
  }

  /**
   * Where an audio frame of RTP time `rtp` belongs, in the audio clock, from the video's
   * origin (the first keyframe's presentation time; `offset` is added when it is
   * written, as it is fixed only when the first GOP is cut); null before the video
   * starts. Within AUDIO_RESYNC_MS of the video time of its arrival (see the module comment).
   */
  private audioTime(rtp: number): number | null {
    const rate = this.audioConfig!.clockRate;
    // Every frame goes through the audio timeline, so that it is unwrapped frame to frame.
    const u = this.audioClock.next(rtp, {
      back: (AUDIO_STEP_BACK_MS * rate) / 1000,
      reorder: 0,
      hole: 0,
      ahead: (MAX_FRAME_MS * rate) / 1000,
      frame: this.audioFrameTicks,
    });
    const now = this.videoNow();
    if (now === null) return null;
    const slack = this.audioSlack();
    const bySr = this.bySenderReports(rtp);
    if (bySr !== null && Math.abs(bySr - now) <= slack) {
      // Kept as the reference for when the reports stop being believable.
      this.arrival ??= { u, at: bySr };
      this.arrival.u = u;
      this.arrival.at = bySr;
      return bySr;
    }
    if (this.arrival !== null && Math.abs(this.arrival.at + (u - this.arrival.u) - now) > slack) {
      this.counters.audioReanchors++;
      this.arrival = null;
    }
    this.arrival ??= { u, at: now };
    return this.arrival.at + (u - this.arrival.u);
  }

  /**
   * Where the sender reports put audio of RTP time `rtp` (as audioTime()); null without
   * one of each track. RTP times are taken from the reports' (recent: a few seconds).
   */
  private bySenderReports(rtp: number): number | null {
    const last = this.videoClock.last;
    if (!this.videoSr || !this.audioSr || last === null || this.origin === null) return null;
    const rate = this.audioConfig!.clockRate;
    const clock = this.videoConfig.clockRate;
    const wallMs = this.audioSr.ntpMs + (diff32(rtp, this.audioSr.rtp) * 1000) / rate;
    const videoPts = last + diff32(this.videoSr.rtp, this.videoClock.lastTs) + ((wallMs - this.videoSr.ntpMs) * clock) / 1000;
    return Math.round(((videoPts - this.origin) * rate) / clock);
  }

  private audioFrame(rtp: number, data: Buffer): void {
    const at = this.audioTime(rtp);
    this.counters.audioRebases = this.audioClock.rebases;
    if (at === null || at < 0) return void this.counters.droppedAudio++;
    const rate = this.audioConfig!.clockRate;
    const tolerance = (AUDIO_TOLERANCE_MS * rate) / 1000;
    if (this.audioNext !== null && Math.abs(at - this.audioNext) > this.audioSlack()) this.resyncAudio(at);
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
    if (this.audioPending.length > this.maxPendingAudio) {
      // A GOP that goes on for minutes: its oldest audio goes (the fragment's audio then starts later).
      this.audioPending.shift();
      this.counters.overflowAudio++;
    }
  }

  /**
   * The audio's place moved by seconds from where frames were being laid (re-anchored,
   * or a hole of seconds): frames held at or after `at` were placed on the old footing
   * and are dropped; the next is laid at `at`, without lengthening the one before across
   * the jump, unless audio held or written reaches past it (then it is laid after that,
   * or dropped as overlapping: a track's samples never overlap).
   */
  private resyncAudio(at: number): void {
    const pending = this.audioPending;
    let keep = pending.length;
    while (keep > 0 && pending[keep - 1]!.at >= at) keep--;
    this.counters.droppedAudio += pending.length - keep;
    pending.length = keep;
    const last = pending[keep - 1];
    const end = last ? last.at + last.duration : this.audioWritten;
    this.audioNext = end !== null && end > at ? end : null;
  }
}
