/**
 * The incremental PS → GOP reader (media/ps/ps-gop-reader.ts) and the live PS → fMP4
 * writer (media/ps/ps-live-fmp4.ts), on program streams made here: Hikvision-style (pack +
 * system header + PSM before each I-frame, one PES per NAL unit, AAC or G.711 audio
 * interleaved) and ffmpeg-style (units packed several per fixed-size PES, start codes
 * cut by PES boundaries). Fed in random chunk sizes; every access unit must come out
 * once, whole, in a GOP that starts with its keyframe; joined mid-GOP, lost packets,
 * garbage, the size bound, a 33-bit wrap and a codec change. Pure: no processes.
 */
import test from 'ava';
import { splitAnnexB } from '../../media/codec/annexb.ts';
import { demuxPs } from '../../media/ps/ps-demux.ts';
import { PsGopReader, type PsGop } from '../../media/ps/ps-gop-reader.ts';
import { PsLiveFmp4, nearestUnwrap } from '../../media/ps/ps-live-fmp4.ts';
import { crc32Mpeg } from '../../media/ps/ps-mux.ts';
import type { Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';

const TS_MOD = 2n ** 33n;
// Real parameter sets (x264 / x265, 320x240) so the fMP4 side can describe the tracks.
const H264_SPS = Buffer.from('6764000dacd94141fb011000000300100000030320f1429960', 'hex');
const H264_PPS = Buffer.from('68ebe3cb22c0', 'hex');
const H265_VPS = Buffer.from('40010c01ffff01600000030090000003000003003c959809', 'hex');
const H265_SPS = Buffer.from('42010101600000030090000003000003003ca00a080f165959a4932bc05a020000030002000003003210', 'hex');
const H265_PPS = Buffer.from('4401c172b46240', 'hex');

/** Deterministic pseudo-random numbers (tests must not flake). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

function ts(prefix: number, v: bigint): Buffer {
  const t = ((v % TS_MOD) + TS_MOD) % TS_MOD;
  const b = Buffer.alloc(5);
  b[0] = (prefix << 4) | (Number((t >> 30n) & 7n) << 1) | 1;
  b.writeUInt16BE((Number((t >> 15n) & 0x7fffn) << 1) | 1, 1);
  b.writeUInt16BE((Number(t & 0x7fffn) << 1) | 1, 3);
  return b;
}

function packHeader(scr: bigint): Buffer {
  const s = ((scr % TS_MOD) + TS_MOD) % TS_MOD;
  const b = Buffer.alloc(14);
  b.writeUInt32BE(0x1ba, 0);
  const hi = Number(s >> 15n);
  const lo = Number(s & 0x7fffn);
  b[4] = 0x44 | (((hi >> 15) & 7) << 3) | ((hi >> 13) & 3);
  b[5] = (hi >> 5) & 0xff;
  b[6] = ((hi & 0x1f) << 3) | 4 | ((lo >> 13) & 3);
  b[7] = (lo >> 5) & 0xff;
  b[8] = ((lo & 0x1f) << 3) | 4;
  b[9] = 1;
  b[10] = 0x03;
  b[11] = 0x0d;
  b[12] = 0x43;
  b[13] = 0xf8;
  return b;
}

function systemHeader(): Buffer {
  const body = Buffer.from([0x80, 0x61, 0xa9, 0x04, 0xe1, 0x7f, 0xe0, 0xe0, 0x80, 0xc0, 0xc0, 0x20]);
  const h = Buffer.from([0, 0, 1, 0xbb, 0, body.length]);
  return Buffer.concat([h, body]);
}

function psmPacket(entries: [number, number][]): Buffer {
  const map = Buffer.concat(entries.map(([type, id]) => Buffer.from([type, id, 0, 0])));
  const body = Buffer.concat([Buffer.from([0xe0, 0xff, 0, 0, map.length >> 8, map.length & 0xff]), map]);
  const head = Buffer.from([0, 0, 1, 0xbc, 0, 0]);
  head.writeUInt16BE(body.length + 4, 4);
  const crc = Buffer.alloc(4);
  const pkt = Buffer.concat([head, body]);
  crc.writeUInt32BE(crc32Mpeg(pkt.subarray(6)) >>> 0);
  return Buffer.concat([pkt, crc]);
}

function pes(id: number, payload: Buffer, pts: bigint | null, dts: bigint | null = null): Buffer {
  const opt =
    pts === null
      ? Buffer.from([0x80, 0, 0])
      : dts !== null && dts !== pts
        ? Buffer.concat([Buffer.from([0x80, 0xc0, 10]), ts(3, pts), ts(1, dts)])
        : Buffer.concat([Buffer.from([0x80, 0x80, 5]), ts(2, pts)]);
  const head = Buffer.from([0, 0, 1, id, 0, 0]);
  head.writeUInt16BE(opt.length + payload.length, 4);
  return Buffer.concat([head, opt, payload]);
}

/** Payload bytes without 00 00 0x sequences (as emulation prevention guarantees). */
function noise(r: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 1 + Math.floor(r() * 254);
  return b;
}

interface Unit {
  nals: Buffer[];
  keyframe: boolean;
  dts: bigint;
}

interface StreamOptions {
  codec?: 'h264' | 'h265';
  gops?: number;
  gopFrames?: number;
  /** PTS of the first frame (90 kHz, written modulo 2^33). */
  start?: bigint;
  audio?: 'aac' | 'g711a' | 'none';
  /** hik: a PES per NAL, PSM at I-frames; packed: fixed-size PES holding parts of several units. */
  style?: 'hik' | 'packed';
  packedPesBytes?: number;
  frameBytes?: number;
  aud?: boolean;
  seed?: number;
  /** Audio frame i's PTS as written (null: the frame is not sent). */
  audioPts?: (i: number, pts: bigint) => bigint | null;
}

interface Made {
  bytes: Buffer;
  units: Unit[];
  /** Byte offset where each unit's packets start (hik style). */
  unitOffsets: number[];
  audioFrames: number;
}

const FRAME_90K = 3600n; // 25 fps

function adts(frameBytes: number): Buffer {
  // AAC-LC, 16 kHz (index 8), mono.
  const len = frameBytes + 7;
  return Buffer.from([0xff, 0xf1, (1 << 6) | (8 << 2), (1 << 6) | (len >> 11), (len >> 3) & 0xff, ((len & 7) << 5) | 0x1f, 0xfc]);
}

function makeStream(o: StreamOptions = {}): Made {
  const r = rng(o.seed ?? 7);
  const codec = o.codec ?? 'h264';
  const gops = o.gops ?? 4;
  const gopFrames = o.gopFrames ?? 10;
  const start = o.start ?? 900_000n;
  const audio = o.audio ?? 'aac';
  const style = o.style ?? 'hik';
  const frameBytes = o.frameBytes ?? 3000;
  const sc = Buffer.from([0, 0, 0, 1]);
  const units: Unit[] = [];
  for (let g = 0; g < gops; g++) {
    for (let f = 0; f < gopFrames; f++) {
      const key = f === 0;
      const dts = start + BigInt(units.length) * FRAME_90K;
      const nals: Buffer[] = [];
      if (o.aud) nals.push(codec === 'h264' ? Buffer.from([0x09, 0xf0]) : Buffer.from([0x46, 0x01, 0x50]));
      if (key) nals.push(...(codec === 'h264' ? [H264_SPS, H264_PPS] : [H265_VPS, H265_SPS, H265_PPS]));
      const size = key ? frameBytes * 3 : frameBytes;
      if (codec === 'h264') {
        // Two slices per picture: the second is not a new picture (first_mb_in_slice != 0).
        nals.push(Buffer.concat([Buffer.from([key ? 0x65 : 0x41, 0x88]), noise(r, size)]));
        nals.push(Buffer.concat([Buffer.from([key ? 0x65 : 0x41, 0x2a]), noise(r, size >> 2)]));
      } else {
        nals.push(Buffer.concat([Buffer.from([key ? 0x26 : 0x02, 0x01, 0x80]), noise(r, size)]));
        nals.push(Buffer.concat([Buffer.from([key ? 0x26 : 0x02, 0x01, 0x2a]), noise(r, size >> 2)]));
      }
      units.push({ nals, keyframe: key, dts });
    }
  }
  const videoType = codec === 'h264' ? 0x1b : 0x24;
  const psmEntries: [number, number][] = [[videoType, 0xe0]];
  if (audio === 'aac') psmEntries.push([0x0f, 0xc0]);
  if (audio === 'g711a') psmEntries.push([0x90, 0xc0]);
  const out: Buffer[] = [];
  const unitOffsets: number[] = [];
  let at = 0;
  const put = (b: Buffer): void => {
    out.push(b);
    at += b.length;
  };
  let audioFrames = 0;
  let audioTime = start - 1000n;
  const audioUpTo = (t: bigint): void => {
    if (audio === 'none') return;
    const step = audio === 'aac' ? (1024n * 90_000n) / 16_000n : 1440n; // 64 ms AAC frames; 16 ms (128 bytes) of G.711
    while (audioTime <= t) {
      const payload = audio === 'aac' ? Buffer.concat([adts(40), noise(r, 40)]) : noise(r, 128);
      const pts = o.audioPts ? o.audioPts(audioFrames, audioTime) : audioTime;
      if (pts !== null) {
        put(packHeader(audioTime));
        put(pes(0xc0, payload, pts));
      }
      audioFrames++;
      audioTime += step;
    }
  };
  if (style === 'hik') {
    for (const u of units) {
      audioUpTo(u.dts);
      unitOffsets.push(at);
      put(packHeader(u.dts - 3600n));
      if (u.keyframe) {
        put(systemHeader());
        put(psmPacket(psmEntries));
      }
      u.nals.forEach((n, i) => {
        const body = Buffer.concat([sc, n]);
        // Big NAL units span several PES; only the first PES of the unit has the PTS.
        for (let p = 0; p < body.length; p += 4000) put(pes(0xe0, body.subarray(p, p + 4000), i === 0 && p === 0 ? u.dts : null));
      });
    }
  } else {
    // ffmpeg style: the video ES cut into PES of a fixed size, each with the PTS of the
    // first unit starting in it; audio between them; a PSM at the start only.
    const es: Buffer[] = [];
    const starts: { offset: number; dts: bigint }[] = [];
    let off = 0;
    for (const u of units) {
      starts.push({ offset: off, dts: u.dts });
      for (const n of u.nals) {
        const b = Buffer.concat([sc, n]);
        es.push(b);
        off += b.length;
      }
    }
    const all = Buffer.concat(es);
    const size = o.packedPesBytes ?? 2000;
    put(packHeader(start - 3600n));
    put(systemHeader());
    put(psmPacket(psmEntries));
    let k = 0;
    for (let p = 0; p < all.length; p += size) {
      const end = Math.min(all.length, p + size);
      while (k < starts.length && starts[k]!.offset < p) k++;
      const first = k < starts.length && starts[k]!.offset < end ? starts[k]! : null;
      if (first) audioUpTo(first.dts);
      put(packHeader(first ? first.dts - 3600n : 0n));
      put(pes(0xe0, all.subarray(p, end), first ? first.dts : null));
    }
  }
  return { bytes: Buffer.concat(out), units, unitOffsets, audioFrames };
}

/** Feeds `bytes` in random chunks (1 to 3000 bytes); returns every GOP including the last. */
function readAll(reader: PsGopReader, bytes: Buffer, seed = 3): PsGop[] {
  const r = rng(seed);
  const gops: PsGop[] = [];
  for (let p = 0; p < bytes.length;) {
    const n = 1 + Math.floor(r() * 3000);
    gops.push(...reader.push(bytes.subarray(p, p + n)));
    p += n;
  }
  const last = reader.end();
  if (last) gops.push(last);
  return gops;
}

interface Seen {
  nals: string[];
  keyframe: boolean;
  dts: bigint;
}

/** The video units of GOPs, each demuxed alone (as the fMP4 side does). */
function unitsOf(gops: PsGop[]): { units: Seen[]; firstOfGop: Seen[]; audio: number } {
  const units: Seen[] = [];
  const firstOfGop: Seen[] = [];
  let audio = 0;
  for (const g of gops) {
    const d = demuxPs(g.bytes, { psm: g.psm });
    const v = d.tracks.find((t) => t.streamId === 0xe0);
    audio += d.tracks.find((t) => t.streamId === 0xc0)?.samples.length ?? 0;
    const seen = (v?.samples ?? []).map((s) => ({ nals: splitAnnexB(s.data).map((n) => n.toString('hex')), keyframe: s.keyframe, dts: s.dts }));
    if (seen[0]) firstOfGop.push(seen[0]);
    units.push(...seen);
  }
  return { units, firstOfGop, audio };
}

function expected(units: Unit[]): Seen[] {
  return units.map((u) => ({ nals: u.nals.map((n) => n.toString('hex')), keyframe: u.keyframe, dts: u.dts }));
}

for (const style of ['hik', 'packed'] as const) {
  for (const codec of ['h264', 'h265'] as const) {
    test(`${style} ${codec}: every access unit once and whole, one GOP per keyframe, in random chunk sizes`, (t) => {
      const made = makeStream({ style, codec, aud: style === 'packed' });
      const reader = new PsGopReader();
      const gops = readAll(reader, made.bytes);
      t.is(gops.length, 4);
      const { units, firstOfGop, audio } = unitsOf(gops);
      t.deepEqual(
        units.map((u) => u.nals),
        expected(made.units).map((u) => u.nals),
      );
      t.deepEqual(
        units.map((u) => u.keyframe),
        made.units.map((u) => u.keyframe),
      );
      t.true(firstOfGop.every((u) => u.keyframe));
      // Timestamps of the units that had one travel with them (the first of each GOP always).
      for (const g of firstOfGop) t.true(made.units.some((u) => u.dts === g.dts && u.keyframe));
      t.true(gops.slice(0, -1).every((g) => g.end === 'keyframe' && g.nextDts !== null));
      t.is(gops.at(-1)!.end, 'input');
      if (style === 'hik') {
        // Nothing is lost or made up: the GOPs are the input from the first keyframe on.
        t.true(Buffer.concat(gops.map((g) => g.bytes)).equals(made.bytes.subarray(made.unitOffsets[0])));
        t.is(audio + 0, made.audioFrames - 1); // the one audio frame before the first I-frame is skipped
      }
      t.is(reader.counters.resyncBytes, 0);
      t.deepEqual(gops[0]!.psm.get(0xe0), codec === 'h264' ? 0x1b : 0x24);
    });
  }
}

test('hik: the GOP holds the pack header, system header and PSM before its I-frame, and nextDts is the next I-frame', (t) => {
  const made = makeStream();
  const gops = readAll(new PsGopReader(), made.bytes);
  for (const g of gops) {
    t.is(g.bytes.readUInt32BE(0), 0x1ba);
    const d = demuxPs(g.bytes);
    t.true(d.psmFirst, 'a PSM before the first PES');
  }
  t.is(gops[0]!.nextDts, made.units[10]!.dts);
});

test('joined mid-GOP (cut inside a packet, no PSM yet): waits for the next I-frame with its PSM', (t) => {
  const made = makeStream({ gops: 5 });
  const cut = made.unitOffsets[4]! + 1234; // inside the 5th frame of the first GOP
  const reader = new PsGopReader();
  const gops = readAll(reader, made.bytes.subarray(cut), 11);
  t.is(gops.length, 4);
  const { units, firstOfGop } = unitsOf(gops);
  t.deepEqual(
    units.map((u) => u.nals),
    expected(made.units.slice(10)).map((u) => u.nals),
  );
  t.true(firstOfGop.every((u) => u.keyframe));
  t.is(firstOfGop[0]!.dts, made.units[10]!.dts);
  t.is(reader.counters.skippedBytes + reader.counters.resyncBytes, made.unitOffsets[10]! - cut);
  t.true(Buffer.concat(gops.map((g) => g.bytes)).equals(made.bytes.subarray(made.unitOffsets[10])));
});

test('a stream without any PSM starts at its third keyframe (video sniffed, audio unknown)', (t) => {
  const made = makeStream({ gops: 5, audio: 'none' });
  // Remove the PSM packets: rebuild the byte string without them.
  const parts: Buffer[] = [];
  const psm = psmPacket([[0x1b, 0xe0]]);
  for (let p = 0; p < made.bytes.length;) {
    const i = made.bytes.indexOf(psm, p);
    if (i < 0) {
      parts.push(made.bytes.subarray(p));
      break;
    }
    parts.push(made.bytes.subarray(p, i));
    p = i + psm.length;
  }
  const reader = new PsGopReader();
  const gops = readAll(reader, Buffer.concat(parts));
  t.is(reader.counters.keyframesWithoutPsm, 3);
  t.is(gops.length, 2);
  const { units } = unitsOf(gops);
  t.deepEqual(
    units.map((u) => u.nals),
    expected(made.units.slice(30)).map((u) => u.nals),
  );
});

test('lost packets: the partial packet is dropped, reading resynchronises, later GOPs are whole', (t) => {
  const made = makeStream({ gops: 5 });
  const reader = new PsGopReader();
  const gops: PsGop[] = [];
  const holeAt = made.unitOffsets[13]! + 500;
  const holeEnd = made.unitOffsets[14]! + 700;
  gops.push(...reader.push(made.bytes.subarray(0, holeAt)));
  reader.discontinuity();
  gops.push(...reader.push(made.bytes.subarray(holeEnd)));
  gops.push(reader.end()!);
  t.is(gops.length, 5);
  t.deepEqual(
    gops.map((g) => g.damaged),
    [false, true, false, false, false],
  );
  t.is(reader.counters.discontinuities, 1);
  t.true(reader.counters.resyncBytes > 0);
  const later = unitsOf(gops.slice(2)).units;
  t.deepEqual(
    later.map((u) => u.nals),
    expected(made.units.slice(20)).map((u) => u.nals),
  );
  // The damaged GOP still starts with its keyframe and keeps the frames that arrived.
  const damaged = unitsOf([gops[1]!]).units;
  t.true(damaged[0]!.keyframe);
  t.true(damaged.length >= 8);
});

test('garbage between packets is skipped to the next pack header and counted', (t) => {
  const made = makeStream();
  const at = made.unitOffsets[15]!;
  const junk = Buffer.alloc(777, 0x5a);
  const bytes = Buffer.concat([made.bytes.subarray(0, at), junk, made.bytes.subarray(at)]);
  const reader = new PsGopReader();
  const gops = readAll(reader, bytes);
  t.is(reader.counters.resyncBytes, 777);
  t.deepEqual(
    unitsOf(gops).units.map((u) => u.nals),
    expected(made.units).map((u) => u.nals),
  );
});

test('a GOP over the bound is handed on at a unit boundary (next one without keyframe); nothing is lost', (t) => {
  const made = makeStream({ gops: 3, gopFrames: 20 });
  const reader = new PsGopReader({ maxGopBytes: 30_000 });
  const gops = readAll(reader, made.bytes);
  t.true(reader.counters.oversizedGops > 0);
  t.true(gops.every((g) => g.bytes.length <= 30_000 + 20_000));
  t.true(gops.some((g) => !g.keyframe && g.end !== 'input'));
  const { units, firstOfGop } = unitsOf(gops);
  t.deepEqual(
    units.map((u) => u.nals),
    expected(made.units).map((u) => u.nals),
  );
  t.deepEqual(
    gops.map((g) => g.keyframe),
    firstOfGop.map((u) => u.keyframe),
  );
});

test('one access unit bigger than the bound: its GOP is dropped, the next keyframe starts again', (t) => {
  const made = makeStream({ gops: 3, frameBytes: 3000 });
  const reader = new PsGopReader({ maxGopBytes: 8000 }); // an I-frame is ~11 kB
  readAll(reader, made.bytes);
  t.true(reader.counters.droppedGops > 0);
});

test('units packed across PES with every PES size: each unit whole, start codes cut by PES boundaries included', (t) => {
  for (const size of [7, 13, 64, 333, 1024]) {
    const made = makeStream({ style: 'packed', packedPesBytes: size, gops: 2, gopFrames: 4, frameBytes: 200, audio: 'none', seed: size });
    const gops = readAll(new PsGopReader(), made.bytes, size);
    const { units, firstOfGop } = unitsOf(gops);
    t.deepEqual(
      units.map((u) => u.nals),
      expected(made.units).map((u) => u.nals),
      `PES of ${size} bytes`,
    );
    t.is(gops.length, 2, `PES of ${size} bytes`);
    t.true(firstOfGop.every((u) => u.keyframe));
  }
});

test('nearestUnwrap: the 64-bit time nearest the reference, across the 2^33 wrap both ways', (t) => {
  t.is(nearestUnwrap(TS_MOD - 100n, 50n), TS_MOD + 50n);
  t.is(nearestUnwrap(TS_MOD + 50n, TS_MOD - 100n), TS_MOD - 100n);
  t.is(nearestUnwrap(3n * TS_MOD + 10n, 5n), 3n * TS_MOD + 5n);
  t.is(nearestUnwrap(1000n, 900n), 900n);
});

function fmp4Of(made: Made, opts: ConstructorParameters<typeof PsLiveFmp4>[0] = {}, bytes = made.bytes): { chunks: Fmp4Chunk[]; conv: PsLiveFmp4 } {
  const conv = new PsLiveFmp4(opts);
  const chunks = readAll(new PsGopReader(), bytes).flatMap((g) => conv.push(g));
  return { chunks, conv };
}

type Fragment = Extract<Fmp4Chunk, { kind: 'fragment' }>;

test('fMP4: one init, one fragment per GOP, continuous 90 kHz video across a 33-bit wrap, AAC at its rate', (t) => {
  const made = makeStream({ gops: 6, start: TS_MOD - 2n * 90_000n }); // wraps in the third GOP
  const { chunks, conv } = fmp4Of(made);
  const inits = chunks.filter((c) => c.kind === 'init');
  const frags = chunks.filter((c): c is Fragment => c.kind === 'fragment');
  t.is(inits.length, 1);
  t.is(inits[0]!.info.mimeType, 'video/mp4; codecs="avc1.64000d,mp4a.40.2"');
  t.is(frags.length, 6);
  let next = 0n;
  let audioNext: bigint | null = null;
  for (const f of frags) {
    const v = f.moof.tracks.find((x) => x.trackId === 1)!;
    t.is(v.baseDecodeTime, next);
    t.true(v.durations.every((d) => d === 3600));
    t.true(f.keyframe);
    next += BigInt(v.durationTicks);
    const a = f.moof.tracks.find((x) => x.trackId === 2);
    if (a) {
      t.true(a.durations.every((d) => d === 1024));
      if (audioNext !== null) t.is(a.baseDecodeTime, audioNext);
      audioNext = a.baseDecodeTime + BigInt(a.durationTicks);
    }
  }
  t.is(next, 60n * 3600n);
  t.is(inits[0]!.info.tracks.find((x) => x.kind === 'audio')!.timescale, 16_000);
  t.deepEqual(conv.audio, { source: 'aac', stored: 'copy' });
  t.is(conv.counters.skippedGops, 0);
});

test('fMP4 G.711 A-law: an alaw track at 8 kHz (bytes = samples) when kept; left out with a reason when dropped', (t) => {
  const made = makeStream({ audio: 'g711a' });
  const kept = fmp4Of(made, { g711: 'keep' });
  const init = kept.chunks[0]!;
  t.is(init.kind, 'init');
  t.is(init.kind === 'init' && init.info.mimeType, 'video/mp4; codecs="avc1.64000d,alaw"');
  const frag = kept.chunks.find((c): c is Fragment => c.kind === 'fragment')!;
  const a = frag.moof.tracks.find((x) => x.trackId === 2)!;
  t.true(a.durations.every((d, i) => d === a.sizes[i] && d === 128));
  t.is(kept.conv.audio.stored, 'copy');
  const dropped = fmp4Of(made, { g711: 'drop' });
  const init2 = dropped.chunks[0]!;
  t.is(init2.kind === 'init' && init2.info.mimeType, 'video/mp4; codecs="avc1.64000d"');
  t.is(dropped.conv.audio.stored, 'none');
  t.regex(dropped.conv.audio.reason!, /G\.711/);
});

test('fMP4: audio of another codec is left out with its name; the video is recorded', (t) => {
  const made = makeStream({ audio: 'g711a' });
  // The same stream declaring its audio as G.711 µ-law (0x91), which is not recorded.
  const bytes = Buffer.from(made.bytes);
  const from = psmPacket([
    [0x1b, 0xe0],
    [0x90, 0xc0],
  ]);
  const to = psmPacket([
    [0x1b, 0xe0],
    [0x91, 0xc0],
  ]);
  for (let p = bytes.indexOf(from); p >= 0; p = bytes.indexOf(from, p + 1)) to.copy(bytes, p);
  const { chunks, conv } = fmp4Of(made, {}, bytes);
  t.is(chunks.filter((c) => c.kind === 'fragment').length, 4);
  t.deepEqual(conv.audio.source, 'pcm_mulaw');
  t.is(conv.audio.stored, 'none');
});

test('fMP4: a video codec change mid-stream makes a new init', (t) => {
  const a = makeStream({ gops: 2, codec: 'h264', audio: 'none' });
  const b = makeStream({ gops: 2, codec: 'h265', audio: 'none', start: 900_000n + 20n * 3600n });
  const { chunks } = fmp4Of(a, {}, Buffer.concat([a.bytes, b.bytes]));
  t.deepEqual(
    chunks.map((c) => (c.kind === 'init' ? c.info.mimeType : 'frag')),
    ['video/mp4; codecs="avc1.64000d"', 'frag', 'frag', 'video/mp4; codecs="hvc1.1.6.L60.90"', 'frag', 'frag'],
  );
  const frags = chunks.filter((c): c is Fragment => c.kind === 'fragment');
  t.is(frags[2]!.moof.tracks[0]!.baseDecodeTime, 20n * 3600n);
});

test('fMP4 audio: timestamp jitter stays end to end; a hole lengthens the sample before it; audio before the video is dropped', (t) => {
  const made = makeStream({
    gops: 3,
    audio: 'aac',
    // Frame 1 (right after the first I-frame) stamped a second early; ±1 tick of jitter;
    // frames 10 and 11 never sent (a hole of 2 × 64 ms).
    audioPts: (i, pts) => (i === 1 ? pts - 90_000n : i === 10 || i === 11 ? null : pts + BigInt((i % 3) - 1)),
  });
  const { chunks, conv } = fmp4Of(made);
  const frags = chunks.filter((c): c is Fragment => c.kind === 'fragment');
  const a = frags.map((f) => f.moof.tracks.find((x) => x.trackId === 2)!);
  for (let i = 1; i < a.length; i++) t.is(a[i]!.baseDecodeTime, a[i - 1]!.baseDecodeTime + BigInt(a[i - 1]!.durationTicks));
  t.is(conv.counters.audioHoles, 1);
  t.is(conv.counters.droppedAudio, 1);
  const durations = a.flatMap((x) => x.durations);
  t.is(durations.filter((d) => d === 1024 * 3).length, 1, 'the frame before the hole lasts three frames');
  t.true(durations.every((d) => d === 1024 || d === 3072));
});

test('fMP4 G.711 → AAC (g711 "aac"): prepare places the G.711 on the 8 kHz output timeline, write muxes the frames given as an AAC track; an encoder failure makes a new init without audio', (t) => {
  const made = makeStream({ audio: 'g711a', gops: 3 });
  const conv = new PsLiveFmp4({ g711: 'aac' });
  const gops = readAll(new PsGopReader(), made.bytes);
  t.is(gops.length, 3);
  const frame = (at: number): { at: number; data: Buffer } => ({ at, data: Buffer.from([0x21, 0x10, 0x04, 0x60]) });

  const p0 = conv.prepare(gops[0]!)!;
  // G.711 PES every 1440 ticks (16 ms = 128 samples) from 1000 ticks before the first video DTS.
  t.is(p0.g711[0]!.at, Math.floor((440 * 8000) / 90_000), 'the first piece after the video starts, at 8 kHz');
  t.true(p0.g711.every((x, i) => x.data.length === 128 && (i === 0 || x.at - p0.g711[i - 1]!.at === 128)));
  t.is(conv.counters.droppedAudio, 0);
  const c0 = conv.write(p0, { frames: [frame(39), frame(39 + 1024)], failure: null });
  t.deepEqual(
    c0.map((c) => c.kind),
    ['init', 'fragment'],
  );
  const init = c0[0]!.kind === 'init' ? c0[0]!.info : null;
  t.is(init?.mimeType, 'video/mp4; codecs="avc1.64000d,mp4a.40.2"');
  t.like(
    init?.tracks.find((x) => x.kind === 'audio'),
    { timescale: 8000, sampleRate: 8000, channels: 1 },
  );
  t.like(conv.audio, { source: 'pcm_alaw', stored: 'aac' });
  const a0 = (c0[1] as Fragment).moof.tracks.find((x) => x.trackId === 2)!;
  t.is(a0.baseDecodeTime, 39n);
  t.deepEqual(a0.durations, [1024, 1024]);

  // The next GOP carries the frames made since, continuing the track.
  const p1 = conv.prepare(gops[1]!)!;
  t.is(p1.g711[0]!.at, p0.g711[p0.g711.length - 1]!.at + 128);
  const c1 = conv.write(p1, { frames: [frame(39 + 2048)], failure: null });
  t.deepEqual(
    c1.map((c) => c.kind),
    ['fragment'],
  );
  t.is((c1[0] as Fragment).moof.tracks.find((x) => x.trackId === 2)!.baseDecodeTime, 39n + 2048n);

  // The encoder failed: video only from here, saying why.
  const c2 = conv.write(conv.prepare(gops[2]!)!, { frames: [], failure: 'ffmpeg exited with code 1' });
  t.deepEqual(
    c2.map((c) => (c.kind === 'init' ? c.info.mimeType : 'frag')),
    ['video/mp4; codecs="avc1.64000d"', 'frag'],
  );
  t.is(conv.audio.stored, 'none');
  t.regex(conv.audio.reason!, /ffmpeg exited with code 1/);
  const frags = [c0[1], c1[0], c2[1]] as Fragment[];
  t.is(frags[2]!.moof.tracks[0]!.baseDecodeTime, BigInt(frags[0]!.durationTicks + frags[1]!.durationTicks), 'the video goes on');
});
