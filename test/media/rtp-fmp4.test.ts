/**
 * The native ingest's media half (media/rtp/): real ffmpeg sends real clips as RTP
 * (its RTP muxer: FU-A / H.265 FU, aggregation packets for parameter sets, RFC 3640
 * AAC), and RtpFmp4 must give back an fMP4 whose every frame is ffmpeg's, in the same
 * order, with the same presentation times (B-frames included), which decodes without
 * an error, with the AAC track. Then what a camera's network does: a packet lost in the
 * middle of a frame, RTP timestamps that wrap, parameter sets only in the SDP or
 * not at all. Pure parts: AAC AU headers (several AUs, a fragmented AU), fmtp values.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RtpFmp4 } from '../../media/rtp/rtp-fmp4.ts';
import { AacDepacketizer } from '../../media/rtp/aac-depacketizer.ts';
import { audioConfig, parseFmtp, videoConfig } from '../../media/rtp/rtp-config.ts';
import { readRtp, type RtpPacket } from '../../media/rtp/rtp-packet.ts';
import { readSenderReport, type SenderReport } from '../../media/rtp/rtcp.ts';
import { parseSdpTracks } from '../../rtsp/sdp-tracks.ts';
import { MediaFormatError } from '../../media/media-error.ts';
import type { Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { decodeErrors, probePackets, sharedInputs, tempDir } from './fixtures.ts';

const run = promisify(execFile);
const input = sharedInputs(test);

interface Capture {
  sdp: string;
  video: RtpPacket[];
  audio: RtpPacket[];
  /** RTCP sender reports as they came, with how many RTP packets of their track had come before. */
  reports: { track: 'video' | 'audio'; after: number; report: SenderReport }[];
}

/** RTP on an even loopback port and RTCP on the next, as an RTSP client's pair. */
async function bindUdp(): Promise<{ socket: Socket; rtcp: Socket; port: number }> {
  const bind = (s: Socket, port: number): Promise<boolean> =>
    new Promise((resolve) => {
      s.once('error', () => resolve(false));
      s.bind(port, '127.0.0.1', () => resolve(true));
    });
  for (;;) {
    const socket = createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
    await bind(socket, 0);
    const port = socket.address().port;
    const rtcp = createSocket('udp4');
    if (port % 2 === 0 && (await bind(rtcp, port + 1))) return { socket, rtcp, port };
    socket.close();
    rtcp.close();
  }
}

/** ffmpeg sends `file`'s video (and audio) as RTP to loopback ports; every packet, in arrival order. */
async function capture(file: string, dir: string, withAudio: boolean): Promise<Capture> {
  const v = await bindUdp();
  const a = withAudio ? await bindUdp() : null;
  const got: Capture = { sdp: '', video: [], audio: [], reports: [] };
  v.socket.on('message', (m) => got.video.push(readRtp(m)!));
  a?.socket.on('message', (m) => got.audio.push(readRtp(m)!));
  const onReport = (track: 'video' | 'audio') => (m: Buffer) => {
    const report = readSenderReport(m);
    if (report) got.reports.push({ track, after: track === 'video' ? got.video.length : got.audio.length, report });
  };
  v.rtcp.on('message', onReport('video'));
  a?.rtcp.on('message', onReport('audio'));
  const sdpFile = join(dir, 'stream.sdp');
  try {
    await run('ffmpeg', [
      '-v',
      'error',
      '-readrate',
      '4',
      '-i',
      file,
      '-map',
      '0:v',
      '-c',
      'copy',
      '-f',
      'rtp',
      `rtp://127.0.0.1:${v.port}`,
      ...(a ? ['-map', '0:a', '-c', 'copy', '-f', 'rtp', `rtp://127.0.0.1:${a.port}`] : []),
      '-sdp_file',
      sdpFile,
    ]);
    // Loopback datagrams sent before ffmpeg exited are queued: one turn of the loop reads them.
    await new Promise((r) => setImmediate(r));
    got.sdp = await readFile(sdpFile, 'utf8');
  } finally {
    for (const s of [v.socket, v.rtcp, ...(a ? [a.socket, a.rtcp] : [])]) s.close();
  }
  return got;
}

function muxer(sdp: string): RtpFmp4 {
  const tracks = parseSdpTracks(sdp, 'rtsp://x/');
  const v = tracks.find((t) => t.media === 'video')!;
  const a = tracks.find((t) => t.media === 'audio');
  return new RtpFmp4(videoConfig(v.encoding, v.clockRate, parseFmtp(v.fmtp)), a ? audioConfig(a.encoding, a.clockRate, parseFmtp(a.fmtp)) : null);
}

/** Feeds the packets in an order close to arrival (audio between video, sender reports where they came), returns the file's bytes. */
function remux(m: RtpFmp4, c: Capture, tweak: (p: RtpPacket, i: number) => RtpPacket | null = (p) => p): { bytes: Buffer; chunks: Fmp4Chunk[] } {
  const chunks: Fmp4Chunk[] = [];
  let ai = 0;
  let expect = -1;
  const reports = [...c.reports];
  const anchor = (): void => {
    while (reports[0] && reports[0].after <= (reports[0].track === 'video' ? vi : ai)) {
      const r = reports.shift()!;
      m.anchor(r.track, r.report.rtpTimestamp, r.report.ntpMs);
    }
  };
  let vi = 0;
  c.video.forEach((orig, i) => {
    vi = i;
    anchor();
    while (ai < c.audio.length && ai * c.video.length < i * c.audio.length) {
      const p = c.audio[ai++]!;
      anchor();
      m.audio(p.payload, p.timestamp, p.marker, false);
    }
    const p = tweak(orig, i);
    if (!p) return;
    const gap = expect >= 0 && p.seq !== expect;
    expect = (p.seq + 1) & 0xffff;
    chunks.push(...m.video(p.payload, p.timestamp, p.marker, gap));
  });
  for (; ai < c.audio.length; ai++) m.audio(c.audio[ai]!.payload, c.audio[ai]!.timestamp, c.audio[ai]!.marker, false);
  chunks.push(...m.end());
  const init = chunks.find((x) => x.kind === 'init')!;
  return { bytes: Buffer.concat([init.bytes, ...chunks.filter((x) => x.kind === 'fragment').map((x) => x.bytes)]), chunks };
}

/** Presentation times in decode order, in frames from the first (the files' timescales differ). */
function inFrames(ps: { pts: number }[]): number[] {
  const sorted = ps.map((p) => p.pts).sort((a, b) => a - b);
  const frame = sorted[1]! - sorted[0]!;
  return ps.map((p) => (p.pts - ps[0]!.pts) / frame);
}

function consecutive(ps: RtpPacket[]): boolean {
  return ps.every((p, i) => i === 0 || p.seq === ((ps[i - 1]!.seq + 1) & 0xffff));
}

for (const codec of ['h264', 'h265'] as const) {
  test(`${codec} with B-frames and AAC through ffmpeg's RTP: every frame, same order and times, decodes clean`, async (t) => {
    const dir = await tempDir(t);
    const src = await input(`${codec}.mp4`, { video: codec, seconds: 4, gop: 25, bframes: 2 });
    const c = await capture(src, dir, true);
    t.true(consecutive(c.video) && consecutive(c.audio), 'loopback lost nothing');
    const m = muxer(c.sdp);
    t.true(m.hasAudio);
    const { bytes, chunks } = remux(m, c);
    const out = join(dir, 'out.mp4');
    await writeFile(out, bytes);
    t.is(await decodeErrors(out), '');
    const want = (await probePackets(src)).filter((p) => p.codecType === 'video');
    const got = (await probePackets(out)).filter((p) => p.codecType === 'video');
    t.is(got.length, want.length, 'every frame');
    // Presentation order in decode order (B-frames), relative to the first frame.
    t.deepEqual(inFrames(got), inFrames(want));
    t.true(
      got.some((p, i) => i > 0 && p.pts < got[i - 1]!.pts),
      'B-frames: presentation order differs from decode order',
    );
    t.true(
      got.every((p, i) => i === 0 || p.dts > got[i - 1]!.dts),
      'decode times increase',
    );
    t.true(
      got.every((p) => p.dts <= p.pts),
      'no frame decoded after it is shown',
    );
    // Same frames: non-keyframes byte for byte in size; keyframes carry the parameter sets in band.
    want.forEach((w, i) => {
      if (!w.keyframe) t.is(got[i]!.size, w.size, `frame ${i}`);
      else t.true(got[i]!.keyframe && got[i]!.size > w.size, `keyframe ${i} with its parameter sets`);
    });
    const fragments = chunks.filter((x) => x.kind === 'fragment');
    t.is(fragments.length, 4, 'one fragment per GOP');
    t.is(chunks.filter((x) => x.kind === 'init').length, 1);
    const audio = (await probePackets(out)).filter((p) => p.codecType === 'audio');
    const srcAudio = (await probePackets(src)).filter((p) => p.codecType === 'audio');
    // ffmpeg stamps its first sender reports when it sends them, not at the media time
    // they name (here up to ~250 ms apart between the tracks), so audio placed by them may
    // start a few frames late or early: nearly all of it, not every frame.
    t.true(audio.length >= 0.9 * srcAudio.length, `${audio.length} of ${srcAudio.length} AAC frames`);
    t.is(m.counters.droppedNals + m.counters.damagedUnits + m.counters.skippedGops, 0);
  });
}

test('a packet lost inside a frame drops that NAL unit, marks the frame, and the stream goes on; timestamps that wrap at 2^32 do not show', async (t) => {
  const dir = await tempDir(t);
  const src = await input('h264.mp4', { video: 'h264', seconds: 4, gop: 25, bframes: 2 });
  const c = await capture(src, dir, false);
  // Two-thirds of the way in, a packet of a frame made of fragments (FU-A, type 28) is lost.
  const lostAt = c.video.findIndex((p, i) => i > (2 * c.video.length) / 3 && (p.payload[0]! & 0x1f) === 28 && (p.payload[1]! & 0xc0) === 0);
  t.true(lostAt > 0, 'a middle fragment to lose');
  // Timestamps moved so that they wrap 1 s in.
  const wrapBy = (2 ** 32 - 90_000 - c.video[0]!.timestamp) >>> 0;
  const m = muxer(c.sdp);
  const { bytes } = remux(m, c, (p, i) => (i === lostAt ? null : { ...p, timestamp: (p.timestamp + wrapBy) >>> 0 }));
  t.is(m.counters.droppedNals, 1);
  t.is(m.counters.damagedUnits, 1);
  const out = join(dir, 'lossy.mp4');
  await writeFile(out, bytes);
  const got = (await probePackets(out)).filter((p) => p.codecType === 'video');
  const want = (await probePackets(src)).filter((p) => p.codecType === 'video');
  // The clip's frames are one slice each: the frame that lost a piece of its slice is gone.
  const lostFrame = [...new Set(c.video.map((p) => p.timestamp))].indexOf(c.video[lostAt]!.timestamp);
  want.splice(lostFrame, 1);
  t.is(got.length, want.length, 'every other frame');
  t.deepEqual(inFrames(got), inFrames(want), 'times run on across the wrap');
});

test('parameter sets only in the SDP are put in front of each keyframe; none anywhere: GOPs are dropped and counted, nothing is made', async (t) => {
  const dir = await tempDir(t);
  const src = await input('h264-nob.mp4', { video: 'h264', seconds: 2, gop: 25, bframes: 0, audio: false });
  const c = await capture(src, dir, false);
  const sdpOnly = muxer(c.sdp);
  const { bytes } = remux(sdpOnly, c);
  const out = join(dir, 'sdp-params.mp4');
  await writeFile(out, bytes);
  t.is(await decodeErrors(out), '');
  t.is(sdpOnly.counters.gops, 2);
  const none = new RtpFmp4({ codec: 'h264', clockRate: 90000, params: { codec: 'h264', vps: [], sps: [], pps: [] } }, null);
  const made: Fmp4Chunk[] = [];
  for (const p of c.video) made.push(...none.video(p.payload, p.timestamp, p.marker, false));
  made.push(...none.end());
  t.deepEqual(made, []);
  t.is(none.counters.skippedGops, 2);
});

test('AAC (RFC 3640): several AUs in a packet are timed 1024 apart; an AU in fragments is joined; a lost fragment drops it', (t) => {
  const frames: [number, string][] = [];
  const d = new AacDepacketizer({ sizeLength: 13, indexLength: 3, indexDeltaLength: 3 }, (ts, data) => frames.push([ts, data.toString()]));
  const packet = (aus: string[], sizes = aus.map((a) => a.length)): Buffer => {
    const headers = Buffer.alloc(2 * sizes.length);
    sizes.forEach((s, i) => headers.writeUInt16BE(s << 3, 2 * i)); // 13-bit size, 3-bit index (delta) 0
    const len = Buffer.alloc(2);
    len.writeUInt16BE(16 * sizes.length);
    return Buffer.concat([len, headers, Buffer.from(aus.join(''))]);
  };
  d.push(packet(['abc', 'de', 'f']), 4294966272, true, false);
  t.deepEqual(frames, [
    [4294966272, 'abc'],
    [0, 'de'],
    [1024, 'f'],
  ]);
  frames.length = 0;
  d.push(packet(['hello'], [11]), 5000, false, false);
  d.push(packet([' world'], [11]), 5000, true, false);
  t.deepEqual(frames, [[5000, 'hello world']]);
  frames.length = 0;
  d.push(packet(['hello'], [11]), 9000, false, false);
  d.push(packet([' world'], [11]), 9000, true, true); // the packet before was lost: no AU
  d.push(packet(['ok']), 10024, true, false);
  t.deepEqual(frames, [[10024, 'ok']]);
  t.is(d.counters.droppedFrames, 1);
  const bad = d.counters.badPackets;
  d.push(Buffer.from([0, 64, 1]), 0, true, false);
  t.is(d.counters.badPackets, bad + 1, 'headers longer than the packet');
});

test('fmtp: parameters read as cameras write them; bad values are typed errors naming the parameter', (t) => {
  t.deepEqual(parseFmtp('packetization-mode=1; profile-level-id=42e01f;sprop-parameter-sets=Z0IAHpWoKA9puAgICBA=,aM48gA=='), {
    'packetization-mode': '1',
    'profile-level-id': '42e01f',
    'sprop-parameter-sets': 'Z0IAHpWoKA9puAgICBA=,aM48gA==',
  });
  const v = videoConfig('H264', 90000, parseFmtp('sprop-parameter-sets=Z0IAHpWoKA9puAgICBA=,aM48gA=='));
  t.is(v.params.sps.length, 1);
  t.is(v.params.pps.length, 1);
  const bad = t.throws(() => videoConfig('H264', 90000, { 'sprop-parameter-sets': 'not base64!' }));
  t.true(bad instanceof MediaFormatError && bad.code === 'BAD_CODEC_CONFIG' && /sprop-parameter-sets/.test(bad.message), String(bad));
  const don = t.throws(() => videoConfig('H265', 90000, { 'sprop-max-don-diff': '2' }));
  t.true(don instanceof MediaFormatError && don.code === 'CODEC_UNSUPPORTED', String(don));
  t.true(t.throws(() => videoConfig('H264', 90000, { 'packetization-mode': '2' })) instanceof MediaFormatError, 'interleaved mode');
  const a = audioConfig('mpeg4-generic', 16000, parseFmtp('streamtype=5; mode=AAC-hbr; config=1408; SizeLength=13; IndexLength=3; IndexDeltaLength=3'))!;
  t.like(a, { clockRate: 16000, sizeLength: 13, indexLength: 3, indexDeltaLength: 3 });
  t.is(audioConfig('mpeg4-generic', 8000, { mode: 'CELP-cbr', config: '1588' }), null, 'not AAC');
  t.is(audioConfig('PCMA', 8000, {}), null);
  const hex = t.throws(() => audioConfig('MPEG4-GENERIC', 8000, { mode: 'AAC-hbr', config: 'xyz' }));
  t.true(hex instanceof MediaFormatError && hex.code === 'BAD_CODEC_CONFIG', String(hex));
});
