/**
 * Our MP4 byte handling on real ffmpeg output: the stream splitter, init and moof
 * parsing, moof patching, file scanning after a crash, and virtual range bodies.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { parseInit } from '../../media/mp4/init-info.ts';
import { parseMoof, rewriteMoof } from '../../media/mp4/moof.ts';
import { scanFmp4File } from '../../media/mp4/fmp4-file.ts';
import { planFmp4Range } from '../../playback/fmp4-range.ts';
import { Mp4FormatError } from '../../media/mp4/boxes.ts';
import { decodeErrors, ffprobe } from '../helpers/media.ts';
import { tempDir } from '../helpers/recorder.ts';

const run = promisify(execFile);

async function encode(
  dir: string,
  name: string,
  opts: { codec?: 'libx264' | 'libx265'; size?: string; seconds?: number; audio?: boolean } = {},
): Promise<string> {
  const file = join(dir, name);
  const args = ['-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc=size=${opts.size ?? '160x120'}:rate=25`];
  if (opts.audio !== false) args.push('-f', 'lavfi', '-i', 'sine=f=440:sample_rate=48000');
  args.push('-t', String(opts.seconds ?? 5), '-c:v', opts.codec ?? 'libx264', '-g', '25', '-pix_fmt', 'yuv420p');
  if (opts.codec === 'libx265') args.push('-x265-params', 'log-level=error');
  else args.push('-bf', '2');
  if (opts.audio !== false) args.push('-c:a', 'aac');
  args.push('-f', 'mp4', '-movflags', 'frag_keyframe+empty_moov+default_base_moof', file);
  await run('ffmpeg', args);
  return file;
}

async function split(bytes: Buffer, chunkSizes: () => number): Promise<Fmp4Chunk[]> {
  const parts: Buffer[] = [];
  for (let p = 0; p < bytes.length;) {
    const n = Math.min(chunkSizes(), bytes.length - p);
    parts.push(bytes.subarray(p, p + n));
    p += n;
  }
  const out: Fmp4Chunk[] = [];
  for await (const c of Readable.from(parts).pipe(new Fmp4Splitter())) out.push(c as Fmp4Chunk);
  return out;
}

test('the splitter yields the same init and one fragment per GOP whatever the chunking', async (t) => {
  const dir = await tempDir(t);
  const bytes = await readFile(await encode(dir, 'a.mp4'));
  const whole = await split(bytes, () => bytes.length);
  let seed = 7;
  const random = await split(bytes, () => 1 + ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % 4096));
  t.is(whole.length, random.length);
  whole.forEach((c, i) => t.true(c.bytes.equals(random[i]!.bytes)));
  const [init, ...frags] = whole;
  t.is(init!.kind, 'init');
  t.is(frags.length, 5, 'five 1 s GOPs');
  let seconds = 0;
  for (const f of frags) {
    if (f.kind !== 'fragment') return t.fail();
    t.true(f.keyframe);
    t.is(f.bytes.toString('latin1', 4, 8), 'moof');
    t.is(f.bytes.toString('latin1', f.moofSize + 4, f.moofSize + 8), 'mdat');
    t.is(f.moof.tracks.length, 2, 'video and audio track fragments');
    seconds += f.durationTicks / f.timescale;
  }
  t.true(Math.abs(seconds - 5) < 0.05, `${seconds}`);
  // Every byte except ffmpeg's trailing mfra is in a chunk.
  t.is(
    whole.reduce((n, c) => n + c.bytes.length, 0),
    bytes.length - bytes.readUInt32BE(bytes.length - 4),
  );
});

test('init parsing gives codec strings, sizes and a codecKey that ignores everything but the codec config', async (t) => {
  const dir = await tempDir(t);
  const [a, b, c, h] = await Promise.all([
    encode(dir, 'a.mp4'),
    encode(dir, 'b.mp4', { seconds: 2 }),
    encode(dir, 'c.mp4', { size: '176x144' }),
    encode(dir, 'h.mp4', { codec: 'libx265', audio: false, seconds: 2 }),
  ]);
  const info = async (f: string) => {
    const s = await scanFmp4File(f);
    return s.info;
  };
  const [ia, ib, ic, ih] = await Promise.all([info(a), info(b), info(c), info(h)]);
  t.regex(ia.mimeType, /^video\/mp4; codecs="avc1\.[0-9a-f]{6},mp4a\.40\.2"$/);
  t.deepEqual(
    ia.tracks.map((x) => x.kind),
    ['video', 'audio'],
  );
  t.is(ia.tracks[0]!.width, 160);
  t.is(ia.tracks[1]!.sampleRate, 48000);
  t.is(ia.codecKey, ib.codecKey, 'same settings, other length');
  t.not(ia.codecKey, ic.codecKey, 'other resolution');
  t.regex(ih.tracks[0]!.codec, /^(hev1|hvc1)\./);
  t.is(ih.videoTrackId, ih.tracks[0]!.id);
});

test('rewriteMoof patches decode times and sequence in a copy; ffprobe sees the new start', async (t) => {
  const dir = await tempDir(t);
  const file = await encode(dir, 'a.mp4', { audio: false });
  const scan = await scanFmp4File(file);
  const bytes = await readFile(file);
  const ts = BigInt(scan.info.tracks[0]!.timescale);
  const parts: Buffer[] = [scan.init];
  for (const f of scan.fragments) {
    const moof = bytes.subarray(f.offset, f.offset + f.moofSize);
    const patched = rewriteMoof(moof, { sequence: 1000, baseDecodeTime: new Map([[1, f.moof.tracks[0]!.baseDecodeTime + 100n * ts]]) });
    t.is(patched.length, moof.length);
    t.is(bytes.readUInt32BE(f.offset + 20), f.moof.sequence, 'original untouched');
    const re = parseMoof(patched, scan.info.trexDefaults);
    t.is(re.sequence, 1000);
    t.is(re.tracks[0]!.baseDecodeTime, f.moof.tracks[0]!.baseDecodeTime + 100n * ts);
    parts.push(patched, bytes.subarray(f.offset + f.moofSize, f.offset + f.size));
  }
  const out = join(dir, 'shifted.mp4');
  await writeFile(out, Buffer.concat(parts));
  const p = await ffprobe(out);
  t.true(Math.abs(p.startSec - 100) < 0.1, `start ${p.startSec}`);
});

test('a file cut inside its last fragment scans as partial; truncating to validBytes leaves a clean file', async (t) => {
  const dir = await tempDir(t);
  const file = await encode(dir, 'a.mp4');
  const full = await scanFmp4File(file);
  t.is(full.trailing, 'mfra');
  const last = full.fragments[full.fragments.length - 1]!;
  await truncate(file, last.offset + last.moofSize + 100); // inside the last mdat
  const cut = await scanFmp4File(file);
  t.is(cut.trailing, 'partial');
  t.is(cut.fragments.length, full.fragments.length - 1);
  t.is(cut.validBytes, last.offset);
  await truncate(file, cut.validBytes);
  t.is(await decodeErrors(file), '');
  const again = await scanFmp4File(file);
  t.is(again.trailing, 'none');
  await truncate(file, 20); // not even an init
  await t.throwsAsync(scanFmp4File(file), { instanceOf: Mp4FormatError, message: /ftyp|moov/ });
});

test('garbage, an mdat without moof and a stream cut mid-box are typed errors', async (t) => {
  const dir = await tempDir(t);
  const bytes = await readFile(await encode(dir, 'a.mp4', { seconds: 2 }));
  const code = async (input: Buffer): Promise<string | undefined> => {
    try {
      await split(input, () => 1000);
    } catch (err) {
      return (err as Mp4FormatError).code;
    }
    return undefined;
  };
  t.is(await code(Buffer.from('\x00\x00\x00\x10\x01\x02\x03\x04garbage!', 'latin1')), 'MP4_BAD_BOX');
  t.is(await code(Buffer.from('\x00\x00\x00\x04moof', 'latin1')), 'MP4_BAD_BOX', 'size below header');
  t.is(await code(Buffer.from('\x00\x00\x00\x10mdat\x00\x00\x00\x00\x00\x00\x00\x00', 'latin1')), 'MP4_UNEXPECTED_BOX');
  t.is(await code(bytes.subarray(0, bytes.length - 5000)), 'MP4_TRUNCATED');
  t.is(await code(Buffer.from('\x7f\xff\xff\xffmoof', 'latin1')), 'MP4_BAD_BOX', 'absurd size');
  t.throws(() => parseInit(Buffer.from('\x00\x00\x00\x08free', 'latin1')), { instanceOf: Mp4FormatError });
});

test('a virtual range over two recordings plays as one continuous MP4 and any byte range of it is the same bytes', async (t) => {
  const dir = await tempDir(t);
  const [a, b] = await Promise.all([encode(dir, 'a.mp4', { seconds: 3 }), encode(dir, 'b.mp4', { seconds: 3 })]);
  const slices = await Promise.all(
    [a, b].map(async (path) => {
      const s = await scanFmp4File(path);
      return { path, initSize: s.initSize, fragments: s.fragments.map((f) => ({ offset: f.offset, size: f.size })) };
    }),
  );
  const body = await planFmp4Range(slices);
  const chunks: Buffer[] = [];
  for await (const c of body.stream()) chunks.push(c as Buffer);
  const all = Buffer.concat(chunks);
  t.is(all.length, body.contentLength);
  const out = join(dir, 'joined.mp4');
  await writeFile(out, all);
  const p = await ffprobe(out);
  // AAC frames overhang the video a little; the second recording starts after the longest track.
  t.true(Math.abs(p.durationSec - 6) < 0.25, `duration ${p.durationSec}`);
  t.true(p.startSec < 0.05);
  t.is(await decodeErrors(out), '');
  for (const [s, e] of [
    [0, 10],
    [100, 5000],
    [body.contentLength - 7, body.contentLength - 1],
    [1234, body.contentLength - 1],
  ] as const) {
    const part: Buffer[] = [];
    for await (const c of body.stream(s, e)) part.push(c as Buffer);
    t.true(Buffer.concat(part).equals(all.subarray(s, e + 1)), `${s}-${e}`);
  }
  const again = await planFmp4Range(slices);
  t.is(again.etag, body.etag);
});
