/**
 * The pure parts of back-fill: RTSP message cutting and the replay proxy's rewriting
 * (on an exchange captured between ffmpeg 5.1, our proxy and GStreamer's ONVIF replay
 * server: test/fixtures/rtsp/), Digest auth, camera-clock judgement, URL templates,
 * fitting fragments into holes and the gap ledger's arithmetic.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  RtspProtocolError,
  RtspStreamParser,
  formatClockTime,
  header,
  onvifPacketTimeMs,
  parseClockRange,
  requestLine,
  serialize,
  type RtspItem,
  type RtspMessage,
} from '../../rtsp/rtsp-message.ts';
import { rewriteRequest, rewriteResponse, type RewriteContext } from '../../rtsp/rtsp-replay-proxy.ts';
import { authorization, parseChallenge, pickChallenge } from '../../rtsp/rtsp-auth.ts';
import { renderReplayUrl, templateProblem } from '../../rtsp/edge-url.ts';
import { judgeCameraClock, redactUrls } from '../../ingest/edge-replay.ts';
import { fitIntoHole } from '../../backfill/attempt.ts';
import { intersect, pieces, settleAttempt, splitAt, subtract, timingIntervals } from '../../index/gap-ledger.ts';
import type { GapRecord, SchedulePlan } from '../../index/records.ts';

const fixtures = join(import.meta.dirname, '../fixtures/rtsp');
const ffmpegRequests = readFileSync(join(fixtures, 'ffmpeg-replay-requests.bin'));
const cameraBytes = readFileSync(join(fixtures, 'gstreamer-replay-responses.bin'));

const messages = (items: RtspItem[]): RtspMessage[] => items.flatMap((i) => (i.kind === 'message' ? [i.message] : []));

test('the parser cuts ffmpeg requests alike in one piece and byte by byte', (t) => {
  const whole = messages(new RtspStreamParser().push(ffmpegRequests));
  t.deepEqual(
    whole.map((m) => requestLine(m).method),
    ['OPTIONS', 'DESCRIBE', 'SETUP', 'PLAY', 'TEARDOWN'],
  );
  const p = new RtspStreamParser();
  const bytewise: RtspItem[] = [];
  for (const b of ffmpegRequests) bytewise.push(...p.push(Buffer.from([b])));
  t.deepEqual(
    messages(bytewise).map((m) => m.startLine),
    whole.map((m) => m.startLine),
  );
  t.is(p.pending, 0);
  t.is(header(whole[3]!, 'range'), 'npt=0.000-');
});

test('the parser cuts GStreamer replies with an SDP body, then interleaved RTP frames', (t) => {
  const p = new RtspStreamParser();
  const items = p.push(cameraBytes);
  const replies = messages(items);
  t.is(replies.length, 4);
  t.is(header(replies[1]!, 'Content-Type'), 'application/sdp');
  t.true(replies[1]!.body.toString().includes('a=control:stream=0'));
  t.regex(header(replies[3]!, 'Range') ?? '', /^clock=/);
  const frames = items.filter((i) => i.kind === 'frame');
  t.true(frames.length > 3);
  for (const f of frames) if (f.kind === 'frame') t.is(f.payload[0]! >> 6, 2, 'RTP version 2');
  // The fixture ends inside a frame: it waits for the rest.
  t.true(p.pending > 0);
});

test('the parser refuses what is not RTSP and bodies beyond its bound', (t) => {
  t.throws(() => new RtspStreamParser().push(Buffer.from('HTTP/1.1 200 OK\r\n\r\n')), { instanceOf: RtspProtocolError });
  t.throws(() => new RtspStreamParser().push(Buffer.from('RTSP/1.0 200 OK\r\nContent-Length: 99999999\r\n\r\n')), { instanceOf: RtspProtocolError });
  t.throws(() => new RtspStreamParser().push(Buffer.from('RTSP/1.0 200 OK\r\nno colon here\r\n\r\n')), { instanceOf: RtspProtocolError });
  t.throws(() => new RtspStreamParser().push(Buffer.alloc(70 * 1024, 0x41)), { instanceOf: RtspProtocolError });
});

const ctx: RewriteContext = {
  proxyBase: 'rtsp://127.0.0.1:33335',
  cameraBase: 'rtsp://10.0.0.7:554',
  replay: { startMs: Date.UTC(2026, 10, 25, 13, 37, 3, 293), endMs: Date.UTC(2026, 10, 25, 13, 37, 9, 293), rateControl: false },
};

test('requests get the camera URL, Require: onvif-replay and on PLAY the clock range and Rate-Control: no', (t) => {
  const reqs = messages(new RtspStreamParser().push(ffmpegRequests)).map((m) => rewriteRequest(m, ctx));
  t.deepEqual(
    reqs.map((m) => requestLine(m).url),
    ['rtsp://10.0.0.7:554/edge', 'rtsp://10.0.0.7:554/edge', 'rtsp://10.0.0.7:554/edge/stream=0', 'rtsp://10.0.0.7:554/edge/', 'rtsp://10.0.0.7:554/edge/'],
  );
  t.deepEqual(
    reqs.map((m) => header(m, 'Require')),
    [undefined, 'onvif-replay', 'onvif-replay', 'onvif-replay', undefined],
  );
  const play = reqs[3]!;
  t.is(header(play, 'Range'), 'clock=20261125T133703.293Z-20261125T133709.293Z');
  t.is(header(play, 'Rate-Control'), 'no');
  t.is(header(play, 'Session'), 'Q5P1j8P-DE2_Lhw+');
  t.is(play.headers.filter(([n]) => n.toLowerCase() === 'range').length, 1);
  // Real-time pulls and URL-template cameras: no Rate-Control, no ONVIF headers.
  t.is(
    header(
      rewriteRequest(messages(new RtspStreamParser().push(ffmpegRequests))[3]!, { ...ctx, replay: { ...ctx.replay!, rateControl: true } }),
      'Rate-Control',
    ),
    undefined,
  );
  const plain = rewriteRequest(messages(new RtspStreamParser().push(ffmpegRequests))[3]!, { ...ctx, replay: null });
  t.is(header(plain, 'Range'), 'npt=0.000-');
  t.is(header(plain, 'Require'), undefined);
});

test('responses get our URL back in headers and SDP, with a matching Content-Length', (t) => {
  const describe: RtspMessage = {
    startLine: 'RTSP/1.0 200 OK',
    headers: [
      ['CSeq', '2'],
      ['Content-Type', 'application/sdp'],
      ['Content-Base', 'rtsp://10.0.0.7:554/edge/'],
    ],
    body: Buffer.from('v=0\r\na=control:rtsp://10.0.0.7:554/edge/stream=0\r\n'),
  };
  const out = rewriteResponse(describe, ctx);
  t.is(header(out, 'Content-Base'), 'rtsp://127.0.0.1:33335/edge/');
  t.true(out.body.toString().includes('a=control:rtsp://127.0.0.1:33335/edge/stream=0'));
  const again = messages(new RtspStreamParser().push(serialize(out)))[0]!;
  t.is(Number(header(again, 'Content-Length')), out.body.length);
  t.deepEqual(again.body, out.body);
});

test('clock ranges: GStreamer nanosecond fractions, open ends, and our own format round-trip', (t) => {
  t.deepEqual(parseClockRange('clock=20261125T133703.24014616Z-20261125T133709.293000221Z'), {
    startMs: Date.UTC(2026, 10, 25, 13, 37, 3, 240),
    endMs: Date.UTC(2026, 10, 25, 13, 37, 9, 293),
  });
  t.deepEqual(parseClockRange('clock=20261125T133703Z-'), { startMs: Date.UTC(2026, 10, 25, 13, 37, 3), endMs: null });
  t.is(parseClockRange('npt=0-'), null);
  const ms = Date.UTC(2026, 0, 2, 3, 4, 5, 6);
  t.is(parseClockRange(`clock=${formatClockTime(ms)}-`)!.startMs, ms);
});

test('the ONVIF replay RTP extension gives the packet time; plain RTP gives none', (t) => {
  const ms = Date.UTC(2026, 10, 25, 13, 0, 0, 500);
  const rtp = Buffer.alloc(12 + 4 + 12 + 4);
  rtp[0] = 0x90; // v2, X
  rtp.writeUInt16BE(0xabac, 12);
  rtp.writeUInt16BE(3, 14);
  rtp.writeUInt32BE(Math.floor(ms / 1000) + 2_208_988_800, 16);
  rtp.writeUInt32BE(Math.round(0.5 * 2 ** 32), 20);
  t.is(onvifPacketTimeMs(rtp), ms);
  rtp[0] = 0x80;
  t.is(onvifPacketTimeMs(rtp), null);
  t.is(onvifPacketTimeMs(Buffer.alloc(5)), null);
});

test('Digest auth answers the RFC 2617 example; Basic when that is all there is', (t) => {
  const ch = parseChallenge(
    'Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
  )!;
  const value = authorization(ch, { user: 'Mufasa', password: 'Circle Of Life' }, 'GET', '/dir/index.html', 1, '0a4f113b');
  t.true(value.includes('response="6629fae49393a05397450978507c4ef1"'), value);
  t.is(pickChallenge(['Basic realm="x"', 'Digest realm="y", nonce="n"'])!.scheme, 'digest');
  t.is(authorization(pickChallenge(['Basic realm="cam"'])!, { user: 'a', password: 'b' }, 'DESCRIBE', 'rtsp://x/'), 'Basic YTpi');
  t.is(pickChallenge(['Bearer x']), null);
});

test('the camera clock decides where the first fragment goes and refuses another interval', (t) => {
  const asked = { fromMs: 1_000_000, toMs: 1_060_000 };
  t.deepEqual(judgeCameraClock({ firstPacketMs: null, playRange: null }, asked), { startMs: 1_000_000, source: 'requested', problem: null, range: null });
  const keyframeBefore = judgeCameraClock({ firstPacketMs: null, playRange: { startMs: 998_400, endMs: 1_060_000 } }, asked);
  t.is(keyframeBefore.startMs, 998_400);
  t.is(keyframeBefore.problem, null);
  t.is(judgeCameraClock({ firstPacketMs: 999_000, playRange: { startMs: 998_400, endMs: null } }, asked).source, 'onvif-rtp');
  t.truthy(judgeCameraClock({ firstPacketMs: null, playRange: { startMs: 1_000_000 + 3600_000, endMs: null } }, asked).problem, 'an hour late');
  t.truthy(judgeCameraClock({ firstPacketMs: null, playRange: { startMs: 1_000_000 - 3600_000, endMs: null } }, asked).problem, 'an hour early');
  t.truthy(judgeCameraClock({ firstPacketMs: null, playRange: { startMs: 1_000_000, endMs: 1_060_000 + 60_000 } }, asked).problem, 'runs past the end');
  t.is(
    judgeCameraClock({ firstPacketMs: null, playRange: { startMs: 1_030_000, endMs: 1_060_000 } }, asked).problem,
    null,
    'the card starts later: partial, not wrong',
  );
});

test('replay URL templates: the Hikvision form, patterns, and what is refused', (t) => {
  const from = Date.UTC(2026, 10, 25, 13, 0, 0);
  const to = Date.UTC(2026, 10, 25, 13, 0, 20);
  t.is(
    renderReplayUrl('rtsp://cam/Streaming/tracks/101?starttime={start}&endtime={end}', from, to),
    'rtsp://cam/Streaming/tracks/101?starttime=20261125T130000Z&endtime=20261125T130020Z',
  );
  t.is(
    renderReplayUrl('rtsp://cam/pb?s={start:YYYY_MM_DD_hh_mm_ss}&e={end:YYYY_MM_DD_hh_mm_ss}', from, to),
    'rtsp://cam/pb?s=2026_11_25_13_00_00&e=2026_11_25_13_00_20',
  );
  t.is(templateProblem('rtsp://cam/edge', 'onvif'), null);
  t.truthy(templateProblem('rtsp://cam/edge', 'url'), 'url mode needs the interval');
  t.truthy(templateProblem('rtsp://cam/x?t={now}', 'onvif'));
  t.truthy(templateProblem('http://cam/x?s={start}&e={end}', 'url'));
});

test('credentials in camera URLs are redacted from error text', (t) => {
  t.is(redactUrls('rtsp://admin:s3cret@10.0.0.7/edge: 401 Unauthorized'), 'rtsp://***@10.0.0.7/edge: 401 Unauthorized');
  t.is(redactUrls('rtsp://10.0.0.7/edge'), 'rtsp://10.0.0.7/edge');
});

test('a fragment goes into its hole within the tolerance, trimmed; otherwise it is left out', (t) => {
  const hole = { fromMs: 10_000, toMs: 30_000 };
  t.deepEqual(fitIntoHole(hole, 12_000, 14_000), { startMs: 12_000, endMs: 14_000 });
  t.deepEqual(fitIntoHole(hole, 9_700, 11_700), { startMs: 10_000, endMs: 11_700 }, 'starts a little early: trimmed');
  t.deepEqual(fitIntoHole(hole, 28_500, 30_400), { startMs: 28_500, endMs: 30_000 }, 'ends a little late: trimmed');
  t.is(fitIntoHole(hole, 8_000, 10_000), null, 'overlaps stored video by a GOP');
  t.is(fitIntoHole(hole, 29_000, 31_500), null);
  t.is(fitIntoHole(hole, 30_000, 30_800), null, 'nothing left inside');
});

test('interval arithmetic of the ledger', (t) => {
  const w = { fromMs: 0, toMs: 100 };
  t.deepEqual(
    subtract(w, [
      { fromMs: 20, toMs: 30 },
      { fromMs: 25, toMs: 40 },
      { fromMs: 90, toMs: 200 },
    ]),
    [
      { fromMs: 0, toMs: 20 },
      { fromMs: 40, toMs: 90 },
    ],
  );
  t.deepEqual(subtract(w, [{ fromMs: 2, toMs: 98 }], 5), []);
  t.deepEqual(
    intersect(w, [
      { fromMs: -5, toMs: 10 },
      { fromMs: 10, toMs: 20 },
      { fromMs: 50, toMs: 60 },
    ]),
    [
      { fromMs: 0, toMs: 20 },
      { fromMs: 50, toMs: 60 },
    ],
  );
  t.deepEqual(pieces([{ fromMs: 0, toMs: 25 }], 10), [
    { fromMs: 0, toMs: 10 },
    { fromMs: 10, toMs: 20 },
    { fromMs: 20, toMs: 25 },
  ]);
});

test('timing intervals follow the plan; no plan records always; event slots are left out', (t) => {
  const day = Date.UTC(2026, 10, 25); // a Wednesday
  t.deepEqual(timingIntervals(undefined, day, day + 1000), [{ fromMs: day, toMs: day + 1000 }]);
  const plan: SchedulePlan = {
    camera: 'c',
    timeZone: 'UTC',
    preSeconds: 0,
    postSeconds: 0,
    slots: [
      { days: [0, 1, 2, 3, 4, 5, 6], start: '08:00', end: '10:00', type: 'timing' },
      { days: [3], start: '12:00', end: '13:00', type: 'event' },
    ],
  };
  t.deepEqual(timingIntervals(plan, day, day + 24 * 3600_000), [{ fromMs: day + 8 * 3600_000, toMs: day + 10 * 3600_000 }]);
  t.deepEqual(timingIntervals(plan, day + 9 * 3600_000, day + 11 * 3600_000), [{ fromMs: day + 9 * 3600_000, toMs: day + 10 * 3600_000 }]);
});

const gap = (startMs: number, endMs: number, attempts = 0): GapRecord & { endMs: number } => ({
  camera: 'c',
  startMs,
  endMs,
  state: 'fetching',
  reason: 'camera offline',
  attempts,
});
const outcome = { maxAttempts: 3, nowMs: 5_000_000, retryInMs: 60_000, minMs: 1000 };

test('an attempt that covers the gap leaves one filled record', (t) => {
  const r = settleAttempt(gap(0, 20_000), {
    ...outcome,
    covered: [
      { fromMs: -500, toMs: 8_000 },
      { fromMs: 8_000, toMs: 19_600 },
    ],
    error: null,
  });
  t.deepEqual(
    r.map((g) => [g.startMs, g.endMs, g.state, g.attempts]),
    [[0, 19_600, 'filled', 1]],
    'a sliver under a second is not a gap',
  );
});

test('an attempt that covers part of the gap splits it: filled, and partial to be retried', (t) => {
  const r = settleAttempt(gap(0, 20_000), { ...outcome, covered: [{ fromMs: 0, toMs: 12_000 }], error: null });
  t.deepEqual(
    r.map((g) => [g.startMs, g.endMs, g.state]),
    [
      [0, 12_000, 'filled'],
      [12_000, 20_000, 'partial'],
    ],
  );
  t.is(r[1]!.nextAttemptMs, 5_060_000);
  t.is(r[1]!.lastError?.code, 'EDGE_NO_VIDEO');
});

test('a failed attempt keeps the gap pending with its error, then gives up as unavailable', (t) => {
  const error = { code: 'EDGE_REFUSED', message: '551 Option not supported' };
  const first = settleAttempt(gap(0, 20_000), { ...outcome, covered: [], error });
  t.deepEqual(
    first.map((g) => [g.startMs, g.endMs, g.state, g.attempts, g.lastError?.code]),
    [[0, 20_000, 'pending', 1, 'EDGE_REFUSED']],
  );
  const last = settleAttempt(gap(0, 20_000, 2), { ...outcome, covered: [], error });
  t.deepEqual(
    last.map((g) => [g.state, g.attempts, g.nextAttemptMs]),
    [['unavailable', 3, undefined]],
  );
  const cut = settleAttempt(gap(0, 20_000, 2), { ...outcome, covered: [], error, counts: false });
  t.deepEqual(
    cut.map((g) => [g.state, g.attempts]),
    [['pending', 2]],
    'a shutdown does not use up an attempt',
  );
});

test('records split at the edges of a manual range; open records stay whole', (t) => {
  const closed = gap(0, 30_000);
  const open: GapRecord = { ...gap(40_000, 0), endMs: null };
  const r = splitAt([closed, open], [10_000, 20_000, 50_000]);
  t.deepEqual(
    r.map((g) => [g.startMs, g.endMs]),
    [
      [0, 10_000],
      [10_000, 20_000],
      [20_000, 30_000],
      [40_000, null],
    ],
  );
});
