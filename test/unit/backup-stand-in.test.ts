/**
 * cluster/backup-stand-in.ts: which survivor sends a dead writer's segments to the backup
 * cluster, and what one pass sends. Before, nobody did: a dead writer's segments, held as
 * copies by the survivors, waited for it, and were never sent if it did not come back.
 */
import test from 'ava';
import { planStandIn, standInFor } from '../../cluster/backup-stand-in.ts';

const NODES = ['a', 'b', 'c', 'd', 'e'];

test('exactly one survivor stands in per pool, camera and dead writer, the same whatever the order of the view', (t) => {
  const chosen = new Map<string, number>();
  for (let i = 0; i < 400; i++) {
    const camera = `cam${i}`;
    const s = standInFor(
      'p',
      camera,
      'a',
      NODES.filter((n) => n !== 'a'),
      NODES,
    );
    t.truthy(s);
    t.not(s, 'a', 'the dead writer never stands in for itself');
    t.is(standInFor('p', camera, 'a', ['e', 'd', 'c', 'b'], [...NODES].reverse()), s, 'every node computes the same from the same view');
    chosen.set(s!, (chosen.get(s!) ?? 0) + 1);
  }
  // Spread over the survivors rather than all on one.
  t.deepEqual([...chosen.keys()].sort(), ['b', 'c', 'd', 'e']);
});

test("only a live node of the camera's holders catalog stands in; none when no survivor holds the camera", (t) => {
  t.is(standInFor('p', 'k', 'a', ['b', 'c'], ['a', 'c']), 'c', 'b holds nothing of the camera');
  t.is(standInFor('p', 'k', 'a', ['b'], ['a', 'c']), null, 'c, the only other holder, is dead too');
  t.is(standInFor('p', 'k', 'a', ['a', 'b'], ['a', 'b']), 'b', 'a writer still in a stale live view is not chosen');
  // The survivor chosen dies too: the next one takes over.
  const first = standInFor('p', 'k', 'a', ['b', 'c', 'd'], NODES)!;
  const next = standInFor(
    'p',
    'k',
    'a',
    ['b', 'c', 'd'].filter((n) => n !== first),
    NODES,
  );
  t.truthy(next);
  t.not(next, first);
});

test('a pass sends the held copies after the cursor in time order, from this node when it holds them, and moves the cursor past them', (t) => {
  const held = new Map<number, string[]>([
    [3000, ['c']],
    [1000, ['b', 'c']],
    [2000, ['c', 'b']],
    [500, ['b']],
  ]);
  const plan = planStandIn({ self: 'b', cursor: 500, held, announced: [1000, 2000, 3000] });
  t.deepEqual(plan.send, [
    { startMs: 1000, origin: 'b' },
    { startMs: 2000, origin: 'b' },
    { startMs: 3000, origin: 'c' },
  ]);
  t.is(plan.cursor, 3000);
  t.deepEqual(plan.lost, []);
});

test('segments the writer announced that no live node holds are lost to the backup, once; the cursor passes them', (t) => {
  const held = new Map<number, string[]>([[2000, ['b']]]);
  const plan = planStandIn({ self: 'b', cursor: 0, held, announced: [1000, 2000, 4000, 4000, -5] });
  t.deepEqual(plan.send, [{ startMs: 2000, origin: 'b' }]);
  t.deepEqual(plan.lost, [1000, 4000], 'counted once each; what is behind the cursor is not');
  t.is(plan.cursor, 4000, "not walked again: the writer's late list keeps them");
});

test('nothing known after the cursor: the cursor stays', (t) => {
  const plan = planStandIn({ self: 'b', cursor: 7000, held: new Map([[7000, ['b']]]), announced: [6000] });
  t.deepEqual(plan, { send: [], cursor: 7000, lost: [] });
});

test('a segment is sent from a copy that stays: a surplus copy may be trimmed before the target pulls it', (t) => {
  const held = new Map<number, string[]>([
    [10, ['S', 'X']],
    [20, ['X', 'Y']],
    [30, ['Y']],
  ]);
  // S and X hold 10, but only X keeps it by the ranking; Y keeps 20; nobody keeps 30 by the ranking (it is all there is).
  const keeps = (startMs: number): string[] => (startMs === 10 ? ['X'] : startMs === 20 ? ['Y'] : ['Z']);
  const plan = planStandIn({ self: 'S', cursor: 0, held, announced: [], keeps });
  t.deepEqual(plan.send, [
    { startMs: 10, origin: 'X' },
    { startMs: 20, origin: 'Y' },
    { startMs: 30, origin: 'Y' },
  ]);
  t.is(planStandIn({ self: 'S', cursor: 0, held, announced: [] }).send[0]!.origin, 'S', 'without the ranking: this node first, as before');
});
