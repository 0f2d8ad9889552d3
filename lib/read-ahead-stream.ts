/**
 * A file range as a Readable that keeps several reads in flight at once.
 *
 * Why: `fs.createReadStream` issues one read at a time and the next only after the
 * consumer took the last, so a cold large object is served at the latency of one
 * read per chunk with the disk idle while the socket is written. Here up to `depth`
 * reads of `chunkBytes` run on libuv's pool together (the disk sees them queued) while
 * earlier chunks are written out. Measured in bench/s3.ts ("GET").
 *
 * Invariants: chunks are pushed in file order, each exactly the bytes of its range; at
 * most `depth` chunks are read ahead of what was pushed (memory per stream is bounded
 * by depth × chunkBytes plus the Readable's own buffer); the file handle is closed
 * only after every read in flight has settled (a destroy mid-read never closes a
 * handle a read is still using). A file shorter than `end` is an error (ERANGE), not a
 * short body. Like fs.ReadStream it emits 'open' once the file is open, so a caller can
 * send headers only when the object is known to be readable.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

export interface ReadAheadOptions {
  /** First byte (inclusive). */
  start: number;
  /** Last byte (inclusive); below start: an empty stream. */
  end: number;
  chunkBytes?: number;
  depth?: number;
}

const DEFAULT_CHUNK = 1024 * 1024;
const DEFAULT_DEPTH = 4;

export class ReadAheadStream extends Readable {
  private fh: FileHandle | null = null;
  private readonly inFlight: Promise<Buffer>[] = [];
  private nextOffset: number;
  private readonly end: number;
  private readonly chunkBytes: number;
  private readonly depth: number;
  private waiting = false;

  constructor(
    private readonly path: string,
    opts: ReadAheadOptions,
  ) {
    const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK;
    super({ highWaterMark: chunkBytes });
    this.nextOffset = opts.start;
    this.end = opts.end;
    this.chunkBytes = chunkBytes;
    this.depth = Math.max(1, opts.depth ?? DEFAULT_DEPTH);
  }

  override _construct(done: (err?: Error | null) => void): void {
    open(this.path, 'r').then(
      (fh) => {
        this.fh = fh;
        this.emit('open', fh.fd);
        done();
      },
      (err: Error) => done(err),
    );
  }

  /** Issues reads until `depth` are in flight or the range is all asked for. */
  private fill(fh: FileHandle): void {
    while (this.inFlight.length < this.depth && this.nextOffset <= this.end) {
      const offset = this.nextOffset;
      const length = Math.min(this.chunkBytes, this.end - offset + 1);
      this.nextOffset += length;
      const read = fh.read(Buffer.allocUnsafe(length), 0, length, offset).then(({ bytesRead, buffer }) => {
        if (bytesRead !== length) {
          throw Object.assign(new Error(`${this.path} ends before byte ${offset + length - 1}`), { code: 'ERANGE' });
        }
        return buffer;
      });
      // Settled here too, so a rejection of a read that destroy() leaves behind is not unhandled.
      read.catch(() => undefined);
      this.inFlight.push(read);
    }
  }

  override _read(): void {
    if (this.waiting || !this.fh) return;
    this.fill(this.fh);
    const head = this.inFlight[0];
    if (!head) {
      this.push(null);
      return;
    }
    this.waiting = true;
    void head.then(
      (buf) => {
        void this.inFlight.shift();
        this.waiting = false;
        // The Readable calls _read again once it wants more (at once, or when the consumer drains).
        if (!this.destroyed) this.push(buf);
      },
      (err: Error) => {
        this.waiting = false;
        this.destroy(err);
      },
    );
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    const fh = this.fh;
    this.fh = null;
    void Promise.allSettled(this.inFlight.splice(0))
      .then(() => fh?.close())
      .then(
        () => done(err),
        (closeErr: Error) => done(err ?? closeErr),
      );
  }
}
