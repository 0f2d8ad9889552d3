/**
 * Placement (cluster/placement.ts): the plan is the same on every node whatever order
 * its view comes in; orphans go to the least-loaded node, load being the cameras'
 * measured bitrates (unmeasured: the median; none measured: one unit each) over the
 * node's weight; a node gives a camera up only when the taker is then no more loaded
 * than it, so no camera goes back and forth.
 */
import test from 'ava';
import {
  bitrateView,
  cameraWeights,
  nodeWeights,
  placeOrphans,
  shouldGiveUp,
  type NodeCapacity,
  type NodeSizing,
  type OwnerView,
} from '../../cluster/placement.ts';

const M = 1_000_000;

/** Owner keys from `{node: [camera, …]}`. */
function ownersOf(spec: Record<string, string[]>): Map<string, OwnerView> {
  const m = new Map<string, OwnerView>();
  for (const [node, cams] of Object.entries(spec)) for (const c of cams) m.set(c, { node });
  return m;
}

/** `n` cameras named `<prefix>0…` */
function cams(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(2, '0')}`);
}

test('placement gives each orphan to the least-loaded live node, the same plan on every node', (t) => {
  const owners = new Map([
    ['x1', { node: 'a' }],
    ['x2', { node: 'a' }],
    ['x3', { node: 'b' }],
    ['x4', { node: 'dead' }],
  ]);
  const plan = placeOrphans(['o3', 'o1', 'o2', 'o4'], owners, ['c', 'a', 'b']);
  // Loads a=2, b=1, c=0 (the dead node's camera counts for nobody); ties go by node id.
  t.deepEqual(Object.fromEntries(plan), { o1: 'c', o2: 'b', o3: 'c', o4: 'a' });
  t.deepEqual(Object.fromEntries(placeOrphans(['o4', 'o2', 'o1', 'o3'], owners, ['b', 'c', 'a'])), Object.fromEntries(plan), 'order of input does not matter');
  t.is(placeOrphans(['o1'], owners, []).size, 0);
});

test('placement by weight: a node of weight 2 takes twice the cameras; a node under pressure takes none while another is calm', (t) => {
  const none = new Map<string, { node: string }>();
  const orphans = Array.from({ length: 9 }, (_, i) => `c${i}`);
  const heavy = new Map<string, NodeCapacity>([['big', { weight: 2, pressure: null }]]);
  const plan = placeOrphans(orphans, none, ['big', 'a', 'b'], heavy);
  const count = (node: string): number => [...plan.values()].filter((n) => n === node).length;
  // 9 cameras over weights 2:1:1 are 4.5:2.25:2.25.
  t.true(count('big') >= 4 && count('big') <= 5 && Math.abs(count('a') - count('b')) <= 1, `big=${count('big')} a=${count('a')} b=${count('b')}`);
  const hot = new Map<string, NodeCapacity>([['a', { weight: 1, pressure: 'cpu-high' }]]);
  const cool = placeOrphans(orphans, none, ['a', 'b', 'c'], hot);
  t.false([...cool.values()].includes('a'), 'the node under pressure takes nothing');
  const allHot = new Map<string, NodeCapacity>([
    ['a', { weight: 1, pressure: 'cpu-high' }],
    ['b', { weight: 1, pressure: 'disk-near-full' }],
  ]);
  t.is(placeOrphans(['x'], none, ['a', 'b'], allHot).size, 1, 'every node under pressure: cameras are still placed');
});

test('giving up: two cameras more than the least loaded; by weight; under pressure one at a time while another is calm', (t) => {
  const owners = (spec: Record<string, number>): Map<string, { node: string }> => {
    const m = new Map<string, { node: string }>();
    for (const [node, n] of Object.entries(spec)) for (let i = 0; i < n; i++) m.set(`${node}${i}`, { node });
    return m;
  };
  t.is(shouldGiveUp('a', owners({ a: 3, b: 1 }), ['a', 'b'])?.camera, 'a2', 'unmeasured: the last by id, as before bitrates');
  t.is(shouldGiveUp('a', owners({ a: 2, b: 1 }), ['a', 'b']), null, 'one more is balanced');
  t.is(shouldGiveUp('a', owners({ a: 3, b: 1 }), ['a']), null, 'alone: nowhere to go');
  const big = new Map<string, NodeCapacity>([['a', { weight: 2, pressure: null }]]);
  t.is(shouldGiveUp('a', owners({ a: 4, b: 2 }), ['a', 'b'], big), null, 'weight 2 holds twice as many');
  t.truthy(shouldGiveUp('b', owners({ a: 1, b: 3 }), ['a', 'b'], big), 'the small node gives to the big one');
  const hot = new Map<string, NodeCapacity>([['a', { weight: 1, pressure: 'disk-near-full' }]]);
  t.regex(shouldGiveUp('a', owners({ a: 1, b: 5 }), ['a', 'b'], hot)?.why ?? '', /pressure \(disk-near-full\)/);
  t.is(shouldGiveUp('a', owners({ a: 0, b: 5 }), ['a', 'b'], hot), null, 'nothing to give');
  const allHot = new Map<string, NodeCapacity>([
    ['a', { weight: 1, pressure: 'cpu-high' }],
    ['b', { weight: 1, pressure: 'cpu-high' }],
  ]);
  t.is(shouldGiveUp('a', owners({ a: 2, b: 1 }), ['a', 'b'], allHot), null, 'all under pressure: no churn');
  t.is(shouldGiveUp('b', owners({ a: 1, b: 3 }), ['a', 'b'], hot), null, 'a calm node does not give to one under pressure');
});

test('mixed bitrates place by bitrate: a few 8 Mbit/s cameras load a node as much as many of 1 Mbit/s', (t) => {
  const bigs = cams('big', 3);
  const smalls = cams('s', 24);
  const bitrates = new Map([...bigs.map((c) => [c, 8 * M] as const), ...smalls.map((c) => [c, 1 * M] as const)]);
  const plan = placeOrphans([...smalls, ...bigs], new Map(), ['a', 'b'], new Map(), bitrates);
  const on = (node: string): string[] => [...plan].filter(([, n]) => n === node).map(([c]) => c);
  const sum = (node: string): number => on(node).reduce((s, c) => s + bitrates.get(c)!, 0);
  t.is(sum('a'), 24 * M, '48 Mbit/s split evenly');
  t.is(sum('b'), 24 * M);
  t.deepEqual([on('a').length, on('b').length], [10, 17], 'two 8 Mbit/s and eight 1 Mbit/s weigh as much as one and sixteen');

  // By count the node with two big cameras looks lighter; by bitrate it is not.
  const owners = ownersOf({ a: ['big00', 'big01'], b: ['s00', 's01', 's02', 's03'] });
  t.deepEqual(Object.fromEntries(placeOrphans(['s10'], owners, ['a', 'b'], new Map(), bitrates)), { s10: 'b' });
  t.deepEqual(Object.fromEntries(placeOrphans(['s10'], owners, ['a', 'b'])), { s10: 'a' }, 'nothing measured: by count');

  // A node of weight 2 carries twice the bitrate.
  const heavy = new Map<string, NodeCapacity>([['a', { weight: 2, pressure: null }]]);
  const weighted = placeOrphans([...smalls, ...bigs], new Map(), ['a', 'b'], heavy, bitrates);
  const sumOf = (node: string): number => [...weighted].filter(([, n]) => n === node).reduce((s, [c]) => s + bitrates.get(c)!, 0);
  t.is(sumOf('a'), 32 * M);
  t.is(sumOf('b'), 16 * M);
});

test('unmeasured cameras weigh the median of the measured ones, or one unit when none is measured', (t) => {
  const w = cameraWeights(
    ['a', 'b', 'c', 'd', 'e'],
    new Map([
      ['a', 3 * M],
      ['b', 1 * M],
      ['d', 8 * M],
      ['e', 0],
    ]),
  );
  t.deepEqual(Object.fromEntries(w), { a: 3 * M, b: 1 * M, c: 3 * M, d: 8 * M, e: 3 * M }, 'median of 1, 3, 8; a bitrate of 0 is no measurement');
  t.is(
    cameraWeights(
      ['a', 'b', 'c'],
      new Map([
        ['a', 2 * M],
        ['b', 5 * M],
      ]),
    ).get('c'),
    3.5 * M,
    'even count: the mean of the middle two',
  );
  t.deepEqual(Object.fromEntries(cameraWeights(['a', 'b'], new Map([['zzz', 9 * M]]))), { a: 1, b: 1 }, 'only cameras of the view count');

  // b's three unmeasured cameras weigh 8 Mbit/s each (the only measured one), not one unit:
  // b carries 24 and a 8, so the 1 Mbit/s orphan goes to a.
  const owners = ownersOf({ a: ['big'], b: ['u1', 'u2', 'u3'] });
  const plan = placeOrphans(['o'], owners, ['a', 'b'], new Map(), new Map([['big', 8 * M]]));
  t.is(plan.get('o'), 'a');
  // Once b's are measured at 1 Mbit/s, b is the lighter one.
  const measured = new Map([
    ['big', 8 * M],
    ['u1', 1 * M],
    ['u2', 1 * M],
    ['u3', 1 * M],
  ]);
  t.is(placeOrphans(['o'], owners, ['a', 'b'], new Map(), measured).get('o'), 'b');
});

test('the same plan from the same view in any order; ties by node id, then camera id', (t) => {
  const bitrates = new Map([
    ['x1', 4 * M],
    ['x2', 2 * M],
    ['x3', 2 * M],
    ['o1', 2 * M],
    ['o2', 2 * M],
    ['o3', 6 * M],
  ]);
  const owners = ownersOf({ a: ['x1'], b: ['x2', 'x3'], c: [] });
  const capacity = new Map<string, NodeCapacity>([['c', { weight: 1.5, pressure: null }]]);
  const plan = Object.fromEntries(placeOrphans(['o1', 'o2', 'o3', 'o4'], owners, ['a', 'b', 'c'], capacity, bitrates));
  // Heaviest first: o3 (6) → c, (0 + 6)/1.5 = 4 against 10 on a or b; o1 (2) → c, 8/1.5 ≈ 5.3
  // against 6; o2 → a, 6 ties with b (by id) and beats c's 10/1.5; o4, unmeasured, weighs the
  // median 2 → b, 6 against 8 on a and 6.7 on c.
  t.deepEqual(plan, { o3: 'c', o1: 'c', o2: 'a', o4: 'b' });
  const reversed = (m: Map<string, number>): Map<string, number> => new Map([...m].reverse());
  const shuffledOwners = new Map([...owners].reverse());
  t.deepEqual(Object.fromEntries(placeOrphans(['o4', 'o3', 'o2', 'o1'], shuffledOwners, ['c', 'b', 'a'], capacity, reversed(bitrates))), plan);
  // Equal loads, equal cameras: the lower node id takes the lower camera id first.
  t.deepEqual(
    Object.fromEntries(
      placeOrphans(
        ['q2', 'q1'],
        new Map(),
        ['n2', 'n1'],
        new Map(),
        new Map([
          ['q1', M],
          ['q2', M],
        ]),
      ),
    ),
    { q1: 'n1', q2: 'n2' },
  );
});

test('no flapping between two nodes with a big camera: it moves at most once, nothing comes back', (t) => {
  const bitrates = new Map([['big', 8 * M], ...cams('s', 4).map((c) => [c, 1 * M] as const)]);
  // Balanced by count (one each) but not by bitrate: still nothing moves, since moving
  // the big camera would leave b more loaded than a is.
  const pair = ownersOf({ a: ['big'], b: ['s00'] });
  t.is(shouldGiveUp('a', pair, ['a', 'b'], new Map(), bitrates), null);
  t.is(shouldGiveUp('b', pair, ['a', 'b'], new Map(), bitrates), null);
  t.is(shouldGiveUp('a', ownersOf({ a: ['big'], b: [] }), ['a', 'b'], new Map(), bitrates), null, 'one big camera alone does not move to an empty node');

  // a has everything (12 Mbit/s), b joins: the big camera moves once (one move to 4 against
  // 8, as balanced as the four small ones moving would leave it) and nothing comes back.
  const { moves, owners } = settle(ownersOf({ a: ['big', ...cams('s', 4)] }), ['a', 'b'], new Map(), bitrates);
  t.deepEqual(
    moves.map((m) => `${m.camera} ${m.from}→${m.to}`),
    ['big a→b'],
  );
  t.deepEqual(Object.fromEntries(owners), { big: { node: 'b' }, s00: { node: 'a' }, s01: { node: 'a' }, s02: { node: 'a' }, s03: { node: 'a' } });
});

test('near-equal cameras even out: three against one moves one even when the lone camera is the heaviest', (t) => {
  const bitrates = new Map([
    ['a0', 1.0 * M],
    ['a1', 1.01 * M],
    ['a2', 0.99 * M],
    ['b0', 1.04 * M],
  ]);
  const { moves, owners } = settle(ownersOf({ a: ['a0', 'a1', 'a2'], b: ['b0'] }), ['a', 'b'], new Map(), bitrates);
  t.is(moves.length, 1, JSON.stringify(moves));
  const count = (n: string): number => [...owners.values()].filter((o) => o.node === n).length;
  t.deepEqual([count('a'), count('b')], [2, 2]);
});

test('node weights: configured wins; else the smaller of its core and disk shares against the biggest; else 1', (t) => {
  const T = 1e12;
  const w = nodeWeights(
    new Map<string, NodeSizing>([
      ['big', { size: { cores: 16, diskBytes: 40 * T } }],
      ['fewCores', { size: { cores: 4, diskBytes: 40 * T } }],
      ['smallDisk', { size: { cores: 16, diskBytes: 10 * T } }],
      ['set', { configured: 3, size: { cores: 2, diskBytes: T } }],
      ['old', {}],
    ]),
  );
  t.deepEqual(Object.fromEntries(w), { big: 1, fewCores: 0.25, smallDisk: 0.25, set: 3, old: 1 });
  const alone = nodeWeights(new Map<string, NodeSizing>([['a', { size: { cores: 2, diskBytes: T } }]]));
  t.is(alone.get('a'), 1, 'one node is as big as the biggest');
  const same = nodeWeights(
    new Map<string, NodeSizing>([
      ['a', { size: { cores: 2, diskBytes: T } }],
      ['b', { size: { cores: 2, diskBytes: T } }],
    ]),
  );
  t.deepEqual([same.get('a'), same.get('b')], [1, 1], 'nodes on one machine weigh the same');
});

test('moves lower the sum of squared loads, so rebalancing settles: random bitrates, weights and starts', (t) => {
  let seed = 42;
  const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  let total = 0;
  for (let round = 0; round < 60; round++) {
    const nodes = ['n1', 'n2', 'n3'].slice(0, 2 + Math.floor(rand() * 2));
    const capacity = new Map<string, NodeCapacity>(nodes.map((n) => [n, { weight: [1, 1, 2, 0.5][Math.floor(rand() * 4)]!, pressure: null }]));
    const bitrates = new Map<string, number>();
    const owners = new Map<string, OwnerView>();
    const n = 3 + Math.floor(rand() * 20);
    for (let i = 0; i < n; i++) {
      const c = `c${i}`;
      if (rand() < 0.8) bitrates.set(c, Math.round((0.2 + rand() * 8) * M));
      owners.set(c, { node: nodes[Math.floor(rand() * Math.min(2, nodes.length))]! });
    }
    const { moves, settled } = settle(owners, nodes, capacity, bitrates);
    total += moves.length;
    t.true(settled, `round ${round}: still moving after ${moves.length} moves`);
    for (let i = 1; i < moves.length; i++) t.true(moves[i]!.potential < moves[i - 1]!.potential, `round ${round}: move ${i} raised Σ L²/W`);
    t.true(
      moves.every((m) => m.to !== m.from),
      `round ${round}: placement handed a camera back to its giver`,
    );
  }
  t.true(total > 60, `the starts were unbalanced enough to move cameras: ${total} moves`);
});

test("the bitrate view: the owner reports it; an orphan keeps its dead owner's last figure; a camera that moved keeps the giver's until its new owner measures it", (t) => {
  const reports = new Map([
    [
      'a',
      new Map([
        ['c1', 2 * M],
        ['c2', 3 * M],
      ]),
    ], // a gave c2 up to b, which has not measured it yet
    [
      'b',
      new Map([
        ['c1', 9 * M],
        ['c3', 4 * M],
      ]),
    ], // b recorded c1 once, long ago
    ['dead', new Map([['c4', 6 * M]])], // its last heartbeat, still in the bucket
    ['0old', new Map([['c2', 1 * M]])],
  ]);
  const ownerOf = new Map([
    ['c1', 'a'],
    ['c2', 'b'],
    ['c3', 'b'],
    ['c4', 'dead'],
  ]);
  const view = bitrateView(['c1', 'c2', 'c3', 'c4', 'c5'], ownerOf, reports);
  t.is(view.get('c1'), 2 * M, "the owner's figure wins");
  t.is(view.get('c3'), 4 * M);
  t.is(view.get('c4'), 6 * M, "the dead owner's last heartbeat");
  t.is(view.get('c2'), 1 * M, 'not measured by its owner: the first other report by node id');
  t.false(view.has('c5'), 'reported by nobody: unmeasured');
  t.deepEqual(bitrateView(['c1', 'c2', 'c3', 'c4', 'c5'], ownerOf, new Map([...reports].reverse())), view, 'order of the reports does not matter');
});

interface Move {
  camera: string;
  from: string;
  to: string;
  /** Σ L²/W after the move. */
  potential: number;
}

/**
 * Runs rebalancing as the cluster does, one node after another: a node that should give
 * a camera up releases it, placement hands it on; until a whole round moves nothing (or
 * 200 moves: not settled).
 */
function settle(
  start: ReadonlyMap<string, OwnerView>,
  nodes: readonly string[],
  capacity: ReadonlyMap<string, NodeCapacity>,
  bitrates: ReadonlyMap<string, number>,
): { moves: Move[]; owners: Map<string, OwnerView>; settled: boolean } {
  const owners = new Map(start);
  const moves: Move[] = [];
  const weights = cameraWeights(owners.keys(), bitrates);
  const potential = (): number =>
    nodes.reduce((sum, n) => {
      const load = [...owners].filter(([, o]) => o.node === n).reduce((s, [c]) => s + weights.get(c)!, 0);
      return sum + (load * load) / (capacity.get(n)?.weight ?? 1);
    }, 0);
  while (moves.length < 200) {
    let moved = false;
    for (const self of nodes) {
      const give = shouldGiveUp(self, owners, nodes, capacity, bitrates);
      if (!give) continue;
      owners.delete(give.camera);
      const to = placeOrphans([give.camera], owners, nodes, capacity, bitrates).get(give.camera)!;
      owners.set(give.camera, { node: to });
      moves.push({ camera: give.camera, from: self, to, potential: potential() });
      moved = true;
    }
    if (!moved) return { moves, owners, settled: true };
  }
  return { moves, owners, settled: false };
}
