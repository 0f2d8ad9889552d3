/**
 * Cover (seed: "old pictures are covered in a circle"): the oldest pictures of a pool go
 * to make room, pack by pack (docs/design/pictures.md "Cover").
 *
 * A pool's pictures are covered while they hold more than its `pictureCapacityBytes`,
 * and, in a `cycle` pool, once a pack's newest picture is older than `cycleDays`; the
 * emergency overwrite of a full disk covers the oldest pack too (actors/storage-
 * supervisor.ts, oldest of video and pictures first). Only closed packs are covered:
 * the open one is still being appended to (it closes by size or age).
 *
 * Invariant (as invariant 3 for video): a locked picture is never covered while its
 * lock holds. Its pack goes anyway, after the locked pictures were written again to the
 * pool's current pack by the normal write path (bytes fdatasync'ed, then the entry
 * re-pointed in one commit): the URL stays, the bytes are the same.
 *
 * Crash order: locked pictures moved → the pack's record marked `covering` (commit) →
 * its file unlinked → record, entries, signatures and locks removed (commit). A crash
 * after the mark is finished by the next start's reconcile (pictures/reconcile.ts);
 * before it, nothing was lost and the pass runs again.
 */
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import type { PackRecord, PictureKey } from '../index/pictures.ts';
import type { PoolPolicy } from '../index/records.ts';
import { crashPoint } from '../lib/crash-point.ts';
import type { Logger } from '../lib/log.ts';

const DAY_MS = 86_400_000;

export interface CoverDeps {
  index: RecorderIndex;
  dataDir: string;
  log: Logger;
  /** Writes a stored picture again into its pool's current pack (the same key, new place). */
  rewrite: (key: PictureKey) => Promise<void>;
  /** Told of the pictures a cover removed (the in-memory signature index forgets them). */
  onRemoved?: (keys: PictureKey[]) => void;
  /** Told of a pack file unlinked (kept read handles of it are closed). */
  onPackGone?: (file: string) => void;
}

export interface CoverReport {
  packs: number;
  pictures: number;
  bytes: number;
  /** Locked pictures written again to keep them. */
  moved: number;
}

/** Whether a lock holds at `nowMs`. */
export function pictureLockHolds(lock: { untilMs: number | null } | undefined, nowMs: number): boolean {
  return lock !== undefined && (lock.untilMs === null || lock.untilMs > nowMs);
}

/** The closed packs of a pool (every pool: null), oldest pictures first; empty packs first of all. */
export function coverOrder(index: RecorderIndex, pool: string | null): PackRecord[] {
  return index.pictures
    .allPacks()
    .filter((p) => p.closed && !p.covering && (pool === null || p.pool === pool))
    .sort((a, b) => (a.range?.[1] ?? -Infinity) - (b.range?.[1] ?? -Infinity) || a.id - b.id);
}

/** The packs of `pool` that its policy says go now, oldest first. */
export function packsDue(index: RecorderIndex, policy: PoolPolicy, nowMs: number): PackRecord[] {
  const cap = policy.pictureCapacityBytes ?? null;
  const cycleBefore = policy.overwrite === 'cycle' && policy.cycleDays !== undefined ? nowMs - policy.cycleDays * DAY_MS : null;
  let usage = index.pictures.poolBytes(policy.id);
  const due: PackRecord[] = [];
  for (const pack of coverOrder(index, policy.id)) {
    const expired = cycleBefore !== null && (pack.range === null || pack.range[1] < cycleBefore);
    const over = cap !== null && usage > cap;
    if (!expired && !over) break;
    due.push(pack);
    usage -= pack.bytes;
  }
  return due;
}

/** Covers one closed pack: its locked pictures are kept (written again), the rest go with the file. */
export async function coverPack(d: CoverDeps, pack: PackRecord, nowMs: number): Promise<CoverReport> {
  const report: CoverReport = { packs: 0, pictures: 0, bytes: 0, moved: 0 };
  for (const { key } of d.index.pictures.entriesOfPack(pack)) {
    if (!pictureLockHolds(d.index.pictures.lockOf(key), nowMs)) continue;
    await d.rewrite(key);
    report.moved++;
  }
  const gone = d.index.pictures.entriesOfPack(pack).map((h) => h.key);
  await d.index.pictures.putPack({ ...pack, covering: true });
  crashPoint('pictures.cover-marked');
  await unlink(join(d.dataDir, pack.file)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  d.onPackGone?.(pack.file);
  report.pictures = await d.index.pictures.removePack(pack, { covered: true });
  d.onRemoved?.(gone);
  report.packs = 1;
  report.bytes = pack.bytes;
  return report;
}

/** One pass over the pools: every pack their policies say goes now. */
export async function coverPass(d: CoverDeps, pools: readonly PoolPolicy[], nowMs: number): Promise<CoverReport> {
  const total: CoverReport = { packs: 0, pictures: 0, bytes: 0, moved: 0 };
  for (const policy of pools) {
    for (const pack of packsDue(d.index, policy, nowMs)) {
      const r = await coverPack(d, pack, nowMs);
      total.packs += r.packs;
      total.pictures += r.pictures;
      total.bytes += r.bytes;
      total.moved += r.moved;
    }
  }
  if (total.packs > 0) d.log.info({ ...total }, 'pictures covered');
  return total;
}
