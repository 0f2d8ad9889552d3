/**
 * Liveness by counting and placement (cluster/liveness.ts, cluster/placement.ts): a peer
 * is dead only after K of our successful ticks without a beat of its own, never by time;
 * a stall that stops every beat (a leader election: our own ticks fail, none is
 * counted) kills nobody; the plan is the same on every node and spreads by count.
 */
import test from 'ava';
import { LivenessCounter } from '../../cluster/liveness.ts';
import { placeOrphans, shouldGiveUp, type NodeCapacity } from '../../cluster/placement.ts';

test('a peer whose heartbeat stops is dead after K of our ticks, not before', (t) => {
  const l = new LivenessCounter('a', 3);
  l.tick(new Map([['b', 10]]));
  t.true(l.alive('b'));
  l.tick(new Map([['b', 11]]));
  l.tick(new Map([['b', 11]]));
  l.tick(new Map([['b', 11]]));
  t.true(l.alive('b'), 'two ticks without a beat: still alive');
  l.tick(new Map([['b', 11]]));
  t.true(l.dead('b'), 'three ticks without a beat: dead');
  t.deepEqual(l.aliveNodes(), ['a']);
  l.tick(new Map([['b', 12]]));
  t.true(l.alive('b'), 'a beat again brings it back');
});

test('a stall that stops every heartbeat judges nobody dead: our failed ticks are not counted', (t) => {
  const l = new LivenessCounter('a', 3);
  l.tick(new Map([['b', 5]]));
  // Ten seconds of leader election: our own beat fails, so tick() is never called.
  l.tick(new Map([['b', 6]]));
  t.true(l.alive('b'));
  t.is(l.missed('b'), 0);
});

test('a peer whose read failed is not counted; a deleted heartbeat (a node that left) is dead at once', (t) => {
  const l = new LivenessCounter('a', 3);
  l.tick(
    new Map([
      ['b', 5],
      ['c', 7],
    ]),
  );
  for (let i = 0; i < 5; i++) l.tick(new Map([['c', 8 + i]]));
  t.true(l.alive('b'), 'b was never read again: not counted');
  l.tick(new Map([['c', -1]]));
  t.true(l.dead('c'));
  t.false(l.dead('a'), 'never itself');
});

test('a node first seen without a heartbeat key counts from one missed tick', (t) => {
  const l = new LivenessCounter('a', 2);
  l.tick(new Map([['ghost', 0]]));
  t.true(l.alive('ghost'));
  l.tick(new Map([['ghost', 0]]));
  t.true(l.dead('ghost'));
});

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
  t.truthy(shouldGiveUp('a', owners({ a: 3, b: 1 }), ['a', 'b']));
  t.is(shouldGiveUp('a', owners({ a: 2, b: 1 }), ['a', 'b']), null, 'one more is balanced');
  t.is(shouldGiveUp('a', owners({ a: 3, b: 1 }), ['a']), null, 'alone: nowhere to go');
  const big = new Map<string, NodeCapacity>([['a', { weight: 2, pressure: null }]]);
  t.is(shouldGiveUp('a', owners({ a: 4, b: 2 }), ['a', 'b'], big), null, 'weight 2 holds twice as many');
  t.truthy(shouldGiveUp('b', owners({ a: 1, b: 3 }), ['a', 'b'], big), 'the small node gives to the big one');
  const hot = new Map<string, NodeCapacity>([['a', { weight: 1, pressure: 'disk-near-full' }]]);
  t.regex(shouldGiveUp('a', owners({ a: 1, b: 5 }), ['a', 'b'], hot) ?? '', /pressure \(disk-near-full\)/);
  t.is(shouldGiveUp('a', owners({ a: 0, b: 5 }), ['a', 'b'], hot), null, 'nothing to give');
  const allHot = new Map<string, NodeCapacity>([
    ['a', { weight: 1, pressure: 'cpu-high' }],
    ['b', { weight: 1, pressure: 'cpu-high' }],
  ]);
  t.is(shouldGiveUp('a', owners({ a: 2, b: 1 }), ['a', 'b'], allHot), null, 'all under pressure: no churn');
  t.is(shouldGiveUp('b', owners({ a: 1, b: 3 }), ['a', 'b'], hot), null, 'a calm node does not give to one under pressure');
});
