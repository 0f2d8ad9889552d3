/**
 * Reconcile's view of a `.ps` segment file: its GOP table and index record rebuilt from
 * the file alone (invariant 1), through media/ps/ps-file.ts. Times follow the same rule as
 * for fMP4 files: the file name is the wall-clock start of the first GOP, later GOPs
 * sit at their first DTS minus the first GOP's, and the end is the last GOP's start
 * plus its duration (both from the GOP info the writer put in front of each GOP).
 */
import { encodeGops } from '../index/gop-table.ts';
import type { SegmentRecord } from '../index/records.ts';
import { scanPsFile } from '../media/ps/ps-file.ts';
import type { ParsedSegmentPath } from './layout.ts';
import { describePsSegment } from './segment-format.ts';

export interface PsSegmentScan {
  fragmentCount: number;
  validBytes: number;
  fileBytes: number;
  /** Bytes after the last whole GOP that are not one (to truncate). */
  partial: boolean;
  partialReason?: string;
  record: SegmentRecord | null;
}

export async function scanPsSegment(abs: string, parsed: ParsedSegmentPath, rel: string, previous?: SegmentRecord): Promise<PsSegmentScan> {
  const scan = await scanPsFile(abs);
  const base = {
    fragmentCount: scan.gops.length,
    validBytes: scan.validBytes,
    fileBytes: scan.fileBytes,
    partial: scan.validBytes < scan.fileBytes,
    ...(scan.partialReason !== undefined ? { partialReason: scan.partialReason } : {}),
  };
  const first = scan.gops[0];
  if (!first || !scan.firstGop) return { ...base, record: null };
  const gops = scan.gops.map((g) => ({ offset: g.offset, size: g.size, timeMs: Math.round(Number(g.firstDts - first.firstDts) / 90) }));
  const last = scan.gops[scan.gops.length - 1]!;
  const record: SegmentRecord = {
    camera: parsed.camera,
    startMs: parsed.startMs,
    endMs: parsed.startMs + gops[gops.length - 1]!.timeMs + Math.round(last.duration90k / 90),
    file: rel,
    format: 'ps',
    pool: parsed.pool,
    stream: previous?.stream ?? 'main',
    bytes: scan.validBytes,
    ...describePsSegment(scan.firstGop),
    types: previous?.types ?? [{ type: 'timing', fromMs: parsed.startMs }],
    gops: encodeGops(gops),
    open: false,
    flags: previous?.flags ?? {},
  };
  return { ...base, record };
}
