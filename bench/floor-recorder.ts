/**
 * The floor of any recorder built as the brief asks (ffmpeg → pipe → Node → file): one
 * Node process that starts, per camera URL given on the command line, the same ffmpeg
 * the recorder runs (`-c copy -f mp4` fragmented, to stdout) and appends what it reads
 * to one file per camera with a write stream. No splitting, no index, no fdatasync, no
 * smart stream, no HTTP. bench/ingest.ts `--mode floor` runs it beside the baseline, so
 * the ratio it reports is what the pipe hop and a Node process cost by themselves.
 *
 * Two knobs add back, one at a time, what any recorder of this shape must have:
 *   FLOOR_HEAP_MB=20  keep that much live JavaScript heap (the recorder's libraries:
 *                     HTTP, NATS, LMDB, validation, logging hold ~20 MB), which every
 *                     full garbage collection marks;
 *   FLOOR_GOP_COPY=1  hand each ~1 MB of stream on as one Buffer of its own (what any
 *                     fragment splitter does to index and write a GOP), so V8 sees that
 *                     much new external memory.
 *
 *   node --import tsx bench/floor-recorder.ts <outDir> <rtsp-url>...
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [outDir, ...urls] = process.argv.slice(2);
if (!outDir || urls.length === 0) throw new Error('usage: floor-recorder.ts <outDir> <rtsp-url>...');
mkdirSync(outDir, { recursive: true });

// ~100 bytes per small object: FLOOR_HEAP_MB × 10 000 objects of live heap.
const heap: { i: number; s: string; a: number[] }[] = [];
for (let i = 0; i < Number(process.env.FLOOR_HEAP_MB ?? 0) * 10_000; i++) heap.push({ i, s: `o${i}`, a: [i, i + 1] });
const copyGops = process.env.FLOOR_GOP_COPY === '1';
const GOP_BYTES = 1 << 20;

const children: ChildProcess[] = [];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
process.on('SIGTERM', () => {
  for (const c of children) c.kill('SIGKILL');
  process.exit(heap.length >= 0 ? 0 : 1); // `heap` stays reachable until here
});
for (const [i, url] of urls.entries()) {
  if (i > 0) await sleep(Number(process.env.CONNECT_STAGGER_MS ?? 150));
  const child = spawn(
    'ffmpeg',
    [
      '-nostdin',
      '-hide_banner',
      '-loglevel',
      'warning',
      '-rtsp_transport',
      'tcp',
      '-i',
      url,
      '-map',
      '0:v:0',
      '-map',
      '0:a:0?',
      '-c',
      'copy',
      '-f',
      'mp4',
      '-movflags',
      'frag_keyframe+empty_moov+default_base_moof',
      'pipe:1',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  children.push(child);
  const out = createWriteStream(join(outDir, `cam${i}.mp4`));
  if (!copyGops) {
    child.stdout.pipe(out);
    continue;
  }
  let parts: Buffer[] = [];
  let held = 0;
  child.stdout.on('data', (b: Buffer) => {
    parts.push(b);
    held += b.length;
    if (held < GOP_BYTES) return;
    out.write(Buffer.concat(parts, held));
    parts = [];
    held = 0;
  });
}
