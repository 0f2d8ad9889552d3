/**
 * media/rtp/ without ffmpeg: hand-made RTP payloads through the H.264/H.265 and AAC
 * depacketizers and RtpFmp4, for what a real sender rarely shows on demand: each
 * payload kind, loss in the middle of a fragmented NAL unit, a lost marker, the marker
 * on every slice, the bounds,
 * timestamps that wrap at 2^32, the decode times and composition offsets of B-frames,
 * a GOP cut at its byte bound, AAC-lbr headers and the fmtp values we refuse.
 */
import test from 'ava';
import { H26xDepacketizer, type AccessUnit } from '../../media/rtp/h26x-depacketizer.ts';
import { NalArena } from '../../media/rtp/nal-arena.ts';
import { RtpFmp4 } from '../../media/rtp/rtp-fmp4.ts';
import { AacDepacketizer } from '../../media/rtp/aac-depacketizer.ts';
import { audioConfig, videoConfig } from '../../media/rtp/rtp-config.ts';
import { MediaFormatError } from '../../media/media-error.ts';
import type { Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';

const SPS = Buffer.from('Z0IAHpWoKA9puAgICBA=', 'base64');
const PPS = Buffer.from('aM48gA==', 'base64');
const AUD = Buffer.from([0x09, 0xf0]);

/** The NAL units of a unit's sample (4-byte length-prefixed), as hex. */
function nalsOf(arena: NalArena, u: AccessUnit): string[] {
  const out: string[] = [];
  for (let at = u.start; at < u.end;) {
    const n = arena.buf.readUInt32BE(at);
    out.push(arena.buf.subarray(at + 4, at + 4 + n).toString('hex'));
    at += 4 + n;
  }
  return out;
}

function depacketizer(codec: 'h264' | 'h265', maxUnitBytes?: number, maxUnitNals?: number) {
  const arena = new NalArena(64, 1 << 20);
  const units: (AccessUnit & { nals: string[] })[] = [];
  const d = new H26xDepacketizer(codec, arena, (u) => units.push({ ...u, nals: nalsOf(arena, u) }), maxUnitBytes, maxUnitNals);
  return { d, units, arena };
}

/** STAP-A (H.264) or AP (H.265) of `nals`. */
function aggregate(head: Buffer, nals: Buffer[]): Buffer {
  return Buffer.concat([head, ...nals.flatMap((n) => [Buffer.from([n.length >> 8, n.length & 0xff]), n])]);
}

/** FU-A packets of an H.264 NAL unit, `size` payload bytes each. */
function fuA(nal: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 1; at < nal.length; at += size) {
    const s = at === 1 ? 0x80 : 0;
    const e = at + size >= nal.length ? 0x40 : 0;
    out.push(Buffer.concat([Buffer.from([(nal[0]! & 0xe0) | 28, s | e | (nal[0]! & 0x1f)]), nal.subarray(at, at + size)]));
  }
  return out;
}

/** H.265 FU packets of a NAL unit (2-byte header). */
function fu265(nal: Buffer, size: number): Buffer[] {
  const type = (nal[0]! >> 1) & 0x3f;
  const out: Buffer[] = [];
  for (let at = 2; at < nal.length; at += size) {
    const s = at === 2 ? 0x80 : 0;
    const e = at + size >= nal.length ? 0x40 : 0;
    out.push(Buffer.concat([Buffer.from([(nal[0]! & 0x81) | (49 << 1), nal[1]!, s | e | type]), nal.subarray(at, at + size)]));
  }
  return out;
}

const idr = Buffer.concat([Buffer.from([0x65]), Buffer.alloc(3000, 0xab)]);
const slice = (b: number, n = 40): Buffer => Buffer.concat([Buffer.from([0x41]), Buffer.alloc(n, b)]);

test('H.264: STAP-A, FU-A and single NAL units make one access unit of length-prefixed NAL units; AUD dropped; parameter sets reported', (t) => {
  const { d, units } = depacketizer('h264');
  d.push(aggregate(Buffer.from([0x18]), [AUD, SPS, PPS]), 1000, false, false);
  const fus = fuA(idr, 1000);
  t.is(fus.length, 3);
  fus.forEach((p, i) => d.push(p, 1000, i === fus.length - 1, false));
  d.push(slice(1), 4600, false, false); // two slices, no marker: the timestamp change ends the unit
  d.push(slice(2), 4600, false, false);
  d.push(slice(3), 8200, true, false);
  t.is(units.length, 2, 'a unit is handed on when the next timestamp comes…');
  d.flush();
  t.is(units.length, 3, '…or at flush()');
  t.deepEqual(units[0]!.nals, [SPS.toString('hex'), PPS.toString('hex'), idr.toString('hex')]);
  t.like(units[0], { rtpTimestamp: 1000, keyframe: true, vcl: true, damaged: false });
  t.deepEqual(units[0]!.params?.sps, [SPS]);
  t.deepEqual(units[0]!.params?.pps, [PPS]);
  t.deepEqual(units[1]!.nals, [slice(1).toString('hex'), slice(2).toString('hex')]);
  t.like(units[1], { rtpTimestamp: 4600, keyframe: false, params: null });
  t.is(units[2]!.rtpTimestamp, 8200);
  t.is(d.counters.units, 3);
});

test('H.264: STAP-B, MTAP and FU-B are counted unsupported and skipped; an aggregation inside an aggregation is refused', (t) => {
  const { d, units } = depacketizer('h264');
  for (const type of [25, 26, 27, 29]) d.push(Buffer.from([type, 0, 1, 2]), 0, false, false);
  d.push(aggregate(Buffer.from([0x18]), [Buffer.from([0x18, 0, 0]), slice(1)]), 0, true, false);
  d.flush();
  t.is(d.counters.unsupportedPackets, 5);
  t.deepEqual(units[0]!.nals, [slice(1).toString('hex')]);
});

test('H.265: AP of VPS/SPS/PPS and an IRAP slice in FUs; the NAL header is rebuilt; PACI skipped and counted', (t) => {
  const { d, units } = depacketizer('h265');
  const vps = Buffer.from([0x40, 0x01, 0x0c, 0x01]);
  const sps = Buffer.from([0x42, 0x01, 0x01, 0x01]);
  const pps = Buffer.from([0x44, 0x01, 0xc1, 0x72]);
  const cra = Buffer.concat([Buffer.from([21 << 1, 0x01]), Buffer.alloc(2500, 7)]); // CRA_NUT: an IRAP
  d.push(aggregate(Buffer.from([48 << 1, 0x01]), [vps, sps, pps]), 90, false, false);
  d.push(Buffer.from([50 << 1, 0x01, 0, 0]), 90, false, false); // PACI
  for (const p of fu265(cra, 1200)) d.push(p, 90, false, false);
  d.push(Buffer.from([1 << 1, 0x01, 0x33]), 3690, true, false); // TRAIL_R, single
  d.flush();
  t.is(units.length, 2);
  t.deepEqual(
    units[0]!.nals,
    [vps, sps, pps, cra].map((b) => b.toString('hex')),
  );
  t.like(units[0], { keyframe: true, damaged: false });
  t.deepEqual(units[0]!.params?.vps, [vps]);
  t.like(units[1], { keyframe: false, rtpTimestamp: 3690 });
  t.is(d.counters.unsupportedPackets, 1);
});

test('a packet lost in the middle of an FU drops that NAL unit only: the frame keeps its other slices, marked damaged; a fragment without its start is dropped', (t) => {
  const { d, units } = depacketizer('h264');
  const fus = fuA(idr, 500);
  d.push(aggregate(Buffer.from([0x18]), [SPS, PPS]), 0, false, false);
  d.push(fus[0]!, 0, false, false);
  d.push(fus[1]!, 0, false, false);
  // fus[2] lost
  for (let i = 3; i < fus.length; i++) d.push(fus[i]!, 0, false, i === 3);
  d.push(slice(9), 0, true, false); // a second slice of the same frame
  d.flush();
  t.is(units.length, 1);
  t.deepEqual(
    units[0]!.nals,
    [SPS, PPS, slice(9)].map((b) => b.toString('hex')),
  );
  t.like(units[0], { damaged: true, keyframe: false });
  t.is(d.counters.droppedNals, 1, 'counted once, though its later fragments came');
  t.is(d.counters.damagedUnits, 1);
  // Lost: the start of an FU that was the whole frame: no frame at all.
  fuA(slice(5, 900), 300)
    .slice(1)
    .forEach((p, i) => d.push(p, 3600, false, i === 0));
  d.push(slice(6), 7200, true, false);
  d.flush();
  t.is(units.length, 2);
  t.like(units[1], { rtpTimestamp: 7200, damaged: false });
  t.is(d.counters.damagedUnits, 2);
});

test('a lost packet that carried the marker: the unit it ended is marked damaged, and so is the next', (t) => {
  const { d, units } = depacketizer('h264');
  d.push(slice(1), 0, false, false);
  // Lost: slice 2 of ts 0 (with the marker).
  d.push(slice(3), 3600, true, true);
  d.push(slice(4), 7200, true, false);
  t.is(units.length, 2);
  t.true(units[0]!.damaged && units[1]!.damaged);
  // After a marker, a loss followed by another timestamp can only be the next unit's.
  d.push(slice(5), 10800, true, true);
  d.flush();
  t.false(units[2]!.damaged);
  t.true(units[3]!.damaged);
  // After a marker, a loss followed by the same timestamp was a slice of that unit (a camera that marks every slice).
  d.push(slice(6), 14400, true, false);
  d.push(slice(7), 14400, true, true);
  d.flush();
  t.is(units.length, 5);
  t.like(units[4], { rtpTimestamp: 14400, damaged: true });
  t.deepEqual(
    units[4]!.nals,
    [slice(6), slice(7)].map((b) => b.toString('hex')),
  );
});

test('the marker bit on every slice (H.264 and H.265): the slices of one timestamp are one access unit; flush() ends the last', (t) => {
  const h264 = depacketizer('h264');
  const idrSlice = (b: number): Buffer => Buffer.concat([Buffer.from([0x65]), Buffer.alloc(30, b)]);
  h264.d.push(aggregate(Buffer.from([0x18]), [SPS, PPS]), 0, true, false);
  for (const b of [1, 2, 3]) h264.d.push(idrSlice(b), 0, true, false);
  for (const ts of [3600, 7200]) for (const b of [4, 5]) h264.d.push(slice(b), ts, true, false);
  t.is(h264.units.length, 2, 'the last unit waits for the next timestamp');
  h264.d.flush();
  t.deepEqual(
    h264.units.map((u) => [u.rtpTimestamp, u.nals.length, u.keyframe]),
    [
      [0, 5, true],
      [3600, 2, false],
      [7200, 2, false],
    ],
  );
  t.true(h264.units.every((u) => !u.damaged));
  const h265 = depacketizer('h265');
  const idrW = (b: number): Buffer => Buffer.concat([Buffer.from([19 << 1, 0x01]), Buffer.alloc(20, b)]); // IDR_W_RADL
  for (const p of [...fu265(idrW(1), 8), ...fu265(idrW(2), 8)]) h265.d.push(p, 90, true, false);
  h265.d.push(Buffer.from([1 << 1, 0x01, 0x33]), 3690, true, false);
  h265.d.flush();
  t.deepEqual(
    h265.units.map((u) => [u.rtpTimestamp, u.nals.length, u.keyframe]),
    [
      [90, 2, true],
      [3690, 1, false],
    ],
  );
});

test('bounds: an access unit over its byte or NAL count bound is dropped whole and counted; the next is read', (t) => {
  const big = depacketizer('h264', 2000);
  for (const p of fuA(idr, 1000)) big.d.push(p, 0, false, false);
  big.d.push(slice(1), 3600, true, false);
  big.d.flush();
  t.is(big.d.counters.oversizedUnits, 1);
  t.deepEqual(
    big.units.map((u) => u.rtpTimestamp),
    [3600],
  );
  t.is(big.arena.used, big.units[0]!.end);
  const many = depacketizer('h264', undefined, 3);
  many.d.push(aggregate(Buffer.from([0x18]), [slice(1, 2), slice(2, 2), slice(3, 2), slice(4, 2)]), 0, true, false);
  many.d.push(slice(5), 3600, true, false);
  many.d.flush();
  t.is(many.d.counters.oversizedUnits, 1);
  t.deepEqual(
    many.units.map((u) => u.rtpTimestamp),
    [3600],
  );
});

/** Feeds frames (one single-NAL packet each, marked) to an RtpFmp4; the chunks. */
function feed(m: RtpFmp4, frames: { ts: number; nal: Buffer }[]): Fmp4Chunk[] {
  const out: Fmp4Chunk[] = [];
  for (const f of frames) out.push(...m.video(f.nal, f.ts >>> 0, true, false));
  return out;
}

const h264Config = () => videoConfig('H264', 90000, { 'sprop-parameter-sets': `${SPS.toString('base64')},${PPS.toString('base64')}` });

test('B-frames across a 2^32 wrap: decode times are the sorted presentation times moved back by the smallest shift; composition offsets signed per frame', (t) => {
  const m = new RtpFmp4(h264Config(), null);
  // Decode order I0 P3 B1 B2 P6 B4 B5 P8 B7 | I9 …, 3600 ticks a frame, wrapping after two frames.
  const start = 2 ** 32 - 2 * 3600;
  const order = [0, 3, 1, 2, 6, 4, 5, 8, 7, 9, 12, 10, 11];
  const chunks = feed(
    m,
    order.map((f, i) => ({ ts: start + f * 3600, nal: f % 9 === 0 ? idr : slice(i) })),
  );
  chunks.push(...m.end());
  const [init, g1, g2] = chunks;
  t.is(init?.kind, 'init');
  if (g1?.kind !== 'fragment' || g2?.kind !== 'fragment') return t.fail('two fragments');
  const v1 = g1.moof.tracks[0]!;
  // Shift one frame (B1 is shown one frame after it is decoded, at the earliest); the
  // timeline starts at decode time 0, so the keyframe is shown at 3600.
  t.is(v1.baseDecodeTime, 0n);
  t.deepEqual(
    v1.compositionOffsets.map((c) => c / 3600),
    [1, 3, 0, 0, 3, 0, 0, 2, 0],
  );
  t.deepEqual(v1.durations, Array(9).fill(3600));
  t.true(v1.firstSampleSync);
  const v2 = g2.moof.tracks[0]!;
  t.is(v2.baseDecodeTime, 9n * 3600n, 'the second GOP starts where the first ended, across the wrap');
  t.deepEqual(
    v2.compositionOffsets.map((c) => c / 3600),
    [1, 3, 0, 0],
  );
  t.is(g1.durationTicks, 9 * 3600);
  t.is(g1.timescale, 90000);
  t.true(g1.keyframe);
  t.is(m.counters.gops, 2);
});

test('frames before the first keyframe are dropped; a keyframe with no parameter sets known is skipped; SDP ones go in front of it', (t) => {
  const none = new RtpFmp4(videoConfig('H264', 90000, {}), null);
  const made = feed(none, [
    { ts: 0, nal: slice(1) },
    { ts: 3600, nal: idr },
    { ts: 7200, nal: slice(2) },
  ]);
  t.deepEqual([...made, ...none.end()], []);
  t.is(none.counters.skippedGops, 1);
  t.is(none.counters.framesBeforeKeyframe, 3);
  const sdp = new RtpFmp4(h264Config(), null);
  const chunks = [...feed(sdp, [{ ts: 0, nal: idr }]), ...sdp.end()];
  const f = chunks.find((c) => c.kind === 'fragment');
  if (f?.kind !== 'fragment') return t.fail('a fragment');
  // The keyframe sample: SPS, PPS (from the SDP), then the slice, each 4-byte length-prefixed.
  t.is(f.moof.tracks[0]!.sizes[0], 4 + SPS.length + 4 + PPS.length + 4 + idr.length);
});

test('a changed SPS in band makes a new init at the next GOP', (t) => {
  const m = new RtpFmp4(h264Config(), null);
  const sps2 = Buffer.from(SPS);
  sps2[3] = 0x1f; // another level
  const stap = (sps: Buffer) => aggregate(Buffer.from([0x18]), [sps, PPS]);
  const chunks: Fmp4Chunk[] = [];
  chunks.push(...m.video(stap(SPS), 0, false, false), ...m.video(idr, 0, true, false));
  chunks.push(...m.video(stap(sps2), 3600, false, false), ...m.video(idr, 3600, true, false));
  chunks.push(...m.end());
  t.deepEqual(
    chunks.map((c) => c.kind),
    ['init', 'fragment', 'init', 'fragment'],
  );
  t.is(m.counters.inits, 2);
});

test('a GOP over maxGopBytes is cut there and counted; frames up to the next keyframe are dropped; memory stays bounded', (t) => {
  const m = new RtpFmp4(h264Config(), null, { maxGopBytes: 16 * 1024 });
  const frames = [{ ts: 0, nal: idr }, ...Array.from({ length: 30 }, (_, i) => ({ ts: (i + 1) * 3600, nal: slice(i, 1000) })), { ts: 31 * 3600, nal: idr }];
  const chunks = [...feed(m, frames), ...m.end()];
  const fragments = chunks.filter((c) => c.kind === 'fragment');
  t.is(fragments.length, 2);
  t.is(m.counters.cutGops, 1);
  const first = fragments[0]!.kind === 'fragment' ? fragments[0]!.moof.tracks[0]!.sampleCount : 0;
  t.true(first > 5 && first < 16, `${first} frames in the cut GOP`);
  t.is(m.counters.framesBeforeKeyframe, 30 - (first - 1) - 1, 'the frame that did not fit and the ones after it');
  t.true(fragments.every((f) => f.kind === 'fragment' && f.keyframe));
});

test('maxGopFrames cuts a GOP that never ends', (t) => {
  const m = new RtpFmp4(h264Config(), null, { maxGopFrames: 10 });
  const frames = [{ ts: 0, nal: idr }, ...Array.from({ length: 20 }, (_, i) => ({ ts: (i + 1) * 3600, nal: slice(i) }))];
  const chunks = [...feed(m, frames), ...m.end()];
  const f = chunks.filter((c) => c.kind === 'fragment');
  t.is(f.length, 1);
  t.is(f[0]!.kind === 'fragment' ? f[0]!.moof.tracks[0]!.sampleCount : 0, 10);
  t.is(m.counters.cutGops, 1);
  t.is(m.counters.framesBeforeKeyframe, 11);
});

test('camera garbage never throws out of video() or audio()', (t) => {
  const asc = audioConfig('MPEG4-GENERIC', 16000, { mode: 'AAC-hbr', config: '1408' });
  const m = new RtpFmp4(h264Config(), asc);
  let seed = 1;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  t.notThrows(() => {
    for (let i = 0; i < 5000; i++) {
      const p = Buffer.alloc(Math.floor(rnd() * 1500));
      for (let j = 0; j < p.length; j++) p[j] = Math.floor(rnd() * 256);
      // Now and then an SPS, a PPS or an IDR slice of garbage, so that inits are tried.
      if (p.length > 0 && i % 7 === 1) p[0] = [0x67, 0x68, 0x65][i % 3]!;
      if (i % 3 === 0) m.audio(p, Math.floor(rnd() * 2 ** 32), rnd() < 0.5, rnd() < 0.1);
      else m.video(p, Math.floor(i / 10) * 3600, rnd() < 0.2, rnd() < 0.1);
    }
    m.end();
  });
});

test('AAC-lbr (6/2/2): several AUs per packet, each header a byte', (t) => {
  const cfg = audioConfig('MPEG4-GENERIC', 8000, { mode: 'AAC-lbr', config: '1588' })!;
  t.like(cfg, { sizeLength: 6, indexLength: 2, indexDeltaLength: 2 });
  const frames: [number, string][] = [];
  const d = new AacDepacketizer(cfg, (ts, data) => frames.push([ts, data.toString()]));
  const aus = ['ab', 'cde', 'f'];
  const payload = Buffer.concat([Buffer.from([0, 8 * aus.length]), Buffer.from(aus.map((a) => a.length << 2)), Buffer.from(aus.join(''))]);
  d.push(payload, 100, true, false);
  t.deepEqual(frames, [
    [100, 'ab'],
    [1124, 'cde'],
    [2148, 'f'],
  ]);
});

test('fmtp values we cannot read are typed errors: bad base64 in H.265 sprops, AU headers with optional fields, a bad sizeLength', (t) => {
  const e1 = t.throws(() => videoConfig('H265', 90000, { 'sprop-vps': 'QAEMAf//AWAAAAMAkAAAAwAAAwBdlZgJ', 'sprop-sps': 'QgEB?', 'sprop-pps': 'RAHBcrRiQA==' }));
  t.true(e1 instanceof MediaFormatError && e1.code === 'BAD_CODEC_CONFIG' && /sprop-sps/.test(e1.message), String(e1));
  const e2 = t.throws(() => audioConfig('MPEG4-GENERIC', 16000, { mode: 'AAC-hbr', config: '1408', ctsdeltalength: '16' }));
  t.true(e2 instanceof MediaFormatError && e2.code === 'CODEC_UNSUPPORTED' && /ctsdeltalength/.test(e2.message), String(e2));
  const e3 = t.throws(() => audioConfig('MPEG4-GENERIC', 16000, { mode: 'AAC-hbr', config: '1408', sizelength: 'x' }));
  t.true(e3 instanceof MediaFormatError && e3.code === 'BAD_CODEC_CONFIG', String(e3));
  t.is(videoConfig('H265', 90000, { 'sprop-max-don-diff': '0' }).params.sps.length, 0, 'no sprops: learnt in band');
});

test('a keyframe with the timestamp of the frame before (FU-A / H.265 FU, parameter sets in between): a unit of its own, with them, one tick later; a second slice of a picture is not', (t) => {
  const h264 = depacketizer('h264');
  const p = slice(0x80); // first_mb_in_slice 0
  h264.d.push(p, 7000, true, false);
  h264.d.push(aggregate(Buffer.from([0x18]), [SPS, PPS]), 7000, false, false);
  for (const f of fuA(idr, 1000)) h264.d.push(f, 7000, f === fuA(idr, 1000).at(-1), false);
  h264.d.push(slice(0x81), 10_600, true, false);
  h264.d.push(slice(0x40), 10_600, true, false); // a second slice of that picture (first_mb_in_slice 1)
  h264.d.flush();
  t.deepEqual(
    h264.units.map((u) => [u.rtpTimestamp, u.keyframe, u.nals.length, u.params?.sps.length ?? 0]),
    [
      [7000, false, 1, 0],
      [7001, true, 3, 1],
      [10_600, false, 2, 0],
    ],
  );
  t.is(h264.units[1]!.nals[2], idr.toString('hex'));
  t.is(h264.d.counters.splitUnits, 1);

  const h265 = depacketizer('h265');
  const trail = Buffer.concat([Buffer.from([0x02, 0x01, 0x80]), Buffer.alloc(30, 1)]); // TRAIL_R, first slice
  const cra = Buffer.concat([Buffer.from([0x2a, 0x01, 0x80]), Buffer.alloc(3000, 2)]); // CRA (21), first slice
  h265.d.push(trail, 0xffffffff, true, false);
  for (const f of fu265(cra, 1000)) h265.d.push(f, 0xffffffff, false, false);
  h265.d.flush();
  t.deepEqual(
    h265.units.map((u) => [u.rtpTimestamp, u.keyframe]),
    [
      [0xffffffff, false],
      [0, true],
    ],
  );
});
