/**
 * The camera machine on its own: a fake ingest (an `ingest` actor injected with
 * provideCamera, as the supervisor injects the real one) that the test drives, fake
 * gap and recording stores, and xstate's SimulatedClock for every delay and for the
 * node's clock. Plan boundaries are delayed transitions: time moves only when the test
 * moves it, and nothing polls.
 */
import test, { type ExecutionContext } from 'ava';
import { createActor, fromCallback, SimulatedClock } from 'xstate';
import {
  provideCamera,
  PLAN_WAKE_MAX_MS,
  stateName,
  type CameraEmitted,
  type CameraInput,
  type IngestCommand,
  type IngestInput,
} from '../../actors/camera-machine.ts';
import type { CameraConfig, GapRecord, SchedulePlan } from '../../index/records.ts';
import type { AlarmInput } from '../../lib/alarms.ts';
import { decide, type DirectorState, type RecordingState } from '../../schedule/recording.ts';

const MIN = 60_000;
const T0 = Date.UTC(2026, 10, 25, 11, 50); // a Wednesday, 11:50 UTC
const ALL_WEEK = [0, 1, 2, 3, 4, 5, 6];

interface FakeAttempt {
  input: IngestInput;
  /** The recording state as the camera last sent it. */
  recording: RecordingState;
  stopped: boolean;
  recordingFrom: (startMs: number) => void;
  exit: (error: string, lastEndMs: number | null) => void;
}

const camera = (over: Partial<CameraConfig> = {}): CameraConfig => ({
  id: 'c',
  pool: 'default',
  streams: { main: 'rtsp://cam/main', sub: 'rtsp://cam/sub' },
  record: { stream: 'main' },
  ...over,
});
const plan = (slots: SchedulePlan['slots'], extra: Partial<SchedulePlan> = {}): SchedulePlan => ({
  camera: 'c',
  timeZone: 'UTC',
  preSeconds: 0,
  postSeconds: 0,
  slots,
  ...extra,
});

function start(t: ExecutionContext, input: Partial<CameraInput> = {}, opts: { failStart?: string } = {}) {
  const sim = new SimulatedClock();
  sim.set(T0);
  /** The node's wall clock minus xstate's timer clock: a step of the wall clock (NTP). */
  const wall = { stepMs: 0 };
  let clockReads = 0;
  const attempts: FakeAttempt[] = [];
  const gaps: GapRecord[] = [];
  const persisted: DirectorState[] = [];
  const statuses: string[] = [];
  const alarms: AlarmInput[] = [];
  const ended: Extract<CameraEmitted, { type: 'ingest.ended' }>[] = [];
  const ingest = fromCallback<IngestCommand, IngestInput>(({ input: attemptInput, sendBack, receive }) => {
    if (opts.failStart) throw new Error(opts.failStart);
    const a: FakeAttempt = {
      input: attemptInput,
      recording: attemptInput.recording,
      stopped: false,
      recordingFrom: (startMs) => sendBack({ type: 'INGEST.RECORDING', startMs }),
      exit: (error, lastEndMs) => sendBack({ type: 'INGEST.EXITED', error, lastEndMs }),
    };
    receive((c) => (a.recording = c.recording));
    attempts.push(a);
    return () => (a.stopped = true);
  });
  const logic = provideCamera({
    clock: { nowMs: () => (clockReads++, sim.now() + wall.stepMs) },
    storeGap: (g) => gaps.push(g),
    storeRecording: (_camera, s) => persisted.push(s),
    ingest,
  });
  const actor = createActor(logic, {
    clock: sim,
    input: { camera: camera(), plan: undefined, accountedUntilMs: null, backoff: { initialMs: 1000, maxMs: 4000 }, ...input },
  });
  actor.on('status', (s) => statuses.push(s.detail ? `${s.state}: ${s.detail}` : s.state));
  actor.on('alarm', (a) => alarms.push(a.alarm));
  actor.on('ingest.ended', (e) => ended.push(e));
  const errors: unknown[] = [];
  actor.subscribe({ error: (e) => errors.push(e) });
  actor.start();
  t.teardown(() => actor.stop());
  const state = () => stateName(actor.getSnapshot().value);
  const running = () => attempts.filter((a) => !a.stopped);
  return { sim, wall, actor, attempts, running, gaps, persisted, statuses, alarms, ended, errors, state, reads: () => clockReads };
}

test('a timing slot starts ingest at its start and stops it at its end, woken by delayed transitions, not a poller', (t) => {
  const c = start(t, { plan: plan([{ days: [3], start: '12:00', end: '12:30', type: 'timing' }]) });
  t.is(c.state(), 'stopped');
  t.deepEqual(c.statuses, ['stopped']);
  c.sim.increment(10 * MIN - 1);
  t.is(c.state(), 'stopped', 'a millisecond before the slot');
  c.sim.increment(1);
  t.is(c.state(), 'connecting', 'at the slot start');
  t.is(c.running().length, 1);
  c.running()[0]!.recordingFrom(T0 + 10 * MIN + 200);
  t.is(c.state(), 'recording');
  c.sim.increment(30 * MIN - 1);
  t.is(c.state(), 'recording');
  c.sim.increment(1);
  t.is(c.state(), 'stopped', 'at the slot end');
  t.is(c.running().length, 0, 'the attempt was ended');
  t.deepEqual(c.statuses, ['stopped', 'connecting', 'recording', 'stopped']);
  // 40 minutes went by: a 1 s poller would have read the clock 2400 times; the plan
  // timer wakes at its boundaries and at most every PLAN_WAKE_MAX_MS between them.
  t.true(c.reads() <= 2 + (40 * MIN) / PLAN_WAKE_MAX_MS + 4, `${c.reads()} clock reads`);
  t.deepEqual(c.errors, []);
});

test('a wall-clock step moves a slot boundary by at most PLAN_WAKE_MAX_MS', (t) => {
  const c = start(t, { plan: plan([{ days: [3], start: '12:00', end: '13:00', type: 'timing' }]) });
  t.is(c.state(), 'stopped');
  // NTP steps the wall clock 10 minutes ahead: it is 12:00 now, but the timer was set for 10 minutes of elapsed time.
  c.wall.stepMs = 10 * MIN;
  c.sim.increment(PLAN_WAKE_MAX_MS - 1);
  t.is(c.state(), 'stopped');
  c.sim.increment(1);
  t.is(c.state(), 'connecting', 'the plan is judged again at the next wake, with the stepped clock');
});

test('a slot boundary that changes only the stream starts a new attempt on the other stream', (t) => {
  const c = start(t, {
    plan: plan([
      { days: ALL_WEEK, start: '00:00', end: '12:00', type: 'timing', stream: 'sub' },
      { days: ALL_WEEK, start: '12:00', end: '00:00', type: 'timing', stream: 'main' },
    ]),
  });
  t.is(c.attempts.length, 1);
  t.is(c.attempts[0]!.input.stream, 'sub');
  c.attempts[0]!.recordingFrom(T0 + 500);
  c.sim.increment(10 * MIN);
  t.true(c.attempts[0]!.stopped, 'the sub attempt ended at the boundary');
  t.is(c.attempts.length, 2);
  t.is(c.attempts[1]!.input.stream, 'main');
  t.deepEqual(c.statuses, ['connecting', 'recording', 'connecting']);
});

test('ingest exits: backoff doubles per failed attempt to its cap, one offline alarm per outage, the gap opens and closes', (t) => {
  const c = start(t, { accountedUntilMs: T0 - 500 });
  t.is(c.state(), 'connecting');
  c.attempts[0]!.recordingFrom(T0 + 100); // 600 ms after what the index had: no gap
  t.deepEqual(c.gaps, []);
  c.attempts[0]!.exit('camera gone', T0 + 5000);
  t.is(c.state(), 'backoff');
  t.deepEqual(
    c.gaps.map((g) => [g.state, g.startMs - T0, g.endMs, g.reason]),
    [['open', 5000, null, 'camera gone']],
  );
  t.is(c.alarms.length, 1);
  t.is(c.alarms[0]!.kind, 'camera-offline');
  t.deepEqual(
    c.ended.map((e) => [e.error, e.retryInMs]),
    [['camera gone', 1000]],
  );
  c.sim.increment(999);
  t.is(c.attempts.length, 1, 'still backing off');
  c.sim.increment(1);
  t.is(c.attempts.length, 2, 'retried after 1 s');
  c.attempts[1]!.exit('connection refused', null);
  c.sim.increment(2000);
  c.attempts[2]!.exit('connection refused', null);
  c.sim.increment(4000);
  c.attempts[3]!.exit('connection refused', null);
  t.deepEqual(
    c.ended.map((e) => e.retryInMs),
    [1000, 2000, 4000, 4000],
    'doubling up to backoffMaxMs',
  );
  t.is(c.alarms.length, 1, 'failed attempts of the same outage raise no more alarms');
  t.true(c.statuses.includes('backoff: connection refused; retry in 4000 ms'));
  c.sim.increment(4000);
  c.attempts[4]!.recordingFrom(T0 + 60_000);
  t.is(c.state(), 'recording');
  // Each failed attempt stores the open gap again (same key: one record); video closes it.
  t.true(c.gaps.slice(0, -1).every((g) => g.state === 'open' && g.startMs === T0 + 5000));
  t.deepEqual([c.gaps.at(-1)!.state, c.gaps.at(-1)!.startMs - T0, c.gaps.at(-1)!.endMs! - T0], ['pending', 5000, 60_000]);
  c.attempts[4]!.exit('camera gone', T0 + 70_000);
  t.deepEqual(c.ended.at(-1)!.retryInMs, 1000, 'recording reset the backoff');
  t.is(c.alarms.length, 2, 'a new outage, a new alarm');
});

test('an attempt that throws while starting is a failed attempt: backoff, then a fresh attempt', (t) => {
  const c = start(t, {}, { failStart: 'spawn EMFILE' });
  t.is(c.state(), 'backoff');
  t.is(c.ended.length, 1);
  t.is(c.ended[0]!.error, 'ingest attempt failed to start: spawn EMFILE');
  t.true(c.ended[0]!.cause instanceof Error);
  c.sim.increment(1000);
  t.is(c.ended.length, 2, 'retried after the backoff');
  t.deepEqual(c.errors, [], 'the machine itself did not fail');
});

test('events and manual recording reach the running attempt as data; both are persisted, a transient camera is not', (t) => {
  // An event slot all week: ingest runs, nothing is written until an event.
  const c = start(t, { plan: plan([{ days: ALL_WEEK, start: '00:00', end: '00:00', type: 'event' }], { preSeconds: 5, postSeconds: 2 }) });
  const a = c.attempts[0]!;
  t.deepEqual(decide(a.recording, T0 + 1000), { write: false, type: 'event', preMs: 5000 });
  c.actor.send({ type: 'EVENT', event: { type: 'motion', action: 'pulse', atMs: T0 + 1000, seconds: 3 } });
  t.deepEqual(decide(a.recording, T0 + 2000), { write: true, type: 'motion', preMs: 0, sinceMs: T0 + 1000 }, 'the attempt judges fragments by the new state');
  t.false(decide(a.recording, T0 + 6000).write, 'after pulse and post-record');
  c.actor.send({ type: 'MANUAL', on: true });
  t.is(decide(a.recording, T0 + 9000).type, 'manual');
  t.is(c.persisted.length, 2);
  t.true(c.persisted[1]!.manual);
  t.truthy(c.persisted[1]!.events['motion']);
  t.is(c.attempts.length, 1, 'no new attempt for events');

  const tr = start(t, { camera: camera({ transient: true }) });
  tr.actor.send({ type: 'MANUAL', on: true });
  t.deepEqual(tr.persisted, []);
});

test('manual recording outside every slot starts and stops ingest', (t) => {
  const c = start(t, { plan: plan([]) });
  t.is(c.state(), 'stopped');
  c.actor.send({ type: 'MANUAL', on: true });
  t.is(c.state(), 'connecting');
  c.actor.send({ type: 'MANUAL', on: false });
  t.is(c.state(), 'stopped');
  t.true(c.attempts[0]!.stopped);
});

test('a new plan re-arms the boundary timer at once', (t) => {
  const c = start(t, { plan: plan([]) });
  c.actor.send({ type: 'PLAN', plan: plan([{ days: [3], start: '11:55', end: '12:00', type: 'timing' }]) });
  t.is(c.state(), 'stopped');
  c.sim.increment(5 * MIN);
  t.is(c.state(), 'connecting', "started at 11:55, the new plan's boundary");
  c.sim.increment(5 * MIN);
  t.is(c.state(), 'stopped');
});

test('a full pool holds writing with a gap from when it filled until it has room', (t) => {
  const c = start(t);
  c.attempts[0]!.recordingFrom(T0);
  c.sim.increment(10_000);
  c.actor.send({ type: 'STORAGE', blocked: 'pool default is full' });
  t.is(c.attempts[0]!.recording.blocked, 'pool default is full', 'the attempt holds');
  t.is(decide(c.attempts[0]!.recording, T0 + 11_000).type, 'blocked');
  c.sim.increment(20_000);
  c.actor.send({ type: 'STORAGE', blocked: null });
  t.deepEqual(
    c.gaps.map((g) => [g.state, g.startMs - T0, g.endMs === null ? null : g.endMs - T0, g.reason]),
    [
      ['open', 10_000, null, 'pool default is full'],
      ['pending', 10_000, 30_000, 'pool full'],
    ],
  );
  t.is(c.attempts.length, 1, 'ingest kept running');
});

test('RECONFIGURE starts a new attempt with the new config; STOP ends the camera for good', (t) => {
  const c = start(t);
  c.actor.send({ type: 'RECONFIGURE', camera: camera({ streams: { main: 'rtsp://cam/new' } }) });
  t.true(c.attempts[0]!.stopped);
  t.is(c.attempts[1]!.input.camera.streams.main, 'rtsp://cam/new');
  c.actor.send({ type: 'STOP' });
  t.true(c.attempts[1]!.stopped);
  t.is(c.statuses.at(-1), 'stopped');
  c.sim.increment(24 * 60 * MIN);
  t.is(c.attempts.length, 2, 'nothing starts after STOP');
});

test('the context is plain data', (t) => {
  const c = start(t, { plan: plan([{ days: ALL_WEEK, start: '00:00', end: '00:00', type: 'timing' }]) });
  c.actor.send({ type: 'EVENT', event: { type: 'alarm', action: 'start', atMs: T0 } });
  const context = c.actor.getSnapshot().context;
  // structuredClone throws on functions and drops class prototypes (deepEqual would see them).
  t.deepEqual(structuredClone(context), context);
});
