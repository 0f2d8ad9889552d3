/**
 * bench/prerecord: memory held by the pre-record ring. One camera's 1080p 4 Mbps
 * stream (bench/out clip, 2 s GOPs) is fed to a SegmentWriter in an event slot with
 * preSeconds = 5, 30 and 60 and no event, with a simulated clock; the ring's bytes and
 * the process heap/RSS are read after 3 minutes of stream time. Nothing is written.
 *
 *   node --import tsx bench/prerecord.ts
 */
import { readFileSync, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { RecorderIndex } from '../index/db.ts';
import { silentLogger } from '../lib/log.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { SegmentWriter } from '../storage/segment-writer.ts';
import { requireWork } from './harness.ts';

const clip = join(import.meta.dirname, 'out', 'clip-1080p25-4M-gop50-30s.mp4');
if (!existsSync(clip)) throw new Error(`run bench/ingest.ts once first: it makes ${clip}`);
// The clip is a plain MP4; fragment it the way ingest does.
const { execFileSync } = await import('node:child_process');
const fragmented = join(import.meta.dirname, 'out', 'prerecord-frag.mp4');
if (!existsSync(fragmented))
  execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', clip, '-c', 'copy', '-f', 'mp4', '-movflags', 'frag_keyframe+empty_moov+default_base_moof', fragmented]);
const chunks: Fmp4Chunk[] = [];
for await (const c of Readable.from([readFileSync(fragmented)]).pipe(new Fmp4Splitter())) chunks.push(c as Fmp4Chunk);
const init = chunks[0]!;
const frags = chunks.slice(1).filter((c): c is Extract<Fmp4Chunk, { kind: 'fragment' }> => c.kind === 'fragment');
const gopBytes = frags.reduce((n, f) => n + f.bytes.length, 0) / frags.length;

for (const preSeconds of [5, 30, 60]) {
  const dir = await mkdtemp(join(tmpdir(), 'bench-pre-'));
  const index = await RecorderIndex.open(dir);
  let now = Date.now();
  const camera = { id: 'cam', pool: 'default', streams: { main: 'rtsp://x/y' }, record: { stream: 'main' as const, format: 'mp4' as const } };
  const writer = new SegmentWriter(
    camera,
    {
      index,
      dataDir: dir,
      clock: { nowMs: () => now },
      log: silentLogger,
      segmentMs: 60_000,
      decide: () => ({ write: false, type: 'event', preMs: preSeconds * 1000 }),
    },
    null,
  );
  await writer.handle(init);
  global.gc?.();
  const heap0 = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
  let maxRing = 0;
  // 3 minutes of stream: the clip's GOPs again and again with continuous decode times.
  for (let i = 0; i < 90; i++) {
    const f = frags[i % frags.length]!;
    now += 2000;
    // Same bytes; decode times are continuous because the writer re-anchors only on jumps,
    // so give each GOP its place on the timeline.
    const track = f.moof.tracks[0]!;
    const shifted = { ...f, moof: { ...f.moof, tracks: [{ ...track, baseDecodeTime: BigInt(i) * BigInt(f.durationTicks) }] } };
    await writer.handle({ ...shifted, bytes: Buffer.from(f.bytes) });
    maxRing = Math.max(maxRing, writer.preRecordBytes);
  }
  // A ring that held nothing measured nothing (bench/README.md).
  requireWork(`prerecord, ${preSeconds} s`, maxRing > 0 ? [] : ['the pre-record ring held nothing']);
  global.gc?.();
  const heap1 = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
  console.log(
    JSON.stringify({
      preSeconds,
      gopKB: Math.round(gopBytes / 1024),
      ringMB: +(writer.preRecordBytes / 1e6).toFixed(1),
      maxRingMB: +(maxRing / 1e6).toFixed(1),
      expectedMB: +(((preSeconds + 2) * 4e6) / 8 / 1e6).toFixed(1),
      heapGrowthMB: +((heap1 - heap0) / 1e6).toFixed(1),
      rssMB: Math.round(process.memoryUsage().rss / 1e6),
    }),
  );
  await writer.close();
  await index.close();
  await rm(dir, { recursive: true, force: true });
}
