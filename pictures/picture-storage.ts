/**
 * The node's picture storage (docs/design/pictures.md): one pack writer per pool
 * (pictures/pack-writer.ts, group commit), the `seq` of each new picture, and reads of
 * a picture's bytes. Pictures are checked (pictures/jpeg.ts) before anything is
 * written, so bad input stores nothing.
 *
 * `seq` tells apart pictures of one ms (node-wide: the index is keyed by time first):
 * the next after the highest the index or a write still in flight holds for that ms,
 * so two writers at the same instant never share a key; in a cluster the next of this
 * node's own series (pictures/seq-slot.ts), so its keys never meet the copies it holds.
 */
import { join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import type { PackRecord, PictureEntry, PictureHit, PictureKey } from '../index/pictures.ts';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { RecorderConfig } from '../lib/config.ts';
import { inspectJpeg } from './jpeg.ts';
import { PackReaders } from './pack-readers.ts';
import { PackWriter } from './pack-writer.ts';
import { Signer } from './signer.ts';
import type { PictureHeader } from './pack-format.ts';
import { pictureId } from './layout.ts';
import { SignatureIndex } from './signature-index.ts';
import { reconcilePictures, type PictureReconcileReport } from './reconcile.ts';
import { coverOrder, coverPack, coverPass, type CoverDeps } from './cover.ts';
import { CopyPacks, type PackRange } from './copy-pack.ts';
import { firstSeq, seqStep } from './seq-slot.ts';
import type { PoolPolicy } from '../index/records.ts';

export interface PictureStorageOptions {
  index: RecorderIndex;
  dataDir: string;
  clock: Clock;
  log: Logger;
  /** A pack is rotated once it holds this many bytes. */
  packMaxBytes: number;
  /** … or once it is this old at the next write. */
  packMaxAgeMs: number;
}

export interface PictureInput {
  camera: string;
  pool: string;
  atMs: number;
  type: string;
  meta?: Record<string, string>;
  bytes: Uint8Array;
}

export interface StoredPicture {
  key: PictureKey;
  entry: PictureEntry;
  width: number;
  height: number;
}

export class PictureStorage {
  private readonly writers = new Map<string, PackWriter>();
  private readonly seqs = new Map<number, { next: number; pending: number }>();
  /** Packs' read handles, kept between reads. */
  private readonly readers = new PackReaders();
  private lastPackId: number;
  private stopped = false;
  /** In a cluster: this node's seq slot (pictures/seq-slot.ts); null: seqs run 0, 1, 2… */
  private seqSlot: number | null = null;
  /** The node's index (its picture store). */
  readonly index: RecorderIndex;
  /** Visual signatures of stored pictures, computed after each write (search by image). */
  readonly signer: Signer;
  /** Every signature in memory, for search by image (loaded on the first search). */
  readonly signatures: SignatureIndex;
  /** Copies of other nodes' packs here, and the ranges this node serves (cluster/picture-copies.ts). */
  readonly copies: CopyPacks;

  constructor(private readonly opts: PictureStorageOptions) {
    this.index = opts.index;
    this.signatures = new SignatureIndex(opts.index.pictures);
    this.signer = new Signer(opts.index, opts.log, undefined, (done) => this.signatures.add(done));
    this.lastPackId = opts.index.pictures.lastPackId();
    this.copies = new CopyPacks({ index: opts.index, dataDir: opts.dataDir, log: opts.log, clock: opts.clock, newPackId: () => ++this.lastPackId });
  }

  /**
   * Appends a range of `origin`'s pack pulled from a node that holds it (pictures/copy-pack.ts)
   * and queues the copied pictures for their signatures (search by image finds copies too).
   * Returns how far the copy reaches, the cameras it holds pictures of, and the counts.
   */
  async appendCopy(origin: string, pack: number, got: PackRange): Promise<{ progress: number; cameras: string[]; pictures: number; skipped: number }> {
    if (this.stopped) throw new RecorderError('SHUTTING_DOWN', 'picture storage is stopping');
    const r = await this.copies.append(origin, pack, got);
    for (const p of r.indexed) this.signer.add(p.key, Buffer.from(p.payload));
    return { progress: r.progress, cameras: r.cameras, pictures: r.indexed.length, skipped: r.skipped };
  }

  /** Opens the node's picture storage: packs reconciled with the index first; a vanished pack raises an `index` alarm. */
  static async open(o: {
    index: RecorderIndex;
    dataDir: string;
    clock: Clock;
    log: Logger;
    config: Pick<RecorderConfig, 'picturePackBytes' | 'picturePackSeconds'>;
    raiseAlarm: (alarm: AlarmInput) => void;
  }): Promise<PictureStorage> {
    const storage = new PictureStorage({ ...o, packMaxBytes: o.config.picturePackBytes, packMaxAgeMs: o.config.picturePackSeconds * 1000 });
    const report = await storage.recover();
    for (const d of report.droppedPacks) {
      o.raiseAlarm({ kind: 'index', message: `picture pack ${d.file} vanished; its ${d.pictures} pictures were dropped from the index`, details: d });
    }
    return storage;
  }

  /** Start-up: packs reconciled with the index before the first write. */
  async recover(): Promise<PictureReconcileReport> {
    const report = await reconcilePictures(this.opts.index, this.opts.dataDir, { mode: 'repair', log: this.opts.log });
    // Never a name some file already has (an unreadable one is left in place).
    this.lastPackId = Math.max(this.lastPackId, this.opts.index.pictures.lastPackId(), report.highestPackId);
    return report;
  }

  /** In a cluster: this node's seqs are its slot's (pictures/seq-slot.ts), so its keys never clash with the copies it holds. */
  useSeqSlot(slot: number): void {
    this.seqSlot = slot;
  }

  /** Stores one picture; resolves once its bytes are durable and indexed. Throws PICTURE_INVALID before writing anything. */
  async put(input: PictureInput): Promise<StoredPicture> {
    if (this.stopped) throw new RecorderError('SHUTTING_DOWN', 'picture storage is stopping');
    const { width, height } = inspectJpeg(input.bytes);
    let s = this.seqs.get(input.atMs);
    if (!s) {
      s = { next: firstSeq(this.opts.index.pictures.lastSeq(input.atMs), this.seqSlot), pending: 0 };
      this.seqs.set(input.atMs, s);
    }
    const seq = s.next;
    s.next += seqStep(this.seqSlot);
    s.pending++;
    const key: PictureKey = [input.camera, input.atMs, seq];
    const header: PictureHeader = { camera: input.camera, atMs: input.atMs, seq, type: input.type, width, height };
    if (input.meta && Object.keys(input.meta).length > 0) header.meta = input.meta;
    try {
      const entry = await this.writer(input.pool).write(key, header, input.bytes);
      return { key, entry, width, height };
    } finally {
      if (--s.pending === 0) this.seqs.delete(input.atMs);
    }
  }

  /** The entry of a stored picture, or PICTURE_NOT_FOUND. */
  entry(key: PictureKey): PictureEntry {
    const entry = this.opts.index.pictures.get(key);
    if (!entry) throw new RecorderError('PICTURE_NOT_FOUND', `no picture ${pictureId(key)}`);
    return entry;
  }

  /** A stored picture's original bytes (one positioned read). */
  async read(key: PictureKey, entry = this.entry(key)): Promise<Buffer> {
    const pack = this.opts.index.pictures.pack(entry.pack);
    if (!pack) throw new RecorderError('PICTURE_NOT_FOUND', `no picture ${pictureId(key)} (its pack is gone)`);
    try {
      return await this.readers.read(join(this.opts.dataDir, pack.file), entry.offset, entry.length);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw new RecorderError('PICTURE_NOT_FOUND', `no picture ${pictureId(key)} (its pack is gone)`, { cause: err });
      if ((err as NodeJS.ErrnoException).code === 'ERANGE')
        throw new RecorderError('STORAGE_IO', `pack ${pack.file} is shorter than the index says`, { cause: err });
      throw err;
    }
  }

  /** Pictures of the cameras (null: all) in [fromMs, toMs), time order, after `after`, at most `limit` that `keep` accepts. */
  search(
    cameras: readonly string[] | null,
    fromMs: number,
    toMs: number,
    limit: number,
    keep?: (hit: PictureHit) => boolean,
    after?: PictureKey,
  ): PictureHit[] {
    return this.opts.index.pictures.search({ cameras, fromMs, toMs, limit, ...(keep ? { keep } : {}), ...(after ? { after } : {}) });
  }

  /**
   * Writes a stored picture again, with the same key, type and metadata, into its pool's
   * current pack (cover keeps a locked picture this way): once it resolves the entry
   * points at the new, fdatasync'ed copy.
   */
  async rewrite(key: PictureKey): Promise<void> {
    const entry = this.entry(key);
    const pack = this.pack(entry.pack);
    if (!pack) throw new RecorderError('PICTURE_NOT_FOUND', `no picture ${pictureId(key)} (its pack is gone)`);
    const bytes = await this.read(key, entry);
    const { width, height } = inspectJpeg(bytes);
    const header: PictureHeader = { camera: key[0], atMs: key[1], seq: key[2], type: entry.type, width, height };
    if (entry.meta) header.meta = entry.meta;
    await this.writer(pack.pool).write(key, header, bytes);
  }

  /** Covers what each pool's policy says goes now (pictures/cover.ts); the caller holds retention's mutex. */
  async cover(pools: readonly PoolPolicy[], nowMs: number): Promise<void> {
    await coverPass(this.coverDeps(), pools, nowMs);
  }

  /** Newest picture time of the node's oldest closed pack (null: none): the emergency overwrite compares it with video. */
  oldestPackMs(): number | null {
    const pack = coverOrder(this.opts.index, null)[0];
    return pack ? (pack.range?.[1] ?? -Infinity) : null;
  }

  /** Covers the node's oldest closed pack (emergency overwrite); the bytes its file held. */
  async coverOldest(nowMs: number): Promise<number> {
    const pack = coverOrder(this.opts.index, null)[0];
    if (!pack) return 0;
    const r = await coverPack(this.coverDeps(), pack, nowMs);
    this.opts.log.warn({ pack: pack.file, pictures: r.pictures, kept: r.moved }, 'emergency overwrite: oldest picture pack covered');
    return r.bytes;
  }

  private coverDeps(): CoverDeps {
    return {
      index: this.opts.index,
      dataDir: this.opts.dataDir,
      log: this.opts.log,
      rewrite: (key) => this.rewrite(key),
      onRemoved: (keys) => this.signatures.remove(keys),
      onPackGone: (file) => this.readers.forget(join(this.opts.dataDir, file)),
    };
  }

  /** A pack's record. */
  pack(id: number): PackRecord | undefined {
    return this.opts.index.pictures.pack(id);
  }

  /** The pack a pool is appending to (tests, bench). */
  currentPack(pool: string): PackRecord | null {
    return this.writers.get(pool)?.currentPack ?? null;
  }

  /** The ids of the packs the pools' writers append to now (cluster/picture-copies.ts announces their growth). */
  currentPackIds(): number[] {
    return [...this.writers.values()].flatMap((w) => (w.currentPack ? [w.currentPack.id] : []));
  }

  /** Group-commit batches committed so far, over every pool (bench: pictures per fdatasync). */
  batches(): number {
    let n = 0;
    for (const w of this.writers.values()) n += w.batches;
    return n;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.writers.values()].map((w) => w.stop()));
    await this.signer.stop();
    this.readers.closeAll();
  }

  private writer(pool: string): PackWriter {
    let w = this.writers.get(pool);
    if (!w) {
      const { index, dataDir, clock, log, packMaxBytes, packMaxAgeMs } = this.opts;
      w = new PackWriter({ index, dataDir, pool, clock, log, maxBytes: packMaxBytes, maxAgeMs: packMaxAgeMs, newPackId: () => ++this.lastPackId });
      this.writers.set(pool, w);
    }
    return w;
  }
}
