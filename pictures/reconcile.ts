/**
 * Start-up reconcile of the pack files with the index (docs/design/pictures.md "Crash
 * recovery"), and `recorder check`'s comparison of them:
 *
 * - a pack longer than its record's durable length has a tail the index lacks: its
 *   whole records (CRC checked) were written, maybe synced, before a crash; they are
 *   fdatasync'ed and indexed, and a torn record after them is truncated away;
 * - a pack file without a record (a crash between its creation and its record's
 *   commit) is indexed from its own records; one that ends inside its header is
 *   removed (nothing can follow an unsynced header); a file that is not a pack is
 *   left in place and reported;
 * - a record whose file vanished is dropped with its entries (reported, the node
 *   raises an `index` alarm);
 * - packs left open by the last run are closed (the next write starts a new pack);
 * - a copy of another node's pack (cluster/picture-copies.ts) is reconciled as any pack,
 *   except that a key the index holds already is left as it is (seqs are per node);
 * - a pack a crash left half covered (`covering`, pictures/cover.ts) is finished: its
 *   file unlinked (if still there) and its record and entries removed, silently (cover
 *   had decided it).
 *
 * `check` mode changes nothing and also counts each pack's entries against its record.
 */
import { readdir, stat, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import { widenPack, type PackRecord, type PictureEntry, type PictureKey } from '../index/pictures.ts';
import type { Logger } from '../lib/log.ts';
import { readPackHeader, scanRecords, type ScannedRecord } from './pack-format.ts';
import { packRelPath, parsePackRelPath, picturesDir } from './layout.ts';
import { fsyncDir } from './pack-writer.ts';

export interface PictureReconcileReport {
  packs: number;
  /** Pictures indexed after the reconcile (in check mode: as found). */
  pictures: number;
  /** Synced records the index lacked, indexed (check: would be). */
  indexedTail: { file: string; pictures: number }[];
  /** Torn tails cut off (check: would be). */
  truncated: { file: string; fromBytes: number; toBytes: number }[];
  /** Records whose pack file vanished, dropped with their entries. */
  droppedPacks: { file: string; pictures: number }[];
  /** Pack files that end inside their own header, removed. */
  removedEmpty: string[];
  /** Files under pictures/ that are not packs of ours, left in place. */
  unreadable: string[];
  /** Packs whose entries disagree with their record (check mode only). */
  mismatched: { file: string; why: string }[];
  /** Packs a crash left half covered, finished (check: would be). */
  finishedCovers: string[];
  /** The highest pack id a file under pictures/ is named with (new packs are numbered above it). */
  highestPackId: number;
}

/** Whether a report found nothing to change. */
export function picturesClean(r: PictureReconcileReport): boolean {
  return (
    r.indexedTail.length +
      r.truncated.length +
      r.droppedPacks.length +
      r.removedEmpty.length +
      r.unreadable.length +
      r.mismatched.length +
      r.finishedCovers.length ===
    0
  );
}

async function packFiles(dataDir: string): Promise<{ rel: string; pool: string; id: number }[]> {
  const out: { rel: string; pool: string; id: number }[] = [];
  let pools: string[];
  try {
    pools = await readdir(picturesDir(dataDir));
  } catch {
    return out;
  }
  for (const pool of pools) {
    let names: string[];
    try {
      names = await readdir(join(picturesDir(dataDir), pool));
    } catch {
      continue;
    }
    for (const name of names) {
      const rel = join('pictures', pool, name);
      const parsed = parsePackRelPath(rel);
      out.push(parsed ? { rel, ...parsed } : { rel, pool, id: 0 });
    }
  }
  return out;
}

function entriesOf(records: ScannedRecord[], pack: number): { key: PictureKey; entry: PictureEntry }[] {
  return records.map((r) => {
    const h = r.header;
    const entry: PictureEntry = { pack, offset: r.offset, length: r.length, type: h.type };
    if (h.meta && Object.keys(h.meta).length > 0) entry.meta = h.meta;
    return { key: [h.camera, h.atMs, h.seq] as PictureKey, entry };
  });
}

export async function reconcilePictures(
  index: RecorderIndex,
  dataDir: string,
  opts: { mode: 'repair' | 'check'; log: Logger },
): Promise<PictureReconcileReport> {
  const repair = opts.mode === 'repair';
  const report: PictureReconcileReport = {
    packs: 0,
    pictures: 0,
    indexedTail: [],
    truncated: [],
    droppedPacks: [],
    removedEmpty: [],
    unreadable: [],
    mismatched: [],
    finishedCovers: [],
    highestPackId: 0,
  };
  const files = await packFiles(dataDir);
  report.highestPackId = Math.max(0, ...files.map((f) => f.id));
  const onDisk = new Map(files.filter((f) => f.id > 0).map((f) => [f.id, f]));
  for (const f of files) if (f.id === 0) report.unreadable.push(f.rel);

  for (const rec of index.pictures.allPacks()) {
    const file = onDisk.get(rec.id);
    onDisk.delete(rec.id);
    if (rec.covering) {
      report.finishedCovers.push(rec.file);
      if (repair) {
        if (file) await unlink(join(dataDir, file.rel)).catch(() => undefined);
        await index.pictures.removePack(rec, { covered: true });
      }
      continue;
    }
    if (!file || file.rel !== rec.file) {
      const lost = index.pictures.entriesOfPack(rec).length;
      report.droppedPacks.push({ file: rec.file, pictures: lost });
      if (repair) await index.pictures.removePack(rec);
      continue;
    }
    report.packs++;
    const abs = join(dataDir, rec.file);
    const fh = await open(abs, repair ? 'r+' : 'r');
    try {
      const size = (await fh.stat()).size;
      let next: PackRecord = rec;
      if (size > rec.bytes) {
        const { records, end } = await scanRecords(fh, rec.bytes, size);
        if (records.length > 0) {
          report.indexedTail.push({ file: rec.file, pictures: records.length });
          const entries = entriesOf(records, rec.id);
          next = widenPack(
            { ...rec, bytes: end },
            entries.map((e) => e.key),
          );
          if (repair) {
            await fh.datasync();
            // A copy's keys may be taken here by another picture: appendCopies leaves those (index/pictures.ts).
            if (rec.copyOf) await index.pictures.appendCopies({ ...rec, bytes: end, closed: true }, entries);
            else await index.pictures.append({ ...next, closed: true }, entries);
          }
        }
        if (end < size) {
          report.truncated.push({ file: rec.file, fromBytes: size, toBytes: end });
          if (repair) {
            await fh.truncate(end);
            await fh.datasync();
          }
        }
      } else if (size < rec.bytes) {
        report.mismatched.push({ file: rec.file, why: `file has ${size} bytes, the index says ${rec.bytes} are durable` });
      }
      if (repair && !next.closed) await index.pictures.putPack({ ...next, closed: true });
      if (!repair) {
        const entries = index.pictures.entriesOfPack(rec);
        if (entries.length !== rec.count) report.mismatched.push({ file: rec.file, why: `${entries.length} entries, the record counts ${rec.count}` });
        const beyond = entries.filter((e) => e.entry.offset + e.entry.length > rec.bytes).length;
        if (beyond > 0) report.mismatched.push({ file: rec.file, why: `${beyond} entries point past its durable end` });
      }
    } finally {
      await fh.close();
    }
  }

  // Pack files the index has no record of.
  for (const file of onDisk.values()) {
    const abs = join(dataDir, file.rel);
    const fh = await open(abs, repair ? 'r+' : 'r');
    let removed = false;
    try {
      const size = (await fh.stat()).size;
      const head = await readPackHeader(fh, size);
      if (!head.ok) {
        if (head.why === 'foreign') report.unreadable.push(file.rel);
        else {
          report.removedEmpty.push(file.rel);
          removed = repair;
        }
        continue;
      }
      if (head.header.id !== file.id || packRelPath(head.header.pool, head.header.id) !== file.rel) {
        report.unreadable.push(file.rel);
        continue;
      }
      report.packs++;
      const { records, end } = await scanRecords(fh, head.end, size);
      report.indexedTail.push({ file: file.rel, pictures: records.length });
      if (end < size) report.truncated.push({ file: file.rel, fromBytes: size, toBytes: end });
      if (repair) {
        if (end < size) await fh.truncate(end);
        await fh.datasync();
        const entries = entriesOf(records, file.id);
        const rec: PackRecord = {
          id: file.id,
          pool: head.header.pool,
          file: file.rel,
          bytes: end,
          count: 0,
          createdMs: head.header.createdMs,
          closed: true,
          range: null,
        };
        const origin = head.header.copyOf;
        // A copy of another node's pack (its header names the origin): its record says so again.
        if (origin) await index.pictures.appendCopies({ ...rec, copyOf: { ...origin, head: head.end } }, entries);
        else
          await index.pictures.append(
            widenPack(
              rec,
              entries.map((e) => e.key),
            ),
            entries,
          );
      }
    } finally {
      await fh.close();
      if (removed) {
        await unlink(abs);
        await fsyncDir(join(abs, '..'));
      }
    }
  }
  report.pictures = index.pictures.count();
  if (!picturesClean(report)) opts.log.warn({ pictures: report }, repair ? 'picture packs reconciled' : 'picture packs differ from the index');
  return report;
}

/** Whether a data dir has any pictures folder at all (check output stays quiet without). */
export async function hasPictures(dataDir: string): Promise<boolean> {
  try {
    return (await stat(picturesDir(dataDir))).isDirectory();
  } catch {
    return false;
  }
}
