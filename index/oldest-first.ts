/**
 * Segments across cameras in start-time order (oldest first), lazily: a k-way merge of
 * each camera's key range, so a retention pass that deletes a few segments reads only
 * a few records per camera, however long the history.
 *
 * Stopping early is free: the per-camera walks (SegmentStore.all) hold no
 * LMDB cursor between batches, and a consumer's `break` closes them all here too.
 */
import type { RecorderIndex } from './db.ts';
import type { SegmentRecord } from './records.ts';

export function* oldestFirst(index: RecorderIndex, keep: (seg: SegmentRecord) => boolean): Generator<SegmentRecord> {
  const heads: { it: Iterator<SegmentRecord>; seg: SegmentRecord }[] = [];
  for (const camera of [...index.segments.cameras()]) {
    const it = index.segments.all(camera)[Symbol.iterator]();
    const first = nextKept(it, keep);
    if (first) heads.push({ it, seg: first });
  }
  try {
    while (heads.length > 0) {
      let min = 0;
      for (let i = 1; i < heads.length; i++) if (heads[i]!.seg.startMs < heads[min]!.seg.startMs) min = i;
      const head = heads[min]!;
      yield head.seg;
      const next = nextKept(head.it, keep);
      if (next) head.seg = next;
      else heads.splice(min, 1);
    }
  } finally {
    for (const head of heads) head.it.return?.();
  }
}

function nextKept(it: Iterator<SegmentRecord>, keep: (seg: SegmentRecord) => boolean): SegmentRecord | undefined {
  for (let r = it.next(); !r.done; r = it.next()) if (keep(r.value)) return r.value;
  return undefined;
}
