/**
 * services/search-merge.ts: the spans of two nodes that held one camera become one
 * timeline; overlapping spans join with their types, locks and labels (once each); a
 * gap one node recorded goes where another node has the video.
 */
import test from 'ava';
import { mergeSearch } from '../../services/search-merge.ts';
import type { SearchView } from '../../services/recorder-service.ts';

const t0 = Date.parse('2026-03-01T10:00:00Z');
const at = (s: number): string => new Date(t0 + s * 1000).toISOString();
const span = (from: number, to: number, lock?: string): SearchView['spans'][number] => ({
  from: at(from),
  to: at(to),
  types: [{ type: 'timing', from: at(from), to: at(to) }],
  locks: lock ? [{ id: lock, camera: 'c', from: at(from), to: at(to), until: null }] : [],
  labels: [],
});
const gap = (from: number, to: number): SearchView['gaps'][number] => ({ from: at(from), to: at(to), state: 'open', reason: 'recorder down', attempts: 0 });

test('a camera that moved: both nodes’ spans in time order, overlaps joined, locks once', (t) => {
  const a: SearchView = { spans: [span(0, 60, 'L1')], gaps: [gap(60, 120)] };
  const b: SearchView = { spans: [span(66, 120), span(50, 62, 'L1')], gaps: [gap(0, 66)] };
  const m = mergeSearch([a, b]);
  t.deepEqual(
    m.spans.map((s) => [s.from, s.to]),
    [
      [at(0), at(62)],
      [at(66), at(120)],
    ],
  );
  t.is(m.spans[0]!.locks.length, 1);
  t.is(m.spans[0]!.types.length, 2);
  t.deepEqual(
    m.gaps.map((g) => [g.from, g.to]),
    [[at(62), at(66)]],
    'each node’s gap less the other node’s video: the failover hole alone',
  );
});

test('a gap no node covers stays', (t) => {
  const m = mergeSearch([
    { spans: [span(0, 10)], gaps: [gap(10, 20)] },
    { spans: [span(20, 30)], gaps: [] },
  ]);
  t.deepEqual(
    m.gaps.map((g) => [g.from, g.to]),
    [[at(10), at(20)]],
  );
});
