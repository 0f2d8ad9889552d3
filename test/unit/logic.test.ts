/** Fast unit tests of pure logic: times, byte ranges, GOP tables, plans, settings. */
import test from 'ava';
import { parseRangeMs, parseTimeMs } from '../../lib/time.ts';
import { parseByteRange } from '../../api/download.ts';
import { decodeGops, encodeGops } from '../../index/gop-table.ts';
import { nextChangeMs, plannedAt, slotProblem } from '../../schedule/plan.ts';
import { loadConfig } from '../../lib/config.ts';
import { RecorderError } from '../../lib/errors.ts';
import { parseSegmentRelPath, segmentRelPath } from '../../storage/layout.ts';
import type { SchedulePlan } from '../../index/records.ts';

const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return (err as RecorderError).code;
  }
  return undefined;
};

test('times: ISO with zone and epoch ms parse; malformed and out-of-range are BAD_TIME', (t) => {
  t.is(parseTimeMs('2026-11-25T10:00:00Z'), Date.UTC(2026, 10, 25, 10));
  t.is(parseTimeMs('2026-11-25T11:00:00+01:00'), Date.UTC(2026, 10, 25, 10));
  t.is(parseTimeMs(1764064800000), 1764064800000);
  t.is(parseTimeMs('1764064800000'), 1764064800000);
  for (const bad of ['yesterday', '2026-11-25T10:00:00', '2026-13-45T10:00:00Z', '', 12, -5, 'NaN', null, undefined, {}, '9999999999999999']) {
    t.is(
      code(() => parseTimeMs(bad)),
      'BAD_TIME',
      JSON.stringify(bad),
    );
  }
  t.is(
    code(() => parseRangeMs('2026-11-25T10:00:00Z', '2026-11-25T09:00:00Z')),
    'BAD_TIME',
    'inverted',
  );
  t.is(
    code(() => parseRangeMs('2026-11-25T10:00:00Z', '2026-11-25T10:00:00Z')),
    'BAD_TIME',
    'empty',
  );
});

test('byte ranges: single ranges, suffixes, clamping; multi-range is BAD_RANGE; outside is 416', (t) => {
  t.is(parseByteRange(undefined, 100), null);
  t.deepEqual(parseByteRange('bytes=0-9', 100), { start: 0, end: 9 });
  t.deepEqual(parseByteRange('bytes=90-', 100), { start: 90, end: 99 });
  t.deepEqual(parseByteRange('bytes=-10', 100), { start: 90, end: 99 });
  t.deepEqual(parseByteRange('bytes=50-1000', 100), { start: 50, end: 99 });
  t.is(
    code(() => parseByteRange('bytes=0-1,5-6', 100)),
    'BAD_RANGE',
  );
  t.is(
    code(() => parseByteRange('items=0-1', 100)),
    'BAD_RANGE',
  );
  t.is(
    code(() => parseByteRange('bytes=-', 100)),
    'BAD_RANGE',
  );
  t.is(
    code(() => parseByteRange('bytes=100-', 100)),
    'RANGE_NOT_SATISFIABLE',
  );
  t.is(
    code(() => parseByteRange('bytes=9-3', 100)),
    'RANGE_NOT_SATISFIABLE',
  );
  t.is(
    code(() => parseByteRange('bytes=-0', 100)),
    'RANGE_NOT_SATISFIABLE',
  );
});

test('GOP table round-trips at 12 bytes per GOP', (t) => {
  const gops = [
    { offset: 1200, size: 500_000, timeMs: 0 },
    { offset: 501_200, size: 480_123, timeMs: 2000 },
    { offset: 981_323, size: 7, timeMs: 4001 },
  ];
  const enc = encodeGops(gops);
  t.is(enc.byteLength, 36);
  t.deepEqual(decodeGops(enc), gops);
});

test('segment paths round-trip and reject anything else', (t) => {
  const ms = Date.UTC(2026, 10, 25, 23, 59, 59, 999);
  const rel = segmentRelPath('default', 'cam-1', ms, 'mp4');
  t.is(rel, `pools/default/cam-1/2026-11-25/${ms}.mp4`);
  t.deepEqual(parseSegmentRelPath(rel), { pool: 'default', camera: 'cam-1', startMs: ms, format: 'mp4' });
  t.is(parseSegmentRelPath(`pools/default/cam-1/2026-11-24/${ms}.mp4`), null, 'day folder must match');
  t.is(parseSegmentRelPath(`pools/default/../2026-11-25/${ms}.mp4`), null);
  t.is(parseSegmentRelPath(`pools/default/cam-1/2026-11-25/${ms}.mp4.tmp`), null);
});

const plan = (slots: SchedulePlan['slots'], timeZone = 'UTC'): SchedulePlan => ({ camera: 'c', slots, timeZone, preSeconds: 0, postSeconds: 0 });

test('plans: no plan records always; slots by weekday; overnight slots wrap midnight', (t) => {
  const wed10 = Date.UTC(2026, 10, 25, 10, 0); // Wednesday
  t.is(plannedAt(undefined, wed10), 'timing');
  t.is(plannedAt(plan([]), wed10), null);
  t.is(plannedAt(plan([{ days: [3], start: '09:00', end: '17:00', type: 'timing' }]), wed10), 'timing');
  t.is(plannedAt(plan([{ days: [2], start: '09:00', end: '17:00', type: 'timing' }]), wed10), null);
  t.is(plannedAt(plan([{ days: [3], start: '10:01', end: '17:00', type: 'timing' }]), wed10), null);
  const night = plan([{ days: [2], start: '22:00', end: '06:00', type: 'timing' }]);
  t.is(plannedAt(night, Date.UTC(2026, 10, 24, 23, 0)), 'timing', 'Tuesday 23:00');
  t.is(plannedAt(night, Date.UTC(2026, 10, 25, 5, 59)), 'timing', 'Wednesday 05:59 belongs to Tuesday night');
  t.is(plannedAt(night, Date.UTC(2026, 10, 25, 6, 0)), null);
  t.is(plannedAt(plan([{ days: [0, 1, 2, 3, 4, 5, 6], start: '00:00', end: '00:00', type: 'timing' }]), wed10), 'timing', 'all day');
});

test('plans follow the camera time zone across DST', (t) => {
  // 08:00-09:00 Berlin: 07:00Z in winter (CET), 06:00Z in summer (CEST).
  const p = plan([{ days: [0, 1, 2, 3, 4, 5, 6], start: '08:00', end: '09:00', type: 'timing' }], 'Europe/Berlin');
  t.is(plannedAt(p, Date.UTC(2026, 0, 15, 7, 30)), 'timing');
  t.is(plannedAt(p, Date.UTC(2026, 6, 15, 6, 30)), 'timing');
  t.is(plannedAt(p, Date.UTC(2026, 6, 15, 7, 30)), null);
});

test('settings: flags beat env beat defaults; bad values and open binding without auth are refused', (t) => {
  const { config } = loadConfig(['--segment-seconds', '10'], { RECORDER_SEGMENT_SECONDS: '20', RECORDER_DATA_DIR: '/tmp/x' });
  t.is(config.segmentSeconds, 10);
  t.is(config.dataDir, '/tmp/x');
  t.is(config.http, '127.0.0.1:8080');
  t.is(config.subjectPrefix, 'rec');
  t.is(
    code(() => loadConfig([], { RECORDER_SEGMENT_SECONDS: 'abc' })),
    'CONFIG_INVALID',
  );
  t.is(
    code(() => loadConfig(['--bogus'], {})),
    'CONFIG_INVALID',
  );
  t.is(
    code(() => loadConfig([], { RECORDER_HTTP: '0.0.0.0:8080' })),
    'CONFIG_INVALID',
  );
  t.is(loadConfig([], { RECORDER_HTTP: '0.0.0.0:8080', RECORDER_AUTH_TOKEN: 'a-long-enough-token-123' }).config.http, '0.0.0.0:8080');
});

test('next change: across midnight, over the week, and across DST in the plan time zone', (t) => {
  const wed = Date.UTC(2026, 10, 25, 10, 0); // Wednesday 10:00 UTC
  t.is(nextChangeMs(undefined, wed), null, 'no plan: always timing');
  const office = plan([{ days: [1, 2, 3, 4, 5], start: '09:00', end: '17:00', type: 'timing' }]);
  t.is(nextChangeMs(office, wed), Date.UTC(2026, 10, 25, 17, 0));
  t.is(nextChangeMs(office, Date.UTC(2026, 10, 25, 17, 0)), Date.UTC(2026, 10, 26, 9, 0));
  t.is(nextChangeMs(office, Date.UTC(2026, 10, 27, 18, 0)), Date.UTC(2026, 10, 30, 9, 0), 'Friday evening → Monday');
  const night = plan([{ days: [2], start: '22:00', end: '06:00', type: 'timing' }]);
  t.is(nextChangeMs(night, Date.UTC(2026, 10, 24, 23, 0)), Date.UTC(2026, 10, 25, 6, 0), 'overnight ends next morning');
  t.is(nextChangeMs(night, Date.UTC(2026, 10, 25, 7, 0)), Date.UTC(2026, 11, 1, 22, 0), 'a week later');
  const mixed = plan([
    { days: [3], start: '08:00', end: '18:00', type: 'timing' },
    { days: [3], start: '12:00', end: '12:10', type: 'event' },
  ]);
  t.is(nextChangeMs(mixed, Date.UTC(2026, 10, 25, 11, 55)), Date.UTC(2026, 10, 25, 12, 0), 'timing → event');
  t.is(nextChangeMs(mixed, Date.UTC(2026, 10, 25, 12, 0)), Date.UTC(2026, 10, 25, 12, 10), 'a 10-minute slot is not skipped');
  t.is(nextChangeMs(plan([{ days: [0, 1, 2, 3, 4, 5, 6], start: '00:00', end: '00:00', type: 'timing' }]), wed), null, 'always on');
  // Berlin 01:30-03:30 local on the night CEST ends (Sun 2026-10-25, 03:00 CEST → 02:00 CET).
  const berlin = plan([{ days: [0], start: '01:30', end: '03:30', type: 'timing' }], 'Europe/Berlin');
  t.is(nextChangeMs(berlin, Date.UTC(2026, 9, 24, 22, 0)), Date.UTC(2026, 9, 24, 23, 30), '01:30 CEST');
  t.is(nextChangeMs(berlin, Date.UTC(2026, 9, 24, 23, 30)), Date.UTC(2026, 9, 25, 2, 30), '03:30 CET, three real hours later');
  // And the spring night (Sun 2026-03-29, 02:00 CET → 03:00 CEST): 02:30 does not exist.
  const spring = plan([{ days: [0], start: '02:30', end: '04:00', type: 'timing' }], 'Europe/Berlin');
  const s = nextChangeMs(spring, Date.UTC(2026, 2, 28, 23, 0))!;
  t.true(s === Date.UTC(2026, 2, 29, 1, 0) || s === Date.UTC(2026, 2, 29, 1, 30), `starts at ${new Date(s).toISOString()}`);
});

test('slot problems: empty slots and same-type overlaps are refused, event over timing is fine', (t) => {
  const s = (days: number[], start: string, end: string, type: 'timing' | 'event' = 'timing') => ({ days, start, end, type });
  t.is(slotProblem([s([1], '08:00', '12:00'), s([1], '12:00', '18:00')]), null, 'touching');
  t.is(slotProblem([s([1], '08:00', '18:00'), s([1], '12:00', '13:00', 'event')]), null, 'event over timing');
  t.is(slotProblem([s([0, 1, 2, 3, 4, 5, 6], '00:00', '00:00')]), null, 'all week');
  t.regex(slotProblem([s([1], '08:00', '12:00'), s([1], '11:00', '13:00')])!, /slots 0 and 1 .* overlap on Monday at 11:00/);
  t.regex(slotProblem([s([1], '22:00', '06:00'), s([2], '05:00', '07:00')])!, /overlap on Tuesday at 05:00/, 'overnight spill');
  t.regex(slotProblem([s([6], '23:00', '01:00'), s([0], '00:30', '02:00')])!, /overlap on Sunday at 00:30/, 'Saturday night wraps to Sunday');
  t.regex(slotProblem([s([1], '08:00', '08:00')])!, /empty/);
});
