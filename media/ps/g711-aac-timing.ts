/**
 * The timing of AAC made from a camera's G.711 (issue 12: G.711 cannot be stored as it
 * is in MP4, so MP2P cameras recording MP4 get AAC made from it by an ffmpeg child,
 * ffmpeg/g711-aac.ts). Pure arithmetic, no I/O; positions are 8 kHz samples on the
 * fMP4 output timeline (0 = the first video DTS).
 *
 * The encoder gets one gapless byte stream (one byte per G.711 sample), so the AAC it
 * makes has no timestamps of its own: each output frame is timed by its index from the
 * position of the first sample fed (`start`). G711Feed keeps that stream on the
 * camera's timestamps: a piece within `tolerance` of where the stream has reached is
 * appended as it is (jitter and rounding never make gaps or overlaps); a hole is filled
 * with A-law silence so the samples after it keep their time; a piece overlapping what
 * was fed is cut (or dropped); a hole longer than `maxFillSamples` (audio off for
 * minutes) is not filled: the feed restarts there (`restart`), and its owner starts a
 * new encoder, whose frames are timed from the new start.
 *
 * Encoder delay: ffmpeg's AAC encoder (initial_padding 1024) puts 1024 samples of
 * priming before the input, so output frame k decodes to input samples
 * [(k - 1) × 1024, k × 1024). Frame 0 (only priming) is dropped and frame k ≥ 1 is
 * placed at start + (k - 1) × 1024, which keeps the audio on the video's clock to the
 * sample (checked with an impulse through ffmpeg 5.1). The decoder lacks the overlap of
 * the dropped frame, so the first 128 ms of a session's audio fade in.
 *
 * The encoder emits a frame once it has the next one's input too (and ffmpeg's raw
 * demuxer reads 1024 bytes at a time), so after `fed` samples, frames
 * [0, floor(fed / 1024) - 1) can be expected (`framesReady`): the audio of a GOP lags
 * its video in the fragment by at most ~2 frames (256 ms at 8 kHz); the rest goes with
 * the next GOP, at its exact time.
 */

/** Samples per AAC-LC frame. */
export const AAC_FRAME_SAMPLES = 1024;
/** Frames of encoder priming before the first frame holding input (ffmpeg's AAC: 1024 samples). */
export const AAC_PRIMING_FRAMES = 1;
/** G.711 sample rate. */
export const G711_RATE = 8000;
/** A-law silence (the code for 0 after the even-bit inversion), µ-law silence. */
export const SILENCE = { alaw: 0xd5, mulaw: 0xff } as const;

/** One AAC frame: raw (no ADTS header), placed at `at` (8 kHz samples on the output timeline). */
export interface AacFrame {
  at: number;
  data: Buffer;
}

/** A piece of G.711 as the camera timed it (8 kHz samples on the output timeline). */
export interface G711Piece {
  at: number;
  data: Buffer;
}

/** What to write to the encoder for one piece of G.711. */
export interface FeedStep {
  /** The feed restarts at the piece (a hole beyond maxFillSamples, or the first piece after a restart): a new encoder. */
  restart: boolean;
  /** Silence samples to write before `data`. */
  silence: number;
  /** The G.711 bytes to write (possibly cut at the front); empty when all of it overlapped. */
  data: Buffer;
}

export interface G711FeedOptions {
  /** Pieces this close (in samples) to where the stream has reached are appended as they are. Default 400 (50 ms). */
  tolerance?: number;
  /** Holes longer than this restart the feed instead of being filled. Default 60 s. */
  maxFillSamples?: number;
}

export class G711Feed {
  /** Output-timeline position of the first sample fed to the current encoder; null before any. */
  start: number | null = null;
  /** Samples written to the current encoder (silence included). */
  fed = 0;
  /** Silence samples written to fill holes, and samples dropped as overlapping (counters). */
  filled = 0;
  overlapped = 0;
  private readonly tolerance: number;
  private readonly maxFill: number;

  constructor(opts: G711FeedOptions = {}) {
    this.tolerance = opts.tolerance ?? 400;
    this.maxFill = opts.maxFillSamples ?? 60 * G711_RATE;
  }

  /** Where the next sample fed will be placed; null before any. */
  get next(): number | null {
    return this.start === null ? null : this.start + this.fed;
  }

  /** Places a piece of `data.length` samples that the camera timed at `at`. */
  place(at: number, data: Buffer): FeedStep {
    if (this.start === null || at - (this.start + this.fed) > this.maxFill) {
      const restart = this.start !== null;
      this.start = at;
      this.fed = data.length;
      return { restart, silence: 0, data };
    }
    const next = this.start + this.fed;
    if (at > next + this.tolerance) {
      const silence = at - next;
      this.filled += silence;
      this.fed += silence + data.length;
      return { restart: false, silence, data };
    }
    if (at < next - this.tolerance) {
      const cut = Math.min(next - at, data.length);
      this.overlapped += cut;
      const rest = data.subarray(cut);
      this.fed += rest.length;
      return { restart: false, silence: 0, data: rest };
    }
    this.fed += data.length;
    return { restart: false, silence: 0, data };
  }

  /** Forgets the stream: the next piece starts a new one (a new encoder). */
  reset(): void {
    this.start = null;
    this.fed = 0;
  }
}

/** Output-timeline position of encoder output frame `k` (0-based) of an encoder fed from `start`; null for priming frames. */
export function aacFrameAt(start: number, k: number): number | null {
  if (k < AAC_PRIMING_FRAMES) return null;
  return start + (k - AAC_PRIMING_FRAMES) * AAC_FRAME_SAMPLES;
}

/** How many output frames (priming included) the encoder can have made after `fed` samples. */
export function framesReady(fed: number): number {
  return Math.max(0, Math.floor(fed / AAC_FRAME_SAMPLES) - 1);
}

/** How many output frames (priming included) the encoder makes for `fed` samples once its input ends. */
export function framesAtEnd(fed: number): number {
  return fed === 0 ? 0 : Math.ceil(fed / AAC_FRAME_SAMPLES) + AAC_PRIMING_FRAMES;
}

/** An 8 kHz sample position from a 90 kHz time (floor). */
export function samplesFrom90k(t90: bigint): number {
  return Number((t90 * BigInt(G711_RATE)) / 90_000n);
}
