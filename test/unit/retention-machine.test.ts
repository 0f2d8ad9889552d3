/**
 * The retention machine of one pool on its own: a fake pass injected with .provide()
 * (provideRetention) that the test finishes by hand, and xstate's SimulatedClock for
 * its idle tick.
 */
import test, { type ExecutionContext } from 'ava';
import { createActor, SimulatedClock } from 'xstate';
import { provideRetention } from '../../actors/retention-actor.ts';

function start(t: ExecutionContext, tickMs = 5000) {
  const clock = new SimulatedClock();
  const passes: { pool: string; done: () => void; fail: (e: Error) => void }[] = [];
  const logic = provideRetention(
    (pool) =>
      new Promise<void>((resolve, reject) => {
        passes.push({ pool, done: resolve, fail: reject });
      }),
  );
  const actor = createActor(logic, { clock, input: { pool: 'p', tickMs } });
  const failed: unknown[] = [];
  actor.on('pass.failed', (e) => failed.push(e.error));
  actor.start();
  t.teardown(() => actor.stop());
  const settled = (): Promise<void> => new Promise((r) => setImmediate(r)); // promise actors report on a later tick
  return { clock, actor, passes, failed, settled, state: () => actor.getSnapshot().value };
}

test('a kick runs one pass; kicks during it cause exactly one more, never two at once', async (t) => {
  const r = start(t);
  r.actor.send({ type: 'KICK' });
  t.is(r.state(), 'passing');
  t.is(r.passes.length, 1);
  t.is(r.passes[0]!.pool, 'p');
  for (let i = 0; i < 5; i++) r.actor.send({ type: 'KICK' });
  t.is(r.passes.length, 1, 'no second pass while one runs');
  r.passes[0]!.done();
  await r.settled();
  t.is(r.passes.length, 2, 'one more pass for the kicks that came meanwhile');
  r.passes[1]!.done();
  await r.settled();
  t.is(r.state(), 'idle');
  t.is(r.passes.length, 2);
});

test('an idle pool passes after tickMs without a kick; a kick restarts the wait', async (t) => {
  const r = start(t, 5000);
  r.clock.increment(4999);
  t.is(r.passes.length, 0);
  r.clock.increment(1);
  t.is(r.passes.length, 1, 'the tick');
  r.passes[0]!.done();
  await r.settled();
  r.clock.increment(3000);
  r.actor.send({ type: 'KICK' });
  r.passes[1]!.done();
  await r.settled();
  r.clock.increment(4999);
  t.is(r.passes.length, 2, 'the wait starts again after each pass');
  r.clock.increment(1);
  t.is(r.passes.length, 3);
});

test('a failed pass is emitted and the machine goes on: the next kick passes again', async (t) => {
  const r = start(t);
  r.actor.send({ type: 'KICK' });
  r.passes[0]!.fail(new Error('index commit failed: ENOSPC'));
  await r.settled();
  t.is(r.state(), 'idle');
  t.is((r.failed[0] as Error).message, 'index commit failed: ENOSPC');
  r.actor.send({ type: 'KICK' });
  t.is(r.passes.length, 2);
  t.deepEqual(structuredClone(r.actor.getSnapshot().context), r.actor.getSnapshot().context, 'the context is plain data');
});
