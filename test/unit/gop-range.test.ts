/**
 * playback/gop-range.ts: the one "GOPs overlapping [from, to)" rule that download, HLS,
 * /play and video.ps select with: the GOP holding `from` first, the one holding the
 * last instant before `to` last, a GOP ending where the next starts.
 */
import test from 'ava';
import { encodeGops } from '../../index/gop-table.ts';
import { gopAtOrBefore, gopsOverlapping } from '../../playback/gop-range.ts';

// GOPs at +0, +2000, +4000 ms of a segment from 10 000 to 16 000.
const seg = {
  startMs: 10_000,
  endMs: 16_000,
  gops: encodeGops([
    { offset: 100, size: 10, timeMs: 0 },
    { offset: 110, size: 20, timeMs: 2000 },
    { offset: 130, size: 30, timeMs: 4000 },
  ]),
};
const starts = (from: number, to: number): number[] => gopsOverlapping(seg, from, to).map((g) => g.startMs);

test('the GOP holding `from` to the one holding the last instant before `to`', (t) => {
  t.deepEqual(starts(12_500, 14_000), [12_000]);
  t.deepEqual(starts(12_500, 14_001), [12_000, 14_000]);
  t.deepEqual(starts(11_999, 12_001), [10_000, 12_000]);
  t.deepEqual(starts(0, 10_001), [10_000]);
  t.deepEqual(starts(0, 99_999), [10_000, 12_000, 14_000]);
  t.deepEqual(gopsOverlapping(seg, 15_000, 20_000), [{ offset: 130, size: 30, startMs: 14_000, endMs: 16_000 }], 'the last GOP ends with the segment');
});

test('nothing outside the segment, nothing for an empty range', (t) => {
  t.deepEqual(starts(16_000, 17_000), []);
  t.deepEqual(starts(5000, 10_000), []);
  t.deepEqual(starts(12_000, 12_000), []);
});

test('a frame at an instant comes from the GOP whose keyframe is at or before it (the first before the segment)', (t) => {
  t.deepEqual(gopAtOrBefore(seg, 13_999), { index: 1, offset: 110, size: 20, startMs: 12_000 });
  t.is(gopAtOrBefore(seg, 14_000).startMs, 14_000);
  t.is(gopAtOrBefore(seg, 99_000).index, 2);
  t.is(gopAtOrBefore(seg, 9_000).index, 0);
});
