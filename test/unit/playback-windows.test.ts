/**
 * The windows a playback session plays a range in through a node of a cluster
 * (services/playback-windows.ts): each window's missing segments are pulled first, a
 * window ends at one of this node's segment edges and the next starts there, time no
 * node holds is skipped, and a node alone plays the whole range at once.
 */
import test from 'ava';
import type { CameraPlacement } from '../../cluster/cluster.ts';
import type { SegmentRecord } from '../../index/records.ts';
import { pullMissing } from '../../services/media-source.ts';
import { playbackWindow, WINDOW_MS, type PlaybackWindowDeps, type SessionRange } from '../../services/playback-windows.ts';

const MIN = 60_000;

interface Seg {
  startMs: number;
  endMs: number;
  open?: boolean;
}

/** A node (`here`) and the segments another node (`there`) holds; pulls copy them here. */
/** `unreachableBefore`: the holder does not answer for windows that start before it (it was down then). */
function world(o: { here?: Seg[]; there: Seg[]; unreachable?: boolean; unreachableBefore?: number; nowMs?: number; holders?: string[] }) {
  const here = [...(o.here ?? [])];
  const pulls: [number, number][] = [];
  const record = (s: Seg): SegmentRecord => ({ camera: 'c', startMs: s.startMs, endMs: s.endMs, open: s.open ?? false }) as SegmentRecord;
  const sorted = (): Seg[] => here.sort((a, b) => a.startMs - b.startMs);
  const deps: PlaybackWindowDeps = {
    cluster: { nodeId: 'a', holders: () => o.holders ?? ['a', 'b'] } as unknown as CameraPlacement,
    segments: {
      atOrBefore: (_c, at) => {
        const s = sorted()
          .filter((x) => x.startMs <= at)
          .pop();
        return s && record(s);
      },
      after: (_c, after) => {
        const s = sorted().find((x) => x.startMs > after);
        return s && record(s);
      },
    },
    spans: (_c, from, to) => {
      const all = [...here, ...o.there].sort((a, b) => a.startMs - b.startMs);
      const merged: { fromMs: number; toMs: number }[] = [];
      for (const s of all) {
        const last = merged[merged.length - 1];
        if (last && s.startMs <= last.toMs) last.toMs = Math.max(last.toMs, s.endMs);
        else merged.push({ fromMs: s.startMs, toMs: s.endMs });
      }
      return Promise.resolve(merged.filter((s) => s.toMs > from && s.fromMs < to));
    },
    pullMissing: (_c, from, to) => {
      pulls.push([from, to]);
      if (o.unreachable || from < (o.unreachableBefore ?? -Infinity)) return Promise.resolve({ pulled: 0, bytes: 0, unreachable: ['b'] });
      let pulled = 0;
      for (const s of o.there) {
        if (s.endMs <= from || s.startMs >= to || here.some((h) => h.startMs === s.startMs)) continue;
        here.push({ ...s });
        pulled++;
      }
      return Promise.resolve({ pulled, bytes: pulled * 1000, unreachable: [] });
    },
    nowMs: () => o.nowMs ?? 1000 * MIN,
  };
  return { deps, here, pulls };
}

/** Minute-long segments from `fromMin` to `toMin`. */
function minutes(fromMin: number, toMin: number): Seg[] {
  const out: Seg[] = [];
  for (let m = fromMin; m < toMin; m++) out.push({ startMs: m * MIN, endMs: (m + 1) * MIN });
  return out;
}

/** Every window a session goes through, as a session does (the next starts where the last said). */
async function walk(deps: PlaybackWindowDeps, r: SessionRange): Promise<[number, number][]> {
  const out: [number, number][] = [];
  let from: number | null = r.fromMs;
  while (from !== null && out.length < 50) {
    const w = await playbackWindow(deps, 'c', { ...r, fromMs: from });
    out.push([from, w.toMs]);
    from = w.nextFromMs;
  }
  return out;
}

test('a camera only this node holds is one window: the whole range, nothing pulled', async (t) => {
  const { deps, pulls } = world({ here: minutes(0, 30), there: [], holders: ['a'] });
  t.deepEqual(await walk(deps, { fromMs: 0, toMs: 30 * MIN, reverse: false }), [[0, 30 * MIN]]);
  t.deepEqual(pulls, []);
});

test('forward: a range another node holds is pulled and played window by window, each ending at a segment end', async (t) => {
  t.is(WINDOW_MS, 10 * MIN);
  const { deps, pulls, here } = world({ there: minutes(0, 30) });
  const r = { fromMs: 30_000, toMs: 30 * MIN, reverse: false };
  t.deepEqual(await walk(deps, r), [
    [30_000, 11 * MIN],
    [11 * MIN, 21 * MIN],
    [21 * MIN, 30 * MIN],
  ]);
  t.deepEqual(pulls, [
    [30_000, 10 * MIN + 30_000],
    [11 * MIN, 21 * MIN],
    [21 * MIN, 30 * MIN],
  ]);
  t.is(here.length, 30, 'every segment pulled once');
});

test('forward: time no node holds is skipped, and the range ends where the video does', async (t) => {
  const { deps } = world({ here: minutes(0, 5), there: minutes(60, 65) });
  t.deepEqual(await walk(deps, { fromMs: 0, toMs: 120 * MIN, reverse: false }), [
    [0, 5 * MIN],
    [5 * MIN, 65 * MIN],
    [65 * MIN, 120 * MIN],
  ]);
});

test('forward: a window reaching now, or ending in a segment still open, is played to the end at once', async (t) => {
  const live = world({ there: minutes(0, 5), nowMs: 8 * MIN });
  t.deepEqual(await walk(live.deps, { fromMs: 0, toMs: Number.MAX_SAFE_INTEGER, reverse: false }), [[0, Number.MAX_SAFE_INTEGER]]);
  const open = world({ here: [{ startMs: 9 * MIN, endMs: 12 * MIN, open: true }], there: minutes(0, 9) });
  t.deepEqual(await walk(open.deps, { fromMs: 0, toMs: 30 * MIN, reverse: false }), [[0, 30 * MIN]]);
});

test('reverse: windows go back from the position, each stopping at a segment start, the next one GOP before it', async (t) => {
  const { deps } = world({ there: minutes(0, 30) });
  t.deepEqual(await walk(deps, { fromMs: 30 * MIN - 1, toMs: 0, reverse: true }), [
    [30 * MIN - 1, 19 * MIN],
    [19 * MIN - 1, 8 * MIN],
    [8 * MIN - 1, 0],
  ]);
});

test('a holder that does not answer is reported with the window; what is here is played', async (t) => {
  const { deps } = world({ here: minutes(0, 3), there: minutes(3, 30), unreachable: true });
  const w = await playbackWindow(deps, 'c', { fromMs: 0, toMs: 30 * MIN, reverse: false });
  t.deepEqual(w.unreachable, ['b']);
  t.is(w.toMs, 3 * MIN, 'up to the end of what is here');
});

test('pullMissing stops pulling once its signal aborts (the session moved on or closed); the pull under way finishes', async (t) => {
  const asked: string[] = [];
  const pulled: number[] = [];
  const abort = new AbortController();
  const cluster = {
    nodeId: 'a',
    holders: () => ['a', 'b', 'c'],
    ask: (node: string) => {
      asked.push(node);
      return Promise.resolve({ segments: [0, 1, 2, 3].map((m) => ({ startMs: m * MIN, endMs: (m + 1) * MIN, bytes: 1000, pool: 'p' })) });
    },
  } as unknown as CameraPlacement;
  const report = await pullMissing(
    {
      cluster,
      hasSegment: () => false,
      pull: (_node, _camera, seg) => {
        pulled.push(seg.startMs);
        // The viewer sends a new command while the second segment is being pulled.
        if (pulled.length === 2) abort.abort();
        return Promise.resolve(true);
      },
    },
    'c',
    0,
    4 * MIN,
    undefined,
    abort.signal,
  );
  t.deepEqual(pulled, [0, MIN], 'no segment pulled after the abort');
  t.deepEqual(asked, ['b'], 'no other holder asked');
  t.is(report.pulled, 2);
  t.deepEqual(report.unreachable, []);
});

test('a window whose holder does not answer and of which nothing is here is skipped, named; the range after it still plays', async (t) => {
  // Forward: the first window's holder is away; what follows is pulled and played.
  const fwd = world({ there: minutes(0, 30), unreachableBefore: 10 * MIN });
  const w = await playbackWindow(fwd.deps, 'c', { fromMs: 0, toMs: 30 * MIN, reverse: false });
  t.deepEqual(w.unreachable, ['b']);
  t.deepEqual([w.toMs, w.nextFromMs], [20 * MIN, 20 * MIN], 'the window after the skipped one, to its last segment end');
  t.deepEqual(fwd.pulls[0], [0, 10 * MIN]);
  t.deepEqual(fwd.pulls[1], [10 * MIN, 20 * MIN]);
  // Reverse: the same, going back.
  const rev = world({ there: minutes(0, 30), unreachableBefore: Infinity });
  const back = await playbackWindow(rev.deps, 'c', { fromMs: 30 * MIN - 1, toMs: 0, reverse: true });
  t.deepEqual(back.unreachable, ['b']);
  t.is(back.nextFromMs, null, 'nothing anywhere: one stream to the end, which finds no video');
  t.true(rev.pulls.length >= 3, `every window was tried: ${JSON.stringify(rev.pulls)}`);
});
