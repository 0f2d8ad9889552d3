/**
 * Compacting the index at start-up (issue 13 item 1).
 *
 * LMDB never gives pages back to the file system: the file keeps the size of its
 * largest snapshot, and pages freed by later commits are reused only when no reader
 * still sees an older snapshot. A read transaction left open (an lmdb-js range
 * iterator abandoned mid-way, as playback did: playback/playback-source.ts) stops all reuse,
 * and every commit then grows the file by the pages it copied (~5 per segment commit,
 * one every few seconds per camera: megabytes per hour). Once such a leak is gone the
 * free pages are reused, but the file stays large; on a small disk that is space the
 * video never gets back.
 *
 * So at start-up, before the index is opened for the node, when more than half of
 * the file is free pages and that is at least COMPACT_MIN_WASTE: a compacting copy
 * (lmdb-js `backup(dir, true)`, LMDB's MDB_CP_COMPACT: only the pages in use, renumbered)
 * is written beside the index, fdatasync'ed, checked (index/integrity.ts), and renamed
 * over `data.mdb`. A crash before the rename leaves the old file and a temporary
 * directory that the next start removes; after it, the new file. Skipped when the disk
 * has no room for the copy (it is the size of the pages in use).
 */
import { open as openLmdb } from 'lmdb';
import { mkdir, open, rename, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../lib/log.ts';
import { checkLmdbFile, type IndexCheck } from './integrity.ts';

/** Free pages worth a copy at start-up: at least this many bytes (and half the file). */
export const COMPACT_MIN_WASTE = 4 * 1024 * 1024;

export interface CompactResult {
  compacted: boolean;
  beforeBytes: number;
  afterBytes: number;
  reason: string;
}

/** Whether a checked index file is worth compacting. */
export function worthCompacting(check: IndexCheck, minWaste = COMPACT_MIN_WASTE): boolean {
  if (!check.ok || !check.exists) return false;
  const waste = check.fileBytes - check.usedPages * check.pageSize;
  return waste >= minWaste && waste * 2 > check.fileBytes;
}

async function fsyncPath(path: string, dir = false): Promise<void> {
  const fh = await open(path, dir ? 'r' : 'r+');
  try {
    await (dir ? fh.sync() : fh.datasync());
  } finally {
    await fh.close();
  }
}

/** Compacts `<dataDir>/index/data.mdb` when `check` says it is worth it. The index must not be open. */
export async function compactIndex(dataDir: string, check: IndexCheck, log: Logger, minWaste = COMPACT_MIN_WASTE): Promise<CompactResult> {
  const dir = join(dataDir, 'index');
  const tmpDir = join(dataDir, 'index.compacting');
  await rm(tmpDir, { recursive: true, force: true });
  const result: CompactResult = { compacted: false, beforeBytes: check.fileBytes, afterBytes: check.fileBytes, reason: '' };
  if (!worthCompacting(check, minWaste)) return { ...result, reason: 'not worth it' };
  const need = check.usedPages * check.pageSize;
  const s = await statfs(dataDir);
  if (s.bavail * s.bsize < need + 1024 * 1024) {
    log.warn({ needBytes: need, freeBytes: s.bavail * s.bsize }, 'index compaction skipped: no room for the copy');
    return { ...result, reason: 'no room for the copy' };
  }
  await mkdir(tmpDir, { recursive: true });
  try {
    const env = openLmdb({ path: dir, maxDbs: 64, mapSize: 8 * 1024 ** 3 });
    try {
      await env.backup(tmpDir, true);
    } finally {
      await env.close();
    }
    const copy = join(tmpDir, 'data.mdb');
    await fsyncPath(copy);
    const after = checkLmdbFile(copy);
    if (!after.ok) throw new Error(`the compacted copy fails its check: ${after.problems.join('; ')}`);
    await rename(copy, join(dir, 'data.mdb'));
    await fsyncPath(dir, true);
    log.warn({ beforeBytes: check.fileBytes, afterBytes: after.fileBytes, freePages: check.freePages }, 'index compacted: free pages given back to the disk');
    return { compacted: true, beforeBytes: check.fileBytes, afterBytes: after.fileBytes, reason: 'compacted' };
  } catch (err) {
    log.error({ err }, 'index compaction failed; the index is used as it was');
    return { ...result, reason: `failed: ${(err as Error).message}` };
  } finally {
    await rm(tmpDir, { recursive: true, force: true });
  }
}
