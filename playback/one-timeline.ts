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
 * of segment S is hidden when segments of other fences that rank above S cover it,
 * apart from OVERLAP_SLACK_MS at its ends. Segments of one fence never hide each
 * other: one writer's segments follow each other, and a single node behaves as before.
 *
 * Only a GOP that higher-ranked segments cover whole (to within about a frame) is
 * hidden; one covered in part is kept, so a short stretch at the edge of an overlap may
 * be shown twice but no instant any writer recorded is lost. A GOP of S hidden by T is
 * covered by T's GOPs, or, where T's own are hidden, by those of a U above T.
 */
import type { FenceStamp, SegmentRecord } from '../index/records.ts';
import { gopsOverlapping, type GopSpan } from './gop-range.ts';

/**
 * What a higher-ranked segment's cover of a GOP may lack at each end and still hide it:
 * about a frame (two writers' clocks of one camera differ by a few ms).
 */
export const OVERLAP_SLACK_MS = 40;

type Ranked = Pick<SegmentRecord, 'startMs' | 'endMs' | 'fence'>;

/** A segment's rank: its fence's revision; unfenced below every fenced one. */
export function fenceRank(fence: FenceStamp | undefined): number {
  return fence ? fence.rev : -1;
}

/** A writer's key: its node and grant ('' for unfenced video). Segments of one key are one writer's series. */
export function writerKey(fence: FenceStamp | undefined): string {
  return fence ? `${fence.node}/${fence.rev}` : '';
}

function sameFence(a: FenceStamp | undefined, b: FenceStamp | undefined): boolean {
  return writerKey(a) === writerKey(b);
}

/**
 * The segments among `rivals` that outrank `seg` and overlap it: of another fence, with
 * a higher rank. Empty in the common case (one writer), and then nothing is hidden.
 * `seg` itself (the same start: a record read again) is never its own rival.
 */
export function outranking<T extends Ranked>(seg: Ranked, rivals: readonly T[]): T[] {
  const rank = fenceRank(seg.fence);
  return rivals.filter(
    (r) => r.startMs !== seg.startMs && !sameFence(r.fence, seg.fence) && fenceRank(r.fence) > rank && r.startMs < seg.endMs && seg.startMs < r.endMs,
  );
}

/**
 * Whether [startMs, endMs) is covered by the union of `above` to within
 * OVERLAP_SLACK_MS at each end and in each hole: only then is a GOP hidden. A GOP
 * that a higher-ranked segment covers only in part is kept (a short stretch shown
 * twice), never dropped: no instant any writer recorded is lost.
 */
function covered(startMs: number, endMs: number, above: readonly Ranked[]): boolean {
  let at = startMs + OVERLAP_SLACK_MS;
  const want = endMs - OVERLAP_SLACK_MS;
  for (const r of [...above].sort((a, b) => a.startMs - b.startMs)) {
    if (at >= want) break;
    if (r.startMs > at) return false;
    at = Math.max(at, r.endMs);
  }
  return at >= want;
}

/**
 * The GOPs of `seg` overlapping [fromMs, toMs) (playback/gop-range.ts) that are shown:
 * those the segments of `rivals` outranking it do not cover (see covered()). `rivals`
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
  return gops.filter((g) => !covered(g.startMs, g.endMs, above));
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
  const fences = new Map<string, S[]>();
  for (const seg of segs) {
    const key = writerKey(seg.fence);
    const list = fences.get(key);
    if (list) list.push(seg);
    else fences.set(key, [seg]);
  }
  // One writer (every single-node read): nothing to hide, no rival to look for.
  const single = fences.size <= 1;
  // Rivals of a segment: per other fence, found by binary search (one writer's segments
  // follow each other, so their starts and ends are both in order), never a scan of all.
  const groups = [...fences.values()].map((g) => [...g].sort((a, b) => a.startMs - b.startMs));
  const rivalsOf = (seg: S): S[] => {
    const out: S[] = [];
    for (const g of groups) {
      if (sameFence(g[0]!.fence, seg.fence)) continue;
      let lo = 0;
      let hi = g.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (g[mid]!.endMs <= seg.startMs) lo = mid + 1;
        else hi = mid;
      }
      for (let i = lo; i < g.length && g[i]!.startMs < seg.endMs; i++) out.push(g[i]!);
    }
    return out;
  };
  for (const seg of segs) {
    const all = gopsOverlapping(seg, fromMs, toMs);
    const shown = single ? all : shownGops(seg, rivalsOf(seg), fromMs, toMs);
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
