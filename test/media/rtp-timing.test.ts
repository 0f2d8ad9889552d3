/**
 * RtpFmp4's timing when a camera's clocks misbehave, on hand-made RTP: a video RTP
 * timestamp that steps back or jumps forward in the middle of a GOP (an NTP step, an
 * encoder restart) or restarts with a new SSRC, frames whose every slice carries the
 * marker bit, sender reports that put the audio an hour away, a GOP so long that its
 * audio would pile up, audio without sender reports past 2^31 ticks of its clock, an
 * audio clock that steps back, a repeated audio packet and a new audio SSRC; a step in
 * the middle of a GOP with B-frames, a small step back without B-frames, audio placed
 * against the newest video packet (not the last whole frame), at 1/3 fps too, and a
 * keyframe that repeats the timestamp of the frame before.
 */
import test from 'ava';
import { RtpFmp4 } from '../../media/rtp/rtp-fmp4.ts';
import { audioConfig, videoConfig } from '../../media/rtp/rtp-config.ts';
import type { Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { isSyncSample } from '../../media/mp4/moof.ts';

const SPS = Buffer.from('Z0IAHpWoKA9puAgICBA=', 'base64');
const PPS = Buffer.from('aM48gA==', 'base64');
const idr = Buffer.concat([Buffer.from([0x65]), Buffer.alloc(300, 0xab)]);
const slice = (b: number, n = 40): Buffer => Buffer.concat([Buffer.from([0x41]), Buffer.alloc(n, b & 0xff)]);
const FRAME = 3600; // 25 fps at 90 kHz

const h264 = () => videoConfig('H264', 90000, { 'sprop-parameter-sets': `${SPS.toString('base64')},${PPS.toString('base64')}` });
const aac = (clockRate: number) => audioConfig('MPEG4-GENERIC', clockRate, { mode: 'AAC-hbr', config: '1408' })!; // AAC-LC, 16 kHz, mono

/** An RFC 3640 payload of one AU (13-bit size, 3-bit index). */
function aacPacket(au: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0, 16, au.length >> 5, (au.length << 3) & 0xff]), au]);
}

interface Sample {
  dts: number;
  duration: number;
  cto: number;
  size: number;
}

/** One track's samples over every fragment, with their decode times (tfdt plus the durations before them in the run). */
function samplesOf(chunks: Fmp4Chunk[], trackId: number): Sample[] {
  const out: Sample[] = [];
  for (const c of chunks) {
    if (c.kind !== 'fragment') continue;
    const traf = c.moof.tracks.find((t) => t.trackId === trackId);
    if (!traf) continue;
    let dts = Number(traf.baseDecodeTime);
    traf.durations.forEach((duration, i) => {
      out.push({ dts, duration, cto: traf.compositionOffsets[i] ?? 0, size: traf.sizes[i]! });
      dts += duration;
    });
  }
  return out;
}

/** Frame `i` of a stream with a keyframe every 25 frames (one NAL unit, marked). */
const nalOf = (i: number): Buffer => (i % 25 === 0 ? idr : slice(i));

function feedVideo(m: RtpFmp4, timestamps: number[], ssrcOf: (i: number) => number = () => 1): Fmp4Chunk[] {
  const out: Fmp4Chunk[] = [];
  timestamps.forEach((ts, i) => out.push(...m.video(nalOf(i), ts >>> 0, true, false, ssrcOf(i))));
  return [...out, ...m.end()];
}

function assertSteady(t: import('ava').ExecutionContext, v: Sample[], frames: number): void {
  t.is(v.length, frames, 'every frame');
  t.true(
    v.every((s, i) => i === 0 || s.dts > v[i - 1]!.dts),
    'decode times strictly increase',
  );
  t.deepEqual(
    v.map((s, i) => [i, s.duration]).filter(([, d]) => d !== FRAME),
    [],
    'every frame lasts one frame interval (none of 1 tick, none of hours)',
  );
  t.true(
    v.every((s) => s.cto === 0),
    'no composition offset grown by the step',
  );
}

for (const [what, step] of [
  ['steps back an hour', -3600 * 90000],
  ['steps back 3 s', -3 * 90000],
  ['jumps forward an hour', 3600 * 90000],
  ['jumps forward 30 s', 30 * 90000],
] as const) {
  test(`a video RTP timestamp that ${what} in the middle of a GOP: the timeline goes on one frame later`, (t) => {
    const m = new RtpFmp4(h264(), null);
    const start = 1_000_000;
    const ts = Array.from({ length: 100 }, (_, i) => start + i * FRAME + (i >= 37 ? step : 0));
    const chunks = feedVideo(m, ts);
    assertSteady(t, samplesOf(chunks, 1), 100);
    t.is(chunks.filter((c) => c.kind === 'fragment').length, 4, 'one fragment per GOP');
    t.is(m.counters.videoRebases, 1);
  });
}

test('B-frames with the encoder restarted at a keyframe (a new random timestamp base, lower): decode times and offsets go on as before', (t) => {
  const m = new RtpFmp4(h264(), null);
  // Decode order I0 P3 B1 B2 P6 B4 B5 P8 B7, per 9-frame GOP; the third GOP restarts the clock.
  const order = [0, 3, 1, 2, 6, 4, 5, 8, 7];
  const ts: number[] = [];
  const nals: Buffer[] = [];
  for (let gop = 0; gop < 4; gop++) {
    const base = gop < 2 ? 50_000_000 + gop * 9 * FRAME : 7_000 + (gop - 2) * 9 * FRAME;
    for (const f of order) {
      ts.push(base + f * FRAME);
      nals.push(f === 0 ? idr : slice(nals.length));
    }
  }
  const chunks: Fmp4Chunk[] = [];
  ts.forEach((x, i) => chunks.push(...m.video(nals[i]!, x, true, false)));
  chunks.push(...m.end());
  const v = samplesOf(chunks, 1);
  t.is(v.length, 36);
  t.true(v.every((s, i) => i === 0 || s.dts === v[i - 1]!.dts + FRAME));
  t.deepEqual(
    v.map((s) => s.cto / FRAME),
    Array<number[]>(4).fill([1, 3, 0, 0, 3, 0, 0, 2, 0]).flat(),
  );
  t.is(m.counters.videoRebases, 1);
});

test('a new SSRC restarts the video timeline even when its timestamps look close to the old ones', (t) => {
  const m = new RtpFmp4(h264(), null);
  // The new source's timestamps happen to be 5 frames behind: within what B-frames may do, so only the SSRC tells.
  const ts = Array.from({ length: 60 }, (_, i) => 10_000 + i * FRAME - (i >= 30 ? 5 * FRAME : 0));
  const chunks = feedVideo(m, ts, (i) => (i >= 30 ? 0xbeef : 0xcafe));
  assertSteady(t, samplesOf(chunks, 1), 60);
  t.is(m.counters.videoRebases, 1);
});

test('the marker bit on every slice: the slices of one picture (one timestamp) are one sample', (t) => {
  const m = new RtpFmp4(h264(), null);
  const chunks: Fmp4Chunk[] = [];
  const halfIdr = Buffer.concat([Buffer.from([0x65]), Buffer.alloc(150, 0xcd)]);
  for (let i = 0; i < 50; i++) {
    const parts = i % 25 === 0 ? [halfIdr, halfIdr] : [slice(i), slice(i + 1), slice(i + 2)];
    for (const p of parts) chunks.push(...m.video(p, i * FRAME, true, false));
  }
  chunks.push(...m.end());
  const v = samplesOf(chunks, 1);
  t.is(v.length, 50, 'one sample per picture');
  t.true(v.every((s) => s.duration === FRAME));
  const keySize = 4 + SPS.length + 4 + PPS.length + 2 * (4 + halfIdr.length);
  t.deepEqual(
    [...new Set(v.map((s) => s.size))].sort((a, b) => a - b),
    [3 * (4 + 41), keySize],
  );
  t.is(chunks.filter((c) => c.kind === 'fragment').length, 2);
});

test('the normal marker (last packet of a frame): a GOP is written when the next keyframe is whole, and end() writes the last one whole', (t) => {
  const m = new RtpFmp4(h264(), null);
  const made: number[] = [];
  for (let i = 0; i < 50; i++) {
    const got = m.video(nalOf(i), i * FRAME, true, false);
    if (got.some((c) => c.kind === 'fragment')) made.push(i);
  }
  // The keyframe at 25 is known whole when the first packet of frame 26 comes (another timestamp).
  t.deepEqual(made, [26]);
  const last = samplesOf(m.end(), 1);
  t.is(last.length, 25);
});

/** Video at 25 fps (keyframe every 25) and AAC at 16 kHz interleaved as they would arrive, for `seconds`. */
function feedAv(m: RtpFmp4, seconds: number, audioRate: number, onVideoFrame: (i: number) => void = () => {}): Fmp4Chunk[] {
  const out: Fmp4Chunk[] = [];
  const frameTicks = (1024 * audioRate) / 16000;
  let a = 0;
  for (let i = 0; i < seconds * 25; i++) {
    onVideoFrame(i);
    out.push(...m.video(nalOf(i), 123_456 + i * FRAME, true, false));
    // The audio frames whose time has come by this video frame.
    for (; (a * 1024) / 16000 <= i / 25; a++) m.audio(aacPacket(Buffer.alloc(20, a & 0xff)), (999_999 + a * frameTicks) >>> 0, true, false);
  }
  return [...out, ...m.end()];
}

test('sender reports that put the audio an hour after the video: it is placed by its arrival instead, in each GOP, not held', (t) => {
  const m = new RtpFmp4(h264(), aac(16000));
  const chunks = feedAv(m, 4, 16000, (i) => {
    if (i !== 10) return;
    m.anchor('video', 123_456, 1_000_000);
    m.anchor('audio', 999_999, 1_000_000 + 3600_000); // an hour off
  });
  const fragments = chunks.filter((c) => c.kind === 'fragment');
  t.is(fragments.length, 4);
  for (const f of fragments) {
    if (f.kind !== 'fragment') continue;
    const v = f.moof.tracks.find((x) => x.trackId === 1)!;
    const a = f.moof.tracks.find((x) => x.trackId === 2);
    if (!a) return t.fail('each GOP has its audio');
    const vSec = Number(v.baseDecodeTime) / 90000;
    const aSec = Number(a.baseDecodeTime) / 16000;
    t.true(Math.abs(aSec - vSec) < 0.2, `audio at ${aSec} s, video at ${vSec} s`);
  }
  const audio = samplesOf(chunks, 2);
  t.true(audio.length >= 0.95 * ((4 * 16000) / 1024), `${audio.length} audio frames`);
});

test('audio held for a GOP that never ends is bounded: the oldest frames are dropped and counted', (t) => {
  const m = new RtpFmp4(h264(), aac(16000), { maxPendingAudio: 40 });
  const chunks: Fmp4Chunk[] = [];
  let a = 0;
  // One keyframe, then 8 s of frames without another: about 125 audio frames wait for the GOP.
  for (let i = 0; i < 200; i++) {
    chunks.push(...m.video(i === 0 ? idr : slice(i), i * FRAME, true, false));
    for (; (a * 1024) / 16000 <= i / 25; a++) m.audio(aacPacket(Buffer.alloc(20, 1)), a * 1024, true, false);
  }
  t.deepEqual(
    chunks.filter((c) => c.kind === 'fragment'),
    [],
    'nothing written before the GOP ends',
  );
  chunks.push(...m.end());
  const audio = samplesOf(chunks, 2);
  t.is(audio.length, 40, 'no more than maxPendingAudio held');
  // The first audio frame comes before the keyframe is known whole (at the next frame): dropped, as before the video.
  t.is(m.counters.droppedAudio, 1);
  t.is(m.counters.overflowAudio, a - 1 - 40);
  // The newest were kept: the last one ends with the video.
  const last = audio[audio.length - 1]!;
  t.true(Math.abs((last.dts + last.duration) / 16000 - 200 / 25) < 0.2, `audio ends at ${(last.dts + last.duration) / 16000} s`);
});

test('audio without sender reports past 2^31 ticks of its clock (12 h at 48 kHz): it is unwrapped frame to frame and stays with the video', (t) => {
  // A 1 MHz audio clock gets there in 36 minutes: 64,000 ticks a frame.
  const rate = 1_000_000;
  const m = new RtpFmp4(h264(), aac(rate));
  const chunks: Fmp4Chunk[] = [];
  const seconds = 2400;
  const frameTicks = (1024 * rate) / 16000;
  let a = 0;
  for (let i = 0; i < seconds; i++) {
    // One frame a second, each a keyframe: one fragment a second.
    chunks.push(...m.video(idr, (i * 90000) >>> 0, true, false));
    for (; (a * 1024) / 16000 <= i; a++) m.audio(aacPacket(Buffer.alloc(8, 1)), (a * frameTicks) >>> 0, true, false);
  }
  chunks.push(...m.end());
  t.true(a * frameTicks > 2 ** 31 + 100 * frameTicks, 'the stream ran past 2^31 ticks');
  const audio = samplesOf(chunks, 2);
  t.true(audio.length >= a - 20, `${audio.length} of ${a} audio frames written`);
  t.is(m.counters.droppedAudio, 1, 'only the first, which came before the video');
  t.is(m.counters.audioRebases + m.counters.audioReanchors, 0);
  const last = audio[audio.length - 1]!;
  t.true(Math.abs(last.dts / rate - (seconds - 1)) < 2, `the last audio at ${last.dts / rate} s`);
});

test('audio without sender reports whose clock steps back an hour, then a repeated packet: laid end to end through both, nothing re-anchored', (t) => {
  const m = new RtpFmp4(h264(), aac(16000));
  const chunks: Fmp4Chunk[] = [];
  let a = 0;
  let sent = 0;
  for (let i = 0; i < 150; i++) {
    chunks.push(...m.video(nalOf(i), 500 + i * FRAME, true, false));
    for (; (a * 1024) / 16000 <= i / 25; a++) {
      const ts = (7_000_000 + a * 1024 - (a >= 60 ? 3600 * 16000 : 0)) >>> 0; // 3.8 s in, back an hour
      m.audio(aacPacket(Buffer.alloc(20, a & 0xff)), ts, true, false);
      sent++;
      if (a === 80) {
        m.audio(aacPacket(Buffer.alloc(20, a & 0xff)), ts, true, false); // the same packet again
        sent++;
      }
    }
  }
  chunks.push(...m.end());
  const audio = samplesOf(chunks, 2);
  t.is(m.counters.audioRebases, 1);
  t.is(m.counters.audioReanchors, 0);
  t.is(m.counters.droppedAudio, 2, 'the first (before the video) and the repeated one');
  t.is(audio.length, sent - 2);
  t.true(
    audio.every((s, i) => s.duration === 1024 && (i === 0 || s.dts === audio[i - 1]!.dts + 1024)),
    'end to end',
  );
});

test('a new audio SSRC restarts the audio timeline (timestamps half a second back would otherwise be dropped as overlapping); a late report of the old source is ignored', (t) => {
  const m = new RtpFmp4(h264(), aac(16000));
  const chunks: Fmp4Chunk[] = [];
  let a = 0;
  for (let i = 0; i < 100; i++) {
    chunks.push(...m.video(nalOf(i), 500 + i * FRAME, true, false, 7));
    for (; (a * 1024) / 16000 <= i / 25; a++) {
      const renewed = a >= 40;
      const ts = 9_000 + a * 1024 - (renewed ? 8000 : 0);
      m.audio(aacPacket(Buffer.alloc(20, 1)), ts, true, false, renewed ? 2 : 1);
      // The old source's report, late: right for it, it would put the new source's audio half a second early.
      if (a === 45) m.anchor('audio', 9_000, 1_000, 1);
    }
    if (i === 50) m.anchor('video', 500, 1_000, 7);
  }
  chunks.push(...m.end());
  const audio = samplesOf(chunks, 2);
  t.is(m.counters.audioRebases, 1);
  t.is(m.counters.droppedAudio, 1, 'only the first, before the video');
  t.is(audio.length, a - 1);
  t.true(audio.every((s, i) => i === 0 || s.dts === audio[i - 1]!.dts + 1024));
});

test('B-frames, the clock stepping back 3 s at a P-frame in the middle of a GOP: the B-frames after it are still shown after what came before, no time shown twice', (t) => {
  const m = new RtpFmp4(h264(), null);
  // 12-frame GOPs, decode order I0 P3 B1 B2 P6 B4 B5 P9 B7 B8 P11 B10; the step at the P6 of the second GOP.
  const order = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 11, 10];
  const chunks: Fmp4Chunk[] = [];
  let n = 0;
  for (let gop = 0; gop < 3; gop++) {
    order.forEach((f, k) => {
      const step = gop > 1 || (gop === 1 && k >= 4) ? -3 * 90000 : 0;
      chunks.push(...m.video(f === 0 ? idr : slice(n), (1_000_000 + (gop * 12 + f) * FRAME + step) >>> 0, true, false));
      n++;
    });
  }
  chunks.push(...m.end());
  const v = samplesOf(chunks, 1);
  t.is(v.length, 36);
  t.is(m.counters.videoRebases, 1);
  t.true(
    v.every((s, i) => i === 0 || s.dts === v[i - 1]!.dts + FRAME),
    'decode times a frame apart',
  );
  t.true(
    v.every((s) => s.cto >= 0),
    'no negative composition offset',
  );
  const shown = v.map((s) => (s.dts + s.cto) / FRAME).sort((a, b) => a - b);
  t.deepEqual(
    shown,
    shown.map((_, i) => shown[0]! + i),
    'every frame shown once, a frame apart',
  );
});

for (const stepMs of [-300, -600]) {
  test(`a stream without B-frames whose clock steps back ${-stepMs} ms (less than a decoder may reorder): re-based, not taken as reordering`, (t) => {
    const m = new RtpFmp4(h264(), null);
    const ts = Array.from({ length: 100 }, (_, i) => 1_000_000 + i * FRAME + (i >= 37 ? stepMs * 90 : 0));
    const chunks = feedVideo(m, ts);
    assertSteady(t, samplesOf(chunks, 1), 100);
    t.is(m.counters.videoRebases, 1);
  });
}

test('a B-frame pyramid of 8 (B-frames up to 7 frames behind the newest, from the first GOP on) is not taken as a clock step', (t) => {
  const m = new RtpFmp4(h264(), null);
  // Decode order I0 P8 B4 B2 B1 B3 B6 B5 B7 per 9-frame GOP (closed), timestamps across a 2^32 wrap.
  const order = [0, 8, 4, 2, 1, 3, 6, 5, 7];
  const chunks: Fmp4Chunk[] = [];
  const shownIn: number[] = [];
  for (let gop = 0; gop < 4; gop++) {
    for (const f of order) {
      shownIn.push(gop * 9 + f);
      chunks.push(...m.video(f === 0 ? idr : slice(f), (4_294_900_000 + (gop * 9 + f) * FRAME) >>> 0, true, false));
    }
  }
  chunks.push(...m.end());
  t.is(m.counters.videoRebases, 0);
  const v = samplesOf(chunks, 1);
  t.is(v.length, shownIn.length);
  const first = v[0]!.dts + v[0]!.cto;
  t.deepEqual(
    v.map((s) => (s.dts + s.cto - first) / FRAME),
    shownIn,
  );
});

/**
 * Video at `fps` (a keyframe every `gop` frames) and AAC at 16 kHz as they arrive in
 * real time, no sender reports: where each audio frame is placed against the video
 * (its offset from its real time, in seconds; the video's first frame is captured at 0).
 */
function arrivalPlacement(m: RtpFmp4, fps: number, gop: number, seconds: number): { offsets: number[]; sent: number } {
  const chunks: Fmp4Chunk[] = [];
  const events: [number, () => void][] = [];
  const vt = 90000 / fps;
  for (let i = 0; i < seconds * fps; i++)
    events.push([i / fps, () => chunks.push(...m.video(i % gop === 0 ? idr : slice(i), (5000 + i * vt) >>> 0, true, false))]);
  let a = 0;
  for (; (a * 1024) / 16000 < seconds; a++) {
    const k = a;
    events.push([(k * 1024) / 16000 + 1e-6, () => m.audio(aacPacket(Buffer.from([k & 0xff, (k >> 8) & 0xff, 0, 0])), (777 + k * 1024) >>> 0, true, false)]);
  }
  events.sort((x, y) => x[0] - y[0]);
  for (const [, f] of events) f();
  chunks.push(...m.end());
  const video = samplesOf(chunks, 1);
  const videoAt = (video[0]!.dts + video[0]!.cto) / 90000;
  const offsets: number[] = [];
  for (const c of chunks) {
    if (c.kind !== 'fragment') continue;
    const traf = c.moof.tracks.find((x) => x.trackId === 2);
    if (!traf) continue;
    let at = traf.dataOffset;
    let dts = Number(traf.baseDecodeTime);
    for (let i = 0; i < traf.sampleCount; i++) {
      const k = c.bytes[at]! | (c.bytes[at + 1]! << 8); // the frame's number, in its data
      offsets.push(dts / 16000 - videoAt - (k * 1024) / 16000);
      at += traf.sizes[i]!;
      dts += traf.durations[i]!;
    }
  }
  return { offsets, sent: a };
}

for (const fps of [25, 1]) {
  test(`audio without sender reports at ${fps} fps is placed by the newest video packet, not a frame early by the last whole frame`, (t) => {
    const m = new RtpFmp4(h264(), aac(16000));
    const { offsets } = arrivalPlacement(m, fps, 2 * fps, 20);
    const mean = offsets.reduce((x, y) => x + y, 0) / offsets.length;
    // Video time moves by whole frames: audio is up to a frame interval early, half of one on average.
    t.true(Math.abs(mean) <= 0.6 / fps, `audio ${(mean * 1000).toFixed(0)} ms from its time`);
  });
}

test('audio without sender reports at 1/3 fps (video time moves 3 s at once): not re-anchored, nearly every frame kept', (t) => {
  const m = new RtpFmp4(h264(), aac(16000));
  const { offsets, sent } = arrivalPlacement(m, 1 / 3, 2, 60);
  t.is(m.counters.audioReanchors, 0);
  // Those of the first 3 s come before the first keyframe is known whole: dropped.
  t.true(offsets.length >= sent - Math.ceil((3 * 16000) / 1024) - 1, `${offsets.length} of ${sent}`);
});

for (const inBand of [false, true]) {
  test(`a keyframe with the timestamp of the P-frame before it${inBand ? ' (parameter sets in band)' : ''}: a sample of its own starting the GOP, one tick later`, (t) => {
    const m = new RtpFmp4(h264(), null);
    const chunks: Fmp4Chunk[] = [];
    for (let i = 0; i < 50; i++) {
      const ts = (i === 25 ? 24 : i) * FRAME;
      if (i % 25 === 0 && inBand) for (const ps of [SPS, PPS]) chunks.push(...m.video(ps, ts, false, false));
      chunks.push(...m.video(nalOf(i), ts, true, false));
    }
    chunks.push(...m.end());
    const fragments = chunks.filter((c) => c.kind === 'fragment');
    t.is(fragments.length, 2);
    const v = samplesOf(chunks, 1);
    t.is(v.length, 50);
    t.true(
      v.every((s, i) => i === 0 || s.dts > v[i - 1]!.dts),
      'decode times strictly increase',
    );
    t.true(v.every((s) => s.cto >= 0));
    const keySize = 4 + SPS.length + 4 + PPS.length + 4 + idr.length;
    t.is(v[25]!.size, keySize, 'the keyframe alone (with its parameter sets)');
    t.is(v[24]!.size, 4 + slice(24).length, 'the P-frame alone');
    t.is(v[24]!.duration, 1);
    const flags = fragments.map((f) => (f.kind === 'fragment' ? f.moof.tracks.find((x) => x.trackId === 1)!.flags : []));
    t.deepEqual(
      flags.map((fl) => fl.map(isSyncSample)),
      [0, 1].map(() => Array.from({ length: 25 }, (_, i) => i === 0)),
      'each GOP starts at its keyframe, its only sync sample',
    );
    t.is(m.counters.splitUnits, 1);
  });
}
