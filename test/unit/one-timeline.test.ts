/**
 * playback/one-timeline.ts: where two writers' segments of one camera overlap (a
 * partition made two cluster nodes record it), every read shows the overlap once and
 * the higher fence wins; one writer's segments are never hidden. And
 * SegmentStore.overlapping on a real LMDB index: it finds a long segment of one series
 * that the range's last-segment-before rule (inRange) misses.
 */
import test from 'ava';
import { encodeGops } from '../../index/gop-table.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { FenceStamp, SegmentRecord } from '../../index/records.ts';
import { OVERLAP_SLACK_MS, shownGops, timelineGops } from '../../playback/one-timeline.ts';
import { segmentRecord } from '../helpers/segment-record.ts';
import { tempDir } from '../helpers/recorder.ts';

/** A segment of 2 s GOPs from startMs to endMs (offsets: startMs / 1000 + GOP number, to tell them apart). */
function seg(startMs: number, endMs: number, fence?: FenceStamp, gopMs = 2000): SegmentRecord {
  const gops = [];
  for (let t = 0, i = 0; startMs + t < endMs; t += gopMs, i++) gops.push({ offset: startMs / 1000 + i, size: 1, timeMs: t });
  return segmentRecord({ camera: 'c', startMs, endMs, pool: 'default', bytes: 1, initSize: 1, gops: encodeGops(gops), ...(fence ? { fence } : {}) });
}

const A = { node: 'a', rev: 10 }; // the node cut off by the partition: the older grant
const B = { node: 'b', rev: 17 }; // the node that was granted the camera meanwhile

/** The timeline as [writer, from, to] runs. */
function runs(parts: ReturnType<typeof timelineGops<SegmentRecord>>): [string, number, number][] {
  return parts.map(({ seg: s, gops }) => [s.fence?.node ?? '-', gops[0]!.startMs, gops[gops.length - 1]!.endMs]);
}

test('one writer: every GOP shown, as gopsOverlapping gives them (a single node and one fence alike)', (t) => {
  for (const fence of [undefined, A]) {
    const segs = [seg(0, 10_000, fence), seg(10_000, 20_000, fence), seg(20_000, 30_000, fence)];
    t.deepEqual(runs(timelineGops(segs, 3000, 25_000)), [
      [fence?.node ?? '-', 2000, 10_000],
      [fence?.node ?? '-', 10_000, 20_000],
      [fence?.node ?? '-', 20_000, 26_000],
    ]);
  }
  // Segments of one writer that touch or overlap by rounding hide nothing.
  const touching = [seg(0, 10_003, A), seg(10_000, 20_000, A)];
  t.is(
    timelineGops(touching, 0, 20_000).reduce((n, p) => n + p.gops.length, 0),
    6 + 5,
    'every GOP of both',
  );
});

test('a partition: the higher fence wins where both recorded; each has the time only it recorded', (t) => {
  // A records 0..60 s (cut off from 20 s on, it goes on under its old grant); B is
  // granted the camera at 20 s and records on; the partition heals at 60 s.
  const segs = [seg(0, 30_000, A), seg(20_000, 40_000, B), seg(30_000, 60_000, A), seg(40_000, 80_000, B)];
  t.deepEqual(runs(timelineGops(segs, 0, 80_000)), [
    ['a', 0, 20_000],
    ['b', 20_000, 40_000],
    ['b', 40_000, 80_000],
  ]);
  // The order of the list does not matter, nor does the higher one coming first.
  t.deepEqual(runs(timelineGops([...segs].reverse(), 0, 80_000)), runs(timelineGops(segs, 0, 80_000)));
  // A range inside the overlap: B alone.
  t.deepEqual(runs(timelineGops(segs, 25_000, 35_000)), [['b', 24_000, 36_000]]);
});

test('a GOP is hidden only when the winner covers it whole, to within about a frame; covered in part it is kept (shown twice, never lost)', (t) => {
  const a = seg(0, 20_000, A);
  const starts = (b: SegmentRecord): number[] => shownGops(a, [b], 0, 40_000).map((g) => g.startMs);
  // B starts a frame's slack into A's last GOP [18 s, 20 s): that GOP is B's.
  t.deepEqual(starts(seg(18_000 + OVERLAP_SLACK_MS, 40_000, B)), [0, 2000, 4000, 6000, 8000, 10_000, 12_000, 14_000, 16_000]);
  // A millisecond later, or well inside the GOP: A's GOP stays, the stretch is shown twice.
  t.is(starts(seg(18_000 + OVERLAP_SLACK_MS + 1, 40_000, B)).length, 10);
  t.is(starts(seg(19_959, 40_000, B)).length, 10);
  // A hole in the winner inside a GOP keeps that GOP; two winners' segments that meet cover it.
  t.is(starts({ ...seg(1, 40_000, B), endMs: 17_000 }).length, 2, 'B covers up to 17 s: A shows 16-18 s and 18-20 s');
  const meeting = [seg(1, 19_000, B), seg(19_000, 40_000, B)];
  t.deepEqual(shownGops(a, meeting, 0, 40_000), [], 'covered whole by two segments of B');
  // The same record read again is never its own rival.
  t.is(shownGops(a, [{ ...a }], 0, 40_000).length, 10);
});

test('unfenced video (a single node before the cluster, a back-fill) ranks below any fence; a segment cut in two shows both parts in order', (t) => {
  const old = seg(0, 30_000);
  const inside = seg(10_000, 20_000, A);
  t.deepEqual(runs(timelineGops([old, inside], 0, 30_000)), [
    ['-', 0, 10_000],
    ['a', 10_000, 20_000],
    ['-', 20_000, 30_000],
  ]);
  // Three writers: the highest covers its time; the middle one what only it and the lowest have.
  const C = { node: 'c', rev: 30 };
  const three = [seg(0, 40_000, A), seg(10_000, 40_000, B), seg(20_000, 30_000, C)];
  t.deepEqual(runs(timelineGops(three, 0, 40_000)), [
    ['a', 0, 10_000],
    ['b', 10_000, 20_000],
    ['c', 20_000, 30_000],
    ['b', 30_000, 40_000],
  ]);
});

test('SegmentStore.overlapping on a real index: every segment over the range, also a long one of another series that inRange misses', async (t) => {
  const index = await RecorderIndex.open(await tempDir(t));
  t.teardown(() => index.close());
  // Series A: one long segment 0..60 s; series B: 10 s segments from 20 s on.
  for (const s of [seg(0, 60_000, A), seg(20_000, 30_000, B), seg(30_000, 40_000, B), seg(40_000, 50_000, B), seg(100_000, 110_000, B)])
    await index.segments.put(s);
  const starts = (from: number, to: number): number[] => index.segments.overlapping('c', from, to).map((s) => s.startMs);
  t.deepEqual(starts(45_000, 55_000), [0, 40_000]);
  t.deepEqual(
    index.segments.inRange('c', 45_000, 55_000).map((s) => s.startMs),
    [40_000],
    'inRange takes only the last segment starting before the range',
  );
  t.deepEqual(starts(0, 35_000), [0, 20_000, 30_000]);
  t.deepEqual(starts(60_000, 100_000), [], 'the end is exclusive, and a segment ending at `from` does not overlap it');
  t.deepEqual(starts(60_000, 100_001), [100_000]);
  // Read through the rule: A up to B's start, then B.
  t.deepEqual(runs(timelineGops(index.segments.overlapping('c', 0, 60_000), 0, 60_000)), [
    ['a', 0, 20_000],
    ['b', 20_000, 30_000],
    ['b', 30_000, 40_000],
    ['b', 40_000, 50_000],
    ['a', 50_000, 60_000],
  ]);
});
