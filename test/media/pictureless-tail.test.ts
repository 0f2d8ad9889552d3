/**
 * A camera's connection dropping between a frame's delimiter and its slices: ffmpeg
 * flushes the delimiter alone as the last sample of its last fragment, and every
 * decoder then fails on it ("missing picture in access unit"). Seen in CI through the
 * back-fill test's TCP cut, reproduced by cutting ffmpeg's RTSP input at random (about
 * one cut in twelve). The splitter drops such samples, keeping the timeline.
 */
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { sliceSamples, writeFragment } from '../../media/mp4/fragment-rewrite.ts';
import { holdsPicture } from '../../media/mp4/pictureless-tail.ts';
import type { NalFormat } from '../../media/mp4/init-info.ts';
import { decodeErrors } from '../helpers/media.ts';
import { sharedInputs, split, tempDir } from './fixtures.ts';

const input = sharedInputs(test);
type Fragment = Extract<Fmp4Chunk, { kind: 'fragment' }>;
type Init = Extract<Fmp4Chunk, { kind: 'init' }>;

/** An access unit delimiter alone, length-prefixed (4 bytes), as ffmpeg writes the stub. */
const STUB = {
  h264: Buffer.from([0, 0, 0, 2, 0x09, 0xf0]),
  // H.265 AUD: NAL type 35 (header 0x46 0x01), pic_type + trailing bits.
  h265: Buffer.from([0, 0, 0, 3, 0x46, 0x01, 0x50]),
};

/** The fragment with `extra` appended to its video track as one more sample of `duration`. */
function withStub(frag: Fragment, videoId: number, extra: Buffer, duration: number): Buffer {
  const tracks = frag.moof.tracks.map((t) => {
    const samples = sliceSamples(frag.bytes, t);
    if (t.trackId !== videoId) return { ...t, samples };
    return {
      trackId: t.trackId,
      baseDecodeTime: t.baseDecodeTime,
      durations: [...t.durations, duration],
      flags: [...t.flags, t.flags.at(-1)!],
      compositionOffsets: [...t.compositionOffsets, t.compositionOffsets.at(-1)!],
      samples: [...samples, extra],
    };
  });
  return Buffer.from(writeFragment(frag.moof.sequence, tracks));
}

for (const codec of ['h264', 'h265'] as const) {
  test(`${codec}: a last sample holding only a delimiter is dropped, its time given to the frame before; the file decodes clean`, async (t) => {
    const dir = await tempDir(t);
    const source = await split(await readFile(await input(`${codec}.mp4`, { video: codec, seconds: 4, gop: 25 })));
    t.is(source.error, null);
    const init = source.chunks.find((c): c is Init => c.kind === 'init')!;
    const videoId = init.info.videoTrackId!;
    const frags = source.chunks.filter((c): c is Fragment => c.kind === 'fragment');
    const last = frags.at(-1)!;
    const stubbed = withStub(last, videoId, STUB[codec], 3000);

    const broken = Buffer.concat([init.bytes, ...frags.slice(0, -1).map((f) => f.bytes), stubbed]);
    const brokenFile = join(dir, 'broken.mp4');
    await writeFile(brokenFile, broken);
    // ffmpeg's H.264 decoder fails on the stub; its HEVC decoder passes an empty access
    // unit silently, but that is still a sample with no picture to show.
    if (codec === 'h264') t.regex(await decodeErrors(brokenFile), /missing picture|no frame/, 'the stub is what decoders fail on');

    const mended = await split(broken);
    t.is(mended.error, null);
    const out = mended.chunks.filter((c): c is Fragment => c.kind === 'fragment');
    t.is(out.length, frags.length);
    for (let i = 0; i < frags.length - 1; i++) t.true(out[i]!.bytes.equals(frags[i]!.bytes), `fragment ${i} is untouched`);
    const before = last.moof.tracks.find((x) => x.trackId === videoId)!;
    const after = out.at(-1)!.moof.tracks.find((x) => x.trackId === videoId)!;
    t.is(after.sampleCount, before.sampleCount, 'only the stub went');
    t.is(after.durationTicks, before.durationTicks + 3000, 'the stub’s duration stays in the timeline');
    t.deepEqual(sliceSamples(out.at(-1)!.bytes, after), sliceSamples(last.bytes, before), 'the frames are byte for byte');
    for (const other of last.moof.tracks.filter((x) => x.trackId !== videoId)) {
      const o = out.at(-1)!.moof.tracks.find((x) => x.trackId === other.trackId)!;
      t.deepEqual(sliceSamples(out.at(-1)!.bytes, o), sliceSamples(last.bytes, other), 'audio is kept as it was');
    }

    const mendedFile = join(dir, 'mended.mp4');
    await writeFile(mendedFile, Buffer.concat([init.bytes, ...out.map((f) => f.bytes)]));
    t.is(await decodeErrors(mendedFile), '');
  });
}

test('holdsPicture: a slice anywhere is a picture; delimiter, SEI and parameter sets alone are not; lengths that do not add up are not judged', (t) => {
  const h264: NalFormat = { codec: 'h264', lengthSize: 4 };
  const nal = (...bytes: number[]): Buffer => Buffer.concat([Buffer.from([0, 0, 0, bytes.length]), Buffer.from(bytes)]);
  t.false(holdsPicture(STUB.h264, h264));
  t.false(holdsPicture(Buffer.concat([nal(0x09, 0xf0), nal(0x06, 0x05, 0x01, 0x80), nal(0x67, 0x42), nal(0x68, 0xce)]), h264));
  t.true(holdsPicture(Buffer.concat([nal(0x09, 0xf0), nal(0x41, 0x9a, 0x00)]), h264), 'a P slice');
  t.true(holdsPicture(Buffer.concat([nal(0x09, 0xf0), nal(0x65, 0x88, 0x80)]), h264), 'an IDR slice');
  t.true(holdsPicture(Buffer.from([0, 0, 0, 9, 0x09, 0xf0]), h264), 'a length past the end');
  t.false(holdsPicture(STUB.h265, { codec: 'h265', lengthSize: 4 }));
  t.true(holdsPicture(Buffer.concat([STUB.h265, nal(0x02, 0x01, 0xd0)]), { codec: 'h265', lengthSize: 4 }), 'an H.265 TRAIL_R slice');
});

test('a fragment whose only video is a stub: dropped when it holds nothing else, kept whole when it carries audio', async (t) => {
  const source = await split(await readFile(await input('h264.mp4', { video: 'h264', seconds: 4, gop: 25 })));
  const init = source.chunks.find((c): c is Init => c.kind === 'init')!;
  const videoId = init.info.videoTrackId!;
  const frags = source.chunks.filter((c): c is Fragment => c.kind === 'fragment');
  const last = frags.at(-1)!;
  const stubOnly = (withAudio: boolean): Buffer =>
    Buffer.from(
      writeFragment(
        last.moof.sequence + 1,
        last.moof.tracks
          .filter((x) => withAudio || x.trackId === videoId)
          .map((x) =>
            x.trackId === videoId
              ? {
                  trackId: x.trackId,
                  baseDecodeTime: x.baseDecodeTime + BigInt(x.durationTicks),
                  durations: [3000],
                  flags: [x.flags.at(-1)!],
                  compositionOffsets: [0],
                  samples: [STUB.h264],
                }
              : { ...x, baseDecodeTime: x.baseDecodeTime + BigInt(x.durationTicks), samples: sliceSamples(last.bytes, x) },
          ),
      ),
    );
  t.true(
    init.info.tracks.some((x) => x.kind === 'audio'),
    'the clip has audio',
  );
  const withAudio = await split(Buffer.concat([init.bytes, ...frags.map((f) => f.bytes), stubOnly(true)]));
  const outA = withAudio.chunks.filter((c): c is Fragment => c.kind === 'fragment');
  t.is(outA.length, frags.length + 1, 'the fragment with audio stays');
  t.true(outA.at(-1)!.bytes.equals(stubOnly(true)), 'as it was');
  const alone = await split(Buffer.concat([init.bytes, ...frags.map((f) => f.bytes), stubOnly(false)]));
  t.is(alone.chunks.filter((c) => c.kind === 'fragment').length, frags.length, 'a stub alone is dropped');
});
