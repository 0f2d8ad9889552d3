import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Mp4FormatError } from '../../media/mp4/boxes.ts';
import { parseInit, type TrexDefaults } from '../../media/mp4/init-info.ts';
import { parseMoof, rewriteMoof } from '../../media/mp4/moof.ts';
import { box, decodeErrors, fullBox, probePackets, probeStart, rng, sharedInputs, tempDir, topBoxes, u32s } from './fixtures.ts';

const input = sharedInputs(test);

const trex = (id: number, d: Partial<TrexDefaults> = {}): [number, TrexDefaults] => [
  id,
  { sampleDescriptionIndex: 1, sampleDuration: 0, sampleSize: 0, sampleFlags: 0, ...d },
];

function errorCode(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    if (!(err instanceof Mp4FormatError)) throw err;
    return err.code;
  }
}

/** A hand-made moof exercising the defaults chain and every trun field. */
function craftedMoof(): Buffer {
  return box(
    'moof',
    fullBox('mfhd', 0, 0, u32s(42)),
    // Track 1: tfhd gives default duration 1000 and flags (non-sync); sizes per sample;
    // tfdt v0; trun v1 with signed composition offsets and first_sample_flags.
    box(
      'traf',
      fullBox('tfhd', 0, 0x020000 | 0x08 | 0x20, u32s(1, 1000, 0x01010000)),
      fullBox('tfdt', 0, 0, u32s(90000)),
      fullBox('trun', 1, 0x01 | 0x04 | 0x200 | 0x800, u32s(3, 200, 0x02000000, 500, 0, 120, -1000, 130, 2000)),
      // A second trun in the same traf: only durations, sizes from trex, flags from tfhd.
      fullBox('trun', 0, 0x100, u32s(2, 1500, 1600)),
    ),
    // Track 2: nothing in tfhd, so trex defaults; tfdt v1 with a 64-bit time.
    box('traf', fullBox('tfhd', 0, 0x020000, u32s(2)), fullBox('tfdt', 1, 0, u32s(0x1, 0x2)), fullBox('trun', 0, 0x01, u32s(2, 999))),
  );
}

test('parseMoof resolves trun, tfhd and trex defaults and reads tfdt v0/v1', (t) => {
  const moof = craftedMoof();
  const info = parseMoof(moof, new Map([trex(1, { sampleSize: 77 }), trex(2, { sampleDuration: 1024, sampleSize: 300, sampleFlags: 0x02000000 })]));
  t.is(info.sequence, 42);
  t.is(moof.readUInt32BE(info.sequenceOffset), 42);
  t.is(info.tracks.length, 2);
  const [a, b] = info.tracks;
  t.like(a, {
    trackId: 1,
    baseDecodeTime: 90000n,
    sampleCount: 5,
    durations: [1000, 1000, 1000, 1500, 1600],
    sizes: [500, 120, 130, 77, 77],
    flags: [0x02000000, 0x01010000, 0x01010000, 0x01010000, 0x01010000],
    compositionOffsets: [0, -1000, 2000, 0, 0],
    durationTicks: 6100,
    totalSize: 904,
    firstSampleSync: true,
    dataOffset: 200,
    tfdtVersion: 0,
  });
  t.like(b, {
    trackId: 2,
    baseDecodeTime: 0x1_0000_0002n,
    sampleCount: 2,
    durations: [1024, 1024],
    sizes: [300, 300],
    durationTicks: 2048,
    firstSampleSync: true,
    dataOffset: 999,
    tfdtVersion: 1,
  });
  // Without trex defaults, track 2's values are 0 and its first sample counts as sync (flags 0).
  const bare = parseMoof(moof, new Map());
  t.deepEqual(bare.tracks[1]!.durations, [0, 0]);
});

test('parseMoof on ffmpeg fragments: data offsets point into the mdat, tracks laid out in order', async (t) => {
  const bytes = await readFile(await input('avc.mp4'));
  const boxes = topBoxes(bytes);
  const init = parseInit(bytes);
  for (let i = 2; i < boxes.length - 1; i += 2) {
    const moofBox = boxes[i]!;
    t.is(moofBox.type, 'moof');
    const info = parseMoof(bytes.subarray(moofBox.offset, moofBox.offset + moofBox.size), init.trexDefaults);
    const [video, audio] = info.tracks;
    t.is(video!.trackId, 1);
    t.is(video!.dataOffset, moofBox.size + 8); // default-base-is-moof: right after the mdat header
    t.is(audio!.dataOffset, video!.dataOffset + video!.totalSize);
    t.is(boxes[i + 1]!.size, 8 + video!.totalSize + audio!.totalSize);
    t.true(video!.firstSampleSync);
    t.true(
      video!.flags.slice(1).every((f) => (f & 0x10000) !== 0),
      'the other video samples are non-sync',
    );
    // The moof may be given with its mdat: same result.
    t.deepEqual(parseMoof(bytes.subarray(moofBox.offset, moofBox.offset + moofBox.size + boxes[i + 1]!.size), init.trexDefaults), info);
  }
});

test('a fragment whose first sample is not sync is reported so', async (t) => {
  const bytes = await readFile(await input('avc.mp4'));
  const boxes = topBoxes(bytes);
  const init = parseInit(bytes);
  const moof = Buffer.from(bytes.subarray(boxes[2]!.offset, boxes[2]!.offset + boxes[2]!.size));
  const trun = moof.indexOf('trun');
  // ffmpeg's video trun has data_offset then first_sample_flags.
  t.is(moof.readUInt32BE(trun + 4) & 0x05, 0x05);
  moof.writeUInt32BE(0x01010000, trun + 16);
  t.false(parseMoof(moof, init.trexDefaults).tracks[0]!.firstSampleSync);
});

test('rewriteMoof patches sequence and tfdt in a copy', (t) => {
  const moof = craftedMoof();
  const before = Buffer.from(moof);
  const out = rewriteMoof(moof, {
    sequence: 7,
    baseDecodeTime: new Map([
      [1, 123456n],
      [2, 0x7_0000_0001n],
      [99, 5n],
    ]),
  });
  t.true(moof.equals(before), 'input untouched');
  t.is(out.length, moof.length);
  const info = parseMoof(out, new Map());
  t.is(info.sequence, 7);
  t.is(info.tracks[0]!.baseDecodeTime, 123456n);
  t.is(info.tracks[1]!.baseDecodeTime, 0x7_0000_0001n);
  // Only the patched bytes differ.
  const differing = [...out.keys()].filter((i) => out[i] !== moof[i]);
  const o = parseMoof(moof, new Map());
  const patched = new Set([...range(o.sequenceOffset, 4), ...range(o.tracks[0]!.tfdtValueOffset, 4), ...range(o.tracks[1]!.tfdtValueOffset, 8)]);
  t.true(differing.every((i) => patched.has(i)));
  // Passing parseMoof's info gives the same bytes.
  t.true(
    rewriteMoof(
      moof,
      {
        sequence: 7,
        baseDecodeTime: new Map([
          [1, 123456n],
          [2, 0x7_0000_0001n],
        ]),
      },
      o,
    ).equals(out),
  );
  // Only a sequence, or nothing.
  t.is(parseMoof(rewriteMoof(moof, { sequence: 0xffffffff }), new Map()).sequence, 0xffffffff);
  t.true(rewriteMoof(moof, {}).equals(moof));
});

test('rewriteMoof refuses values that do not fit', (t) => {
  const moof = craftedMoof();
  // Track 1 has a version-0 tfdt: 32 bits only.
  t.is(
    errorCode(() => rewriteMoof(moof, { baseDecodeTime: new Map([[1, 0x1_0000_0000n]]) })),
    'MP4_UNSUPPORTED',
  );
  t.is(
    errorCode(() => rewriteMoof(moof, { baseDecodeTime: new Map([[1, 0xffff_ffffn]]) })),
    'ok',
  );
  t.is(
    errorCode(() => rewriteMoof(moof, { baseDecodeTime: new Map([[2, 0x1_0000_0000_0000_0000n]]) })),
    'MP4_UNSUPPORTED',
  );
  t.is(
    errorCode(() => rewriteMoof(moof, { baseDecodeTime: new Map([[2, -1n]]) })),
    'MP4_UNSUPPORTED',
  );
  t.is(
    errorCode(() => rewriteMoof(moof, { sequence: -1 })),
    'MP4_UNSUPPORTED',
  );
  t.is(
    errorCode(() => rewriteMoof(moof, { sequence: 2 ** 32 })),
    'MP4_UNSUPPORTED',
  );
  t.is(
    errorCode(() => rewriteMoof(moof, { sequence: 1.5 })),
    'MP4_UNSUPPORTED',
  );
  // A traf without tfdt cannot take a time.
  const noTfdt = box('moof', fullBox('mfhd', 0, 0, u32s(1)), box('traf', fullBox('tfhd', 0, 0, u32s(3)), fullBox('trun', 0, 0, u32s(0))));
  t.is(
    errorCode(() => rewriteMoof(noTfdt, { baseDecodeTime: new Map([[3, 1n]]) })),
    'MP4_UNSUPPORTED',
  );
});

test('init + rewritten fragments play in ffprobe with the new start time', async (t) => {
  const dir = await tempDir(t);
  const src = await input('avc.mp4');
  const bytes = await readFile(src);
  const boxes = topBoxes(bytes);
  const init = parseInit(bytes);
  const ts = new Map(init.tracks.map((tr) => [tr.id, tr.timescale]));
  // Keep fragments 3..end (drop the first two GOPs) and move them to start at 100 s.
  const frags = [];
  for (let i = 2; i < boxes.length - 1; i += 2) frags.push({ moof: boxes[i]!, mdat: boxes[i + 1]! });
  const kept = frags.slice(2);
  const first = parseMoof(bytes.subarray(kept[0]!.moof.offset, kept[0]!.moof.offset + kept[0]!.moof.size), init.trexDefaults);
  const videoStart = Number(first.tracks[0]!.baseDecodeTime) / ts.get(1)!;
  const shiftSec = 100 - videoStart;
  const parts: Buffer[] = [bytes.subarray(0, boxes[2]!.offset)];
  let seq = 1;
  const expected = new Map<number, bigint>();
  for (const f of kept) {
    const moof = bytes.subarray(f.moof.offset, f.moof.offset + f.moof.size);
    const info = parseMoof(moof, init.trexDefaults);
    const times = new Map(info.tracks.map((tr) => [tr.trackId, tr.baseDecodeTime + BigInt(Math.round(shiftSec * ts.get(tr.trackId)!))]));
    for (const [id, v] of times) if (!expected.has(id)) expected.set(id, v);
    parts.push(rewriteMoof(moof, { sequence: seq++, baseDecodeTime: times }), bytes.subarray(f.mdat.offset, f.mdat.offset + f.mdat.size));
  }
  const out = join(dir, 'moved.mp4');
  await writeFile(out, Buffer.concat(parts));

  const packets = await probePackets(out);
  const video = packets.filter((p) => p.codecType === 'video');
  const audio = packets.filter((p) => p.codecType === 'audio');
  t.is(video[0]!.dts, Number(expected.get(1)));
  t.is(audio[0]!.dts, Number(expected.get(2)));
  t.true(video[0]!.keyframe);
  t.is(video.length, kept.length * 25);
  const { startSec, stderr } = await probeStart(out);
  t.is(stderr, '');
  // The earliest presentation time is at ~100 s (audio may start a little before video).
  const firstPts = Math.min(...video.map((p) => p.pts)) / ts.get(1)!;
  t.true(Math.abs(startSec - Math.min(firstPts, audio[0]!.pts / ts.get(2)!)) < 0.001, `start ${startSec}`);
  t.true(startSec > 99.9 && startSec < 100.2, `start ${startSec}`);
  t.is(await decodeErrors(out), '');
});

test('garbage moofs get Mp4FormatError with the right codes', (t) => {
  const moof = craftedMoof();
  t.is(
    errorCode(() => parseMoof(box('mdat', Buffer.alloc(8)), new Map())),
    'MP4_UNEXPECTED_BOX',
  );
  t.is(
    errorCode(() => parseMoof(moof.subarray(0, 40), new Map())),
    'MP4_TRUNCATED',
  );
  t.is(
    errorCode(() => parseMoof(Buffer.alloc(4), new Map())),
    'MP4_TRUNCATED',
  );
  t.is(
    errorCode(() => parseMoof(Buffer.from([0, 0, 0, 16, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]), new Map())),
    'MP4_BAD_BOX',
  );
  // trun claiming more samples than it holds.
  const greedy = box('moof', box('traf', fullBox('tfhd', 0, 0, u32s(1)), fullBox('trun', 0, 0x200, u32s(1000, 5))));
  t.is(
    errorCode(() => parseMoof(greedy, new Map())),
    'MP4_BAD_BOX',
  );
  // traf without tfhd; tfhd too short for its flags.
  t.is(
    errorCode(() => parseMoof(box('moof', box('traf', fullBox('trun', 0, 0, u32s(0)))), new Map())),
    'MP4_BAD_BOX',
  );
  t.is(
    errorCode(() => parseMoof(box('moof', box('traf', fullBox('tfhd', 0, 0x3b, u32s(1)))), new Map())),
    'MP4_BAD_BOX',
  );
  t.is(
    errorCode(() => rewriteMoof(box('mdat'), { sequence: 1 })),
    'MP4_UNEXPECTED_BOX',
  );
});

test('fuzzed moofs fail with Mp4FormatError, never another exception', async (t) => {
  const bytes = await readFile(await input('avc.mp4'));
  const boxes = topBoxes(bytes);
  const trexDefaults = parseInit(bytes).trexDefaults;
  const random = rng(9);
  let rejected = 0;
  for (let i = 0; i < 3000; i++) {
    const m = boxes[2 + 2 * Math.floor(random() * 3)]!;
    const bad = Buffer.from(bytes.subarray(m.offset, m.offset + m.size));
    for (let f = 0; f < 1 + Math.floor(random() * 3); f++) bad[Math.floor(random() * Math.min(bad.length, 120))] = Math.floor(random() * 256);
    for (const fn of [
      () => parseMoof(bad, trexDefaults),
      () =>
        rewriteMoof(bad, {
          sequence: 1,
          baseDecodeTime: new Map([
            [1, 5n],
            [2, 6n],
          ]),
        }),
    ]) {
      try {
        fn();
      } catch (err) {
        if (!(err instanceof Mp4FormatError)) return t.fail(`iteration ${i}: ${String(err)}`);
        rejected++;
      }
    }
  }
  t.log(`${rejected} of 6000 calls on fuzzed moofs rejected`);
  t.pass();
});

function range(start: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => start + i);
}
