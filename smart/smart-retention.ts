/**
 * Deleting smart-stream files with the video they belong to. Retention (and camera
 * purge) call these with the same bounds it deletes video by; a smart file goes when
 * all of its packets are in the deleted time, never a partial file.
 *
 * Crash-safe order, as for segments (docs/design/crash-safety.md): drop the index entries
 * (packets, then the file's entry) in one commit, then unlink. A crash in between
 * leaves an unindexed file, never an entry pointing at nothing.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import type { SmartFileRecord } from '../index/smart.ts';
import { liveSmartFiles } from './smart-writer.ts';

export interface SmartDeleteReport {
  files: number;
  records: number;
  bytes: number;
}

/** Deletes `camera`'s smart files whose packets all lie before `beforeMs` (not open ones). */
export function deleteSmartBefore(index: RecorderIndex, dataDir: string, camera: string, beforeMs: number): Promise<SmartDeleteReport> {
  return deleteSmartRange(index, dataDir, camera, -1, beforeMs);
}

/**
 * Deletes `camera`'s smart files whose packets all lie in [fromMs, toMs). A file a
 * writer of this process still appends to is kept unless `includeOpen` (camera purge
 * after its actor stopped); one whose entry is still `open` after a crash is not
 * written any more and goes like any other.
 */
export async function deleteSmartRange(
  index: RecorderIndex,
  dataDir: string,
  camera: string,
  fromMs: number,
  toMs: number,
  includeOpen = false,
): Promise<SmartDeleteReport> {
  const victims: SmartFileRecord[] = [];
  for (const f of index.smart.filesStartingIn(camera, fromMs, toMs)) {
    if (f.endMs < toMs && (includeOpen || !liveSmartFiles.has(f.file))) victims.push(f);
  }
  const report: SmartDeleteReport = { files: 0, records: 0, bytes: 0 };
  for (const f of victims) {
    await index.smart.removeFile(f);
    await rm(join(dataDir, f.file), { force: true });
    report.files++;
    report.records += f.records;
    report.bytes += f.bytes;
  }
  return report;
}
