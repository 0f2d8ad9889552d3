/**
 * Cost of the smart stream, per packet and per video fragment, on this machine:
 *   1. TS demux + classify + ONVIF XML parse of metadata documents (the ingest path of
 *      a camera with a data track), in µs per packet;
 *   2. the SmartWriter: feed (demux, parse, queue) per packet, and one flush (write,
 *      fdatasync, LMDB commit) of a full queue;
 *   3. the SEI scan every camera's video fragments get (media/codec/sei-userdata.ts), in µs
 *      per 2 s GOP of 720p25 H.264 from ffmpeg.
 * Run: node --import tsx bench/smart.ts
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RecorderIndex } from '../index/db.ts';
import { createLogger } from '../lib/log.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { classifyPayload, parseSmartPayload } from '../smart/onvif-meta.ts';
import { fragmentUserData, videoSampleFormat } from '../media/codec/sei-userdata.ts';
import { TsDemuxer, TsMuxer } from '../smart/ts-demux.ts';
import { SmartWriter } from '../smart/smart-writer.ts';
import { requireWork } from './harness.ts';

const run = promisify(execFile);
const N = 20_000;

function doc(i: number): Buffer {
  const t = new Date(1_760_000_000_000 + i * 250).toISOString();
  return Buffer.from(
    `<?xml version="1.0"?><tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema"><tt:VideoAnalytics><tt:Frame UtcTime="${t}">` +
      `<tt:Object ObjectId="1"><tt:Appearance><tt:Shape><tt:BoundingBox left="0.1" top="0.2" right="0.3" bottom="0.6"/></tt:Shape>` +
      `<tt:Class><tt:Type Likelihood="0.9">${i % 2 ? 'Vehicle' : 'Human'}</tt:Type></tt:Class></tt:Appearance></tt:Object></tt:Frame></tt:VideoAnalytics></tt:MetadataStream>`,
  );
}

const mux = new TsMuxer([
  { pid: 0x101, streamType: 0x1b },
  { pid: 0x102, streamType: 0x06 },
]);
const ts = Buffer.concat([
  mux.psi(),
  mux.pes(0x101, Buffer.alloc(100), 0, { dts: 0, streamId: 0xe0, unbounded: true }),
  ...Array.from({ length: N }, (_, i) => mux.pes(0x102, doc(i), i * 22500)),
]);

// 1. demux + classify + parse
let parsed = 0;
const t1 = process.hrtime.bigint();
const demux = new TsDemuxer({
  onPes: (p) => {
    if (p.streamType !== 0x06) return;
    const kind = classifyPayload(p.payload);
    if (kind) parsed += parseSmartPayload(kind, p.payload).classes.length;
  },
  wantsPayload: (t) => t !== 0x1b,
});
for (let at = 0; at < ts.length; at += 64 * 1024) demux.push(ts.subarray(at, at + 64 * 1024));
const us1 = Number(process.hrtime.bigint() - t1) / 1000 / N;
// A stage that did nothing gives no figure (bench/README.md).
requireWork('smart, demux+parse', parsed > 0 ? [] : ['no object class parsed from the documents']);
console.log(`demux+parse: ${us1.toFixed(1)} µs per ${doc(0).length}-byte ONVIF document (${parsed} classes)`);

// 2. the writer to disk and LMDB
const dir = await mkdtemp(join(tmpdir(), 'bench-smart-'));
try {
  const index = await RecorderIndex.open(dir);
  // One flush's worth (the queue holds at most 2000 packets): feed, then close() writes,
  // fdatasyncs and commits them in one batch.
  const M = 2000;
  let now = 1_760_000_000_000;
  const writer = new SmartWriter('bench', {
    index,
    dataDir: dir,
    clock: { nowMs: () => (now += 25) },
    log: createLogger('silent'),
    segmentMs: 3_600_000,
    wallMsAt: (s) => 1_760_000_000_000 + s * 1000,
  });
  const part = Buffer.concat([
    mux.psi(),
    mux.pes(0x101, Buffer.alloc(100), 0, { dts: 0, streamId: 0xe0, unbounded: true }),
    ...Array.from({ length: M }, (_, i) => mux.pes(0x102, doc(i), i * 22500)),
  ]);
  const t2 = process.hrtime.bigint();
  writer.feed(part);
  const t2b = process.hrtime.bigint();
  await writer.close();
  const t2c = process.hrtime.bigint();
  requireWork('smart, writer', writer.stored > 0 ? [] : ['the writer stored no packet']);
  console.log(
    `writer: ${writer.stored} packets: feed ${(Number(t2b - t2) / 1e3 / M).toFixed(0)} µs/packet, flush (write + fdatasync + LMDB commit) ${(Number(t2c - t2b) / 1e6).toFixed(0)} ms for all`,
  );
  await index.close();

  // 3. SEI scan of 720p25 fragments
  const file = join(dir, 'v.mp4');
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=1280x720:rate=25:duration=20',
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-g',
    '50',
    '-b:v',
    '4M',
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    file,
  ]);
  const splitter = new Fmp4Splitter();
  splitter.end(await readFile(file));
  const chunks: Fmp4Chunk[] = [];
  for await (const c of splitter as AsyncIterable<Fmp4Chunk>) chunks.push(c);
  const fmt = videoSampleFormat(chunks.find((c) => c.kind === 'init')!.bytes)!;
  const frags = chunks.filter((c): c is Extract<Fmp4Chunk, { kind: 'fragment' }> => c.kind === 'fragment');
  requireWork('smart, SEI scan', frags.length > 0 ? [] : ['the video has no fragment']);
  const rounds = 50;
  const t3 = process.hrtime.bigint();
  for (let r = 0; r < rounds; r++) for (const f of frags) fragmentUserData(f, fmt);
  const us3 = Number(process.hrtime.bigint() - t3) / 1000 / (rounds * frags.length);
  const mb = frags.reduce((n, f) => n + f.bytes.length, 0) / frags.length / 1e6;
  console.log(`SEI scan: ${us3.toFixed(0)} µs per 2 s GOP of 720p25 (${mb.toFixed(2)} MB, 50 samples) = ${((us3 / 2e6) * 100).toFixed(3)} % of a core`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
