/**
 * Decodes the first picture of one GOP to JPEG with ffmpeg (through fluent-ffmpeg,
 * like ingest). The input is a tiny fragmented MP4 made of the segment's init and that
 * one fragment, fed on stdin; ffmpeg stops after one frame (`-frames:v 1`), so only
 * the GOP's I-frame is decoded. The child is killed if it runs past the timeout.
 *
 * Reads never starve recording: FrameDecoder runs at most a few decodes at once (each
 * one thread, at a lower CPU priority than ingest), queues a bounded number more in
 * arrival order, and refuses the rest at once (FramesBusyError, code FRAMES_BUSY → 503
 * with Retry-After). Before the limit, 100 parallel requests from one viewer spawned
 * 100 decoders: most answered 500 after up to 99 s and recording had 40 s holes.
 */
import ffmpeg from 'fluent-ffmpeg';
import { PassThrough, Readable } from 'node:stream';
import { RecorderError } from '../lib/errors.ts';
import { assertSpawnHeadroom } from './spawn-headroom.ts';

export class FramesBusyError extends RecorderError {
  constructor(queued: number, message = `${queued} frame decodes are already waiting: try again shortly`) {
    super('FRAMES_BUSY', message);
    this.name = 'FramesBusyError';
  }
}

export interface FrameDecoderOptions {
  ffmpegPath: string;
  /** Decodes running at once. */
  concurrency?: number;
  /** Decodes waiting beyond those; past this a request is refused. */
  maxQueued?: number;
}

/** Bounded, ordered frame decoding (see the module comment). */
export class FrameDecoder {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  readonly concurrency: number;
  readonly maxQueued: number;

  constructor(private readonly opts: FrameDecoderOptions) {
    this.concurrency = opts.concurrency ?? 2;
    this.maxQueued = opts.maxQueued ?? 200;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async decode(init: Buffer, fragment: Buffer, width?: number): Promise<Buffer> {
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.maxQueued) throw new FramesBusyError(this.waiting.length);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    this.running++;
    try {
      return await extractJpeg(init, fragment, { ffmpegPath: this.opts.ffmpegPath, ...(width !== undefined ? { width } : {}) });
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

export interface FrameOptions {
  ffmpegPath: string;
  /** Scale to this width (keeping the aspect); undefined keeps the size. */
  width?: number;
  timeoutMs?: number;
}

export function extractJpeg(init: Buffer, fragment: Buffer, opts: FrameOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    assertSpawnHeadroom();
    const out = new PassThrough();
    const parts: Buffer[] = [];
    out.on('data', (c: Buffer) => parts.push(c));
    const filters = opts.width ? [`scale=${opts.width}:-2`] : [];
    const command = ffmpeg({ stdoutLines: 0, timeout: Math.ceil((opts.timeoutMs ?? 10_000) / 1000) })
      .setFfmpegPath(opts.ffmpegPath)
      .input(Readable.from([init, fragment]))
      .inputFormat('mp4')
      .inputOptions(['-nostdin', '-hide_banner', '-loglevel', 'error', '-threads', '1'])
      // Below ingest's priority: a burst of thumbnails waits, recording does not.
      .renice(10)
      .outputOptions(['-threads', '1', '-frames:v', '1', '-an', '-q:v', '3', ...(filters.length ? ['-vf', filters.join(',')] : [])])
      .format('image2pipe')
      .videoCodec('mjpeg');
    command.on('error', (err: Error) => {
      // fluent-ffmpeg gives the process 20 ms between the end of its stdout and its exit
      // before it reports 'Output stream closed' and kills it; on a loaded machine the
      // exit comes later (4 of 100 frame requests answered 500 in the full test run).
      // A whole JPEG on stdout is the answer whatever the exit raced with.
      const jpeg = Buffer.concat(parts);
      if (err.message === 'Output stream closed' && isWholeJpeg(jpeg)) resolve(jpeg);
      else if (/ran into a timeout/.test(err.message)) reject(new FramesBusyError(0, `a frame decode took over ${opts.timeoutMs ?? 10_000} ms (the host is loaded)`));
      else reject(new Error(`frame extraction failed: ${err.message.split('\n')[0]}`));
    });
    command.on('end', () => {
      const jpeg = Buffer.concat(parts);
      if (!isWholeJpeg(jpeg)) reject(new Error('frame extraction produced no JPEG'));
      else resolve(jpeg);
    });
    command.pipe(out, { end: true });
  });
}

/** Starts with SOI and ends with EOI: ffmpeg wrote the picture to its end. */
function isWholeJpeg(b: Buffer): boolean {
  return b.length >= 4 && b[0] === 0xff && b[1] === 0xd8 && b[b.length - 2] === 0xff && b[b.length - 1] === 0xd9;
}
