/**
 * Appends pictures to one pool's current pack file, with group commit
 * (docs/design/pictures.md "Write path"). The durability order of invariant 2
 * (docs/design/architecture.md) holds for every picture:
 *
 *   1. append the batch's records (header + bytes each) at the pack's durable end;
 *   2. fdatasync the pack;
 *   3. one index commit: every entry of the batch and the pack's new durable length;
 *   4. answer the writers.
 *
 * Writes that arrive while a batch is being synced queue and form the next batch, so
 * many pictures share one fdatasync and one commit (1000+/s of 200 kB on a disk whose
 * fdatasync takes ~1 ms). A batch that fails at 1 or 2 is cut off the pack again
 * (ftruncate to the durable end) and every writer of it gets STORAGE_IO; one whose
 * commit fails is cut off too, so no picture a writer was told failed appears later.
 * A crash between 2 and 3 leaves a synced tail the index lacks: the start-up reconcile
 * indexes it (pictures/reconcile.ts); a crash inside 1 leaves a torn tail it truncates.
 *
 * A pack is rotated (closed, a new one created) when it reaches `maxBytes` or is
 * older than `maxAgeMs` at the next write. Creating one: create the file exclusively,
 * write its header, fdatasync, fsync the folder, commit its record.
 */
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { crashPoint } from '../lib/crash-point.ts';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import type { RecorderIndex } from '../index/db.ts';
import { widenPack, type PackRecord, type PictureEntry, type PictureKey } from '../index/pictures.ts';
import { encodePackHeader, encodeRecordHeader, type PictureHeader } from './pack-format.ts';
import { packRelPath } from './layout.ts';

/** Most pictures and bytes one batch takes (the rest form the next batch). */
const BATCH_MAX_PICTURES = 1024;
const BATCH_MAX_BYTES = 64 * 1024 * 1024;

export interface PackWriterDeps {
  index: RecorderIndex;
  dataDir: string;
  pool: string;
  clock: Clock;
  log: Logger;
  maxBytes: number;
  maxAgeMs: number;
  /** A pack id never used before (node-wide). */
  newPackId: () => number;
}

interface Job {
  key: PictureKey;
  header: PictureHeader;
  payload: Uint8Array;
  resolve: (entry: PictureEntry) => void;
  reject: (err: unknown) => void;
}

/** fsync of a folder: the name of a file created in it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeAll(fh: FileHandle, bufs: Uint8Array[], position: number): Promise<void> {
  let pos = position;
  let rest = bufs;
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest, pos);
    pos += bytesWritten;
    let skip = bytesWritten;
    const next: Uint8Array[] = [];
    for (const b of rest) {
      if (skip >= b.length) {
        skip -= b.length;
        continue;
      }
      next.push(skip > 0 ? b.subarray(skip) : b);
      skip = 0;
    }
    if (bytesWritten === 0 && next.length > 0) throw new Error('write wrote nothing');
    rest = next;
  }
}

export class PackWriter {
  private current: { rec: PackRecord; fh: FileHandle } | null = null;
  private readonly queue: Job[] = [];
  private running: Promise<void> | null = null;
  private stopped = false;
  /** Batches committed and their sizes (bench, tests). */
  batches = 0;

  constructor(private readonly deps: PackWriterDeps) {}

  /** Appends one picture; resolves with its entry once it is durable and indexed. */
  write(key: PictureKey, header: PictureHeader, payload: Uint8Array): Promise<PictureEntry> {
    if (this.stopped) return Promise.reject(new RecorderError('SHUTTING_DOWN', 'picture storage is stopping'));
    return new Promise((resolve, reject) => {
      this.queue.push({ key, header, payload, resolve, reject });
      this.kick();
    });
  }

  /**
   * Starts draining unless a drain runs. On the next microtask, so writes queued in the
   * same turn (a multipart batch) share the first batch; and again when a drain ends
   * with writes queued after its last look at the queue (they would wait for ever).
   */
  private kick(): void {
    if (this.running) return;
    this.running = Promise.resolve()
      .then(() => this.drain())
      .finally(() => {
        this.running = null;
        if (this.queue.length > 0) this.kick();
      });
  }

  /** The pack being appended to (null before the first write). */
  get currentPack(): PackRecord | null {
    return this.current?.rec ?? null;
  }

  /** Waits for queued writes, closes the pack file (its record stays open: the next start closes it). */
  async stop(): Promise<void> {
    this.stopped = true;
    while (this.running) await this.running;
    await this.current?.fh.close().catch(() => undefined);
    this.current = null;
  }

  /** Closes the current pack for appends (retention deletes only closed packs). */
  async rotate(): Promise<void> {
    while (this.running) await this.running;
    await this.closeCurrent();
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      let bytes = 0;
      let n = 0;
      while (n < this.queue.length && n < BATCH_MAX_PICTURES && (n === 0 || bytes + this.queue[n]!.payload.length <= BATCH_MAX_BYTES)) {
        bytes += this.queue[n]!.payload.length;
        n++;
      }
      const batch = this.queue.splice(0, n);
      try {
        await this.flush(batch);
      } catch (err) {
        for (const job of batch) job.reject(err);
      }
    }
  }

  private async flush(batch: Job[]): Promise<void> {
    const { index, clock } = this.deps;
    const cur = this.current;
    if (cur && (cur.rec.bytes >= this.deps.maxBytes || clock.nowMs() - cur.rec.createdMs >= this.deps.maxAgeMs)) await this.closeCurrent();
    const { rec, fh } = this.current ?? (await this.createPack());
    const bufs: Uint8Array[] = [];
    const entries: { key: PictureKey; entry: PictureEntry }[] = [];
    let pos = rec.bytes;
    for (const job of batch) {
      const head = encodeRecordHeader(job.header, job.payload);
      bufs.push(head, job.payload);
      const entry: PictureEntry = { pack: rec.id, offset: pos + head.length, length: job.payload.length, type: job.header.type };
      if (job.header.meta) entry.meta = job.header.meta;
      entries.push({ key: job.key, entry });
      pos += head.length + job.payload.length;
    }
    try {
      await writeAll(fh, bufs, rec.bytes);
      await fh.datasync();
    } catch (err) {
      await this.cutBack(fh, rec.bytes);
      throw new RecorderError('STORAGE_IO', `pack ${rec.file}: ${(err as Error).message}`, { cause: err });
    }
    crashPoint('pictures.after-sync');
    const next = widenPack(
      { ...rec, bytes: pos },
      entries.map((e) => e.key),
    );
    try {
      await index.pictures.append(next, entries);
    } catch (err) {
      await this.cutBack(fh, rec.bytes);
      throw err;
    }
    this.current = { rec: next, fh };
    this.batches++;
    batch.forEach((job, i) => job.resolve(entries[i]!.entry));
  }

  /** A failed batch leaves nothing: the pack is cut back to its durable, indexed end. */
  private async cutBack(fh: FileHandle, bytes: number): Promise<void> {
    try {
      await fh.truncate(bytes);
      await fh.datasync();
    } catch (err) {
      // Reconcile truncates or indexes the tail at the next start; log it now.
      this.deps.log.error({ err, pool: this.deps.pool }, 'pack could not be cut back after a failed write');
    }
  }

  private async closeCurrent(): Promise<void> {
    const cur = this.current;
    if (!cur) return;
    this.current = null;
    await cur.fh.close().catch(() => undefined);
    await this.deps.index.pictures.putPack({ ...cur.rec, closed: true });
  }

  private async createPack(): Promise<{ rec: PackRecord; fh: FileHandle }> {
    const { dataDir, pool, clock, index } = this.deps;
    const id = this.deps.newPackId();
    const file = packRelPath(pool, id);
    const abs = join(dataDir, file);
    await mkdir(dirname(abs), { recursive: true });
    const fh = await open(abs, 'wx');
    try {
      const createdMs = clock.nowMs();
      const head = encodePackHeader({ id, pool, createdMs });
      await writeAll(fh, [head], 0);
      await fh.datasync();
      await fsyncDir(dirname(abs));
      const rec: PackRecord = { id, pool, file, bytes: head.length, count: 0, createdMs, closed: false, range: null };
      await index.pictures.putPack(rec);
      this.current = { rec, fh };
      this.deps.log.info({ pool, pack: id, file }, 'picture pack created');
      return this.current;
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw new RecorderError('STORAGE_IO', `pack ${file} could not be created: ${(err as Error).message}`, { cause: err });
    }
  }
}
