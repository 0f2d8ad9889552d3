/**
 * Pure storage-lifecycle logic: which segments a retention pass deletes or thins,
 * how locks merge and split, how search results are clipped to locked/labelled video.
 */
import test from 'ava';
import { cutLocks, mergeLock } from '../../index/locks.ts';
import type { LockRecord, PoolPolicy } from '../../index/records.ts';
import { clipSpans, intersectRanges, unionRanges } from '../../index/search.ts';
import { addRuns, cutRuns, dayStart, daysOf, runsInDay } from '../../index/day-summary.ts';
import { DAY_MS, planRetention, type SegmentCandidate } from '../../storage/retention-policy.ts';

const NOW = Date.UTC(2026, 10, 25, 12);

function seg(camera: string, startMs: number, bytes = 100, extra: Partial<SegmentCandidate> = {}): SegmentCandidate {
  return { camera, startMs, endMs: startMs + 10_000, bytes, open: false, format: 'mp4', flags: {}, ...extra };
}

function lock(camera: string, startMs: number, endMs: number, untilMs: number | null = null): LockRecord {
  return { id: `${camera}-${startMs}`, camera, startMs, endMs, untilMs, createdMs: 0 };
}

const pool = (p: Partial<PoolPolicy>): PoolPolicy => ({ id: 'p', capacityBytes: 1000, overwrite: 'capacity', maxLockShare: 0.5, ...p });
const noLocks = (): LockRecord[] => [];

test('capacity: deletes oldest first until usage is at or under capacity', (t) => {
  const segs = [seg('a', 0), seg('b', 5_000), seg('a', 10_000), seg('b', 15_000)];
  const plan = planRetention(pool({ capacityBytes: 250 }), 400, segs, noLocks, NOW);
  t.deepEqual(
    plan.delete.map((d) => [d.seg.camera, d.seg.startMs, d.why]),
    [
      ['a', 0, 'capacity'],
      ['b', 5_000, 'capacity'],
    ],
  );
  t.is(plan.usageAfter, 200);
  t.is(plan.blocked, null);
});

test('capacity: locked and open segments are skipped, never deleted (invariant 3)', (t) => {
  const segs = [seg('a', 0), seg('a', 10_000), seg('a', 20_000), seg('a', 30_000, 100, { open: true })];
  const locks = [lock('a', 12_000, 13_000)];
  const plan = planRetention(pool({ capacityBytes: 150 }), 400, segs, (c) => (c === 'a' ? locks : []), NOW);
  t.deepEqual(
    plan.delete.map((d) => d.seg.startMs),
    [0, 20_000],
  );
  t.is(plan.usageAfter, 200);
  t.regex(plan.blocked ?? '', /only locked or open video is left/);
});

test('an expired lock protects nothing', (t) => {
  const plan = planRetention(pool({ capacityBytes: 100 }), 200, [seg('a', 0), seg('a', 10_000)], () => [lock('a', 0, 20_000, NOW - 1)], NOW);
  t.deepEqual(
    plan.delete.map((d) => d.seg.startMs),
    [0],
  );
});

test('none: nothing is deleted; writing blocks at capacity', (t) => {
  const plan = planRetention(pool({ overwrite: 'none', capacityBytes: 300 }), 300, [seg('a', 0), seg('a', 10_000)], noLocks, NOW);
  t.deepEqual(plan.delete, []);
  t.regex(plan.blocked ?? '', /overwrite mode is none/);
  t.is(planRetention(pool({ overwrite: 'none', capacityBytes: 300 }), 299, [seg('a', 0)], noLocks, NOW).blocked, null);
});

test('cycle: everything that ended before now − cycleDays goes, also under capacity', (t) => {
  const old = NOW - 3 * DAY_MS;
  const segs = [seg('a', old), seg('b', old + 1000), seg('a', NOW - 2 * DAY_MS + 5_000), seg('a', NOW - 1000)];
  const plan = planRetention(pool({ overwrite: 'cycle', cycleDays: 2, capacityBytes: 1e9 }), 400, segs, noLocks, NOW);
  t.deepEqual(
    plan.delete.map((d) => [d.seg.startMs, d.why]),
    [
      [old, 'cycle'],
      [old + 1000, 'cycle'],
    ],
  );
});

test('cycle keeps a locked old segment', (t) => {
  const old = NOW - 3 * DAY_MS;
  const plan = planRetention(
    pool({ overwrite: 'cycle', cycleDays: 1, capacityBytes: null }),
    200,
    [seg('a', old), seg('a', old + 10_000)],
    () => [lock('a', old, old + 1)],
    NOW,
  );
  t.deepEqual(
    plan.delete.map((d) => d.seg.startMs),
    [old + 10_000],
  );
});

test('thinning: old closed unlocked mp4 segments, not yet thinned, at most maxThin', (t) => {
  const old = NOW - 10 * DAY_MS;
  const segs = [
    seg('a', old, 100, { flags: { iframesOnly: true } }),
    seg('a', old + 10_000),
    seg('a', old + 20_000, 100, { format: 'ps' }),
    seg('a', old + 30_000),
    seg('a', old + 40_000),
    seg('a', NOW - 1000),
  ];
  const plan = planRetention(pool({ capacityBytes: null, thinAfterDays: 7 }), 600, segs, () => [lock('a', old + 30_000, old + 30_001)], NOW, 1);
  t.deepEqual(
    plan.thin.map((s) => s.startMs),
    [old + 10_000],
  );
  const all = planRetention(pool({ capacityBytes: null, thinAfterDays: 7 }), 600, segs, () => [lock('a', old + 30_000, old + 30_001)], NOW);
  t.deepEqual(
    all.thin.map((s) => s.startMs),
    [old + 10_000, old + 40_000],
  );
  t.deepEqual(all.delete, []);
});

test('locks: overlapping and touching locks merge into one; the later expiry and "forever" win', (t) => {
  const existing = [lock('a', 0, 100, NOW + 10), lock('a', 200, 300, null), lock('a', 500, 600, NOW + 5)];
  const r = mergeLock(existing, { camera: 'a', startMs: 100, endMs: 250, untilMs: NOW + 50 }, NOW);
  t.is(r.lock.startMs, 0);
  t.is(r.lock.endMs, 300);
  t.is(r.lock.untilMs, null);
  t.deepEqual(
    r.remove.map((l) => l.startMs),
    [0, 200],
  );
  const apart = mergeLock(existing, { camera: 'a', startMs: 400, endMs: 450, untilMs: NOW + 50 }, NOW);
  t.deepEqual(apart.remove, []);
  t.is(apart.lock.untilMs, NOW + 50);
});

test('unlock of a range cuts locks, splitting one it falls inside', (t) => {
  const existing = [lock('a', 0, 1000), lock('a', 2000, 3000)];
  const inside = cutLocks(existing, 400, 600);
  t.deepEqual(
    inside.remove.map((l) => l.startMs),
    [0],
  );
  t.deepEqual(
    inside.put.map((l) => [l.startMs, l.endMs]),
    [
      [0, 400],
      [600, 1000],
    ],
  );
  t.not(inside.put[0]!.id, inside.put[1]!.id);
  const across = cutLocks(existing, 500, 2500);
  t.deepEqual(
    across.put.map((l) => [l.startMs, l.endMs]),
    [
      [0, 500],
      [2500, 3000],
    ],
  );
  t.deepEqual(cutLocks(existing, 1000, 2000), { put: [], remove: [] });
});

test('search clipping keeps only video inside the ranges, cutting type runs', (t) => {
  const spans = [
    {
      fromMs: 0,
      toMs: 100,
      types: [
        { type: 'timing', fromMs: 0, toMs: 50 },
        { type: 'motion', fromMs: 50, toMs: 100 },
      ],
    },
    { fromMs: 200, toMs: 300, types: [{ type: 'timing', fromMs: 200, toMs: 300 }] },
  ];
  const clipped = clipSpans(spans, [
    { fromMs: 40, toMs: 60 },
    { fromMs: 250, toMs: 400 },
    { fromMs: 120, toMs: 150 },
  ]);
  t.deepEqual(clipped, [
    {
      fromMs: 40,
      toMs: 60,
      types: [
        { type: 'timing', fromMs: 40, toMs: 50 },
        { type: 'motion', fromMs: 50, toMs: 60 },
      ],
    },
    { fromMs: 250, toMs: 300, types: [{ type: 'timing', fromMs: 250, toMs: 300 }] },
  ]);
  t.deepEqual(
    unionRanges([
      { fromMs: 5, toMs: 10 },
      { fromMs: 0, toMs: 6 },
      { fromMs: 20, toMs: 20 },
    ]),
    [{ fromMs: 0, toMs: 10 }],
  );
  t.deepEqual(intersectRanges([{ fromMs: 0, toMs: 10 }], [{ fromMs: 5, toMs: 20 }]), [{ fromMs: 5, toMs: 10 }]);
});

test('day summaries: a put adds runs (idempotent for a grown open segment), a remove cuts exactly its range', (t) => {
  const day = dayStart(NOW);
  let s = addRuns([], [{ fromMs: day + 0, toMs: day + 1000, type: 'timing' }]);
  s = addRuns(s, [{ fromMs: day + 0, toMs: day + 2000, type: 'timing' }]);
  s = addRuns(s, [
    { fromMs: day + 2000, toMs: day + 2500, type: 'timing' },
    { fromMs: day + 2500, toMs: day + 3000, type: 'motion' },
  ]);
  s = addRuns(s, [{ fromMs: day + 3010, toMs: day + 4000, type: 'motion' }]);
  t.deepEqual(s, [
    { fromMs: day, toMs: day + 2500, type: 'timing' },
    { fromMs: day + 2500, toMs: day + 3000, type: 'motion' },
    { fromMs: day + 3010, toMs: day + 4000, type: 'motion' },
  ]);
  t.deepEqual(cutRuns(s, day + 1000, day + 2000), [
    { fromMs: day, toMs: day + 1000, type: 'timing' },
    { fromMs: day + 2000, toMs: day + 2500, type: 'timing' },
    { fromMs: day + 2500, toMs: day + 3000, type: 'motion' },
    { fromMs: day + 3010, toMs: day + 4000, type: 'motion' },
  ]);
  t.deepEqual(daysOf(day + DAY_MS - 1, day + DAY_MS + 1), [day, day + DAY_MS]);
  t.deepEqual(runsInDay([{ fromMs: day - 500, toMs: day + 500, type: 'x' }], day), [{ fromMs: day, toMs: day + 500, type: 'x' }]);
});
