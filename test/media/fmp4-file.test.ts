import test from 'ava';
import { open, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Mp4FormatError } from '../../media/mp4/boxes.ts';
import { scanFmp4File } from '../../media/mp4/fmp4-file.ts';
import type { Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { box, decodeErrors, probePackets, sharedInputs, split, tempDir, topBoxes } from './fixtures.ts';

const input = sharedInputs(test);
const avc = () => input('avc.mp4', { video: 'h264' });

type Fragment = Extract<Fmp4Chunk, { kind: 'fragment' }>;

/** A segment file as our writer makes it: init, then fragments verbatim (no mfra). */
async function segmentFile(dir: string, name: string, src: string): Promise<{ path: string; chunks: Fmp4Chunk[] }> {
  const { chunks, error } = await split(await readFile(src));
  if (error) throw error;
  const path = join(dir, name);
  await writeFile(path, Buffer.concat(chunks.map((c) => c.bytes)));
  return { path, chunks };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (!(err instanceof Mp4FormatError)) throw err;
    return err.code;
  }
}

test('a segment file: init and every fragment, as the splitter saw them', async (t) => {
  const dir = await tempDir(t);
  const { path, chunks } = await segmentFile(dir, 'seg.mp4', await avc());
  const scan = await scanFmp4File(path);
  const init = chunks[0]!;
  const frags = chunks.slice(1) as Fragment[];
  t.is(scan.initSize, init.bytes.length);
  t.true(scan.init.equals(init.bytes));
  t.deepEqual(scan.info, init.kind === 'init' ? init.info : undefined);
  t.is(scan.fragments.length, frags.length);
  let offset = scan.initSize;
  scan.fragments.forEach((f, i) => {
    const c = frags[i]!;
    t.deepEqual(f, { offset, size: c.bytes.length, moofSize: c.moofSize, moof: c.moof, durationTicks: c.durationTicks, keyframe: c.keyframe });
    offset += f.size;
  });
  t.is(scan.trailing, 'none');
  t.is(scan.validBytes, scan.fileBytes);
  t.is(scan.fileBytes, offset);
});

test('ffmpeg output with its trailing mfra', async (t) => {
  const src = await avc();
  const boxes = topBoxes(await readFile(src));
  const scan = await scanFmp4File(src);
  t.is(scan.trailing, 'mfra');
  t.is(scan.fragments.length, (boxes.length - 3) / 2);
  t.is(scan.validBytes, boxes.at(-1)!.offset, 'valid bytes end with the last fragment');
  t.is(scan.fileBytes, boxes.at(-1)!.offset + boxes.at(-1)!.size);
});

test('cut in the middle of the last mdat: partial, valid up to the previous fragment; truncated there it plays cleanly', async (t) => {
  const dir = await tempDir(t);
  const { path } = await segmentFile(dir, 'cut.mp4', await avc());
  const whole = await scanFmp4File(path);
  const last = whole.fragments.at(-1)!;
  await truncate(path, last.offset + last.moofSize + Math.floor((last.size - last.moofSize) / 2));
  const scan = await scanFmp4File(path);
  t.is(scan.trailing, 'partial');
  t.is(scan.fragments.length, whole.fragments.length - 1);
  t.is(scan.validBytes, last.offset);
  t.true(scan.validBytes < scan.fileBytes);
  t.truthy(scan.partialReason);

  await truncate(path, scan.validBytes);
  t.is(await decodeErrors(path), '');
  const packets = await probePackets(path);
  const samples = scan.fragments.reduce((n, f) => n + f.moof.tracks.reduce((m, tr) => m + tr.sampleCount, 0), 0);
  t.is(packets.length, samples);
  const again = await scanFmp4File(path);
  t.is(again.trailing, 'none');
  t.is(again.validBytes, again.fileBytes);
  t.deepEqual(again.fragments, scan.fragments);
});

test('other partial tails: cut header, cut moof, moof without mdat, garbage appended', async (t) => {
  const dir = await tempDir(t);
  const { path } = await segmentFile(dir, 'base.mp4', await avc());
  const bytes = await readFile(path);
  const whole = await scanFmp4File(path);
  const third = whole.fragments[2]!;
  const cases: [string, Buffer, number][] = [
    ['3 bytes of a header', bytes.subarray(0, third.offset + 3), third.offset],
    ['moof cut', bytes.subarray(0, third.offset + 40), third.offset],
    ['moof without its mdat', bytes.subarray(0, third.offset + third.moofSize), third.offset],
    ['moof and a cut mdat header', bytes.subarray(0, third.offset + third.moofSize + 5), third.offset],
    ['garbage after the fragments', Buffer.concat([bytes, Buffer.from('\u0000\u0000\u0000\u0010\u0001\u0002\u0003\u0004garbage!')]), bytes.length],
    ['a box running past the end', Buffer.concat([bytes, box('moof', Buffer.alloc(100)).subarray(0, 50)]), bytes.length],
    ['an mdat without moof', Buffer.concat([bytes, box('mdat', Buffer.alloc(10))]), bytes.length],
  ];
  for (const [name, content, valid] of cases) {
    const file = join(dir, 'case.mp4');
    await writeFile(file, content);
    const scan = await scanFmp4File(file);
    t.is(scan.trailing, 'partial', name);
    t.is(scan.validBytes, valid, name);
    t.is(scan.fileBytes, content.length, name);
  }
  // A free box after the fragments is no damage.
  const file = join(dir, 'free.mp4');
  await writeFile(file, Buffer.concat([bytes, box('free', Buffer.alloc(100))]));
  const freed = await scanFmp4File(file);
  t.is(freed.trailing, 'none');
  t.is(freed.validBytes, bytes.length);
});

test('an init-only file and files without an init', async (t) => {
  const dir = await tempDir(t);
  const { path, chunks } = await segmentFile(dir, 'base.mp4', await avc());
  const bytes = await readFile(path);
  const initOnly = join(dir, 'init.mp4');
  await writeFile(initOnly, chunks[0]!.bytes);
  const scan = await scanFmp4File(initOnly);
  t.deepEqual([scan.fragments.length, scan.validBytes, scan.fileBytes, scan.trailing], [0, chunks[0]!.bytes.length, chunks[0]!.bytes.length, 'none']);

  const write = async (name: string, content: Buffer) => {
    const file = join(dir, name);
    await writeFile(file, content);
    return file;
  };
  // A file that ends inside its init is "cut" (a crash before the header was synced),
  // told apart from one that is not an MP4 at all.
  t.is(await codeOf(scanFmp4File(await write('empty.mp4', Buffer.alloc(0)))), 'MP4_TRUNCATED');
  t.is(await codeOf(scanFmp4File(await write('seven.mp4', bytes.subarray(0, 7)))), 'MP4_TRUNCATED');
  t.is(await codeOf(scanFmp4File(await write('text.mp4', Buffer.from('hello, this is not a video file at all')))), 'MP4_NO_INIT');
  t.is(await codeOf(scanFmp4File(await write('frags.mp4', bytes.subarray(chunks[0]!.bytes.length)))), 'MP4_NO_INIT');
  t.is(await codeOf(scanFmp4File(await write('cut-ftyp.mp4', bytes.subarray(0, topBoxes(bytes)[0]!.size - 2)))), 'MP4_TRUNCATED');
  t.is(await codeOf(scanFmp4File(await write('cut-init.mp4', bytes.subarray(0, chunks[0]!.bytes.length - 10)))), 'MP4_TRUNCATED');
  t.is(await codeOf(scanFmp4File(await write('ftyp-only.mp4', bytes.subarray(0, topBoxes(bytes)[0]!.size)))), 'MP4_TRUNCATED');
  t.is(
    await codeOf(
      scanFmp4File(await write('ftyp-garbage.mp4', Buffer.concat([bytes.subarray(0, topBoxes(bytes)[0]!.size), Buffer.from('garbage, not a box')]))),
    ),
    'MP4_NO_INIT',
  );
  const brokenMoov = Buffer.from(bytes);
  brokenMoov.write('\u0001\u0002\u0003\u0004', topBoxes(bytes)[1]!.offset + 12, 'latin1');
  t.is(await codeOf(scanFmp4File(await write('bad-moov.mp4', brokenMoov))), 'MP4_NO_INIT');
});

// Serial: the FileHandle.read spy must see only this test's reads.
test.serial('reads headers and moofs only, never mdat payloads', async (t) => {
  const dir = await tempDir(t);
  const src = await input('big.mp4', { video: 'h264', size: '640x360', seconds: 4, bitrate: '2M', noise: true });
  const { path } = await segmentFile(dir, 'seg.mp4', src);
  // Count the bytes asked of FileHandle.read while scanning.
  const probe = await open(path, 'r');
  const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
  await probe.close();
  const original = proto.read;
  let requested = 0;
  proto.read = function (this: unknown, ...args: unknown[]) {
    if (typeof args[2] === 'number') requested += args[2];
    return original.apply(this, args);
  };
  let scan;
  try {
    scan = await scanFmp4File(path);
  } finally {
    proto.read = original;
  }
  const headerBytes = scan.initSize + scan.fragments.reduce((n, f) => n + f.moofSize + 32, 0) + 32;
  t.true(requested >= scan.initSize, `the spy saw ${requested} bytes`);
  t.true(requested <= headerBytes, `read ${requested} bytes, headers are ${headerBytes}`);
  t.true(requested < scan.fileBytes / 20, `read ${requested} of ${scan.fileBytes} bytes`);
});
