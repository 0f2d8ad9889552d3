/**
 * The one rule for which GOPs of a segment a read of [fromMs, toMs) takes: every GOP
 * whose own span [start, end) overlaps it, so the first is the GOP holding `fromMs`
 * (reads are GOP-aligned at the start: a GOP is decodable only from its keyframe) and
 * the last the one holding the last instant before `toMs`. A GOP starts at the
 * segment's start plus its table time and ends where the next starts, the last one at
 * the segment's end. Download, HLS, /play and video.ps all select through this.
 *
 * A pure function of a segment record's GOP table (index/gop-table.ts): no I/O.
 */
import { decodeGops } from '../index/gop-table.ts';
import type { SegmentRecord } from '../index/records.ts';

export interface GopSpan {
  /** Byte offset of the GOP's moof in the segment file, and its size (moof + mdat). */
  offset: number;
  size: number;
  /** Wall-clock ms, [startMs, endMs). */
  startMs: number;
  endMs: number;
}

/** The GOPs of `seg` that overlap [fromMs, toMs), in time order (see the module comment). */
export function gopsOverlapping(seg: Pick<SegmentRecord, 'startMs' | 'endMs' | 'gops'>, fromMs: number, toMs: number): GopSpan[] {
  const gops = decodeGops(seg.gops);
  const out: GopSpan[] = [];
  for (let i = 0; i < gops.length; i++) {
    const g = gops[i]!;
    const startMs = seg.startMs + g.timeMs;
    const endMs = i + 1 < gops.length ? seg.startMs + gops[i + 1]!.timeMs : seg.endMs;
    if (endMs <= fromMs || startMs >= toMs) continue;
    out.push({ offset: g.offset, size: g.size, startMs, endMs });
  }
  return out;
}

/**
 * The GOP of `seg` a frame at `atMs` is taken from: the last whose keyframe is at or
 * before `atMs` (the first when `atMs` is before it), with its index in the table.
 * Frame grabs and thumbnail strips pick through this.
 */
export function gopAtOrBefore(seg: Pick<SegmentRecord, 'startMs' | 'gops'>, atMs: number): { index: number; offset: number; size: number; startMs: number } {
  const gops = decodeGops(seg.gops);
  let i = gops.length - 1;
  while (i > 0 && seg.startMs + gops[i]!.timeMs > atMs) i--;
  const g = gops[i]!;
  return { index: i, offset: g.offset, size: g.size, startMs: seg.startMs + g.timeMs };
}
