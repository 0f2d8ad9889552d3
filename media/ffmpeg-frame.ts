/**
 * Decodes the first picture of one GOP to JPEG with ffmpeg (through fluent-ffmpeg,
 * like ingest). The input is a tiny fragmented MP4 made of the segment's init and that
 * one fragment, fed on stdin; ffmpeg stops after one frame (`-frames:v 1`), so only
 * the GOP's I-frame is decoded. The child is killed if it runs past the timeout.
 */
import ffmpeg from 'fluent-ffmpeg';
import { PassThrough, Readable } from 'node:stream';

export interface FrameOptions {
  ffmpegPath: string;
  /** Scale to this width (keeping the aspect); undefined keeps the size. */
  width?: number;
  timeoutMs?: number;
}

export function extractJpeg(init: Buffer, fragment: Buffer, opts: FrameOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const out = new PassThrough();
    const parts: Buffer[] = [];
    out.on('data', (c: Buffer) => parts.push(c));
    const filters = opts.width ? [`scale=${opts.width}:-2`] : [];
    const command = ffmpeg({ stdoutLines: 0, timeout: Math.ceil((opts.timeoutMs ?? 10_000) / 1000) })
      .setFfmpegPath(opts.ffmpegPath)
      .input(Readable.from([init, fragment]))
      .inputFormat('mp4')
      .inputOptions(['-nostdin', '-hide_banner', '-loglevel', 'error'])
      .outputOptions(['-frames:v', '1', '-an', '-q:v', '3', ...(filters.length ? ['-vf', filters.join(',')] : [])])
      .format('image2pipe')
      .videoCodec('mjpeg');
    command.on('error', (err: Error) => reject(new Error(`frame extraction failed: ${err.message.split('\n')[0]}`)));
    command.on('end', () => {
      const jpeg = Buffer.concat(parts);
      if (jpeg.length < 4 || jpeg[0] !== 0xff || jpeg[1] !== 0xd8) reject(new Error('frame extraction produced no JPEG'));
      else resolve(jpeg);
    });
    command.pipe(out, { end: true });
  });
}
