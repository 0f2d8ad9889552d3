/**
 * The back-fill actor of one camera on its own: fake claim / attempt / release
 * implementations injected with .provide() (as the manager injects the real ones), the
 * node's slot granted by hand, and xstate's SimulatedClock for retries and the
 * SD-card delay.
 */
import test, { type ExecutionContext } from 'ava';
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { backfillMachine, type AttemptOutcome, type BackfillEmitted } from '../../backfill/machine.ts';
import type { GapRecord } from '../../index/records.ts';

type Closed = GapRecord & { endMs: number };
const gap = (startMs: number, state: GapRecord['state'] = 'fetching', extra: Partial<Omit<GapRecord, 'endMs'>> = {}): Closed => ({
  camera: 'c',
  startMs,
  endMs: startMs + 1000,
  state,
  reason: 'camera offline',
  attempts: 0,
  ...extra,
});

interface Pending<T> {
  input: unknown;
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

function start(t: ExecutionContext) {
  const clock = new SimulatedClock();
  const claims: Pending<Closed | null>[] = [];
  const attempts: Pending<AttemptOutcome>[] = [];
  const releases: Pending<AttemptOutcome>[] = [];
  const checks: string[] = [];
  const pending =
    <T, I>(list: Pending<T>[]) =>
    ({ input }: { input: I }) =>
      new Promise<T>((resolve, reject) => list.push({ input, resolve, reject }));
  const logic = backfillMachine.provide({
    actors: {
      claim: fromPromise(pending<Closed | null, { camera: string; startMs: number }>(claims)),
      attempt: fromPromise(pending<AttemptOutcome, { gap: Closed }>(attempts)),
      release: fromPromise(pending<AttemptOutcome, { gap: Closed; error: unknown }>(releases)),
    },
    actions: { checkDue: (_, { camera }) => checks.push(camera) },
  });
  const actor = createActor(logic, { clock, input: { camera: 'c', sdFlushMs: 10_000, retryMs: 60_000 } });
  const emitted: BackfillEmitted[] = [];
  actor.on('*', (e) => emitted.push(e));
  actor.start();
  t.teardown(() => actor.stop());
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r)); // promise actors report on a later tick
  const kinds = () => emitted.map((e) => (e.type === 'progress' ? `progress ${e.gap.startMs} ${e.gap.state}` : e.type));
  return { clock, actor, claims, attempts, releases, checks, emitted, kinds, tick, state: () => actor.getSnapshot().value };
}

test('due records wait for a node slot and run one at a time: claim, attempt, report, slot freed', async (t) => {
  const b = start(t);
  b.actor.send({ type: 'DUE', startMs: 1000 });
  b.actor.send({ type: 'DUE', startMs: 5000 });
  b.actor.send({ type: 'DUE', startMs: 1000 }); // already waiting
  t.deepEqual(b.kinds(), ['slot.wanted']);
  t.is(b.claims.length, 0, 'nothing before the slot');
  b.actor.send({ type: 'GO' });
  t.deepEqual(b.claims[0]!.input, { camera: 'c', startMs: 1000 });
  b.claims[0]!.resolve(gap(1000));
  await b.tick();
  t.is(b.attempts.length, 1);
  b.actor.send({ type: 'DUE', startMs: 9000 });
  t.is(b.attempts.length, 1, 'one attempt at a time per camera');
  b.attempts[0]!.resolve({ records: [gap(1000, 'filled', { attempts: 1 })], retries: [], alarm: null });
  await b.tick();
  t.deepEqual(b.kinds(), ['slot.wanted', 'progress 1000 fetching', 'progress 1000 filled', 'slot.freed', 'slot.wanted']);
  b.actor.send({ type: 'GO' });
  t.deepEqual(b.claims[1]!.input, { camera: 'c', startMs: 5000 }, 'then the next in order');
  b.claims[1]!.resolve(null); // no longer due: the slot goes back at once
  await b.tick();
  t.deepEqual(b.kinds().slice(-2), ['slot.freed', 'slot.wanted']);
  t.is(b.attempts.length, 1);
});

test('an attempt that throws is released: its record goes back to the ledger and it is retried later', async (t) => {
  const b = start(t);
  b.actor.send({ type: 'DUE', startMs: 1000 });
  b.actor.send({ type: 'GO' });
  b.claims[0]!.resolve(gap(1000));
  await b.tick();
  b.attempts[0]!.reject(new Error('index commit failed: ENOSPC'));
  await b.tick();
  t.is(b.releases.length, 1);
  t.is((b.releases[0]!.input as { error: Error }).error.message, 'index commit failed: ENOSPC');
  t.is(b.state(), 'releasing', 'the slot is held until the record is given back');
  b.releases[0]!.resolve({ records: [gap(1000, 'pending', { attempts: 1, nextAttemptMs: 30_000 })], retries: [{ startMs: 1000, inMs: 30_000 }], alarm: null });
  await b.tick();
  t.deepEqual(b.kinds(), ['slot.wanted', 'progress 1000 fetching', 'failed', 'progress 1000 pending', 'slot.freed']);
  b.clock.increment(29_999);
  t.is(b.kinds().at(-1), 'slot.freed');
  b.clock.increment(1);
  t.is(b.kinds().at(-1), 'slot.wanted', 'retried when the ledger said');
});

test('a release that fails too claims the record again after retryMs; an alarm from an attempt is emitted', async (t) => {
  const b = start(t);
  b.actor.send({ type: 'DUE', startMs: 1000 });
  b.actor.send({ type: 'GO' });
  b.claims[0]!.resolve(gap(1000));
  await b.tick();
  b.attempts[0]!.reject(new Error('boom'));
  await b.tick();
  b.releases[0]!.reject(new Error('index commit failed: ENOSPC'));
  await b.tick();
  t.is(b.state(), 'idle');
  b.clock.increment(60_000);
  b.actor.send({ type: 'GO' });
  t.deepEqual(b.claims[1]!.input, { camera: 'c', startMs: 1000 });
  b.claims[1]!.resolve(gap(1000));
  await b.tick();
  b.attempts[1]!.resolve({
    records: [gap(1000, 'unavailable', { attempts: 5 })],
    retries: [],
    alarm: { kind: 'backfill-failed', camera: 'c', message: 'given up' },
  });
  await b.tick();
  t.true(b.emitted.some((e) => e.type === 'alarm' && e.alarm.kind === 'backfill-failed'));
});

test('a record due later and a camera recording again are delayed events', (t) => {
  const b = start(t);
  b.actor.send({ type: 'DUE', startMs: 1000, inMs: 5000 });
  t.deepEqual(b.kinds(), []);
  b.clock.increment(5000);
  t.deepEqual(b.kinds(), ['slot.wanted']);
  b.actor.send({ type: 'RECORDING' });
  b.clock.increment(9999);
  t.deepEqual(b.checks, []);
  b.clock.increment(1);
  t.deepEqual(b.checks, ['c'], 'the due records are checked once the card has flushed');
  t.deepEqual(structuredClone(b.actor.getSnapshot().context), b.actor.getSnapshot().context, 'the context is plain data');
});
