/**
 * The MPEG-PS layer on real encoder output: our writer's files read by ffprobe/ffmpeg
 * with the right codecs, frame counts and identical decoded pictures; our reader on
 * our files and on ffmpeg's `-f vob` / `-f mpeg`; PS → fMP4 back; bad input skipped
 * with counters.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { joinLengthPrefixed, sampleToAnnexB, splitAnnexB, splitLengthPrefixed } from '../../media/codec/annexb.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { MediaFormatError } from '../../media/media-error.ts';
import { FragmentToPs, describePs, psGopToFmp4 } from '../../media/ps/ps-convert.ts';
import { demuxPs } from '../../media/ps/ps-demux.ts';
import { MAX_PES_PAYLOAD, STREAM_TYPE, muxGop } from '../../media/ps/ps-mux.ts';
import { tempDir } from '../helpers/recorder.ts';

const run = promisify(execFile);

async function ffmpeg(args: string[]): Promise<void> {
  await run('ffmpeg', ['-v', 'error', '-y', ...args]);
}

async function chunksOf(file: string): Promise<{ init: Buffer; frags: Extract<Fmp4Chunk, { kind: 'fragment' }>[] }> {
  const out: Fmp4Chunk[] = [];
  for await (const c of Readable.from([await readFile(file)]).pipe(new Fmp4Splitter())) out.push(c as Fmp4Chunk);
  const init = out[0];
  if (init?.kind !== 'init') throw new Error('no init');
  return { init: init.bytes, frags: out.filter((c): c is Extract<Fmp4Chunk, { kind: 'fragment' }> => c.kind === 'fragment') };
}

/** Per video frame, the md5 of the decoded picture (framemd5 without timestamps). */
async function pictures(file: string): Promise<string[]> {
  const { stdout } = await run('ffmpeg', ['-v', 'error', '-i', file, '-map', '0:v', '-f', 'framemd5', '-'], { maxBuffer: 64 << 20 });
  return stdout
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(',').pop()!.trim());
}

async function probe(file: string): Promise<{ codec_name: string; nb_read_packets: string; width?: number }[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-count_packets', '-show_entries', 'stream=codec_name,nb_read_packets,width', '-of', 'json', file]);
  return (JSON.parse(stdout) as { streams: { codec_name: string; nb_read_packets: string; width?: number }[] }).streams;
}

for (const [codec, lib, psType, ffName] of [
  ['H.264', 'libx264', STREAM_TYPE.H264, 'h264'],
  ['H.265', 'libx265', STREAM_TYPE.H265, 'hevc'],
] as const) {
  test(`${codec}+AAC fMP4 → PS: ffprobe sees ${ffName}+aac, same frame count and pictures; every GOP starts with pack header and PSM; PS → fMP4 gives the pictures back`, async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src.mp4');
    // B-frames on, so composition offsets and DTS ≠ PTS are exercised.
    await ffmpeg([
      '-f',
      'lavfi',
      '-i',
      'testsrc=size=160x120:rate=25',
      '-f',
      'lavfi',
      '-i',
      'sine=f=440:r=48000',
      '-t',
      '4',
      '-c:v',
      lib,
      '-g',
      '25',
      '-bf',
      '2',
      '-pix_fmt',
      'yuv420p',
      '-c:a',
      'aac',
      '-ac',
      '1',
      '-f',
      'mp4',
      '-movflags',
      'frag_keyframe+empty_moov+default_base_moof',
      src,
    ]);
    const { init, frags } = await chunksOf(src);
    const conv = new FragmentToPs(init);
    const gops = frags.map((f) => conv.convert(f).bytes);
    const psFile = join(dir, 'out.ps');
    await writeFile(psFile, Buffer.concat(gops));

    const srcProbe = await probe(src);
    const psProbe = await probe(psFile);
    t.deepEqual(
      psProbe.map((s) => s.codec_name),
      [ffName, 'aac'],
    );
    t.is(psProbe[0]!.nb_read_packets, srcProbe[0]!.nb_read_packets, 'video frames');
    t.is(psProbe[1]!.nb_read_packets, srcProbe[1]!.nb_read_packets, 'audio frames');
    const want = await pictures(src);
    t.is(want.length, 100);
    t.deepEqual(await pictures(psFile), want);

    for (const g of gops) {
      const d = demuxPs(g);
      t.true(d.startsWithPack && d.psmFirst);
      t.deepEqual([...d.psm.entries()].sort(), [
        [0xc0, STREAM_TYPE.AAC],
        [0xe0, psType],
      ]);
      t.is(d.gopInfos[0]?.gopBytes, g.length);
      t.true(d.tracks.find((x) => x.streamId === 0xe0)!.samples[0]!.keyframe);
    }
    const all = demuxPs(Buffer.concat(gops));
    t.deepEqual(all.counters, { resyncBytes: 0, unknownStreamPackets: 0, truncatedPackets: 0, untimedUnits: 0, badAudioBytes: 0 });
    const video = all.tracks.find((x) => x.streamId === 0xe0)!;
    t.is(video.samples.length, 100);
    t.is(video.samples.filter((s) => s.keyframe).length, frags.length);
    t.true(
      video.samples.some((s) => s.pts !== s.dts),
      'B-frames keep PTS ≠ DTS',
    );

    // Back to fMP4, GOP by GOP, as the playback paths do.
    const desc = describePs(demuxPs(gops[0]!));
    t.is(desc.info.tracks.length, 2);
    t.is(desc.info.tracks[0]!.width, 160);
    const back = join(dir, 'back.mp4');
    await writeFile(back, Buffer.concat([desc.init, ...gops.map((g, i) => psGopToFmp4(g, desc.tracks, i + 1).fragment)]));
    const backProbe = await probe(back);
    t.deepEqual(
      backProbe.map((s) => s.codec_name),
      [ffName, 'aac'],
    );
    t.is(backProbe[1]!.nb_read_packets, srcProbe[1]!.nb_read_packets);
    t.deepEqual(await pictures(back), want);
  });
}

for (const [fmt, lib] of [
  ['vob', 'libx264'],
  ['mpeg', 'libx265'],
] as const) {
  test(`reads ffmpeg's -f ${fmt} (${lib}, no PSM, small frames packed together): every frame, keyframes, timestamps`, async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, `x.${fmt}`);
    await ffmpeg(['-f', 'lavfi', '-i', 'testsrc=size=160x120:rate=25', '-t', '3', '-c:v', lib, '-g', '25', '-pix_fmt', 'yuv420p', '-f', fmt, file]);
    const d = demuxPs(await readFile(file));
    const [p] = await probe(file);
    t.is(d.tracks.length, 1);
    const v = d.tracks[0]!;
    t.is(v.codec, lib === 'libx264' ? 'h264' : 'h265');
    t.is(v.samples.length, Number(p!.nb_read_packets));
    t.is(v.samples.filter((s) => s.keyframe).length, 3);
    t.true(v.samples[0]!.keyframe);
    t.is(d.counters.truncatedPackets, 0);
    // Units packed several to a PES carry no timestamp of their own: placed after the previous.
    for (let i = 1; i < v.samples.length; i++) t.true(v.samples[i]!.dts > v.samples[i - 1]!.dts);
    const desc = describePs(d);
    t.is(desc.info.tracks[0]!.width, 160);
    t.is(desc.info.tracks[0]!.height, 120);
  });
}

test('a frame bigger than one PES is split across PES packets and read back whole; G.711A (0x90) round-trips', (t) => {
  const sps = Buffer.from('6764000bacd94284', 'hex');
  const big = Buffer.alloc(3 * MAX_PES_PAYLOAD + 123, 0x5a);
  big[0] = 0x65; // IDR slice NAL header
  big[1] = 0x88; // first_mb_in_slice = 0
  const au = Buffer.concat([Buffer.from([0, 0, 0, 1]), sps, Buffer.from([0, 0, 0, 1, 0x68, 0xee, 0x3c, 0x80, 0, 0, 0, 1]), big]);
  const alaw = Buffer.alloc(320, 0xd5);
  const { bytes, info } = muxGop({
    streams: [
      { streamId: 0xe0, streamType: STREAM_TYPE.H264 },
      { streamId: 0xc0, streamType: STREAM_TYPE.G711A },
    ],
    units: [
      { streamId: 0xe0, pts: 2n ** 33n + 3600n, dts: 2n ** 33n, data: au },
      { streamId: 0xc0, pts: 2n ** 33n, dts: 2n ** 33n, data: alaw },
    ],
    duration90k: 3600,
  });
  t.is(info.gopBytes, bytes.length);
  t.is(info.firstDts, 2n ** 33n, 'the GOP info keeps the unwrapped time');
  let pes = 0;
  for (let p = bytes.indexOf(Buffer.from([0, 0, 1, 0xe0])); p >= 0; p = bytes.indexOf(Buffer.from([0, 0, 1, 0xe0]), p + 4)) pes++;
  t.is(pes, 4);
  const d = demuxPs(bytes);
  const v = d.tracks.find((x) => x.codec === 'h264')!;
  t.is(v.samples.length, 1);
  t.true(v.samples[0]!.data.equals(au));
  t.true(v.samples[0]!.keyframe);
  t.is(v.samples[0]!.pts - v.samples[0]!.dts, 3600n, 'written modulo 2^33, PTS-DTS kept');
  const a = d.tracks.find((x) => x.codec === 'g711a')!;
  t.is(a.streamType, 0x90);
  t.true(a.samples[0]!.data.equals(alaw));
});

test('bad input: garbage, unknown stream types and a cut PES are skipped with counters; what is whole is kept', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.mp4');
  await ffmpeg([
    '-f',
    'lavfi',
    '-i',
    'testsrc=size=160x120:rate=25',
    '-t',
    '3',
    '-c:v',
    'libx264',
    '-g',
    '25',
    '-pix_fmt',
    'yuv420p',
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    src,
  ]);
  const { init, frags } = await chunksOf(src);
  const conv = new FragmentToPs(init);
  const gops = frags.map((f) => conv.convert(f).bytes);
  const whole = Buffer.concat(gops);

  // Garbage in front and between GOPs: resynchronised at the next pack header.
  const noisy = Buffer.concat([Buffer.from('garbage!'), gops[0]!, Buffer.alloc(100, 7), gops[1]!, gops[2]!]);
  const n = demuxPs(noisy);
  t.is(n.counters.resyncBytes, 108);
  t.is(n.tracks[0]!.samples.length, 75);
  t.false(n.startsWithPack);

  // A PES of a stream type nobody knows (0x99 on 0xC0) and a private stream 1 packet.
  const unknown = muxGop({
    streams: [
      { streamId: 0xe0, streamType: STREAM_TYPE.H264 },
      { streamId: 0xc0, streamType: 0x99 },
    ],
    units: [
      { streamId: 0xe0, pts: 0n, dts: 0n, data: demuxPs(gops[0]!).tracks[0]!.samples[0]!.data },
      { streamId: 0xc0, pts: 0n, dts: 0n, data: Buffer.alloc(50, 1) },
    ],
    duration90k: 3600,
  }).bytes;
  const u = demuxPs(unknown);
  t.is(u.counters.unknownStreamPackets, 1);
  t.is(u.tracks.length, 1);
  t.is(u.tracks[0]!.samples.length, 1);

  // Cut in the middle of the last GOP (a crash mid-write): earlier GOPs whole, counter set.
  const cut = whole.subarray(0, whole.length - Math.floor(gops[2]!.length / 2));
  const c = demuxPs(cut);
  t.is(c.counters.truncatedPackets, 1);
  t.true(c.validBytes < cut.length && c.validBytes > gops[0]!.length + gops[1]!.length);
  t.is(c.gopInfos.length, 3);
  t.true(c.gopInfos[2]!.offset + c.gopInfos[2]!.gopBytes > cut.length, 'the GOP info shows the last GOP incomplete');
  t.true(c.tracks[0]!.samples.length >= 50);

  // Nothing a program stream: no crash, nothing found.
  const none = demuxPs(Buffer.from('not a program stream at all'));
  t.is(none.tracks.length, 0);
  t.is(none.counters.resyncBytes, 27);
});

test('Annex B: parameter sets go in front of a keyframe without in-band SPS, not twice; bad NAL lengths are typed errors', (t) => {
  const params = { codec: 'h264' as const, vps: [], sps: [Buffer.from('6764000bacd94284', 'hex')], pps: [Buffer.from('68ee3c80', 'hex')] };
  const idr = Buffer.from('658800aabb', 'hex');
  const aud = Buffer.from('09f0', 'hex');
  const sample = joinLengthPrefixed([aud, idr]);
  const nals = splitAnnexB(sampleToAnnexB(sample, 4, true, params));
  t.deepEqual(
    nals.map((n) => n.toString('hex')),
    ['09f0', '6764000bacd94284', '68ee3c80', '658800aabb'],
  );
  const withSps = joinLengthPrefixed([params.sps[0]!, params.pps[0]!, idr]);
  t.is(splitAnnexB(sampleToAnnexB(withSps, 4, true, params)).length, 3);
  t.is(splitAnnexB(sampleToAnnexB(joinLengthPrefixed([Buffer.from('41e0', 'hex')]), 4, false, params)).length, 1);
  const bad = Buffer.from([0, 0, 0, 9, 0x65, 1]);
  const err = t.throws(() => splitLengthPrefixed(bad, 4));
  t.true(err instanceof MediaFormatError && err.code === 'NAL_BAD_LENGTH');
});
