import test from 'ava';
import { readFile } from 'node:fs/promises';
import { Mp4FormatError, childBoxes, findBox, readBoxHeader } from '../../media/mp4/boxes.ts';
import { parseInit } from '../../media/mp4/init-info.ts';
import { box, rng, sharedInputs, topBoxes, u32s } from './fixtures.ts';

const input = sharedInputs(test);

async function initOf(path: string): Promise<Buffer> {
  const bytes = await readFile(path);
  const moov = topBoxes(bytes).find((b) => b.type === 'moov')!;
  return bytes.subarray(0, moov.offset + moov.size);
}

test('H.264 + AAC: tracks, codec strings and MIME type', async (t) => {
  const info = parseInit(await initOf(await input('avc.mp4', { video: 'h264' })));
  t.is(info.tracks.length, 2);
  const [video, audio] = info.tracks;
  t.like(video, { id: 1, kind: 'video', timescale: 12800, width: 320, height: 240 });
  t.regex(video!.codec, /^avc1\.64[0-9a-f]{4}$/); // High profile (x264 default for yuv420p)
  t.like(audio, { id: 2, kind: 'audio', timescale: 48000, codec: 'mp4a.40.2', sampleRate: 48000, channels: 1 }); // mono sine
  t.is(info.videoTrackId, 1);
  t.is(info.mimeType, `video/mp4; codecs="${video!.codec},mp4a.40.2"`);
  t.regex(info.codecKey, /^[0-9a-f]{40}$/);
  t.deepEqual([...info.trexDefaults.keys()], [1, 2]);
  t.is(info.trexDefaults.get(1)!.sampleDescriptionIndex, 1);
});

test('H.265: hev1 by default, hvc1 when tagged; one codecKey (the same parameter sets: interchangeable)', async (t) => {
  const hev1 = parseInit(await initOf(await input('hev1.mp4', { video: 'h265', seconds: 2 })));
  const hvc1 = parseInit(await initOf(await input('hvc1.mp4', { video: 'h265-hvc1', seconds: 2 })));
  t.regex(hev1.tracks[0]!.codec, /^hev1\.1\.6\.L\d+\.[0-9A-F]+(\.[0-9A-F]+)*$/);
  t.regex(hvc1.tracks[0]!.codec, /^hvc1\.1\.6\.L\d+\.[0-9A-F]+(\.[0-9A-F]+)*$/);
  t.like(hev1.tracks[0], { kind: 'video', width: 320, height: 240 });
  t.is(hev1.tracks[1]!.codec, 'mp4a.40.2');
  t.is(hev1.mimeType, `video/mp4; codecs="${hev1.tracks[0]!.codec},mp4a.40.2"`);
  t.is(hev1.codecKey, hvc1.codecKey);
  t.not(hev1.mimeType, hvc1.mimeType);
});

test('video only and audio only inits', async (t) => {
  const v = parseInit(await initOf(await input('video.mp4', { video: 'h264', audio: false, seconds: 2 })));
  t.is(v.tracks.length, 1);
  t.is(v.mimeType, `video/mp4; codecs="${v.tracks[0]!.codec}"`);
  const a = parseInit(await initOf(await input('audio.mp4', { video: 'none', audio: true, seconds: 2 })));
  t.is(a.videoTrackId, null);
  t.is(a.mimeType, 'audio/mp4; codecs="mp4a.40.2"');
  t.is(a.tracks[0]!.kind, 'audio');
});

test('codecKey: equal for two encodes with the same settings, different when the config differs', async (t) => {
  const a = await initOf(await input('a.mp4', { video: 'h264', seconds: 2, creationTime: '2024-01-01T00:00:00Z' }));
  const b = await initOf(await input('b.mp4', { video: 'h264', seconds: 3, creationTime: '2025-06-30T12:34:56Z' }));
  t.false(a.equals(b), 'the inits differ in bytes (creation times)');
  t.is(parseInit(a).codecKey, parseInit(b).codecKey);
  const bigger = await initOf(await input('c.mp4', { video: 'h264', seconds: 2, size: '640x480' }));
  t.not(parseInit(bigger).codecKey, parseInit(a).codecKey);
  const noAudio = await initOf(await input('d.mp4', { video: 'h264', seconds: 2, audio: false }));
  t.not(parseInit(noAudio).codecKey, parseInit(a).codecKey);
  // The init may be followed by fragments in the same buffer: same answer.
  const whole = await readFile(await input('a.mp4'));
  t.deepEqual(parseInit(whole), parseInit(a));
});

test('box reader: headers, largesize, size 0, paths', async (t) => {
  const init = await initOf(await input('avc.mp4', { video: 'h264' }));
  t.deepEqual(
    childBoxes(init).map((b) => b.type),
    ['ftyp', 'moov'],
  );
  const mdhd = findBox(init, 'moov/trak/mdia/mdhd');
  t.is(mdhd?.type, 'mdhd');
  t.is(init.toString('latin1', mdhd!.offset + 4, mdhd!.offset + 8), 'mdhd');
  t.is(findBox(init, 'moov/trak/nope'), undefined);
  // 64-bit largesize and size 0 (to the end of the data).
  const large = Buffer.concat([u32s(1), Buffer.from('free'), u32s(0, 24), Buffer.alloc(8)]);
  t.deepEqual(readBoxHeader(large, 0), { type: 'free', size: 24, headerSize: 16 });
  t.is(readBoxHeader(large.subarray(0, 12), 0), null, 'largesize not there yet');
  const toEnd = Buffer.concat([u32s(0), Buffer.from('mdat'), Buffer.alloc(100)]);
  t.deepEqual(readBoxHeader(toEnd, 0), { type: 'mdat', size: 108, headerSize: 8 });
  t.is(readBoxHeader(Buffer.alloc(7), 0), null);
  t.throws(() => readBoxHeader(Buffer.concat([u32s(7), Buffer.from('free')]), 0), { instanceOf: Mp4FormatError, code: 'MP4_BAD_BOX' } as never);
  t.throws(() => childBoxes(Buffer.concat([box('free', Buffer.alloc(4)), u32s(100), Buffer.from('free')])), { code: 'MP4_TRUNCATED' } as never);
});

test('garbage gets Mp4FormatError with the right codes', async (t) => {
  const init = await initOf(await input('avc.mp4', { video: 'h264' }));
  const boxes = topBoxes(init);
  const code = (buf: Buffer) => {
    try {
      parseInit(buf);
      return 'ok';
    } catch (err) {
      if (!(err instanceof Mp4FormatError)) throw err;
      return err.code;
    }
  };
  t.is(code(Buffer.alloc(0)), 'MP4_NO_INIT');
  t.is(code(Buffer.from('<html><body>404 not found</body></html>')), 'MP4_NO_INIT');
  t.is(code(Buffer.from([0, 0, 0, 24, 0x66, 0x74, 0x79, 0x00, 1, 2, 3, 4])), 'MP4_BAD_BOX');
  t.is(code(init.subarray(0, boxes[0]!.size)), 'MP4_NO_INIT', 'ftyp alone');
  t.is(code(init.subarray(boxes[1]!.offset)), 'MP4_NO_INIT', 'moov without ftyp');
  t.is(code(init.subarray(0, init.length - 100)), 'MP4_TRUNCATED', 'moov cut short');
  t.is(code(Buffer.concat([init.subarray(0, boxes[0]!.size), box('moov', box('mvhd', Buffer.alloc(100)))])), 'MP4_NO_INIT', 'moov without tracks');
  // A trak missing its stsd.
  const stsd = findBox(init, 'moov/trak/mdia/minf/stbl/stsd')!;
  const renamed = Buffer.from(init);
  renamed.write('xxxx', stsd.offset + 4, 'latin1');
  t.is(code(renamed), 'MP4_NO_INIT');
});

test('fuzzed inits fail with Mp4FormatError, never another exception', async (t) => {
  const init = await initOf(await input('avc.mp4', { video: 'h264' }));
  const random = rng(42);
  let failed = 0;
  for (let i = 0; i < 1000; i++) {
    const bad = Buffer.from(init);
    const flips = 1 + Math.floor(random() * 4);
    for (let f = 0; f < flips; f++) bad[Math.floor(random() * bad.length)] = Math.floor(random() * 256);
    try {
      parseInit(bad);
    } catch (err) {
      if (!(err instanceof Mp4FormatError)) return t.fail(`iteration ${i}: ${String(err)}`);
      failed++;
    }
  }
  t.log(`${failed} of 1000 fuzzed inits rejected, the rest still parsed`);
  t.pass();
});
