/**
 * One timeline where two writers recorded one camera at once. In a cluster a partition
 * can make two nodes record a camera at the same time: the node cut off from NATS goes
 * on under its last fence token while the others grant the camera anew
 * (docs/design/cluster.md). Copies and stitched downloads later bring both series into
 * one node's index, overlapping in time. Every read of a range (download, video.ps,
 * HLS, /play, playback sessions) picks its GOPs through this, so the overlap is shown
 * once: **the higher fence wins** (a later grant of the camera; a cluster node's
 * back-fill has revision 0, below every grant; a segment without a fence, from a
 * single node, ranks below every fenced one).
 *
 * Rule (pure, per segment, so a lazy reader can apply it one segment at a time): a GOP
 * of segment S is kept unless a segment of another fence that ranks above S overlaps
 * it by more than OVERLAP_SLACK_MS. Segments of one fence never hide each other: one
 * writer's segments follow each other, and a single node behaves as before.
 *
 * Why that is the greedy "highest first" cover: a GOP of S hidden by T is covered by
 * T's GOPs, except where T's own GOPs are hidden by a U above T, which covers them in
 * turn; so the kept GOPs cover every instant any segment covers, once.
 */
import type { FenceStamp, SegmentRecord } from '../index/records.ts';
import { gopsOverlapping, type GopSpan } from './gop-range.ts';

/**
 * Overlap a GOP may have with a higher-ranked segment and still be kept: about a frame.
 * Two writers' clocks of one camera differ by a few ms; a GOP hidden for that would
 * open a hole of a whole GOP.
 */
export const OVERLAP_SLACK_MS = 40;

type Ranked = Pick<SegmentRecord, 'startMs' | 'endMs' | 'fence'>;

/** A segment's rank: its fence's revision; unfenced below every fenced one. */
export function fenceRank(fence: FenceStamp | undefined): number {
  return fence ? fence.rev : -1;
}

function sameFence(a: FenceStamp | undefined, b: FenceStamp | undefined): boolean {
  if (!a || !b) return a === b;
  return a.node === b.node && a.rev === b.rev;
}

/**
 * The segments among `rivals` that outrank `seg` and overlap it: of another fence, with
 * a higher rank. Empty in the common case (one writer), and then nothing is hidden.
 */
export function outranking<T extends Ranked>(seg: Ranked, rivals: readonly T[]): T[] {
  const rank = fenceRank(seg.fence);
  return rivals.filter((r) => r !== seg && !sameFence(r.fence, seg.fence) && fenceRank(r.fence) > rank && r.startMs < seg.endMs && seg.startMs < r.endMs);
}

/**
 * The GOPs of `seg` overlapping [fromMs, toMs) (playback/gop-range.ts) that are shown:
 * those no segment of `rivals` outranking it covers (see the module comment). `rivals`
 * holds at least every segment overlapping the part of `seg` read; it may hold `seg`
 * itself and segments that do not overlap it.
 */
export function shownGops(
  seg: Pick<SegmentRecord, 'startMs' | 'endMs' | 'gops' | 'fence'>,
  rivals: readonly Ranked[],
  fromMs: number,
  toMs: number,
): GopSpan[] {
  const gops = gopsOverlapping(seg, fromMs, toMs);
  const above = outranking(seg, rivals);
  if (above.length === 0) return gops;
  return gops.filter((g) => above.every((r) => Math.min(g.endMs, r.endMs) - Math.max(g.startMs, r.startMs) <= OVERLAP_SLACK_MS));
}

/**
 * Each segment of `segs` (every segment overlapping [fromMs, toMs), in start order, as
 * SegmentStore.overlapping gives them) with the GOPs it shows, in time order. A
 * segment that shows nothing is left out; one cut in two by a higher-ranked segment
 * appears twice, once per part, so the parts are in time order and each is one run
 * of consecutive GOPs.
 */
export function timelineGops<S extends Pick<SegmentRecord, 'startMs' | 'endMs' | 'gops' | 'fence'>>(
  segs: readonly S[],
  fromMs: number,
  toMs: number,
): { seg: S; gops: GopSpan[] }[] {
  const parts: { seg: S; gops: GopSpan[] }[] = [];
  for (const seg of segs) {
    const all = gopsOverlapping(seg, fromMs, toMs);
    const shown = shownGops(seg, segs, fromMs, toMs);
    if (shown.length === 0) continue;
    if (shown.length === all.length) {
      parts.push({ seg, gops: shown });
      continue;
    }
    // Runs of consecutive GOPs (a hidden one between two shown ones splits the segment).
    let run: GopSpan[] = [];
    let i = 0;
    for (const g of all) {
      if (shown[i] === undefined || shown[i]!.offset !== g.offset) {
        if (run.length > 0) parts.push({ seg, gops: run });
        run = [];
        continue;
      }
      run.push(g);
      i++;
    }
    if (run.length > 0) parts.push({ seg, gops: run });
  }
  return parts.sort((a, b) => a.gops[0]!.startMs - b.gops[0]!.startMs);
}
