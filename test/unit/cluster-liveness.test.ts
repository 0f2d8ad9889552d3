/**
 * Liveness by counting (cluster/liveness.ts): a peer is dead only after K of our
 * successful ticks without a beat of its own, never by time; a stall that stops every
 * beat (a leader election: our own ticks fail, none is counted) kills nobody.
 * Placement is tested in placement.test.ts.
 */
import test from 'ava';
import { GONE_TICKS, LivenessCounter } from '../../cluster/liveness.ts';

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

test('NATS says a peer is gone (no responders on its ping) and its beat stopped: dead after GONE_TICKS, before K', (t) => {
  const l = new LivenessCounter('a', 5);
  l.tick(new Map([['b', 10]]), new Map([['b', false]]));
  const gone = new Map([['b', true]]);
  for (let i = 1; i < GONE_TICKS; i++) {
    l.tick(new Map([['b', 10]]), gone);
    t.true(l.alive('b'), `${i} ticks gone: still alive`);
  }
  l.tick(new Map([['b', 10]]), gone);
  t.true(l.dead('b'), `${GONE_TICKS} ticks gone: dead, K = 5 not reached`);
  t.is(l.missed('b'), GONE_TICKS);
  l.tick(new Map([['b', 11]]), new Map([['b', false]]));
  t.true(l.alive('b'), 'it beats again (a restart): alive');
});

test('no responders while the beat goes on, a ping that answers or says nothing: not gone', (t) => {
  const l = new LivenessCounter('a', 5);
  l.tick(new Map([['b', 1]]));
  // Its beat changes every tick: a ping that found nobody (a reconnect under way) counts nothing.
  for (let i = 0; i < 10; i++) l.tick(new Map([['b', 2 + i]]), new Map([['b', true]]));
  t.true(l.alive('b'));
  // Beat stopped, ping gone then answered (it reconnected to another server): the count starts over.
  const c = new LivenessCounter('a', 5);
  c.tick(new Map([['b', 1]]));
  c.tick(new Map([['b', 1]]), new Map([['b', true]]));
  c.tick(new Map([['b', 1]]), new Map([['b', true]]));
  c.tick(new Map([['b', 1]]), new Map([['b', false]]));
  c.tick(new Map([['b', 1]]), new Map([['b', true]]));
  t.true(c.alive('b'), 'answered in between: not gone in a row');
  // A ping that timed out (absent) neither counts nor resets; K still applies.
  const d = new LivenessCounter('a', 5);
  d.tick(new Map([['b', 1]]));
  d.tick(new Map([['b', 1]]), new Map([['b', true]]));
  d.tick(new Map([['b', 1]]));
  d.tick(new Map([['b', 1]]), new Map([['b', true]]));
  t.is(d.alive('b'), GONE_TICKS > 2, 'a silent tick does not reset the count');
  d.tick(new Map([['b', 1]]));
  d.tick(new Map([['b', 1]]));
  t.true(d.dead('b'), 'K ticks without a beat: dead whatever the pings said');
});
