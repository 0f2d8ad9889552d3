/**
 * bench/splitter: throughput of the fMP4 splitter (the per-byte work the recorder adds
 * to each camera's pipe), on a 1080p 4 Mbps stream repeated to ~512 MB and fed in
 * 64 KiB pieces made before the clock starts. Best of five runs.
 *
 *   node --import tsx bench/splitter.ts
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { requireWork } from './harness.ts';

const out = join(import.meta.dirname, 'out');
mkdirSync(out, { recursive: true });
const file = join(out, 'splitter-1080p-4M.mp4');
if (!existsSync(file)) {
  execFileSync('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=1920x1080:rate=25',
    '-t',
    '20',
    '-c:v',
    'libx264',
    '-preset',
    'veryfast',
    '-b:v',
    '4M',
    '-g',
    '50',
    '-pix_fmt',
    'yuv420p',
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    file,
  ]);
}
const bytes = readFileSync(file);
const moof = bytes.indexOf(Buffer.from('moof')) - 4;
const mfra = bytes.lastIndexOf(Buffer.from('mfra')) - 4;
const init = bytes.subarray(0, moof);
const body = bytes.subarray(moof, mfra > moof ? mfra : bytes.length);
const copies = Math.ceil((512 * 1024 * 1024) / body.length);
const stream = Buffer.concat([init, ...Array.from({ length: copies }, () => body)]);
const pieces: Buffer[] = [];
for (let p = 0; p < stream.length; p += 64 * 1024) pieces.push(Buffer.from(stream.subarray(p, p + 64 * 1024)));

let best = Infinity;
let fragments = 0;
for (let run = 0; run < 5; run++) {
  const splitter = new Fmp4Splitter();
  fragments = 0;
  splitter.on('data', (c: Fmp4Chunk) => void (c.kind === 'fragment' && fragments++));
  const ended = new Promise((resolve, reject) => (splitter.on('end', resolve), splitter.on('error', reject)));
  const start = process.hrtime.bigint();
  for (const piece of pieces) if (!splitter.write(piece)) await new Promise((r) => splitter.once('drain', r));
  splitter.end();
  await ended;
  best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
}
// A splitter that cut nothing measured nothing (bench/README.md).
requireWork('splitter', fragments > 0 ? [] : ['the splitter gave no fragment']);
const mbps = stream.length / 1e6 / best;
console.log(
  JSON.stringify({
    megabytes: Math.round(stream.length / 1e6),
    fragments,
    seconds: +best.toFixed(3),
    mbPerSec: Math.round(mbps),
    coreShareAt100Cameras4Mbps: +((100 * 0.5) / mbps).toFixed(4),
  }),
);
