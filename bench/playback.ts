/**
 * bench/playback: time to first byte of `video.mp4` for a 1-hour range and of `/play`
 * at a random position (p50/p99 over 100 requests each), download throughput against
 * `cat` of the same segment files in the same run, and the recorder's memory with 200
 * concurrent clients.
 *
 *   node --import tsx bench/playback.ts [--minutes 60] [--requests 100] [--clients 200]
 *
 * Data: one minute of 640x360 25 fps H.264 (GOP 2 s, 800 kbit/s) + AAC encoded once
 * with ffmpeg, written N times as consecutive 60 s segment files of one camera (decode
 * times shifted so the segments form one continuous session, as the ingest writes
 * them), indexed directly in LMDB. The recorder runs as a child process on that data
 * dir (the camera has an empty plan, so it records nothing); clients are plain
 * node:http requests from this process.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { RecorderIndex } from '../index/db.ts';
import { encodeGops } from '../index/gop-table.ts';
import type { SegmentRecord } from '../index/records.ts';
import { freePort } from '../lib/nats-embedded.ts';
import { scanFmp4File } from '../media/fmp4-file.ts';
import { rewriteMoof } from '../media/moof.ts';
import WebSocket from 'ws';
import type { Socket } from 'node:net';

const run = promisify(execFile);
const { values } = parseArgs({ options: { minutes: { type: 'string', default: '60' }, requests: { type: 'string', default: '100' }, clients: { type: 'string', default: '200' } } });
const MINUTES = Number(values.minutes);
const REQUESTS = Number(values.requests);
const CLIENTS = Number(values.clients);
const BASE_MS = Date.UTC(2026, 9, 1, 8);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

function rssMb(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((s) => Number(/VmRSS:\s+(\d+)/.exec(s)![1]) / 1024);
}

async function prepare(dir: string): Promise<{ files: string[]; bytes: number }> {
  const clip = join(dir, 'clip.mp4');
  await run('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=25', '-f', 'lavfi', '-i', 'sine=f=440:sample_rate=48000', '-t', '60',
    '-c:v', 'libx264', '-preset', 'superfast', '-g', '50', '-bf', '0', '-b:v', '800k', '-maxrate', '800k', '-bufsize', '800k', '-pix_fmt', 'yuv420p',
    '-c:a', 'aac', '-b:a', '64k', '-f', 'mp4', '-movflags', 'frag_keyframe+empty_moov+default_base_moof', clip]);
  const scan = await scanFmp4File(clip);
  const bytes = await readFile(clip);
  const videoId = scan.info.videoTrackId!;
  const vts = scan.info.tracks.find((t) => t.id === videoId)!.timescale;
  // Per track: ticks one clip lasts (video continuous across copies; audio follows the same time).
  const span = new Map(scan.info.tracks.map((t) => [t.id, BigInt(Math.round(60 * t.timescale))]));
  const index = await RecorderIndex.open(dir);
  await index.cameras.put('bench', { id: 'bench', pool: 'default', streams: { main: 'rtsp://127.0.0.1:9/none' }, record: { stream: 'main', format: 'mp4' } });
  await index.schedules.put('bench', { camera: 'bench', slots: [], timeZone: 'UTC', preSeconds: 0, postSeconds: 0 });
  const files: string[] = [];
  let total = 0;
  for (let k = 0; k < MINUTES; k++) {
    const startMs = BASE_MS + k * 60_000;
    const rel = `pools/default/bench/2026-10-01/${startMs}.mp4`;
    const parts: Buffer[] = [scan.init];
    const gops = scan.fragments.map((f) => {
      const moof = bytes.subarray(f.offset, f.offset + f.moofSize);
      const decode = new Map(f.moof.tracks.map((t) => [t.trackId, t.baseDecodeTime + BigInt(k) * span.get(t.trackId)!]));
      parts.push(rewriteMoof(moof, { sequence: f.moof.sequence, baseDecodeTime: decode }), bytes.subarray(f.offset + f.moofSize, f.offset + f.size));
      const v = f.moof.tracks.find((t) => t.trackId === videoId)!;
      return { offset: f.offset, size: f.size, timeMs: Math.round((Number(v.baseDecodeTime) * 1000) / vts) };
    });
    const file = Buffer.concat(parts);
    await mkdir(join(dir, 'pools/default/bench/2026-10-01'), { recursive: true });
    await writeFile(join(dir, rel), file);
    files.push(join(dir, rel));
    total += file.length;
    const seg: SegmentRecord = {
      camera: 'bench', startMs, endMs: startMs + 60_000, file: rel, format: 'mp4', pool: 'default', stream: 'main', bytes: file.length, initSize: scan.initSize,
      mimeType: scan.info.mimeType, codecKey: scan.info.codecKey, types: [{ type: 'timing', fromMs: startMs }], gops: encodeGops(gops), open: false, flags: {},
    };
    await index.putSegment(seg);
  }
  await index.close();
  return { files, bytes: total };
}

async function startRecorder(dir: string): Promise<{ child: ChildProcess; http: string }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../recorder.ts')], {
    env: { ...process.env, RECORDER_DATA_DIR: dir, RECORDER_HTTP: `127.0.0.1:${port}`, RECORDER_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      buf += s;
      if (buf.includes('"http listening"')) resolve();
      if (buf.length > 1e5) buf = buf.slice(-1e4);
    });
    child.once('exit', (code) => reject(new Error(`recorder exited with ${code}`)));
  });
  child.stdout!.resume();
  return { child, http: `http://127.0.0.1:${port}` };
}

/** Milliseconds to the first body byte; the rest is not read (the request is dropped). */
function ttfb(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request(url, (res) => {
      if (res.statusCode !== 200) reject(new Error(`${url}: ${res.statusCode}`));
      res.once('data', () => {
        resolve(performance.now() - t0);
        req.destroy();
      });
    });
    req.on('error', (err) => (err.message.includes('socket hang up') ? undefined : reject(err)));
    req.end();
  });
}

/** Reads a whole body; bytes and seconds. */
function download(url: string): Promise<{ bytes: number; sec: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    request(url, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => resolve({ bytes, sec: (performance.now() - t0) / 1000 }));
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
}

const dir = await mkdtemp(join(tmpdir(), 'bench-playback-'));
try {
  console.log(`preparing ${MINUTES} min of segments in ${dir}…`);
  const { files, bytes } = await prepare(dir);
  const { child, http } = await startRecorder(dir);
  try {
    const hour = MINUTES * 60_000;
    const range = (fromMs: number): string => `${http}/api/cameras/bench/video.mp4?from=${fromMs}&to=${fromMs + hour}`;
    const rand = (): number => BASE_MS + Math.floor(Math.random() * 50_000);

    const cold = await ttfb(range(BASE_MS));
    // Random 1-hour ranges: a new moov each time (sample tables cached after the first).
    const moovBuilt: number[] = [];
    for (let i = 0; i < REQUESTS; i++) moovBuilt.push(await ttfb(range(rand())));
    // The same range again: the built head is cached by ETag (resumes, many viewers).
    const sameRange: number[] = [];
    for (let i = 0; i < REQUESTS; i++) sameRange.push(await ttfb(range(BASE_MS)));
    const play: number[] = [];
    for (let i = 0; i < REQUESTS; i++) play.push(await ttfb(`${http}/api/cameras/bench/play?from=${BASE_MS + Math.floor(Math.random() * (hour - 5000))}`));
    const trick: number[] = [];
    for (let i = 0; i < REQUESTS; i++) trick.push(await ttfb(`${http}/api/cameras/bench/play?from=${BASE_MS + Math.floor(Math.random() * (hour - 5000))}&speed=8`));

    // Throughput: cat of the same files, the download, cat again (page cache warm for all).
    const cat = async (): Promise<number> => {
      const t0 = performance.now();
      await run('sh', ['-c', `cat ${files.map((f) => `'${f}'`).join(' ')} > /dev/null`]);
      return (performance.now() - t0) / 1000;
    };
    // curl as the client (as a person downloading would); Node's own client is slower.
    const curl = async (): Promise<{ bytes: number; sec: number }> => {
      const { stdout } = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', range(BASE_MS)]);
      const [b, sec] = stdout.trim().split(' ').map(Number);
      return { bytes: b!, sec: sec! };
    };
    const cat1 = await cat();
    const dl1 = await curl();
    const cat2 = await cat();
    const dl2 = await curl();
    const catSec = Math.min(cat1, cat2);
    // The same files served as they are over the same HTTP stack (GET …/segments/<startMs>.mp4).
    const rawUrls = Array.from({ length: MINUTES }, (_, k) => `${http}/api/cameras/bench/segments/${BASE_MS + k * 60_000}.mp4`);
    const raw = async (): Promise<number> => {
      const t0 = performance.now();
      await run('sh', ['-c', `curl -s ${rawUrls.map((u) => `'${u}'`).join(' ')} > /dev/null`]);
      return (performance.now() - t0) / 1000;
    };
    const rawSec = Math.min(await raw(), await raw());
    const dl = dl1.sec < dl2.sec ? dl1 : dl2;

    // CLIENTS concurrent clients of 1-hour downloads (10 distinct ranges): memory while
    // all read at full speed for 5 s, then while all stall (they stop reading) for 5 s.
    const idleRss = await rssMb(child.pid!);
    let peak = idleRss;
    const sampler = setInterval(() => void rssMb(child.pid!).then((m) => (peak = Math.max(peak, m))), 100);
    let concBytes = 0;
    const reqs = Array.from({ length: CLIENTS }, (_, i) =>
      request(range(BASE_MS + (i % 10) * 1000), (res) => res.on('data', (c: Buffer) => (concBytes += c.length))).on('error', () => undefined),
    );
    const responses: import('node:http').IncomingMessage[] = [];
    for (const r of reqs) {
      r.on('response', (res) => responses.push(res));
      r.end();
    }
    await new Promise((r) => setTimeout(r, 5000));
    const concSec = 5;
    const fullPeak = peak;
    for (const res of responses) res.pause();
    await new Promise((r) => setTimeout(r, 5000));
    const stalledRss = await rssMb(child.pid!);
    clearInterval(sampler);
    for (const r of reqs) r.destroy();

    // CLIENTS playback sessions at speed 4 (every frame, so 8 s of paced lead is 32 s
    // of video, more than the kernel's socket buffers) whose clients stop reading after
    // the init: the server must stall each at its bound instead of queueing.
    const beforeWs = await rssMb(child.pid!);
    let wsPeak = beforeWs;
    const wsSampler = setInterval(() => void rssMb(child.pid!).then((m) => (wsPeak = Math.max(wsPeak, m))), 100);
    let wsBytes = 0;
    const sockets = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) => new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(`${http.replace(/^http/, 'ws')}/api/cameras/bench/playback`);
        ws.on('error', reject);
        ws.on('open', () => {
          ws.send(JSON.stringify({ cmd: 'play', from: BASE_MS + (i % 50) * 60_000, speed: 4 }));
          resolve(ws);
        });
        ws.on('message', (data, isBinary) => {
          if (!isBinary) return;
          wsBytes += (data as Buffer).length;
          // After the init, this client stops reading its TCP socket.
          if ((data as Buffer).toString('latin1', 4, 8) === 'ftyp') (ws as unknown as { _socket: Socket })._socket.pause();
        });
      })),
    );
    await new Promise((r) => setTimeout(r, 10_000));
    clearInterval(wsSampler);
    const wsStalled = await rssMb(child.pid!);
    for (const ws of sockets) ws.terminate();

    const row = (name: string, xs: number[]): string => `| ${name} | ${pct(xs, 50).toFixed(1)} ms | ${pct(xs, 99).toFixed(1)} ms |`;
    console.log(`\n${MINUTES} segments, ${(bytes / 1e6).toFixed(0)} MB; video.mp4 of the whole range: ${(dl.bytes / 1e6).toFixed(0)} MB\n`);
    console.log(`first request (nothing cached): ${cold.toFixed(1)} ms\n`);
    console.log('| time to first byte | p50 | p99 |\n| --- | --- | --- |');
    console.log(row(`video.mp4, ${MINUTES} min, random start (moov built each time)`, moovBuilt));
    console.log(row(`video.mp4, ${MINUTES} min, same range (head cached)`, sameRange));
    console.log(row('/play at a random position', play));
    console.log(row('/play?speed=8 at a random position', trick));
    console.log(`\nthroughput (curl, best of 2): video.mp4 ${(dl.bytes / 1e6 / dl.sec).toFixed(0)} MB/s; cat of the files ${(bytes / 1e6 / catSec).toFixed(0)} MB/s: ratio ${((dl.bytes / dl.sec) / (bytes / catSec)).toFixed(2)}; the files as they are over HTTP ${(bytes / 1e6 / rawSec).toFixed(0)} MB/s: ratio ${((dl.bytes / dl.sec) / (bytes / rawSec)).toFixed(2)}`);
    console.log(`${CLIENTS} WebSocket sessions at speed 4 whose clients stop reading: recorder RSS ${beforeWs.toFixed(0)} MB before, ${wsStalled.toFixed(0)} MB after 10 s (peak ${wsPeak.toFixed(0)} MB); the clients had received ${(wsBytes / 1e6).toFixed(1)} MB before stopping`);
    console.log(`${CLIENTS} concurrent downloads of ${MINUTES}-min ranges: ${(concBytes / 1e9).toFixed(1)} GB in ${concSec} s (${(concBytes / 1e6 / concSec).toFixed(0)} MB/s); recorder RSS ${idleRss.toFixed(0)} MB before, peak ${fullPeak.toFixed(0)} MB while reading, ${stalledRss.toFixed(0)} MB with all ${CLIENTS} stalled (peak overall ${peak.toFixed(0)} MB)`);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
