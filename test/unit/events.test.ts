/** Pure event and recording-decision logic with explicit times. */
import test from 'ava';
import { EventTracker } from '../../schedule/events.ts';
import { decide, eventRecorded, recordingState, wantsIngest, withCameraEvent, type RecordingState } from '../../schedule/recording.ts';
import { plannedAt } from '../../schedule/plan.ts';
import type { SchedulePlan } from '../../index/records.ts';

const T = Date.UTC(2026, 10, 25, 12, 0, 0); // Wednesday noon UTC
const s = (n: number) => T + n * 1000;

test('pulses merge per type, post-record extends the end, the latest started type wins', (t) => {
  const ev = new EventTracker(2000);
  ev.apply({ type: 'motion', action: 'pulse', atMs: s(0), seconds: 3 });
  ev.apply({ type: 'motion', action: 'pulse', atMs: s(2), seconds: 3 }); // overlaps: one run to s(5)
  t.is(ev.activeType(s(-1)), null);
  t.is(ev.activeType(s(0)), 'motion');
  t.is(ev.activeType(s(6.9)), 'motion', 'post-record');
  t.is(ev.activeType(s(7)), null);
  ev.apply({ type: 'alarm', action: 'start', atMs: s(1) });
  t.is(ev.activeType(s(1.5)), 'alarm');
  t.is(ev.activeType(s(100)), 'alarm', 'open until stopped');
  ev.apply({ type: 'alarm', action: 'stop', atMs: s(10) });
  t.is(ev.activeType(s(11.9)), 'alarm');
  t.is(ev.activeType(s(12)), null);
  ev.apply({ type: 'vca', action: 'stop', atMs: s(13) }); // stop without start: ignored
  t.is(ev.activeType(s(13)), null);
  ev.prune(s(100));
  t.is(ev.activeType(s(101)), null);
});

test('a flood of events keeps state per type only', (t) => {
  const ev = new EventTracker(0);
  for (let i = 0; i < 100_000; i++) ev.apply({ type: i % 2 ? 'vca' : 'motion', action: 'pulse', atMs: s(i / 1000), seconds: 1 });
  t.is(ev.activeType(s(100.5)), 'vca');
  t.is(ev.activeType(s(102)), null);
});

const plan = (slots: SchedulePlan['slots'], pre = 5, post = 2): SchedulePlan => ({ camera: 'c', slots, timeZone: 'UTC', preSeconds: pre, postSeconds: post });

test('event slots outrank timing slots where they overlap', (t) => {
  const p = plan([
    { days: [3], start: '08:00', end: '18:00', type: 'timing' },
    { days: [3], start: '11:00', end: '13:00', type: 'event' },
  ]);
  t.is(plannedAt(p, s(0)), 'event');
  t.is(plannedAt(p, Date.UTC(2026, 10, 25, 9)), 'timing');
  t.is(plannedAt(p, Date.UTC(2026, 10, 25, 19)), null);
});

test('the director: timing writes, event slots hold with pre-record, events and manual write with their type', (t) => {
  let d: RecordingState = recordingState(plan([{ days: [3], start: '11:00', end: '13:00', type: 'event' }]));
  t.deepEqual(decide(d, s(0)), { write: false, type: 'event', preMs: 5000 });
  const motion = { type: 'motion', action: 'pulse' as const, atMs: s(10), seconds: 3 };
  d = withCameraEvent(d, motion);
  t.true(eventRecorded(d, motion.atMs));
  t.deepEqual(decide(d, s(11)), { write: true, type: 'motion', preMs: 0, sinceMs: s(10) });
  t.false(decide(d, s(15)).write, 'after pulse + post');
  d = { ...d, manual: true };
  t.deepEqual(decide(d, s(20)), { write: true, type: 'manual', preMs: 0 });
  const outside = Date.UTC(2026, 10, 25, 20);
  t.deepEqual(decide(d, outside), { write: true, type: 'manual', preMs: 0 }, 'manual works outside slots');
  d = { ...d, manual: false };
  const alarm = { type: 'alarm', action: 'pulse' as const, atMs: outside, seconds: 3 };
  d = withCameraEvent(d, alarm);
  t.false(eventRecorded(d, alarm.atMs), 'no slot: not recorded');
  t.false(decide(d, outside + 1000).write);
  t.false(wantsIngest(d, outside));
  t.true(wantsIngest(d, s(0)));
  const timing = recordingState(undefined);
  t.deepEqual(decide(timing, s(0)), { write: true, type: 'timing', preMs: 0 }, 'no plan: always timing');
});

test('the recording state is data: applying an event returns a new state and leaves the old one as it was', (t) => {
  const before = recordingState(plan([{ days: [3], start: '11:00', end: '13:00', type: 'event' }]));
  const after = withCameraEvent(before, { type: 'motion', action: 'start', atMs: s(0) });
  t.deepEqual(before.events, {});
  t.is(decide(before, s(1)).write, false);
  t.is(decide(after, s(1)).write, true);
  t.is(decide({ ...after, blocked: 'pool full' }, s(1)).type, 'blocked', 'a full pool holds writing');
});
