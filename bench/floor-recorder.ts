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
 *   FLOOR_FILES=1     ffmpeg writes each camera's fragmented MP4 file itself; Node only
 *                     reads back the box headers and the moofs (a few KiB per GOP, from
 *                     the page cache) every FLOOR_SYNC_MS (4000) and fdatasyncs the file
 *                     before "committing" them: the video bytes never enter Node at all.
 *
 * And one that asks why reading into reused memory once stalled camera servers (issue 18):
 *   FLOOR_PAUSE_MS=N  every 10 s each camera's pipe is not read for N ms, as a reader
 *                     that falls behind (waiting for a recycled buffer) does: ffmpeg then
 *                     blocks on its stdout and stops reading the camera.
 *
 *   FLOOR_REUSE=1     ffmpeg writes to a unix socket it listens on, and Node reads it into
 *                     one reused 64 KiB buffer (net `onread`) and writes it on with
 *                     writeSync: no new Buffer memory at all, the shape that stalled
 *                     camera servers when the recorder tried it.
 *
 *   node --import tsx bench/floor-recorder.ts <outDir> <rtsp-url>...
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { connect } from 'node:net';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';

const copyGops = process.env.FLOOR_GOP_COPY === '1';
const ffmpegWritesFiles = process.env.FLOOR_FILES === '1';
const SYNC_MS = Number(process.env.FLOOR_SYNC_MS ?? 4000);
const PAUSE_MS = Number(process.env.FLOOR_PAUSE_MS ?? 0);
const reuse = process.env.FLOOR_REUSE === '1';
const GOP_BYTES = 1 << 20;
const STAGGER_MS = Number(process.env.CONNECT_STAGGER_MS ?? 150);
const children: ChildProcess[] = [];
/** FLOOR_FILES: the last moof indexed per file (printed at the end, so a run that indexed nothing shows). */
const lastMoofSeq = new Map<string, number>();
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
    if (ffmpegWritesFiles) console.error(`floor: ${lastMoofSeq.size} files indexed, up to moof ${Math.max(0, ...lastMoofSeq.values())}`);
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
  const file = join(outDir, `cam${i}.mp4`);
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
      ...(reuse ? ['-listen', '1', `unix:${file}.sock`] : [ffmpegWritesFiles ? file : 'pipe:1']),
    ],
    { stdio: ['ignore', ffmpegWritesFiles || reuse ? 'ignore' : 'pipe', 'inherit'] },
  );
  children.push(child);
  if (reuse) {
    readReused(file);
    return;
  }
  if (ffmpegWritesFiles) {
    indexBehind(file);
    return;
  }
  const out = createWriteStream(file);
  const stdout = child.stdout!;
  if (PAUSE_MS > 0)
    setInterval(() => {
      stdout.pause();
      setTimeout(() => stdout.resume(), PAUSE_MS);
    }, 10_000).unref();
  if (!copyGops) {
    stdout.pipe(out);
    return;
  }
  let parts: Buffer[] = [];
  let held = 0;
  stdout.on('data', (b: Buffer) => {
    parts.push(b);
    held += b.length;
    if (held < GOP_BYTES) return;
    out.write(Buffer.concat(parts, held));
    parts = [];
    held = 0;
  });
}

/**
 * FLOOR_FILES: every SYNC_MS, walk the boxes ffmpeg appended since the last pass (a
 * header read per box, the whole moof read since an index needs its times and sizes),
 * then fdatasync the file, as a recorder must before it indexes what the file holds.
 * A box not yet whole is left for the next pass.
 */
function indexBehind(file: string): void {
  let fh: FileHandle | null = null;
  let at = 0;
  const head = Buffer.alloc(16);
  const pass = async (): Promise<void> => {
    fh ??= await open(file, 'r').catch(() => null);
    if (!fh) return;
    const { size } = await fh.stat();
    let found = 0;
    const seen: number[] = [];
    while (at + 8 <= size) {
      await fh.read(head, 0, 8, at);
      let len = head.readUInt32BE(0);
      const type = head.toString('latin1', 4, 8);
      if (len === 1) {
        // A 64-bit size follows the type: wait until it is in the file.
        if (at + 16 > size) break;
        await fh.read(head, 8, 8, at + 8);
        len = Number(head.readBigUInt64BE(8));
      }
      // 0 is "to the end of the file", which a fragmented file being written never uses.
      if (len < 8 || at + len > size) break;
      if (type === 'moof') {
        const moof = Buffer.alloc(len);
        await fh.read(moof, 0, len, at);
        // What an index keeps: the moof's sequence number (mfhd) and where it lies.
        if (moof.toString('latin1', 12, 16) === 'mfhd') seen.push(moof.readUInt32BE(20));
        found++;
      }
      at += len;
    }
    if (found === 0) return;
    // Durable first, then "indexed", the order invariant 2 asks.
    await fh.datasync();
    lastMoofSeq.set(file, seen.at(-1) ?? 0);
  };
  const loop = (): void => {
    setTimeout(() => void pass().then(loop, loop), SYNC_MS);
  };
  loop();
}

/** FLOOR_REUSE: once ffmpeg listens, read its socket into one buffer and write each read at once. */
function readReused(file: string): void {
  const fd = openSync(file, 'w');
  const buffer = Buffer.allocUnsafe(64 * 1024);
  const tryConnect = (): void => {
    if (!existsSync(`${file}.sock`)) return void setTimeout(tryConnect, 200);
    const socket = connect({
      path: `${file}.sock`,
      onread: {
        buffer,
        callback: (n: number, buf: Uint8Array) => {
          writeSync(fd, buf, 0, n);
          return true;
        },
      },
    });
    socket.on('error', () => setTimeout(tryConnect, 200));
  };
  tryConnect();
}
