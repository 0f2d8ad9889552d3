/**
 * The index's reserve (issue 13 item 1): a file of a few MB beside the index
 * (`<data>/index.reserve`), deleted when the disk fills so that the index can commit
 * the deletions that make room (LMDB copies every page it changes: deleting a
 * segment's entry needs free pages like writing one), and written again once the
 * disk has room. Without it, a disk filled to the last byte leaves the recorder
 * unable to delete anything through its index.
 *
 * The bytes are random, not zeros: a compressing or deduplicating file system would
 * store zeros in nothing and the reserve would free nothing.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, stat, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDir } from './segment-file.ts';

export const RESERVE_FILE = 'index.reserve';
const CHUNK = 1024 * 1024;

/** The reserve's size on a file system of `fsBytes`: the configured size, at most 1/16 of it. */
export function reserveSize(configuredBytes: number, fsBytes: number): number {
  return Math.max(0, Math.min(configuredBytes, Math.floor(fsBytes / 16 / 4096) * 4096));
}

export class IndexReserve {
  readonly path: string;
  private sizeBytes: number | null = null;

  constructor(
    readonly dataDir: string,
    private readonly configuredBytes: number,
  ) {
    this.path = join(dataDir, RESERVE_FILE);
  }

  /** Bytes the reserve holds when present (decided from the file system's size). */
  async bytes(): Promise<number> {
    if (this.sizeBytes === null) {
      const s = await statfs(this.dataDir);
      this.sizeBytes = reserveSize(this.configuredBytes, s.blocks * s.bsize);
    }
    return this.sizeBytes;
  }

  async present(): Promise<boolean> {
    return stat(this.path).then(
      (s) => s.size > 0,
      () => false,
    );
  }

  /** Deletes the reserve; true when there was one to free. */
  async release(): Promise<boolean> {
    const had = await this.present();
    await rm(this.path, { force: true });
    if (had) await fsyncDir(dirname(this.path)).catch(() => undefined);
    return had;
  }

  /**
   * Writes the reserve if it is missing and the file system has room for it and
   * `keepFree` bytes more; true when it is (now) present. A failure (the disk filled
   * meanwhile) leaves nothing behind.
   */
  async ensure(keepFree = 0): Promise<boolean> {
    if (await this.present()) return true;
    const bytes = await this.bytes();
    if (bytes === 0) return false;
    const s = await statfs(this.dataDir);
    if (s.bavail * s.bsize < bytes + keepFree) return false;
    const tmp = `${this.path}.tmp`;
    try {
      const fh = await open(tmp, 'w');
      try {
        for (let done = 0; done < bytes; done += CHUNK) await fh.write(randomBytes(Math.min(CHUNK, bytes - done)));
        await fh.datasync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.path);
      await fsyncDir(dirname(this.path)).catch(() => undefined);
      return true;
    } catch {
      await rm(tmp, { force: true }).catch(() => undefined);
      return false;
    }
  }
}
