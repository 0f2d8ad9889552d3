/**
 * Thinning a closed segment to its I-frames (media/mp4/fmp4-thin.ts), crash-safe:
 *   1. a `thin` intent (file, tmp) is committed;
 *   2. the thinned copy is written to `tmp` and fdatasync'ed;
 *   3. `tmp` is renamed over the segment file (atomic) and the directory fsync'ed;
 *   4. one commit: the segment entry is rebuilt from the new file (GOP offsets, bytes,
 *      `iframesOnly`; record-type runs kept) and the intent removed
 *      (SegmentStore.putThinned).
 * Replay after a crash (`finishThin`): `tmp` still there → the rename never happened,
 * the original and its entry are intact, drop `tmp`; `tmp` gone → the file may be the
 * thinned one with a stale entry: re-scan it and rebuild the entry. Either way no
 * orphan file and no entry pointing at bytes that moved.
 */
import { copyFile, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import type { IntentRecord, SegmentRecord } from '../index/records.ts';
import { crashPoint } from '../lib/crash-point.ts';
import { RecorderError } from '../lib/errors.ts';
import { scanFmp4File, type ScannedFile } from '../media/mp4/fmp4-file.ts';
import { isThinned, thinFragment } from '../media/mp4/fmp4-thin.ts';
import { parseSegmentRelPath } from './layout.ts';
import { recordFromScan } from './reconcile.ts';
import { fsyncDir } from './segment-file.ts';

export interface ThinResult {
  bytesBefore: number;
  bytesAfter: number;
}

export async function thinSegment(index: RecorderIndex, dataDir: string, seg: SegmentRecord, backupDir?: string): Promise<ThinResult> {
  if (seg.format !== 'mp4') throw new RecorderError('VALIDATION_FAILED', `segment ${seg.file}: only mp4 segments are thinned`);
  if (seg.open) throw new RecorderError('VALIDATION_FAILED', `segment ${seg.file} is still being written`);
  const abs = join(dataDir, seg.file);
  const tmp = `${abs}.thin-tmp`;
  const intent = await index.intents.beginThin(seg, tmp);
  try {
    await writeThinned(abs, tmp);
  } catch (err) {
    // Nothing was renamed: the original and its entry stand; undo the attempt.
    await rm(tmp, { force: true });
    await index.intents.finish(intent);
    throw err;
  }
  crashPoint('thin.before-rename');
  await rename(tmp, abs);
  await fsyncDir(dirname(abs));
  crashPoint('thin.after-rename');
  await reindexThinned(index, dataDir, seg);
  if (backupDir) await replaceCopy(abs, join(backupDir, seg.file));
  const after = (await stat(abs)).size;
  return { bytesBefore: seg.bytes, bytesAfter: after };
}

async function writeThinned(abs: string, tmp: string): Promise<void> {
  const scan = await scanFmp4File(abs);
  const videoId = scan.info.videoTrackId;
  if (videoId === null) throw new RecorderError('VALIDATION_FAILED', `segment ${abs} has no video track`);
  const fh = await open(tmp, 'w');
  try {
    const src = await open(abs, 'r');
    try {
      await fh.write(scan.init);
      for (const f of scan.fragments) {
        const bytes = Buffer.allocUnsafe(f.size);
        await src.read(bytes, 0, f.size, f.offset);
        await fh.write(thinFragment(bytes, f.moof, videoId));
      }
    } finally {
      await src.close();
    }
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** Rebuilds the entry from the (thinned) file and drops the intent, in one commit. */
async function reindexThinned(index: RecorderIndex, dataDir: string, previous: SegmentRecord): Promise<void> {
  const scan = await scanFmp4File(join(dataDir, previous.file));
  const parsed = parseSegmentRelPath(previous.file);
  if (!parsed) throw new RecorderError('INTERNAL', `unparseable segment path ${previous.file}`);
  const record = recordFromScan(parsed, previous.file, scan, previous);
  record.flags = { ...previous.flags, iframesOnly: allThinned(scan) };
  await index.segments.putThinned(record);
}

function allThinned(scan: ScannedFile): boolean {
  const videoId = scan.info.videoTrackId;
  return videoId !== null && scan.fragments.every((f) => isThinned(f.moof, videoId));
}

/** Copies `from` over `to` atomically (tmp + rename), for the backup copy of a rewritten segment. */
export async function replaceCopy(from: string, to: string): Promise<void> {
  const tmp = `${to}.copy-tmp`;
  await copyFile(from, tmp);
  const fh = await open(tmp, 'r+');
  try {
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, to);
  await fsyncDir(dirname(to));
}

/** Replay of an interrupted thinning (see the module comment). */
export async function finishThin(index: RecorderIndex, dataDir: string, intent: Extract<IntentRecord, { kind: 'thin' }>): Promise<void> {
  const tmpExists = await stat(intent.tmp).then(
    () => true,
    () => false,
  );
  if (tmpExists) {
    await rm(intent.tmp, { force: true });
    return;
  }
  const previous = index.segments.get(intent.camera, intent.startMs);
  const fileExists = await stat(join(dataDir, intent.file)).then(
    () => true,
    () => false,
  );
  if (!previous || !fileExists) return; // deleted meanwhile; reconcile settles the rest
  await reindexThinned(index, dataDir, previous);
}
