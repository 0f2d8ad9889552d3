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
 * And one that asks whether the cost can be moved off the main heap (issue 18):
 *   FLOOR_WORKERS=N   the cameras' ffmpeg pipes are read and written by N worker threads
 *                     (cameras dealt round-robin), so the video bytes are external memory
 *                     of the workers' small heaps; the main thread keeps FLOOR_HEAP_MB.
 *
 *   node --import tsx bench/floor-recorder.ts <outDir> <rtsp-url>...
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';

const copyGops = process.env.FLOOR_GOP_COPY === '1';
const GOP_BYTES = 1 << 20;
const STAGGER_MS = Number(process.env.CONNECT_STAGGER_MS ?? 150);
const children: ChildProcess[] = [];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

if (isMainThread) {
  const [outDir, ...urls] = process.argv.slice(2);
  if (!outDir || urls.length === 0) throw new Error('usage: floor-recorder.ts <outDir> <rtsp-url>...');
  mkdirSync(outDir, { recursive: true });
  // ~100 bytes per small object: FLOOR_HEAP_MB × 10 000 objects of live heap.
  const heap: { i: number; s: string; a: number[] }[] = [];
  for (let i = 0; i < Number(process.env.FLOOR_HEAP_MB ?? 0) * 10_000; i++) heap.push({ i, s: `o${i}`, a: [i, i + 1] });
  const nWorkers = Number(process.env.FLOOR_WORKERS ?? 0);
  const workers = Array.from(
    { length: nWorkers },
    () =>
      new Worker(
        // A worker does not inherit tsx's loader: register it there, then load this file.
        `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); })`,
        { eval: true },
      ),
  );
  process.on('SIGTERM', () => {
    for (const c of children) c.kill('SIGKILL');
    // Workers kill their children when told; exit once they have.
    void Promise.all(workers.map((w) => new Promise((r) => (w.once('exit', r), w.postMessage('stop'))))).then(
      () => process.exit(heap.length >= 0 ? 0 : 1), // `heap` stays reachable until here
    );
  });
  for (const [i, url] of urls.entries()) {
    if (i > 0) await sleep(STAGGER_MS);
    if (nWorkers > 0) workers[i % nWorkers]!.postMessage({ outDir, i, url });
    else record(outDir, i, url);
  }
} else {
  parentPort!.on('message', (m: { outDir: string; i: number; url: string } | 'stop') => {
    if (m !== 'stop') return record(m.outDir, m.i, m.url);
    for (const c of children) c.kill('SIGKILL');
    process.exit(0);
  });
}

/** One camera: its ffmpeg and the file its bytes are appended to. */
function record(outDir: string, i: number, url: string): void {
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
    return;
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
