/**
 * The config journal: what the segment files cannot say, kept beside the data so a
 * lost or corrupt index can be rebuilt whole (issue 13 item 5).
 *
 * `recorder reindex` rebuilds segments from the files; cameras, schedules, users,
 * pools, locks and labels exist only in the index. Each commit that changes one of
 * those databases (index/db.ts JOURNALED) schedules a snapshot of all six, written to
 * `<data>/config-journal.json` atomically (temp file, fdatasync, rename, fsync of the
 * directory; mode 0600: it holds camera credentials and password hashes). Snapshots
 * are coalesced (one write in flight, the next after it) and a failed write (a full
 * disk) is retried until it succeeds.
 *
 * The journal names the index it was written from (meta `id`, RecorderIndex.id). At
 * start-up an index that is not that one (deleted, replaced, truncated to nothing)
 * while the journal lists records, or an index with no users where the journal lists
 * some, is refused (INDEX_LOST): starting would drop every lock and switch HTTP
 * authentication off on loopback (auth=auto asks for credentials once a user exists).
 * `recorder reindex` restores, per database, the journal's records into an index
 * that has none of that kind.
 *
 * Records are stored as [key, value] pairs as the index holds them, so restoring
 * needs no knowledge of how each kind is keyed.
 *
 * Window: the snapshot follows the commit (by one write, milliseconds). A crash in
 * between leaves the journal one change behind the index: harmless while the index
 * lives (the next start writes a fresh snapshot), and after an index loss that change
 * is what `reindex` cannot restore (a user removed in that window would come back).
 */
import { open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { JOURNALED, type JournaledDb, type JournalRows, type RecorderIndex } from './db.ts';

export const JOURNAL_FILE = 'config-journal.json';
const FORMAT = 1;
const RETRY_MS = 5000;

export type JournalRecords = JournalRows;

export interface JournalSnapshot {
  format: number;
  /** RecorderIndex.id of the index this was read from. */
  indexId: string;
  writtenAt: string;
  records: JournalRecords;
}

export function journalPath(dataDir: string): string {
  return join(dataDir, JOURNAL_FILE);
}

/** The journaled records of `index` as they are committed now (null before it has an id). */
export function snapshotOf(index: RecorderIndex): JournalSnapshot | null {
  const indexId = index.id;
  if (!indexId) return null;
  return { format: FORMAT, indexId, writtenAt: new Date().toISOString(), records: index.journaledRows() };
}

/** The journal on disk; null when there is none. A file that is not one is an error. */
export async function readJournal(dataDir: string): Promise<JournalSnapshot | null> {
  let text: string;
  try {
    text = await readFile(journalPath(dataDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  let j: JournalSnapshot;
  try {
    j = JSON.parse(text) as JournalSnapshot;
  } catch (err) {
    throw new RecorderError(
      'INDEX_LOST',
      `${journalPath(dataDir)} is not valid JSON (${(err as Error).message}): it is written atomically, so something else wrote it; move it away to start without it`,
    );
  }
  if (j?.format !== FORMAT || typeof j.indexId !== 'string' || typeof j.records !== 'object' || j.records === null) {
    throw new RecorderError('INDEX_LOST', `${journalPath(dataDir)} is not a config journal of format ${FORMAT}; move it away to start without it`);
  }
  for (const name of JOURNALED) if (!Array.isArray(j.records[name])) j.records[name] = [];
  return j;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes a snapshot atomically: temp file, fdatasync, rename, fsync of the directory. */
export async function writeJournal(dataDir: string, snapshot: JournalSnapshot): Promise<void> {
  const path = journalPath(dataDir);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(`${JSON.stringify(snapshot)}\n`);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    await fsyncDir(dataDir);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

function counts(records: JournalRecords): Record<JournaledDb, number> {
  const out = {} as Record<JournaledDb, number>;
  for (const name of JOURNALED) out[name] = records[name].length;
  return out;
}

/** What the journal lists, for messages: "3 cameras, 2 users, 1 lock". */
export function describeRecords(records: JournalRecords): string {
  const c = counts(records);
  const parts = JOURNALED.filter((n) => c[n] > 0).map((n) => `${c[n]} ${c[n] === 1 ? n.replace(/s$/, '') : n}`);
  return parts.length > 0 ? parts.join(', ') : 'nothing';
}

/** Whether the journal holds anything beyond what a fresh index starts with (the default pool). */
function holdsRecords(records: JournalRecords): boolean {
  return JOURNALED.some((n) => (n === 'pools' ? records.pools.some(([k]) => k !== 'default') : records[n].length > 0));
}

/**
 * Why `index` must not be started on, given the journal (null: it may). Called before
 * anything writes to the index.
 */
export function journalMismatch(index: RecorderIndex, journal: JournalSnapshot | null, dataDir: string): string | null {
  if (!journal) return null;
  const what = describeRecords(journal.records);
  if (journal.indexId !== index.id && holdsRecords(journal.records)) {
    return `the index at ${join(dataDir, 'index')} is not the one ${journalPath(dataDir)} was written from (it lists ${what}): the index was deleted, replaced or cut to nothing, and starting on it would lose those records, every lock with them, and switch HTTP authentication off on loopback`;
  }
  if (journal.records.users.length > 0 && index.users.count() === 0) {
    return `the index has no users but ${journalPath(dataDir)} lists ${journal.records.users.length}: starting would switch HTTP authentication off on loopback`;
  }
  return null;
}

/** Throws INDEX_LOST when journalMismatch says so, with what to do. */
export function assertJournalMatches(index: RecorderIndex, journal: JournalSnapshot | null, dataDir: string): void {
  const why = journalMismatch(index, journal, dataDir);
  if (!why) return;
  throw new RecorderError(
    'INDEX_LOST',
    `${why}. Run \`recorder reindex\` to rebuild the index from the segment files and restore them from the journal (or, to start over without them on purpose, move ${journalPath(dataDir)} away).`,
  );
}

/**
 * Restores into `index`, per journaled database, the journal's records when the index
 * has none of that kind (a rebuilt or emptied index). Returns how many per kind.
 */
export async function restoreFromJournal(index: RecorderIndex, journal: JournalSnapshot): Promise<Partial<Record<JournaledDb, number>>> {
  const restored: Partial<Record<JournaledDb, number>> = {};
  for (const name of JOURNALED) {
    const existing = index.journaledKeys(name);
    // Pools: the default pool is created at every start; the others are what counts.
    if (existing.some((k) => name !== 'pools' || k !== 'default')) continue;
    const rows = journal.records[name].filter(([key]) => !existing.includes(key as string));
    if (rows.length === 0) continue;
    await index.restoreJournaled(name, rows);
    restored[name] = rows.length;
  }
  return restored;
}

/**
 * Keeps the journal up to date for a running node (or a CLI command that changes the
 * index): snapshots after each journaled change, coalesced, retried after failures.
 */
export class JournalWriter {
  private scheduled: NodeJS.Timeout | null = null;
  private writing: Promise<void> | null = null;
  private dirty = false;
  private failing = false;
  private stopped = false;
  private lastJson = '';

  constructor(
    private readonly index: RecorderIndex,
    private readonly dataDir: string,
    private readonly log: Logger,
    /** A write failed (first failure of a run of them); the writer retries by itself. */
    private readonly onFailure: (err: Error) => void = () => undefined,
  ) {
    index.onJournaledChange(() => this.changed());
  }

  /** Something journaled changed: a snapshot follows shortly. */
  changed(delayMs = 50): void {
    this.dirty = true;
    if (this.stopped || this.scheduled || this.writing) return;
    this.scheduled = setTimeout(() => {
      this.scheduled = null;
      this.writing = this.writeNow().finally(() => {
        this.writing = null;
        if (this.dirty && !this.stopped) this.changed(this.failing ? RETRY_MS : 0);
      });
    }, delayMs);
    this.scheduled.unref();
  }

  private async writeNow(): Promise<void> {
    this.dirty = false;
    if (!this.index.id) await this.index.ensureId();
    const snap = snapshotOf(this.index);
    if (!snap) {
      this.dirty = true;
      this.failing = true;
      return;
    }
    const json = JSON.stringify(snap.records) + snap.indexId;
    if (json === this.lastJson) return;
    try {
      await writeJournal(this.dataDir, snap);
      this.lastJson = json;
      if (this.failing) this.log.info({ file: journalPath(this.dataDir) }, 'config journal written again');
      this.failing = false;
    } catch (err) {
      this.dirty = true;
      if (!this.failing) {
        this.log.error({ err, file: journalPath(this.dataDir) }, 'config journal could not be written; retrying');
        this.onFailure(err as Error);
      }
      this.failing = true;
    }
  }

  /** Writes now what is pending (and waits for a write in flight). */
  async flush(): Promise<void> {
    if (this.scheduled) {
      clearTimeout(this.scheduled);
      this.scheduled = null;
    }
    await this.writing;
    if (this.dirty || this.lastJson === '') await this.writeNow();
  }

  /** Final flush; nothing is written after. */
  async stop(): Promise<void> {
    await this.flush().catch(() => undefined);
    this.stopped = true;
    if (this.scheduled) clearTimeout(this.scheduled);
    this.scheduled = null;
  }
}
