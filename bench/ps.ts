/**
 * bench/ps — what MPEG-PS costs: writing a minute of 1080p25 H.264+AAC as PS GOPs
 * (fMP4 fragment → PS), reading it back as fMP4 (the playback seam, per GOP), the
 * start-up scan of a `.ps` file, and the bytes PS adds over fMP4. Baseline: the same
 * fragments copied as they are (what the fMP4 writer does) and scanned as fMP4.
 *
 *   node --import tsx bench/ps.ts [--seconds 60]
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { scanFmp4File } from '../media/mp4/fmp4-file.ts';
import { FragmentToPs, describePs, psGopToFmp4 } from '../media/ps/ps-convert.ts';
import { demuxPs } from '../media/ps/ps-demux.ts';
import { scanPsFile } from '../media/ps/ps-file.ts';
import { requireWork } from './harness.ts';

const run = promisify(execFile);
const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1] || 60) || 60;
const dir = join(import.meta.dirname, 'out');
await mkdir(dir, { recursive: true });
const src = join(dir, `ps-src-${seconds}.mp4`);
try {
  await readFile(src);
} catch {
  // 1080p25, 4 Mbps, 2 s GOP, AAC: like bench/ingest's input.
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=1920x1080:rate=25',
    '-f',
    'lavfi',
    '-i',
    'sine=r=48000',
    '-t',
    String(seconds),
    '-c:v',
    'libx264',
    '-preset',
    'superfast',
    '-b:v',
    '4M',
    '-g',
    '50',
    '-bf',
    '0',
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
}
const chunks: Fmp4Chunk[] = [];
for await (const c of Readable.from([await readFile(src)]).pipe(new Fmp4Splitter())) chunks.push(c as Fmp4Chunk);
const init = chunks[0]!;
if (init.kind !== 'init') throw new Error('no init');
const frags = chunks.filter((c): c is Extract<Fmp4Chunk, { kind: 'fragment' }> => c.kind === 'fragment');
// A source with no fragment measures nothing (bench/README.md).
requireWork('ps', frags.length > 0 ? [] : ['the source has no fragment']);
const mp4Bytes = init.bytes.length + frags.reduce((n, f) => n + f.bytes.length, 0);

function time<T>(fn: () => T, reps = 3): { ms: number; value: T } {
  let best = Infinity;
  let value!: T;
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    value = fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { ms: best, value };
}

const copy = time(() => frags.map((f) => Buffer.from(f.bytes)));
const write = time(() => {
  const conv = new FragmentToPs(init.bytes);
  return frags.map((f) => conv.convert(f).bytes);
});
const gops = write.value;
const psBytes = 4096 + gops.reduce((n, g) => n + g.length, 0);
const desc = describePs(demuxPs(gops[0]!));
const read = time(() => gops.map((g, i) => psGopToFmp4(g, desc.tracks, i + 1).fragment));
const psFile = join(dir, 'ps-bench.ps');
const mp4File = join(dir, 'ps-bench.mp4');
await writeFile(psFile, Buffer.concat([new FragmentToPs(init.bytes).fileHeader(gops[0]!), ...gops]));
await writeFile(mp4File, Buffer.concat([init.bytes, ...frags.map((f) => f.bytes)]));
const scanPs: number[] = [];
const scanMp4: number[] = [];
for (let i = 0; i < 5; i++) {
  let t0 = process.hrtime.bigint();
  const s = await scanPsFile(psFile);
  scanPs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  if (s.gops.length !== frags.length) throw new Error(`scan found ${s.gops.length} GOPs, wrote ${frags.length}`);
  t0 = process.hrtime.bigint();
  await scanFmp4File(mp4File);
  scanMp4.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
const mb = mp4Bytes / 1e6;
console.log(
  JSON.stringify(
    {
      seconds,
      gops: frags.length,
      mp4MB: +mb.toFixed(2),
      psMB: +(psBytes / 1e6).toFixed(2),
      psOverheadPct: +((psBytes / mp4Bytes - 1) * 100).toFixed(2),
      copyMs: +copy.ms.toFixed(1),
      writePsMs: +write.ms.toFixed(1),
      writePsMBps: +(mb / (write.ms / 1000)).toFixed(0),
      writePsCpuShareOfRealtime: +((write.ms / 1000 / seconds) * 100).toFixed(3),
      readAsFmp4Ms: +read.ms.toFixed(1),
      readAsFmp4MBps: +(mb / (read.ms / 1000)).toFixed(0),
      scanPsMs: +Math.min(...scanPs).toFixed(2),
      scanFmp4Ms: +Math.min(...scanMp4).toFixed(2),
    },
    null,
    2,
  ),
);
