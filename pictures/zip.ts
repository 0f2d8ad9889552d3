/**
 * The batch download of pictures as one ZIP (docs/pictures.md "Batch download"), with
 * yazl: entries stored (JPEGs do not compress), each with its size known before the
 * first byte, so the archive's exact length is known up front (`Content-Length`) and a
 * `Range` can be served by generating the archive and keeping only that part. Its bytes
 * are a function of the entries alone: names, sizes, bytes and each entry's time (the
 * picture's own, never the time of the request), in the order given; a broken
 * download resumed with `Range` equals the whole.
 *
 * An entry's bytes are loaded only when yazl reaches it (one picture in memory at a
 * time); one whose bytes are not the size announced ends the stream with an error
 * (the client sees a short body and resumes) rather than a ZIP that lies.
 */
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { ZipFile } from 'yazl';

export interface ZipItem {
  name: string;
  mtime: Date;
  size: number;
  load: () => Promise<Buffer>;
}

/** A ZIP of `items` and its exact length. */
export async function buildZip(items: readonly ZipItem[]): Promise<{ length: number; stream: Readable }> {
  const zip = new ZipFile();
  for (const item of items) {
    zip.addReadStreamLazy(item.name, { size: item.size, compress: false, mtime: item.mtime, mode: 0o100644 }, (cb) => {
      item.load().then(
        (bytes) => {
          if (bytes.length !== item.size) cb(new Error(`${item.name}: ${bytes.length} bytes, ${item.size} announced`), Readable.from([]));
          else cb(null, Readable.from([bytes]));
        },
        (err: unknown) => cb(err instanceof Error ? err : new Error(String(err)), Readable.from([])),
      );
    });
  }
  // yazl calls back with the total size (-1 when unknown); @types/yazl types the callback without it.
  const end = zip.end.bind(zip) as unknown as (options: { forceZip64Format: boolean }, sized: (size: number) => void) => void;
  const length = await new Promise<number>((resolve) => end({ forceZip64Format: false }, resolve));
  if (length < 0) throw new Error('ZIP size not known up front');
  const stream = zip.outputStream as Readable;
  zip.on('error', (err: Error) => stream.destroy(err));
  return { length, stream };
}

/** Passes bytes [start, end] (inclusive) of a stream and drops the rest (what follows the range is read and dropped: a resume asks for the rest anyway). */
export class ByteSlice extends Transform {
  private at = 0;
  constructor(
    private readonly first: number,
    private readonly last: number,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const from = this.at;
    this.at += chunk.length;
    const a = Math.max(this.first - from, 0);
    const b = Math.min(this.last + 1 - from, chunk.length);
    if (b > a) this.push(a === 0 && b === chunk.length ? chunk : chunk.subarray(a, b));
    done();
  }
}
