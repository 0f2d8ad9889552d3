/**
 * Append-only writer of one segment file. Crash-safe creation order (the steps the
 * rest of the code relies on):
 *   1. mkdir -p the day folder; 2. create the file exclusively and write the init;
 *   3. fdatasync the file and fsync the folder so the name survives a crash;
 *   then fragments are appended and `sync()` makes them durable before the index
 *   entry that points at them is committed (invariant 2). `patch()` fills in header
 *   fields at close, before the close's fdatasync.
 */
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RecorderError } from '../lib/errors.ts';

export class SegmentFile {
  private bytesWritten = 0;
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
  ) {}

  static async create(path: string, init: Uint8Array): Promise<SegmentFile> {
    try {
      await mkdir(dirname(path), { recursive: true });
      const fh = await open(path, 'wx');
      const file = new SegmentFile(path, fh);
      await file.append(init);
      await fh.datasync();
      await fsyncDir(dirname(path));
      return file;
    } catch (err) {
      throw storageError(`creating ${path}`, err);
    }
  }

  get size(): number {
    return this.bytesWritten;
  }

  /** Appends bytes; returns the offset they start at. */
  async append(bytes: Uint8Array): Promise<number> {
    const offset = this.bytesWritten;
    try {
      let done = 0;
      while (done < bytes.byteLength) {
        const { bytesWritten } = await this.fh.write(bytes, done, bytes.byteLength - done, offset + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw storageError(`writing ${this.path}`, err);
    }
    this.bytesWritten += bytes.byteLength;
    return offset;
  }

  /**
   * Overwrites bytes already written (a header field filled in at close). Durable only
   * with the next sync or close, like anything appended.
   */
  async patch(at: number, bytes: Uint8Array): Promise<void> {
    if (at < 0 || at + bytes.byteLength > this.bytesWritten)
      throw new RangeError(`patch [${at}, ${at + bytes.byteLength}) outside the ${this.bytesWritten} bytes written`);
    try {
      let done = 0;
      while (done < bytes.byteLength) {
        const { bytesWritten } = await this.fh.write(bytes, done, bytes.byteLength - done, at + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw storageError(`writing ${this.path}`, err);
    }
  }

  async sync(): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (err) {
      throw storageError(`syncing ${this.path}`, err);
    }
  }

  async close(): Promise<void> {
    try {
      await this.fh.datasync();
    } finally {
      await this.fh.close();
    }
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function storageError(what: string, err: unknown): RecorderError {
  // A STORAGE_IO from a step inside (append during create) keeps its errno: ENOSPC must
  // stay readable (the storage supervisor reacts to a full disk).
  const inner = err instanceof RecorderError ? (err.details as { errno?: string } | undefined)?.errno : undefined;
  const code = inner ?? (err as NodeJS.ErrnoException).code ?? 'EIO';
  return new RecorderError('STORAGE_IO', `${what}: ${code}`, { cause: err, details: { errno: code } });
}
