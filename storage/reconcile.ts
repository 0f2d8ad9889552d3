/**
 * Makes the index and the files agree (invariant 2), at start-up and by the
 * `check` / `reindex` commands. Files are the source of truth:
 *   - an entry still marked open (the recorder died while writing) is re-read from its
 *     file: a partial trailing fragment is truncated away, fragments that reached the
 *     disk after the last index commit are added, the header's durations are filled in
 *     (mp4 files with a `mehd`; older files have none and are left so), the entry is
 *     closed;
 *   - a segment file the index lacks is indexed from its own bytes (the file name is
 *     its wall-clock start; the fragments' decode times give the rest); a file with no
 *     complete fragment is removed;
 *   - an entry whose file vanished is dropped and reported (the caller raises an alarm).
 * `check` reports the same differences without changing anything.
 * At start-up (`repair`) an index write that fails (a full disk, issue 13) is reported
 * in `failedWrites` and the rest goes on: the recorder starts, the emergency overwrite
 * makes room, and the next start finishes the job. `rebuild` stops at the first.
 */
import { open, readdir, rm, truncate, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import { encodeGops } from '../index/gop-table.ts';
import type { SegmentRecord } from '../index/records.ts';
import type { Logger } from '../lib/log.ts';
import { RecorderError } from '../lib/errors.ts';
import { Mp4FormatError } from '../media/mp4/boxes.ts';
import { scanFmp4File, type ScannedFile } from '../media/mp4/fmp4-file.ts';
import { durationPatches, initDurations } from '../media/mp4/init-duration.ts';
import { parseSegmentRelPath, type ParsedSegmentPath } from './layout.ts';
import { scanPsSegment } from './ps-segment-scan.ts';

export interface ReconcileReport {
  checkedFiles: number;
  truncated: { file: string; bytes: number }[];
  reindexed: string[];
  removedEmpty: string[];
  droppedEntries: { camera: string; startMs: number; file: string }[];
  unreadable: { file: string; error: string }[];
  /** Index writes that failed at start-up (repair mode): done at the next start. */
  failedWrites: { file: string; error: string }[];
}

export interface ReconcileOptions {
  mode: 'repair' | 'check' | 'rebuild';
  log: Logger;
  /** Called after each segment file is looked at (the CLI draws a progress bar). */
  onProgress?: (done: number, total: number) => void;
}

async function listSegmentFiles(dataDir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string, depth: number): Promise<void> => {
    let entries;
    try {
      entries = await readdir(join(dataDir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const child = join(rel, e.name);
      if (depth < 4 && e.isDirectory()) await walk(child, depth + 1);
      else if (depth === 4 && e.isFile()) out.push(child);
    }
  };
  await walk('pools', 1);
  return out;
}

/** Builds the index record of a segment from its scanned bytes. */
export function recordFromScan(parsed: ParsedSegmentPath, rel: string, scan: ScannedFile, previous?: SegmentRecord): SegmentRecord {
  const videoId = scan.info.videoTrackId ?? scan.info.tracks[0]?.id;
  const timescale = scan.info.tracks.find((t) => t.id === videoId)?.timescale ?? 90_000;
  const firstTicks = scan.fragments[0] ? trackDecodeTime(scan.fragments[0].moof, videoId) : 0n;
  const gops = scan.fragments.map((f) => ({
    offset: f.offset,
    size: f.size,
    timeMs: Math.round((Number(trackDecodeTime(f.moof, videoId) - firstTicks) * 1000) / timescale),
  }));
  const last = scan.fragments[scan.fragments.length - 1];
  const endMs = last ? parsed.startMs + gops[gops.length - 1]!.timeMs + Math.round((last.durationTicks * 1000) / timescale) : parsed.startMs;
  const video = scan.info.tracks.find((t) => t.id === scan.info.videoTrackId);
  return {
    camera: parsed.camera,
    startMs: parsed.startMs,
    endMs,
    file: rel,
    format: parsed.format,
    pool: parsed.pool,
    stream: previous?.stream ?? 'main',
    bytes: scan.validBytes,
    initSize: scan.initSize,
    mimeType: scan.info.mimeType,
    codecKey: scan.info.codecKey,
    ...(video?.width !== undefined ? { width: video.width } : {}),
    ...(video?.height !== undefined ? { height: video.height } : {}),
    types: previous?.types ?? [{ type: 'timing', fromMs: parsed.startMs }],
    gops: encodeGops(gops),
    open: false,
    flags: previous?.flags ?? {},
  };
}

function trackDecodeTime(moof: { tracks: { trackId: number; baseDecodeTime: bigint }[] }, trackId: number | undefined): bigint {
  return (moof.tracks.find((t) => t.trackId === trackId) ?? moof.tracks[0])?.baseDecodeTime ?? 0n;
}

/** What reconcile needs of a scanned segment file, whatever its format. */
interface SegmentScan {
  fragmentCount: number;
  validBytes: number;
  fileBytes: number;
  /** A cut or garbled tail after the last whole fragment (to truncate). */
  partial: boolean;
  record(): SegmentRecord;
  /** Header writes that close the file (mp4: its durations), made durable before its entry. */
  closing(): { at: number; bytes: Buffer }[];
}

/**
 * The duration fields of a scanned mp4 file's init, as the segment writer fills them
 * in at close, when the init has a mehd and they differ from what is there; else none.
 */
export function scanClosingPatches(scan: ScannedFile): { at: number; bytes: Buffer }[] {
  try {
    if (!initDurations(scan.init).mehd) return [];
  } catch {
    return []; // parseInit took it: fields it cannot place are left as they are
  }
  const durations = new Map<number, number>();
  for (const f of scan.fragments) for (const t of f.moof.tracks) durations.set(t.trackId, (durations.get(t.trackId) ?? 0) + t.durationTicks);
  return durationPatches(scan.init, durations).filter((p) => !scan.init.subarray(p.at, p.at + p.bytes.length).equals(p.bytes));
}

async function applyPatches(abs: string, patches: { at: number; bytes: Buffer }[]): Promise<void> {
  if (patches.length === 0) return;
  const fh = await open(abs, 'r+');
  try {
    for (const p of patches) await fh.write(p.bytes, 0, p.bytes.length, p.at);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

async function scanSegment(abs: string, parsed: ParsedSegmentPath, rel: string, entry: SegmentRecord | undefined): Promise<SegmentScan> {
  if (parsed.format === 'ps') {
    const ps = await scanPsSegment(abs, parsed, rel, entry);
    return { ...ps, record: () => ps.record!, closing: () => [] };
  }
  let scan: ScannedFile;
  try {
    scan = await scanFmp4File(abs);
  } catch (err) {
    // Ends inside its init: created, then cut by a crash before its header was synced.
    // No fragment can follow an unsynced header, so it is a file without fragments
    // (as a PS file cut inside its header scans), removed like any other.
    if (err instanceof Mp4FormatError && err.code === 'MP4_TRUNCATED') {
      const fileBytes = (await stat(abs)).size;
      return {
        fragmentCount: 0,
        validBytes: 0,
        fileBytes,
        partial: fileBytes > 0,
        record: () => {
          throw err;
        },
        closing: () => [],
      };
    }
    throw err;
  }
  return {
    fragmentCount: scan.fragments.length,
    validBytes: scan.validBytes,
    fileBytes: scan.fileBytes,
    partial: scan.validBytes < scan.fileBytes && scan.trailing === 'partial',
    record: () => recordFromScan(parsed, rel, scan, entry),
    closing: () => scanClosingPatches(scan),
  };
}

export async function reconcile(index: RecorderIndex, dataDir: string, opts: ReconcileOptions): Promise<ReconcileReport> {
  const report: ReconcileReport = { checkedFiles: 0, truncated: [], reindexed: [], removedEmpty: [], droppedEntries: [], unreadable: [], failedWrites: [] };
  const write = opts.mode !== 'check';
  /** An index write; in repair mode a failed commit is reported and skipped. */
  const indexWrite = async (file: string, w: () => Promise<unknown>): Promise<boolean> => {
    try {
      await w();
      return true;
    } catch (err) {
      if (opts.mode !== 'repair' || !(err instanceof RecorderError) || err.code !== 'STORAGE_IO') throw err;
      report.failedWrites.push({ file, error: err.message });
      opts.log.error({ file, err }, 'reconcile: index write failed; left for the next start');
      return false;
    }
  };
  if (opts.mode === 'rebuild') await index.segments.clear();

  const files = await listSegmentFiles(dataDir);
  const onDisk = new Set(files);
  let seen = 0;
  for (const rel of files) {
    opts.onProgress?.(seen++, files.length);
    const parsed = parseSegmentRelPath(rel);
    if (!parsed) continue;
    const entry = index.segments.get(parsed.camera, parsed.startMs);
    if (entry && !entry.open) {
      // Closed entries are trusted unless we are checking: then the file must agree.
      if (opts.mode !== 'check') continue;
      const size = (await stat(join(dataDir, rel))).size;
      if (size < entry.bytes) report.unreadable.push({ file: rel, error: `file has ${size} bytes, index expects ${entry.bytes}` });
      report.checkedFiles++;
      continue;
    }
    report.checkedFiles++;
    const abs = join(dataDir, rel);
    let scan: SegmentScan;
    try {
      scan = await scanSegment(abs, parsed, rel, entry);
    } catch (err) {
      report.unreadable.push({ file: rel, error: (err as Error).message });
      opts.log.error({ file: rel, err }, 'segment file unreadable; left in place');
      continue;
    }
    if (scan.fragmentCount === 0) {
      report.removedEmpty.push(rel);
      if (write) {
        if (entry && !(await indexWrite(rel, () => index.segments.remove(parsed.camera, parsed.startMs)))) continue;
        await rm(abs, { force: true });
      }
      continue;
    }
    if (scan.partial) {
      report.truncated.push({ file: rel, bytes: scan.fileBytes - scan.validBytes });
      if (write) await truncate(abs, scan.validBytes);
    }
    if (!entry) report.reindexed.push(rel);
    if (write) {
      await applyPatches(abs, scan.closing());
      await indexWrite(rel, () => index.segments.put(scan.record()));
    }
  }

  opts.onProgress?.(files.length, files.length);
  for (const seg of [...index.segments.all()]) {
    if (onDisk.has(seg.file)) continue;
    report.droppedEntries.push({ camera: seg.camera, startMs: seg.startMs, file: seg.file });
    if (write) await indexWrite(seg.file, () => index.segments.remove(seg.camera, seg.startMs));
  }
  if (report.truncated.length || report.reindexed.length || report.droppedEntries.length || report.removedEmpty.length) {
    opts.log.warn(
      {
        mode: opts.mode,
        truncated: report.truncated.length,
        reindexed: report.reindexed.length,
        dropped: report.droppedEntries.length,
        removedEmpty: report.removedEmpty.length,
      },
      'index reconciled with files',
    );
  }
  return report;
}
