/**
 * Deleting a segment, crash-safe (invariant 2 in reverse; Moonfire's "mark garbage,
 * unlink, drop"):
 *   1. one commit: the index entry goes (with its pool usage) and a `delete` intent
 *      naming its files (primary and backup copy) is recorded (one method of the
 *      index, SegmentStore.removeWithIntent, so the two cannot be split);
 *   2. the files are unlinked and their directories fsync'ed;
 *   3. the intent is removed.
 * A crash after 1 leaves files without an entry: `finishIntents()` on the next start
 * (before reconcile, which would otherwise re-index them) unlinks them. A crash before
 * 1 leaves everything as it was. So there is never an index entry without its file,
 * nor an orphan file after a restart.
 */
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import type { IntentRecord, SegmentRecord } from '../index/records.ts';
import { crashPoint } from '../lib/crash-point.ts';
import type { Logger } from '../lib/log.ts';
import { fsyncDir } from './segment-file.ts';

/** Absolute paths of a segment's copies: the primary, and the backup when the pool has one. */
export function segmentCopies(dataDir: string, seg: Pick<SegmentRecord, 'file'>, backupDir?: string): string[] {
  return backupDir ? [join(dataDir, seg.file), join(backupDir, seg.file)] : [join(dataDir, seg.file)];
}

/**
 * `unlinkFirst`: the last resort of a full disk whose index cannot commit even this
 * deletion (actors/storage-supervisor.ts): the files go first, then the entry. A crash
 * in between leaves an entry without its file: reconcile drops it (an `index` alarm).
 */
export async function deleteSegment(index: RecorderIndex, seg: SegmentRecord, files: string[], opts: { unlinkFirst?: boolean } = {}): Promise<void> {
  if (opts.unlinkFirst) {
    await unlinkAll(files);
    await index.segments.remove(seg.camera, seg.startMs);
    return;
  }
  const intent = await index.segments.removeWithIntent(seg, files);
  crashPoint('delete.after-intent');
  await unlinkAll(files);
  await index.intents.finish(intent);
}

async function unlinkAll(files: string[]): Promise<void> {
  for (const f of files) await rm(f, { force: true });
  for (const dir of new Set(files.map((f) => dirname(f)))) await fsyncDir(dir).catch(() => undefined);
}

/** How the intents other than `delete` are finished (actors/storage-supervisor.ts). */
export interface IntentFinishers {
  thin: (intent: Extract<IntentRecord, { kind: 'thin' }>) => Promise<void>;
  /** Deletes what is left of the camera (each segment with its own `delete` intent). */
  purge: (intent: Extract<IntentRecord, { kind: 'purge' }>) => Promise<void>;
}

/**
 * Finishes file work a crash interrupted; run on start before reconcile. Returns how
 * many, in key order: deletions first, then purges, then thinnings.
 */
export async function finishIntents(index: RecorderIndex, finish: IntentFinishers, log: Logger): Promise<number> {
  let n = 0;
  for (const intent of index.intents.list()) {
    if (intent.kind === 'delete') {
      await unlinkAll(intent.files);
      log.warn({ camera: intent.camera, files: intent.files }, 'finished a segment deletion interrupted by a crash');
    } else if (intent.kind === 'thin') {
      await finish.thin(intent);
    } else {
      await finish.purge(intent);
      log.warn({ camera: intent.camera }, 'finished a camera purge interrupted by a crash');
    }
    await index.intents.finish(intent);
    n++;
  }
  return n;
}
