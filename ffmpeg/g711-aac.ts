/**
 * AAC made from a camera's G.711 by one small ffmpeg child per camera session (issue
 * 12: audio that cannot be stored as it is never costs the video, and is kept in a form
 * players use). Used by the MP2P ingest (ingest/mp2p-ingest.ts) for cameras recording
 * MP4 segments, which cannot carry G.711 and whose browser playback (MSE) refuses it.
 *
 * ffmpeg reads raw A-law/µ-law on stdin (`-f alaw -ar 8000 -ac 1 -i pipe:0`) and writes
 * ADTS on stdout (`-c:a aac -f adts pipe:1`), keeping the 8 kHz rate as the RTSP path
 * does (ffmpeg/audio-plan.ts). The input is placed on the camera's timestamps and each
 * output frame timed from the sample count (media/ps/g711-aac-timing.ts): ffmpeg's own
 * timestamps are never needed. Frames come out as raw AAC (the ADTS header removed)
 * with their output-timeline position, to be muxed as the AAC track of our fMP4
 * fragments (media/ps/ps-live-fmp4.ts).
 *
 * Failures never reach the video: a spawn that fails, an exit nobody asked for, output
 * that is not ADTS, or an encoder that stops taking input (more than maxPendingBytes
 * waiting) set `failure` (its words) and kill the child; the owner then records video
 * only, with the reason in the camera's status. A hole in the audio longer than the feed
 * fills ends the child's input (its last frames still arrive) and starts a new one at
 * the new position. The child is spawned through lib/child-process.ts (counted as
 * `ffmpeg`/`g711-aac`) and killed by stop() or the owner's signal.
 */
import { spawnChild, type Child } from '../lib/child-process.ts';
import { readAdts } from '../media/codec/codec-config.ts';
import { aacFrameAt, framesReady, G711_RATE, G711Feed, SILENCE, type AacFrame, type G711FeedOptions, type G711Piece } from '../media/ps/g711-aac-timing.ts';

export type { AacFrame, G711Piece };

export interface G711AacOptions {
  ffmpegPath: string;
  law?: 'alaw' | 'mulaw';
  /** AAC bitrate (default 32 kbit/s, the RTSP path's for telephone audio). */
  bitrate?: number;
  /** The owner's signal: aborting it kills the encoder. */
  signal?: AbortSignal;
  /** Bytes waiting in the encoder's stdin past which it is judged stuck (default 256 KiB, 32 s of G.711). */
  maxPendingBytes?: number;
  feed?: G711FeedOptions;
}

/**
 * ffmpeg's arguments: raw G.711 in, ADTS out, no probing delay. Not `-fflags nobuffer`:
 * with it ffmpeg 5.1 loses input samples at the start (a click fed at 9000 came out at
 * 8680), and every frame after would play early.
 */
export function g711AacArgs(law: 'alaw' | 'mulaw', bitrate: number): string[] {
  return [
    '-hide_banner',
    '-loglevel',
    'error',
    '-probesize',
    '32',
    '-analyzeduration',
    '0',
    '-f',
    law,
    '-ar',
    String(G711_RATE),
    '-ac',
    '1',
    '-i',
    'pipe:0',
    '-c:a',
    'aac',
    '-b:a',
    String(bitrate),
    '-f',
    'adts',
    '-flush_packets',
    '1',
    'pipe:1',
  ];
}

/** I/O turns settle() gives the pipe after its deadline (each reads what is there, cheap when nothing is). */
const SETTLE_IO_TURNS = 3;

interface Encoder {
  child: Child;
  /** Output-timeline position of its first input sample. */
  start: number;
  /** Frames it has written (priming included). */
  count: number;
  pending: Buffer;
  /** Its input was ended by us (a restart): its exit is expected. */
  ended: boolean;
}

export class G711Aac {
  /** Why no more AAC is made (the encoder failed); null while it works. */
  failure: string | null = null;
  /** Encoders started in this session (1 unless the audio paused for long). */
  started = 0;
  private readonly feed: G711Feed;
  private readonly law: 'alaw' | 'mulaw';
  private readonly bitrate: number;
  private readonly maxPending: number;
  private enc: Encoder | null = null;
  private readonly encoders = new Set<Encoder>();
  private frames: AacFrame[] = [];
  private wake: (() => void) | null = null;
  private stopped = false;

  constructor(private readonly opts: G711AacOptions) {
    this.feed = new G711Feed(opts.feed);
    this.law = opts.law ?? 'alaw';
    this.bitrate = opts.bitrate ?? 32_000;
    this.maxPending = opts.maxPendingBytes ?? 256 * 1024;
  }

  /** Frames the encoders have written (priming included). */
  framesOut = 0;
  /** Silence samples written to fill holes and samples cut as overlapping, so far. */
  get feedCounters(): { filled: number; overlapped: number } {
    return { filled: this.feed.filled, overlapped: this.feed.overlapped };
  }

  /** Writes G.711 pieces (in time order) to the encoder, starting one when needed. */
  push(pieces: readonly G711Piece[]): void {
    for (const piece of pieces) {
      if (this.failure !== null || this.stopped) return;
      const step = this.feed.place(piece.at, piece.data);
      if (step.restart || !this.enc) {
        if (this.enc) this.endInput(this.enc);
        this.enc = this.spawn(this.feed.start!);
        if (!this.enc) return;
      }
      const stdin = this.enc.child.stdin!;
      if (step.silence > 0) stdin.write(Buffer.alloc(step.silence, SILENCE[this.law]));
      if (step.data.length > 0) stdin.write(step.data);
      if (stdin.writableLength > this.maxPending) {
        this.fail(`the AAC encoder (ffmpeg) stopped taking input (${stdin.writableLength} bytes waiting)`);
        return;
      }
    }
  }

  /**
   * Resolves once the encoder has written every frame it can from what was fed
   * (framesReady), it failed, or at `deadline` (Date.now() ms), whichever is first.
   * At the deadline, output already waiting in the pipe is read first (a few I/O turns):
   * after our own thread was held up (GC, a long synchronous step) the timer fires
   * before the pipe is polled, and frames the encoder made in time would otherwise
   * miss their GOP.
   */
  async settle(deadline: number): Promise<void> {
    const done = (): boolean => {
      const e = this.enc;
      return this.failure !== null || this.stopped || !e || e.count >= framesReady(this.feed.fed);
    };
    let ioTurns = 0;
    while (!done()) {
      const wait = deadline - Date.now();
      if (wait <= 0) {
        if (ioTurns++ >= SETTLE_IO_TURNS) return;
        await new Promise<void>((resolve) => setImmediate(resolve));
        continue;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(finish, wait);
        function finish(): void {
          clearTimeout(timer);
          resolve();
        }
        this.wake = finish;
      });
      this.wake = null;
    }
  }

  /** The frames made since the last call, in time order. */
  take(): AacFrame[] {
    const out = this.frames;
    this.frames = [];
    return out.length > 1 ? out.sort((a, b) => a.at - b.at) : out;
  }

  /** Kills the encoders (idempotent). */
  stop(): void {
    this.stopped = true;
    for (const e of this.encoders) void e.child.stop();
    this.enc = null;
    this.wake?.();
  }

  private spawn(start: number): Encoder | null {
    let child: Child;
    try {
      child = spawnChild({
        command: 'ffmpeg',
        purpose: 'g711-aac',
        file: this.opts.ffmpegPath,
        args: g711AacArgs(this.law, this.bitrate),
        stdin: 'pipe',
        stderrLines: 10,
        ...(this.opts.signal ? { signal: this.opts.signal } : {}),
      });
    } catch (err) {
      this.fail(`the AAC encoder (ffmpeg) could not start: ${(err as Error).message}`);
      return null;
    }
    this.started++;
    const e: Encoder = { child, start, count: 0, pending: Buffer.alloc(0), ended: false };
    this.encoders.add(e);
    child.stdout!.on('data', (bytes: Buffer) => this.read(e, bytes));
    child.stdout!.on('error', () => undefined); // the exit says what happened
    void child.exited.then((exit) => {
      this.encoders.delete(e);
      // An encoder whose input we ended (a restart) may go as it likes: its successor works.
      if (exit.requested || this.stopped || e.ended) return;
      this.fail(`the AAC encoder stopped: ${exit.error?.message ?? `ffmpeg exited with code ${exit.code}`}`);
    });
    return e;
  }

  private read(e: Encoder, bytes: Buffer): void {
    let buf = e.pending.length > 0 ? Buffer.concat([e.pending, bytes]) : bytes;
    let p = 0;
    while (p + 7 <= buf.length) {
      const h = readAdts(buf, p);
      if (!h || h.sampleRate !== G711_RATE) {
        this.fail(`the AAC encoder (ffmpeg) wrote something that is not 8 kHz ADTS at frame ${e.count}`);
        return;
      }
      if (p + h.frameBytes > buf.length) break;
      const at = aacFrameAt(e.start, e.count++);
      this.framesOut++;
      // A copy: the chunk it came in is not kept alive by a 100-byte frame.
      if (at !== null) this.frames.push({ at, data: Buffer.from(buf.subarray(p + h.headerBytes, p + h.frameBytes)) });
      p += h.frameBytes;
    }
    buf = buf.subarray(p);
    e.pending = buf.length > 0 ? Buffer.from(buf) : Buffer.alloc(0);
    this.wake?.();
  }

  /** Ends an encoder's input: it writes its last frames and exits by itself. */
  private endInput(e: Encoder): void {
    e.ended = true;
    e.child.stdin?.end();
  }

  private fail(why: string): void {
    if (this.failure !== null) return;
    this.failure = why;
    for (const e of this.encoders) void e.child.stop();
    this.enc = null;
    this.wake?.();
  }
}
