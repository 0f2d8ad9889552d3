/**
 * Positioned reads of segment files, the two ways the media modules need them: up to
 * `length` bytes (fewer at the end of the file: scans that must tell a cut tail from
 * garbage), or exactly `length` bytes (serving: a short read means the file changed
 * under us and is a typed MP4_TRUNCATED, never a silently short body).
 */
import type { FileHandle } from 'node:fs/promises';
import { Mp4FormatError } from './boxes.ts';

/** Reads up to `length` bytes at file `offset` into `buf` at `at`; fewer only at the end of the file. */
export async function readInto(fh: FileHandle, buf: Buffer, at: number, offset: number, length: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, at + done, length - done, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

export async function readUpTo(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  const done = await readInto(fh, buf, 0, offset, length);
  return done === length ? buf : buf.subarray(0, done);
}

export async function readExactly(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = await readUpTo(fh, offset, length);
  if (buf.length < length) throw new Mp4FormatError('MP4_TRUNCATED', `file ends at ${offset + buf.length}, expected ${offset + length}`);
  return buf;
}
