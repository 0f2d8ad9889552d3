/**
 * Persisted sample tables (index db `sampletables`, playback/sample-table-codec.ts): when a
 * segment closes, its file's moofs are read once more, off the recording path, and the
 * tables are stored in the index in compact form, so the first download or playback of
 * a range decodes one record per segment instead of reading one moof per GOP
 * (docs/design/playback.md "Sample tables").
 *
 * The record is a cache of the file, never a second truth:
 *   - it is computed from the file itself, through openSegmentFile (PS segments through
 *     their fMP4 view), with the offsets of the index's GOP table;
 *   - it is stored only if the segment's entry is still the one it was read for
 *     (index.segments.putSampleTables checks inside the write transaction);
 *   - it goes in the same commit as the segment's removal (retention, purge, reconcile)
 *     and is dropped by any re-put of a closed segment (thinning, repair);
 *   - readers (playback/sample-table.ts) use it only when it matches the index and fall
 *     back to the moofs otherwise, telling this store, which rebuilds it.
 * Segments recorded before this existed, thinned ones and ones whose record was bad get
 * theirs built the first time they are read.
 *
 * Work runs one segment at a time (bounded queue, deduplicated); a node stopping drops
 * what is queued (rebuilt on a later read) and waits for the segment in progress. From
 * the moment the node's shutdown begins (`signal`) nothing more is queued.
 */
import { join, relative } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import { decodeGops } from '../index/gop-table.ts';
import type { SegmentRecord } from '../index/records.ts';
import type { Logger } from '../lib/log.ts';
import { followSignal } from '../lib/lifecycle.ts';
import { decodeSampleTables, encodeSampleTables } from '../playback/sample-table-codec.ts';
import { readFileTables, type PersistedTableSource } from '../playback/sample-table.ts';
import { parseSegmentRelPath } from './layout.ts';

type SegKey = [string, number];

export interface SegmentTableDeps {
  index: RecorderIndex;
  dataDir: string;
  log: Logger;
  /** Segments read at once (default 1: this competes with recording for the disk and CPU). */
  concurrency?: number;
  /** Segments waiting at most; more are dropped and built when next read (default 10000). */
  maxQueued?: number;
  /** The node's shutdown signal (lib/lifecycle.ts): once it aborts nothing is queued. */
  signal?: AbortSignal;
}

export interface SegmentTableStats {
  stored: number;
  /** Gone, still open, changed meanwhile, or already stored when their turn came. */
  skipped: number;
  failed: number;
}

/** Remembered segments whose file could not be read, and records logged as bad. */
const MAX_REMEMBERED = 4096;

export class SegmentTableStore implements PersistedTableSource {
  readonly stats: SegmentTableStats = { stored: 0, skipped: 0, failed: 0 };
  private readonly queue = new Map<string, SegKey>();
  private readonly failed = new Set<string>();
  private readonly warned = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  private idleWaiters: (() => void)[] = [];
  /** Aborted by stop() or with the node's signal. */
  private readonly life: AbortController;
  private readonly concurrency: number;
  private readonly maxQueued: number;

  constructor(private readonly deps: SegmentTableDeps) {
    this.concurrency = deps.concurrency ?? 1;
    this.maxQueued = deps.maxQueued ?? 10_000;
    this.life = followSignal(deps.signal);
  }

  private get stopped(): boolean {
    return this.life.signal.aborted;
  }

  /** The segment writer's `onSegmentClosed` hook. */
  segmentClosed(seg: SegmentRecord): void {
    this.enqueue([seg.camera, seg.startMs]);
  }

  get(path: string): Uint8Array | undefined {
    const key = this.keyOf(path);
    return key ? this.deps.index.segments.sampleTables(key[0], key[1]) : undefined;
  }

  missing(path: string, reason: string | null): void {
    const key = this.keyOf(path);
    if (!key) return;
    if (reason && !this.warned.has(path)) {
      if (this.warned.size >= MAX_REMEMBERED) this.warned.clear();
      this.warned.add(path);
      this.deps.log.warn({ file: path, reason }, 'persisted sample tables not used; read from the file and rebuilt');
    }
    this.enqueue(key);
  }

  /** Resolves once nothing is queued or running (tests, benches). */
  idle(): Promise<void> {
    if (this.queue.size === 0 && this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops what is queued and waits for the segment in progress. */
  async stop(): Promise<void> {
    this.life.abort();
    this.queue.clear();
    await Promise.allSettled([...this.running]);
    this.settle();
  }

  private keyOf(path: string): SegKey | null {
    const parsed = parseSegmentRelPath(relative(this.deps.dataDir, path));
    return parsed ? [parsed.camera, parsed.startMs] : null;
  }

  private enqueue(key: SegKey): void {
    if (this.stopped || this.queue.size >= this.maxQueued) return;
    const k = `${key[0]}\u0000${key[1]}`;
    if (this.queue.has(k)) return;
    this.queue.set(k, key);
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.concurrency && this.queue.size > 0) {
      const [k, key] = this.queue.entries().next().value!;
      this.queue.delete(k);
      const job: Promise<void> = this.build(k, key).finally(() => {
        this.running.delete(job);
        this.pump();
        this.settle();
      });
      this.running.add(job);
    }
  }

  private settle(): void {
    if ((this.queue.size > 0 && !this.stopped) || this.running.size > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async build(k: string, key: SegKey): Promise<void> {
    const { index, dataDir, log } = this.deps;
    const seg = index.segments.get(key[0], key[1]);
    // Open segments still grow: their tables are read from the moofs until they close.
    if (!seg || seg.open || this.failed.has(`${k}\u0000${seg.bytes}`) || this.current(seg)) {
      this.stats.skipped++;
      return;
    }
    try {
      const gops = decodeGops(seg.gops).map((g) => ({ offset: g.offset, size: g.size }));
      const tables = await readFileTables(join(dataDir, seg.file), seg.initSize, gops, seg.bytes);
      if (await index.segments.putSampleTables(seg, encodeSampleTables(tables))) this.stats.stored++;
      else this.stats.skipped++;
    } catch (err) {
      // A file gone or rewritten meanwhile is retention's doing; anything else is worth a line.
      this.stats.failed++;
      if (this.failed.size >= MAX_REMEMBERED) this.failed.clear();
      this.failed.add(`${k}\u0000${seg.bytes}`);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        log.warn({ err, file: seg.file }, 'could not persist the sample tables of a segment; its moofs are read instead');
    }
  }

  /** A stored record that already describes `seg` (two reads asked for the same segment). */
  private current(seg: SegmentRecord): boolean {
    const record = this.deps.index.segments.sampleTables(seg.camera, seg.startMs);
    if (!record) return false;
    try {
      const t = decodeSampleTables(record);
      return t.fileBytes === seg.bytes && t.init.length === seg.initSize;
    } catch {
      return false;
    }
  }
}
