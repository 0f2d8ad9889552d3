/**
 * The index's reserve (issue 13 item 1): room kept for the index on its disk, so that
 * a full disk never makes an LMDB commit fail. Two parts, each `bytes()` large:
 *
 * 1. The index file's tail: blocks allocated past the end of `data.mdb`
 *    (`fallocate --keep-size`; the file's size is unchanged, LMDB does not see it).
 *    LMDB grows its file by writing pages past the end; into allocated blocks those
 *    writes cannot fail for want of space. This matters more than it seems: a commit
 *    that does fail (ENOSPC on a page write) is handled by the recorder
 *    (index/commit-guard.ts), but lmdb-js 3.5.6 formats that error into a 100-byte
 *    heap buffer that its message overflows (mdb.c, `last_error = malloc(100)`), and the
 *    corrupted heap ended the recorder seconds later ("malloc(): corrupted top size")
 *    in two of four full-disk runs. The tail is topped up whenever less than half is
 *    left and the disk has room. Allocating never changes bytes already written, so
 *    it is safe while LMDB writes.
 * 2. A file beside the index (`<data>/index.reserve`, random bytes so no compressing
 *    or deduplicating file system stores it in nothing), deleted when the disk fills:
 *    its space goes to the tail at once, so the index can commit the deletions that
 *    make room (LMDB copies every page it changes, deletions too). Written again once
 *    the disk has room.
 *
 * Where `fallocate` is missing or the file system refuses it, the tail is not kept
 * (logged once) and the file alone remains; on copy-on-write file systems (btrfs, zfs)
 * even rewriting a page needs new space, which neither part can promise.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, stat, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from '../lib/log.ts';
import { spawnChild } from '../lib/child-process.ts';
import { fsyncDir } from './segment-file.ts';

export const RESERVE_FILE = 'index.reserve';
const CHUNK = 1024 * 1024;

/** Each part's size on a file system of `fsBytes`: the configured size, at most 1/32 of it. */
export function reserveSize(configuredBytes: number, fsBytes: number): number {
  return Math.max(0, Math.min(configuredBytes, Math.floor(fsBytes / 32 / 4096) * 4096));
}

/** Rejects with the child's error; `code` is ENOENT when there is no fallocate. */
async function fallocate(file: string, offset: number, length: number): Promise<void> {
  const child = spawnChild({
    command: 'fallocate',
    file: 'fallocate',
    args: ['--keep-size', '--offset', String(offset), '--length', String(length), file],
    stdout: 'ignore',
    timeoutMs: 30_000,
  });
  const { error } = await child.exited;
  if (!error) return;
  const words = child.stderrTail.join(' ').trim();
  throw Object.assign(new Error(`fallocate: ${words || error.message}`), { code: (error.cause as NodeJS.ErrnoException | undefined)?.code ?? error.code });
}

export class IndexReserve {
  readonly path: string;
  readonly indexFile: string;
  private sizeBytes: number | null = null;
  private tailUnsupported = false;

  constructor(
    readonly dataDir: string,
    private readonly configuredBytes: number,
    private readonly log?: Logger,
  ) {
    this.path = join(dataDir, RESERVE_FILE);
    this.indexFile = join(dataDir, 'index', 'data.mdb');
  }

  /** Bytes of each part (decided from the file system's size). */
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

  /** Bytes allocated to the index file past its end (0 when it cannot be kept). */
  async tail(): Promise<number> {
    const s = await stat(this.indexFile).catch(() => null);
    return s ? Math.max(0, s.blocks * 512 - s.size) : 0;
  }

  /** Whether the tail is kept here (fallocate works on this file system). */
  get tailKept(): boolean {
    return !this.tailUnsupported;
  }

  /** Bytes the reserve lacks: a missing file, a tail under half its size. */
  async shortBytes(): Promise<number> {
    const bytes = await this.bytes();
    if (bytes === 0) return 0;
    const tail = this.tailUnsupported ? bytes : await this.tail();
    return ((await this.present()) ? 0 : bytes) + (tail < bytes / 2 ? bytes - tail : 0);
  }

  /**
   * Allocates the index file's tail up to `bytes()` when less than half is left, with
   * what the disk has beyond `keepFree`. Returns the tail's size after.
   */
  async topUpTail(keepFree = 0): Promise<number> {
    return this.growTail(keepFree, false);
  }

  /**
   * `topUpTail`, or with `onTop` (the reserve file was just freed): the tail grows by
   * the file's size whatever it holds, up to twice `bytes()`, before anything else on
   * the disk can take the freed space. Without it a tail still over half its size took
   * nothing, the segment writer's retry took the freed space, and the commits of the
   * full-disk episode (labels, segments, the overwrite's deletions) ran the tail out.
   */
  private async growTail(keepFree: number, onTop: boolean): Promise<number> {
    const bytes = await this.bytes();
    if (bytes === 0 || this.tailUnsupported) return 0;
    const st = await stat(this.indexFile).catch(() => null);
    if (!st) return 0;
    const tail = Math.max(0, st.blocks * 512 - st.size);
    if (!onTop && tail >= bytes / 2) return tail;
    const s = await statfs(this.dataDir);
    const room = Math.floor((s.bavail * s.bsize - keepFree) / 4096) * 4096;
    const want = Math.min(onTop ? Math.min(tail + bytes, 2 * bytes) : bytes, room + tail);
    if (want <= tail) return tail;
    try {
      await fallocate(this.indexFile, st.size, want);
    } catch (err) {
      const e = err as Error & { code?: string };
      if (e.code === 'ENOENT' || /not supported/i.test(e.message)) {
        this.tailUnsupported = true;
        this.log?.warn({ err: e.message }, 'index reserve: the index file cannot be preallocated here; only index.reserve is kept');
      }
      return this.tail();
    }
    return this.tail();
  }

  /**
   * Deletes the reserve file and gives its space to the index's tail at once; true when
   * there was a file to free.
   */
  async release(): Promise<boolean> {
    const had = await this.present();
    await rm(this.path, { force: true });
    if (had) await fsyncDir(dirname(this.path)).catch(() => undefined);
    await this.growTail(0, had).catch(() => 0);
    return had;
  }

  /**
   * Tops up the tail, then writes the file if it is missing, each only with room for
   * it and `keepFree` bytes more; true when the file is (now) present. A failure (the
   * disk filled meanwhile) leaves nothing behind.
   */
  async ensure(keepFree = 0): Promise<boolean> {
    await this.topUpTail(keepFree).catch(() => 0);
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
