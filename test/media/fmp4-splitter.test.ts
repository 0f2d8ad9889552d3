import test from 'ava';
import { readFile } from 'node:fs/promises';
import { Mp4FormatError } from '../../media/mp4/boxes.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { isSyncSample, type TrafInfo } from '../../media/mp4/moof.ts';
import { box, probePackets, rng, sharedInputs, split, topBoxes, u32s, type Packet } from './fixtures.ts';

const input = sharedInputs(test);
const avc = () => input('avc.mp4', { video: 'h264' });
const hevc = () => input('hevc.mp4', { video: 'h265' });
const videoOnly = () => input('video-only.mp4', { video: 'h264', audio: false, bframes: 0 });

type Fragment = Extract<Fmp4Chunk, { kind: 'fragment' }>;
const fragmentsOf = (chunks: Fmp4Chunk[]) => chunks.filter((c): c is Fragment => c.kind === 'fragment');

function comparable(chunks: Fmp4Chunk[]) {
  return chunks.map((c) =>
    c.kind === 'init'
      ? { kind: c.kind, bytes: c.bytes.toString('hex'), codecKey: c.info.codecKey, mimeType: c.info.mimeType }
      : {
          kind: c.kind,
          bytes: c.bytes.toString('hex'),
          moofSize: c.moofSize,
          moof: c.moof,
          durationTicks: c.durationTicks,
          timescale: c.timescale,
          keyframe: c.keyframe,
        },
  );
}

for (const [name, file] of [
  ['h264+aac', avc],
  ['h265+aac', hevc],
  ['h264 video only', videoOnly],
] as const) {
  test(`${name}: random small pieces give the same chunks as one write, and the bytes round-trip`, async (t) => {
    const bytes = await readFile(await file());
    const whole = await split(bytes);
    t.is(whole.error, null);
    t.is(whole.chunks[0]?.kind, 'init');
    t.true(fragmentsOf(whole.chunks).length >= 5);
    // Everything but the trailing mfra comes out, in order, byte for byte.
    const boxes = topBoxes(bytes);
    t.is(boxes.at(-1)?.type, 'mfra');
    t.true(Buffer.concat(whole.chunks.map((c) => c.bytes)).equals(bytes.subarray(0, boxes.at(-1)!.offset)));

    const expected = comparable(whole.chunks);
    const maxChunk = Math.max(...whole.chunks.map((c) => c.bytes.length));
    for (const seed of [1, 2, 3]) {
      const random = rng(seed);
      const pieces = await split(bytes, () => 1 + Math.floor(random() * 4096));
      t.is(pieces.error, null);
      t.deepEqual(comparable(pieces.chunks), expected, `seed ${seed}`);
      // Never holds more than the box being assembled plus the rest of one piece.
      t.true(pieces.maxBuffered <= maxChunk + 4096, `held ${pieces.maxBuffered} bytes, largest box ${maxChunk}`);
    }
    const tiny = await split(bytes, () => 1);
    t.deepEqual(comparable(tiny.chunks), expected, 'one byte at a time');
  });

  test(`${name}: fragments match ffprobe's packets (count, sizes, durations, timestamps, keyframes)`, async (t) => {
    const path = await file();
    const [{ chunks, error }, packets] = await Promise.all([readFile(path).then((b) => split(b)), probePackets(path)]);
    t.is(error, null);
    const init = chunks[0];
    if (init?.kind !== 'init') return t.fail('no init');
    const frags = fragmentsOf(chunks);
    const video = init.info.tracks.find((tr) => tr.kind === 'video')!;
    const audio = init.info.tracks.find((tr) => tr.kind === 'audio');
    t.is(init.info.videoTrackId, video.id);
    t.is(audio === undefined, name.includes('video only'));

    const videoPackets = packets.filter((p) => p.codecType === 'video');
    // One fragment per keyframe, each one GOP long, starting with its keyframe.
    t.is(frags.length, videoPackets.filter((p) => p.keyframe).length);
    t.true(frags.every((f) => f.keyframe));
    t.true(frags.every((f) => f.timescale === video.timescale));
    let k = 0;
    for (const f of frags) {
      const n = f.moof.tracks.find((tr) => tr.trackId === video.id)!.sampleCount;
      const gop = videoPackets.slice(k, k + n);
      t.true(gop[0]!.keyframe);
      t.false(gop.slice(1).some((p) => p.keyframe));
      t.is(
        f.durationTicks,
        gop.reduce((s, p) => s + p.duration, 0),
      );
      k += n;
    }
    t.is(k, videoPackets.length);

    for (const track of [video, audio]) {
      if (!track) continue;
      const trafs = frags.map((f) => f.moof.tracks.find((tr) => tr.trackId === track.id)).filter((x): x is TrafInfo => x !== undefined);
      const streamPackets = packets.filter((p) => p.codecType === track.kind);
      const ours = samplesOf(trafs);
      t.deepEqual(
        ours.map(({ pts, dts, size, keyframe }) => ({ pts, dts, size, keyframe })),
        streamPackets.map(({ pts, dts, size, keyframe }) => ({ pts, dts, size, keyframe })),
        `${track.kind} samples`,
      );
      // Durations too, except where ffprobe makes its own up: the first AAC packet
      // (N/A: priming) and the last packet of a stream (one frame's worth).
      const comparableDurations = (list: { duration: number }[]) => list.slice(0, -1).map((p, i) => (i === 0 && track.kind === 'audio' ? 0 : p.duration));
      t.deepEqual(comparableDurations(ours), comparableDurations(streamPackets), `${track.kind} durations`);
      // Fragments follow each other without holes: each tfdt is the previous one + its duration.
      for (let i = 1; i < trafs.length; i++) t.is(trafs[i]!.baseDecodeTime, trafs[i - 1]!.baseDecodeTime + BigInt(trafs[i - 1]!.durationTicks));
    }
    // Sequence numbers count up from 1.
    t.deepEqual(
      frags.map((f) => f.moof.sequence),
      frags.map((_, i) => i + 1),
    );
  });
}

function samplesOf(trafs: TrafInfo[]): Omit<Packet, 'streamIndex' | 'codecType'>[] {
  const out: Omit<Packet, 'streamIndex' | 'codecType'>[] = [];
  for (const tr of trafs) {
    let dts = Number(tr.baseDecodeTime);
    for (let i = 0; i < tr.sampleCount; i++) {
      out.push({ pts: dts + tr.compositionOffsets[i]!, dts, duration: tr.durations[i]!, size: tr.sizes[i]!, keyframe: isSyncSample(tr.flags[i]!) });
      dts += tr.durations[i]!;
    }
  }
  return out;
}

test('a new ftyp+moov mid-stream is emitted as a new init', async (t) => {
  const small = await readFile(await avc());
  const big = await readFile(await input('avc-640.mp4', { video: 'h264', size: '640x360', seconds: 3 }));
  const { chunks, error } = await split(Buffer.concat([small, big]), () => 1000);
  t.is(error, null);
  const inits = chunks.filter((c) => c.kind === 'init');
  t.is(inits.length, 2);
  t.not(inits[0]!.info.codecKey, inits[1]!.info.codecKey);
  t.is(inits[1]!.info.tracks[0]!.width, 640);
  // Fragments after the second init carry its timescale and belong to it.
  const second = chunks.indexOf(inits[1]!);
  t.true(second > 1 && second < chunks.length - 1);
  t.is(chunks.length, 2 + fragmentsOf((await split(small)).chunks).length + fragmentsOf((await split(big)).chunks).length);
});

test('skips styp, sidx, free, uuid and mfra boxes, without buffering them', async (t) => {
  const bytes = await readFile(await avc());
  const boxes = topBoxes(bytes);
  const plain = await split(bytes);
  const bigFree = box('free', Buffer.alloc(3 * 1024 * 1024));
  const parts: Buffer[] = [];
  for (const b of boxes) {
    const raw = bytes.subarray(b.offset, b.offset + b.size);
    if (b.type === 'moov') parts.push(box('free', Buffer.alloc(10)));
    if (b.type === 'moof') parts.push(box('styp', Buffer.from('msdh0000msdhmsix')), box('sidx', Buffer.alloc(24)), box('uuid', Buffer.alloc(20)));
    parts.push(raw);
    if (b.type === 'mdat') parts.push(bigFree);
  }
  const padded = Buffer.concat(parts);
  const maxFragment = Math.max(...fragmentsOf(plain.chunks).map((f) => f.bytes.length));
  const out = await split(padded, () => 64 * 1024);
  t.is(out.error, null);
  t.deepEqual(comparable(out.chunks), comparable(plain.chunks));
  t.true(out.maxBuffered <= maxFragment + 64 * 1024, `held ${out.maxBuffered}`);
  t.true(out.maxBuffered < bigFree.length);
});

async function expectError(t: import('ava').ExecutionContext, stream: Buffer, code: Mp4FormatError['code'], pieces?: () => number) {
  const out = await split(stream, pieces);
  t.true(out.error instanceof Mp4FormatError, `expected Mp4FormatError ${code}, got ${String(out.error)}`);
  t.is((out.error as Mp4FormatError).code, code, out.error?.message);
  return out;
}

test('garbage gets typed errors with the right codes', async (t) => {
  const bytes = await readFile(await avc());
  const boxes = topBoxes(bytes);
  const initEnd = boxes[2]!.offset;
  const init = bytes.subarray(0, initEnd);
  const moof = boxes[2]!;
  const mdat = boxes[3]!;
  const fragment = bytes.subarray(moof.offset, mdat.offset + mdat.size);

  // A box type that is not 4 printable characters; the init before it still comes out.
  const bad = await expectError(t, Buffer.concat([init, Buffer.from([0, 0, 0, 16, 0x6d, 0x00, 0xff, 0x66]), Buffer.alloc(8)]), 'MP4_BAD_BOX');
  t.is(bad.chunks.length, 1);
  t.is(bad.chunks[0]!.kind, 'init');
  await expectError(t, Buffer.from('this is not an mp4 stream at all, just text'), 'MP4_BAD_BOX');
  // size < 8
  await expectError(t, Buffer.concat([init, u32s(4), Buffer.from('moof'), Buffer.alloc(32)]), 'MP4_BAD_BOX');
  // A largesize smaller than its 16-byte header.
  await expectError(t, Buffer.concat([init, u32s(1), Buffer.from('moof'), u32s(0, 12), Buffer.alloc(32)]), 'MP4_BAD_BOX');
  // Absurd sizes: 300 MiB, and a 64-bit size of 1 TiB.
  await expectError(t, Buffer.concat([init, u32s(300 * 1024 * 1024), Buffer.from('moof'), Buffer.alloc(64)]), 'MP4_BAD_BOX');
  await expectError(t, Buffer.concat([init, u32s(1), Buffer.from('mdat'), u32s(256, 0), Buffer.alloc(64)]), 'MP4_BAD_BOX');
  // A moof followed by something else than its mdat.
  await expectError(
    t,
    Buffer.concat([
      init,
      bytes.subarray(moof.offset, moof.offset + moof.size),
      box('free', Buffer.alloc(8)),
      bytes.subarray(mdat.offset, mdat.offset + mdat.size),
    ]),
    'MP4_UNEXPECTED_BOX',
  );
  // An mdat without a moof.
  await expectError(t, Buffer.concat([init, bytes.subarray(mdat.offset, mdat.offset + mdat.size)]), 'MP4_UNEXPECTED_BOX');
  // A fragment before any init; a moov without ftyp.
  await expectError(t, fragment, 'MP4_NO_INIT');
  await expectError(t, bytes.subarray(boxes[1]!.offset), 'MP4_NO_INIT');
  // size 0 ("to the end") cannot be cut from a pipe.
  await expectError(t, Buffer.concat([init, u32s(0), Buffer.from('moof'), Buffer.alloc(64)]), 'MP4_UNSUPPORTED');
  // An init whose moov is garbage inside.
  const brokenMoov = Buffer.from(init);
  brokenMoov.write('\u0001\u0002\u0003\u0004', boxes[1]!.offset + 12, 'latin1');
  await expectError(t, brokenMoov, 'MP4_BAD_BOX');
});

test('a stream that stops mid-box is MP4_TRUNCATED at the end, after the complete fragments', async (t) => {
  const bytes = await readFile(await avc());
  const boxes = topBoxes(bytes);
  const thirdMdat = boxes.filter((b) => b.type === 'mdat')[2]!;
  // Cut in the middle of the third mdat (mid-GOP): init + 2 fragments, then the error.
  const midGop = await expectError(t, bytes.subarray(0, thirdMdat.offset + thirdMdat.size / 2), 'MP4_TRUNCATED', () => 777);
  t.deepEqual(
    midGop.chunks.map((c) => c.kind),
    ['init', 'fragment', 'fragment'],
  );
  // Cut inside a box header, inside a moof, and between a moof and its mdat.
  await expectError(t, bytes.subarray(0, thirdMdat.offset + 3), 'MP4_TRUNCATED');
  await expectError(t, bytes.subarray(0, boxes[2]!.offset + 20), 'MP4_TRUNCATED');
  await expectError(t, bytes.subarray(0, boxes[3]!.offset), 'MP4_TRUNCATED');
  // A stream ending exactly after a fragment is clean.
  const clean = await split(bytes.subarray(0, thirdMdat.offset + thirdMdat.size));
  t.is(clean.error, null);
  t.is(clean.chunks.length, 4);
});

test('an absurd size is refused as soon as its header arrives, not after buffering', async (t) => {
  const bytes = await readFile(await avc());
  const init = bytes.subarray(0, topBoxes(bytes)[2]!.offset);
  const splitter = new Fmp4Splitter();
  const errors: Error[] = [];
  splitter.on('error', (e) => errors.push(e));
  splitter.resume();
  splitter.write(init);
  splitter.write(Buffer.concat([u32s(0x7fffffff), Buffer.from('mdat')]));
  await new Promise((r) => setImmediate(r));
  t.is(errors.length, 1);
  t.is((errors[0] as Mp4FormatError).code, 'MP4_BAD_BOX');
});
