/**
 * Trimming surplus copies (cluster/copy-plan.ts `trimDecision`, `MembershipSettle`;
 * cluster/copy-trim.ts on a real LMDB index, with peers answering through the `ask`
 * seam): a copy goes only when this node is no longer a holder and every holder keeps
 * it; the writer's file, a locked segment, one being pulled and anything while
 * membership moves stay.
 */
import test from 'ava';
import { copyHolders, MembershipSettle, segmentKey, trimDecision } from '../../cluster/copy-plan.ts';
import { CopyTrimmer, parseKeepRequest, type KeepReply, type KeepRequest } from '../../cluster/copy-trim.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { SegmentRecord } from '../../index/records.ts';
import { RecorderError } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/log.ts';
import { segmentRecord } from '../helpers/segment-record.ts';
import { tempDir } from '../helpers/recorder.ts';

const T0 = Date.UTC(2026, 11, 1);

/** A segment key for which `self` is not among the holders over `live` with `writer` (copies 2). */
function surplusKey(writer: string, self: string, live: string[]): string {
  for (let i = 0; ; i++) {
    const key = segmentKey('k', T0 + i * 60_000);
    if (!copyHolders(key, writer, [...live, self], 2).includes(self)) return key;
  }
}

test('trimDecision: only a copy this node neither wrote nor ranks for, unlocked and not being pulled, may go, confirmed by every holder', (t) => {
  const live = ['a', 'b', 'c'];
  const key = surplusKey('a', 'b', live);
  const base = { key, writer: 'a', self: 'b', live, copies: 2, locked: false, pulling: false };
  t.deepEqual(trimDecision(base), { drop: copyHolders(key, 'a', live, 2) });
  t.deepEqual(trimDecision(base), { drop: ['a', 'c'] }, 'the writer and the node that ranks above this one');
  t.deepEqual(trimDecision({ ...base, self: 'a' }), { keep: 'writer' }, "the writer's own file");
  t.deepEqual(trimDecision({ ...base, writer: null }), { keep: 'writer' }, 'no fence stamp: counted as its own');
  t.deepEqual(trimDecision({ ...base, locked: true }), { keep: 'locked' });
  t.deepEqual(trimDecision({ ...base, pulling: true }), { keep: 'pulling' });
  t.deepEqual(trimDecision({ ...base, live: ['a', 'b'] }), { keep: 'holder' }, 'c gone: this node is a holder again');
  t.deepEqual(trimDecision({ ...base, copies: 3 }), { keep: 'holder' });
  // A dead writer: the holders are the live nodes by rank, and the copy stays where it ranks.
  const deadWriter = trimDecision({ ...base, live: ['b', 'c'] });
  t.deepEqual(deadWriter, { keep: 'holder' }, 'two live nodes, two copies: both hold it');
});

test('MembershipSettle: settled only once the same live set held for settleMs; any change starts over', (t) => {
  const s = new MembershipSettle(1000);
  t.false(s.settled(['a', 'b'], 0));
  t.false(s.settled(['b', 'a'], 999), 'order does not matter');
  t.true(s.settled(['a', 'b'], 1000));
  t.false(s.settled(['a', 'b', 'c'], 1500), 'a node joined');
  t.false(s.settled(['a', 'b'], 2000), 'and left again: a flap');
  t.false(s.settled(['a', 'b'], 2999));
  t.true(s.settled(['a', 'b'], 3000));
  // A node died and came back between two samples: the set looks the same, but it moved.
  s.reset();
  t.false(s.settled(['a', 'b'], 9000), 'reset: settling starts over');
  t.true(s.settled(['a', 'b'], 10_000));
});

test('parseKeepRequest: a typed refusal of anything but up to 200 {camera, startMs}', (t) => {
  t.deepEqual(parseKeepRequest({ segments: [{ camera: 'k', startMs: 5 }] }), { segments: [{ camera: 'k', startMs: 5 }] });
  for (const bad of [null, {}, { segments: 'x' }, { segments: [{ camera: 1, startMs: 5 }] }, { segments: [{ camera: 'k', startMs: 1.5 }] }]) {
    const err = t.throws(() => parseKeepRequest(bad), { instanceOf: RecorderError });
    t.is(err?.code, 'VALIDATION_FAILED');
  }
  t.throws(() => parseKeepRequest({ segments: Array.from({ length: 201 }, () => ({ camera: 'k', startMs: 1 })) }), { instanceOf: RecorderError });
});

test('CopyTrimmer: surplus copies go once every holder keeps them; what a holder does not confirm, what is locked and what it promised to keep stay', async (t) => {
  const dir = await tempDir(t);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  await index.pools.put('dup', { id: 'dup', capacityBytes: null, overwrite: 'capacity', maxLockShare: 0.5, copies: 2 });
  let live = ['a', 'b', 'c'];
  // Node b holds 40 copies of segments a wrote, and 10 of its own.
  const segs: SegmentRecord[] = [];
  for (let m = 0; m < 50; m++) {
    const seg = segmentRecord({
      camera: 'k',
      startMs: T0 + m * 60_000,
      endMs: T0 + m * 60_000 + 60_000,
      pool: 'dup',
      fence: { node: m < 40 ? 'a' : 'b', rev: 1 },
    });
    segs.push(seg);
    await index.segments.put(seg);
  }
  const surplus = segs.filter((s) => s.fence?.node === 'a' && !copyHolders(segmentKey('k', s.startMs), 'a', live, 2).includes('b'));
  t.true(surplus.length > 5, `${surplus.length} surplus copies`);
  // c has not pulled the first one yet, and one is locked.
  const notOnC = surplus[0]!;
  const locked = surplus[1]!;
  await index.locks.apply({
    put: [{ id: 'l1', camera: 'k', startMs: locked.startMs + 10, endMs: locked.startMs + 20, untilMs: null, createdMs: T0 }],
    remove: [],
  });
  const asked: { node: string; n: number }[] = [];
  const dropped: SegmentRecord[] = [];
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const trimmer = new CopyTrimmer({
    nodeId: 'b',
    index,
    log: silentLogger,
    signal: ac.signal,
    settleMs: 0,
    nowMs: () => 0,
    liveNodes: () => live,
    segments: function* () {
      for (const seg of index.segments.all('k')) yield { seg, copies: 2 };
    },
    pulling: () => false,
    ask: (node: string, _what: string, body: KeepRequest): Promise<KeepReply> => {
      asked.push({ node, n: body.segments.length });
      return Promise.resolve({ keep: body.segments.map((s) => !(node === 'c' && s.startMs === notOnC.startMs)) });
    },
    drop: async (list, stillSurplus) => {
      let n = 0;
      for (const seg of list) {
        const fresh = index.segments.get(seg.camera, seg.startMs);
        if (!fresh || !stillSurplus(fresh)) continue;
        await index.segments.remove(seg.camera, seg.startMs);
        dropped.push(fresh);
        n++;
      }
      return Promise.resolve(n);
    },
  });
  // Asked while b saw only a and b alive, b said it keeps one copy: a promise that holds
  // after c is seen (and b is no longer among that segment's holders).
  const promised = surplus[2]!;
  live = ['a', 'b'];
  t.deepEqual(
    trimmer.answerKeep({
      segments: [
        { camera: 'k', startMs: promised.startMs },
        { camera: 'k', startMs: segs[45]!.startMs },
        { camera: 'k', startMs: 1 },
      ],
    }),
    { keep: [true, true, false] },
    'a copy it holds for its holders, its own: kept; one it lacks: no',
  );
  live = ['a', 'b', 'c'];
  trimmer.schedule();
  // The first round trims; the copy c lacks waits (rounds go on with a delay): stop after the first.
  const deadline = Date.now() + 10_000;
  while (trimmer.trimmed() < surplus.length - 3 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  ac.abort();
  await trimmer.idle();
  t.deepEqual(
    dropped.map((s) => s.startMs).sort(),
    surplus
      .filter((s) => s !== notOnC && s !== locked && s !== promised)
      .map((s) => s.startMs)
      .sort(),
  );
  t.is(trimmer.trimmed(), surplus.length - 3);
  t.truthy(index.segments.get('k', promised.startMs), 'promised to a peer: the copy stays');
  t.truthy(index.segments.get('k', notOnC.startMs), 'a holder that does not confirm: the copy stays');
  t.truthy(index.segments.get('k', locked.startMs), 'locked: the copy stays');
  t.true(
    asked.every((q) => q.node === 'a' || q.node === 'c'),
    'only the holders are asked',
  );
});
