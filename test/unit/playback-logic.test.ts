/**
 * Pure parts of playback: the query and session-command parsers (every bad value a
 * typed error) and the output timeline across continuous and broken segments.
 */
import test from 'ava';
import { parsePlaybackQuery, parseSpeed } from '../../playback/playback-source.ts';
import { parseCommand } from '../../api/playback-session.ts';
import { RecorderError } from '../../lib/errors.ts';
import { OutputTimeline } from '../../playback/timeline.ts';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof RecorderError ? err.code : `untyped: ${String(err)}`;
  }
  return undefined;
}

test('speed: numbers and fractions from 1/8 to 16', (t) => {
  t.is(parseSpeed(undefined), 1);
  t.is(parseSpeed('1/8'), 0.125);
  t.is(parseSpeed('0.5'), 0.5);
  t.is(parseSpeed('16'), 16);
  t.is(parseSpeed(4), 4);
  for (const bad of ['0', '32', '1/16', 'fast', '1/0', '-2', '', ' ', '1e3', true])
    t.is(
      code(() => parseSpeed(bad)),
      'VALIDATION_FAILED',
      String(bad),
    );
});

test('playback query: directions, defaults and typed errors', (t) => {
  const from = Date.UTC(2026, 0, 1);
  const fwd = parsePlaybackQuery({ from: String(from) });
  t.is(fwd.toMs, Number.MAX_SAFE_INTEGER);
  t.deepEqual(fwd.mode, { kind: 'normal' });
  const rev = parsePlaybackQuery({ from: String(from), reverse: '1' });
  t.is(rev.toMs, 0);
  t.is(rev.mode.kind, 'iframes');
  t.is(parsePlaybackQuery({ from: String(from), speed: '8' }).mode.kind, 'iframes');
  t.is(parsePlaybackQuery({ from: String(from), speed: '2' }).mode.kind, 'frames');
  t.is(
    code(() => parsePlaybackQuery({ from: String(from), to: String(from - 1) })),
    'BAD_TIME',
    'forward to before from',
  );
  t.is(
    code(() => parsePlaybackQuery({ from: String(from), to: String(from + 1), reverse: 'true' })),
    'BAD_TIME',
    'reverse to after from',
  );
  t.is(
    code(() => parsePlaybackQuery({ from: 'soon' })),
    'BAD_TIME',
  );
  t.is(
    code(() => parsePlaybackQuery({})),
    'BAD_TIME',
  );
  t.is(
    code(() => parsePlaybackQuery({ from: String(from), iframes: 'yes' })),
    'VALIDATION_FAILED',
  );
});

test('session commands: JSON objects with known fields only', (t) => {
  t.deepEqual(parseCommand('{"cmd":"pause"}'), { cmd: 'pause' });
  t.deepEqual(parseCommand('{"cmd":"play","from":1,"speed":2,"reverse":false}'), { cmd: 'play', from: 1, speed: 2, reverse: false });
  t.is(
    code(() => parseCommand('pause')),
    'BAD_JSON',
  );
  t.is(
    code(() => parseCommand('[1]')),
    'VALIDATION_FAILED',
  );
  t.is(
    code(() => parseCommand('null')),
    'VALIDATION_FAILED',
  );
  t.is(
    code(() => parseCommand('{"cmd":"rewind"}')),
    'VALIDATION_FAILED',
  );
  t.is(
    code(() => parseCommand('{"cmd":"pause","at":1}')),
    'VALIDATION_FAILED',
    'unknown field',
  );
  t.is(
    code(() => parseCommand('{"cmd":"seek"}')),
    'VALIDATION_FAILED',
    'seek without at',
  );
});

test('timeline: a continuous session keeps its shift; after a gap the next segment starts on the frame grid', (t) => {
  // Video 90 kHz (3600 per frame at 25 fps), audio 48 kHz (1024 per frame).
  const tl = new OutputTimeline(
    new Map([
      [1, 90000],
      [2, 48000],
    ]),
    1,
  );
  const frames = (n: number, d: number): Uint32Array => new Uint32Array(n).fill(d);
  // Segment 1 of a session whose decode times start at 10 s.
  const s1 = tl.enterSegment([
    { trackId: 1, baseDecodeTime: 900_000n },
    { trackId: 2, baseDecodeTime: 480_000n },
  ]);
  t.is(s1.get(1), -900_000n, 'the earliest track starts at 0');
  t.is(s1.get(2), -480_000n);
  tl.afterFragment([
    { trackId: 1, baseDecodeTime: 900_000n, durations: frames(50, 3600), durationTicks: 180_000 },
    { trackId: 2, baseDecodeTime: 480_000n, durations: frames(95, 1024), durationTicks: 97_280 },
  ]);
  // Segment 2 continues the video exactly: same shift.
  const s2 = tl.enterSegment([
    { trackId: 1, baseDecodeTime: 1_080_000n },
    { trackId: 2, baseDecodeTime: 577_280n },
  ]);
  t.is(s2.get(1), -900_000n);
  tl.afterFragment([
    { trackId: 1, baseDecodeTime: 1_080_000n, durations: frames(50, 3600), durationTicks: 180_000 },
    { trackId: 2, baseDecodeTime: 577_280n, durations: frames(93, 1024), durationTicks: 95_232 },
  ]);
  // Output so far: video 4 s, audio 188 frames = 4.0107 s. A new session after a gap
  // starts at the next video frame after the longer track: 4.04 s.
  const s3 = tl.enterSegment([
    { trackId: 1, baseDecodeTime: 0n },
    { trackId: 2, baseDecodeTime: 0n },
  ]);
  t.is(s3.get(1), 363_600n, '4.04 s in 90 kHz');
  t.is(s3.get(2), 193_920n, 'the same time in 48 kHz');
  t.is(tl.endSec, 4.04);
});
