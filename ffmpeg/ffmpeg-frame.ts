/**
 * Decodes the first picture of one GOP to JPEG with ffmpeg (spawned through
 * lib/child-process.ts, like every child). The input is a tiny fragmented MP4 made of
 * the segment's init and that one fragment, fed on stdin; ffmpeg stops after one frame
 * (`-frames:v 1`), so only the GOP's I-frame is decoded. The child is killed if it
 * runs past the timeout (FRAMES_BUSY: the host is loaded, try again).
 *
 * The answer is judged once ffmpeg has exited and its stdout has ended, whichever comes
 * last: fluent-ffmpeg, which ran it before, gave the process 20 ms between the end of
 * its stdout and its exit and then reported 'Output stream closed'; on a loaded machine
 * the exit comes later (4 of 100 frame requests answered 500 in a full test run).
 *
 * Reads never starve recording: FrameDecoder runs at most a few decodes at once (each
 * one thread, at a lower CPU priority than ingest), queues a bounded number more in
 * arrival order, and refuses the rest at once (FramesBusyError, code FRAMES_BUSY → 503
 * with Retry-After). Before the limit, 100 parallel requests from one viewer spawned
 * 100 decoders: most answered 500 after up to 99 s and recording had 40 s holes.
 */
import { RecorderError } from '../lib/errors.ts';
import { spawnChild } from '../lib/child-process.ts';

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

/** How long after ffmpeg's exit its stdout may still be read. */
const STDOUT_DRAIN_MS = 1000;

/** ffmpeg's arguments: fMP4 on stdin, one JPEG on stdout. */
function frameArgs(width: number | undefined): string[] {
  return [
    '-f',
    'mp4',
    '-nostdin',
    '-hide_banner',
    '-loglevel',
    'error',
    '-threads',
    '1',
    '-i',
    'pipe:0',
    '-vcodec',
    'mjpeg',
    '-threads',
    '1',
    '-frames:v',
    '1',
    '-an',
    '-q:v',
    '3',
    ...(width ? ['-vf', `scale=${width}:-2`] : []),
    '-f',
    'image2pipe',
    'pipe:1',
  ];
}

export async function extractJpeg(init: Buffer, fragment: Buffer, opts: FrameOptions): Promise<Buffer> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  // Below ingest's priority (nice 10): a burst of thumbnails waits, recording does not.
  const child = spawnChild({ command: 'ffmpeg', purpose: 'frame', file: opts.ffmpegPath, args: frameArgs(opts.width), stdin: 'pipe', nice: 10, timeoutMs });
  const parts: Buffer[] = [];
  const stdout = child.stdout!;
  const ended = new Promise<void>((resolve) => {
    stdout.on('data', (c: Buffer) => parts.push(c));
    stdout.once('close', () => resolve());
    stdout.on('error', () => undefined);
  });
  // ffmpeg stops reading after one frame: the rest of the input may meet a closed pipe.
  child.stdin!.end(Buffer.concat([init, fragment]));
  const exit = await child.exited;
  if (exit.error?.code === 'CHILD_TIMEOUT') throw new FramesBusyError(0, `a frame decode took over ${timeoutMs} ms (the host is loaded)`);
  // stdout ends with ffmpeg; a grandchild of a wrapper that holds it open is not waited for.
  let late: NodeJS.Timeout | undefined;
  await Promise.race([ended, new Promise<void>((r) => (late = setTimeout(r, STDOUT_DRAIN_MS)))]);
  clearTimeout(late);
  stdout.destroy();
  const jpeg = Buffer.concat(parts);
  if (exit.error) throw new Error(`frame extraction failed: ${exit.error.message.split('\n')[0]}`);
  if (!isWholeJpeg(jpeg)) throw new Error('frame extraction produced no JPEG');
  return jpeg;
}

/** Starts with SOI and ends with EOI: ffmpeg wrote the picture to its end. */
function isWholeJpeg(b: Buffer): boolean {
  return b.length >= 4 && b[0] === 0xff && b[1] === 0xd8 && b[b.length - 2] === 0xff && b[b.length - 1] === 0xd9;
}
