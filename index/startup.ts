/**
 * Opening the index safely (issue 13 item 5): the file is checked before LMDB maps it
 * (index/integrity.ts: a corrupt file is INDEX_CORRUPT, never a SIGBUS), compacted when
 * mostly free pages (index/compact.ts), opened, and compared with the config journal
 * (index/journal.ts: an index that is not the one the journal describes, or that lost
 * its users, is INDEX_LOST). The recorder, `recorder user …` and `recorder check` open
 * it this way (beside a running recorder, the metas only); `recorder reindex` sets a
 * corrupt one aside (moveIndexAside) instead.
 */
import { rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RecorderError } from '../lib/errors.ts';
import { DataDirLockedError, lockDataDir } from '../lib/data-dir-lock.ts';
import type { Logger } from '../lib/log.ts';
import { compactIndex } from './compact.ts';
import { RecorderIndex } from './db.ts';
import { checkIndexFile, type IndexCheck } from './integrity.ts';
import { assertJournalMatches, journalPath, readJournal, type JournalSnapshot } from './journal.ts';

/** Exit status of the CLI when the index is corrupt or lost (INDEX_CORRUPT, INDEX_LOST). */
export const EXIT_INDEX = 3;

export function indexCorruptError(dataDir: string, check: IndexCheck): RecorderError {
  return new RecorderError(
    'INDEX_CORRUPT',
    `the index ${join(dataDir, 'index', 'data.mdb')} is corrupt (${check.problems.join('; ')}); it is not opened (LMDB would crash on it). Run \`recorder reindex\` to set it aside and rebuild it from the segment files and ${journalPath(dataDir)}.`,
    { details: { problems: check.problems } },
  );
}

/** Checks the index file; throws INDEX_CORRUPT when it fails. */
export function assertIndexIntact(dataDir: string, opts: { metaOnly?: boolean } = {}): IndexCheck {
  const check = checkIndexFile(dataDir, opts);
  if (!check.ok) throw indexCorruptError(dataDir, check);
  return check;
}

/**
 * Whether a recorder runs on the data dir now (it holds the data-dir lock). Its index
 * passed the whole check when it started and is being written: a command beside it
 * (`user`, `check`) checks the metas only.
 */
export async function dataDirInUse(dataDir: string): Promise<boolean> {
  try {
    const lock = await lockDataDir(dataDir);
    await lock.release();
    return false;
  } catch (err) {
    if (err instanceof DataDirLockedError) return true;
    throw err;
  }
}

export interface CheckedIndex {
  index: RecorderIndex;
  journal: JournalSnapshot | null;
  check: IndexCheck;
}

/**
 * Check, compact (`compact`: the node, which holds the data-dir lock), open, compare
 * with the journal. `journal: false` skips the comparison (`recorder check` reports
 * instead of refusing).
 */
export async function openCheckedIndex(
  dataDir: string,
  log: Logger,
  opts: { compact?: boolean; journal?: boolean; metaOnly?: boolean } = {},
): Promise<CheckedIndex> {
  let check = assertIndexIntact(dataDir, { metaOnly: opts.metaOnly === true });
  if (opts.compact) {
    const r = await compactIndex(dataDir, check, log);
    if (r.compacted) check = assertIndexIntact(dataDir);
  }
  const journal = await readJournal(dataDir);
  const index = await RecorderIndex.open(dataDir);
  try {
    if (opts.journal !== false) assertJournalMatches(index, journal, dataDir);
  } catch (err) {
    await index.close();
    throw err;
  }
  return { index, journal, check };
}

/** Renames `<data>/index` to `<data>/index.corrupt-<time>` (reindex of a corrupt index); returns where. */
export async function moveIndexAside(dataDir: string, nowMs = Date.now()): Promise<string | null> {
  const from = join(dataDir, 'index');
  if (
    !(await stat(from).then(
      () => true,
      () => false,
    ))
  )
    return null;
  const to = join(dataDir, `index.corrupt-${new Date(nowMs).toISOString().replace(/[:.]/g, '-')}`);
  await rename(from, to);
  return to;
}
