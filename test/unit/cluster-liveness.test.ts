/**
 * Liveness by counting (cluster/liveness.ts): a peer is dead only after K of our
 * successful ticks without a beat of its own, never by time; a stall that stops every
 * beat (a leader election: our own ticks fail, none is counted) kills nobody.
 * Placement is tested in placement.test.ts.
 */
import test from 'ava';
import { LivenessCounter } from '../../cluster/liveness.ts';

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
