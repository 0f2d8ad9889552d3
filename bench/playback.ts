/**
 * bench/playback: time to first byte of `video.mp4` for a 1-hour range and of `/play`
 * at a random position (p50/p99 over 100 requests each), the first request of an hour
 * with nothing cached (with and without the sample tables persisted at segment close),
 * download throughput against `cat` of the same segment files in the same run (to
 * /dev/null, and into a loopback TCP socket read by curl: like for like), and the
 * recorder's memory with 200 concurrent clients.
 *
 *   node --import tsx bench/playback.ts [--minutes 60] [--requests 100] [--clients 200] [--cold 100]
 *
 * Data: one minute of 640x360 25 fps H.264 (GOP 2 s, 800 kbit/s) + AAC encoded once
 * with ffmpeg, written N times as consecutive 60 s segment files of one camera (decode
 * times shifted so the segments form one continuous session, as the ingest writes
 * them), indexed directly in LMDB, and their sample tables persisted by the same code
 * the recorder runs when a segment closes (storage/segment-tables.ts). `--cold` more
 * cameras hold hard links to the same files (with persisted tables), and 3 more without
 * them (as segments recorded before tables were persisted): each is requested once for
 * the cold first-byte figures. The recorder runs as a child process on that data dir
 * (the cameras have an empty plan, so they record nothing); clients are plain node:http
 * requests and curl from this process.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { link, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { RecorderIndex } from '../index/db.ts';
import { encodeGops } from '../index/gop-table.ts';
import type { SegmentRecord } from '../index/records.ts';
import { silentLogger } from '../lib/log.ts';
import { SegmentTableStore } from '../storage/segment-tables.ts';
import { freePort } from '../lib/nats-embedded.ts';
import { scanFmp4File } from '../media/mp4/fmp4-file.ts';
import { rewriteMoof } from '../media/mp4/moof.ts';
import WebSocket from 'ws';
import type { Socket } from 'node:net';
import { recorderProgram, requireWork } from './harness.ts';

const run = promisify(execFile);
const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '60' },
    requests: { type: 'string', default: '100' },
    clients: { type: 'string', default: '200' },
    cold: { type: 'string', default: '100' },
  },
});
const MINUTES = Number(values.minutes);
const REQUESTS = Number(values.requests);
const CLIENTS = Number(values.clients);
const COLD = Number(values.cold);
if (!(COLD >= 1)) throw new Error('--cold must be at least 1');
const COLD_MOOFS = 3;
const coldCameras = Array.from({ length: COLD }, (_, i) => `cold${i + 1}`);
const moofCameras = Array.from({ length: COLD_MOOFS }, (_, i) => `moof${i + 1}`);
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
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=640x360:rate=25',
    '-f',
    'lavfi',
    '-i',
    'sine=f=440:sample_rate=48000',
    '-t',
    '60',
    '-c:v',
    'libx264',
    '-preset',
    'superfast',
    '-g',
    '50',
    '-bf',
    '0',
    '-b:v',
    '800k',
    '-maxrate',
    '800k',
    '-bufsize',
    '800k',
    '-pix_fmt',
    'yuv420p',
    '-c:a',
    'aac',
    '-b:a',
    '64k',
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    clip,
  ]);
  const scan = await scanFmp4File(clip);
  const bytes = await readFile(clip);
  const videoId = scan.info.videoTrackId!;
  const vts = scan.info.tracks.find((t) => t.id === videoId)!.timescale;
  // Per track: ticks one clip lasts (video continuous across copies; audio follows the same time).
  const span = new Map(scan.info.tracks.map((t) => [t.id, BigInt(Math.round(60 * t.timescale))]));
  const index = await RecorderIndex.open(dir);
  // What the recorder does when a segment closes, for the cameras that have persisted tables.
  const tables = new SegmentTableStore({ index, dataDir: dir, log: silentLogger });
  for (const camera of ['bench', ...coldCameras, ...moofCameras]) {
    await index.cameras.put(camera, { id: camera, pool: 'default', streams: { main: 'rtsp://127.0.0.1:9/none' }, record: { stream: 'main', format: 'mp4' } });
    await index.schedules.put(camera, { camera, slots: [], timeZone: 'UTC', preSeconds: 0, postSeconds: 0 });
  }
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
    for (const camera of ['bench', ...coldCameras, ...moofCameras]) {
      // The other cameras' files are hard links to the same bytes (same page cache, no disk).
      const own = rel.replace('/bench/', `/${camera}/`);
      if (camera !== 'bench') {
        await mkdir(join(dir, `pools/default/${camera}/2026-10-01`), { recursive: true });
        await link(join(dir, rel), join(dir, own));
      }
      const seg: SegmentRecord = {
        camera,
        startMs,
        endMs: startMs + 60_000,
        file: own,
        format: 'mp4',
        pool: 'default',
        stream: 'main',
        bytes: file.length,
        initSize: scan.initSize,
        mimeType: scan.info.mimeType,
        codecKey: scan.info.codecKey,
        types: [{ type: 'timing', fromMs: startMs }],
        gops: encodeGops(gops),
        open: false,
        flags: {},
      };
      await index.segments.put(seg);
      if (!camera.startsWith('moof')) tables.segmentClosed(seg);
    }
  }
  await tables.idle();
  const recordBytes = index.segments
    .sampleTableKeys()
    .filter((k) => k.camera === 'bench')
    .reduce((n, k) => n + (index.segments.sampleTables(k.camera, k.startMs)?.length ?? 0), 0);
  console.log(
    `persisted sample tables: ${tables.stats.stored} records; one camera's hour: ${(recordBytes / 1e3).toFixed(0)} kB in ${MINUTES} records (GOP tables: ${((MINUTES * scan.fragments.length * 12) / 1e3).toFixed(0)} kB)`,
  );
  await index.close();
  return { files, bytes: total };
}

async function startRecorder(dir: string): Promise<{ child: ChildProcess; http: string }> {
  const port = await freePort();
  const child = spawn(process.execPath, await recorderProgram(), {
    env: { ...process.env, RECORDER_DATA_DIR: dir, RECORDER_HTTP: `127.0.0.1:${port}`, RECORDER_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      buf += s;
      if (buf.includes('"http listening"')) resolve();
      if (buf.length > 1e5) buf = buf.slice(-1e4);
    });
    child.once('exit', (code) => reject(new Error(`recorder exited with ${code}`)));
  });
  child.stdout.resume();
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

const dir = await mkdtemp(join(tmpdir(), 'bench-playback-'));
const load = (): string =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
console.log(`load average at start: ${load()}`);
try {
  console.log(`preparing ${MINUTES} min of segments in ${dir}…`);
  const { files, bytes } = await prepare(dir);
  const { child, http } = await startRecorder(dir);
  try {
    const hour = MINUTES * 60_000;
    const range = (fromMs: number): string => `${http}/api/cameras/bench/video.mp4?from=${fromMs}&to=${fromMs + hour}`;
    const rand = (): number => BASE_MS + Math.floor(Math.random() * 50_000);

    // The very first request after start: nothing cached, no code compiled yet.
    const cold = await ttfb(range(BASE_MS));
    // Random 1-hour ranges: a new moov each time (sample tables cached after the first).
    const moovBuilt: number[] = [];
    for (let i = 0; i < REQUESTS; i++) moovBuilt.push(await ttfb(range(rand())));
    // First requests of other hours (persisted tables, nothing cached for them in the
    // recorder; the files are in the page cache: they were just written).
    const coldOf = (camera: string): Promise<number> => ttfb(`${http}/api/cameras/${camera}/video.mp4?from=${BASE_MS}&to=${BASE_MS + hour}`);
    const coldTables: number[] = [];
    for (const c of coldCameras) coldTables.push(await coldOf(c));
    // The same range again: the built head is cached by ETag (resumes, many viewers).
    const sameRange: number[] = [];
    for (let i = 0; i < REQUESTS; i++) sameRange.push(await ttfb(range(BASE_MS)));
    const play: number[] = [];
    for (let i = 0; i < REQUESTS; i++) play.push(await ttfb(`${http}/api/cameras/bench/play?from=${BASE_MS + Math.floor(Math.random() * (hour - 5000))}`));
    const trick: number[] = [];
    for (let i = 0; i < REQUESTS; i++)
      trick.push(await ttfb(`${http}/api/cameras/bench/play?from=${BASE_MS + Math.floor(Math.random() * (hour - 5000))}&speed=8`));
    // Hours without persisted tables last: each makes the recorder rebuild its 60 records
    // in the background, which must not overlap the figures above or below.
    const coldMoofs: number[] = [];
    for (const c of moofCameras) coldMoofs.push(await coldOf(c));
    await new Promise((r) => setTimeout(r, 8000));

    // Throughput: the same files by cat (to /dev/null and into a socket) and the download, all from the page cache.
    const cat = async (): Promise<number> => {
      const t0 = performance.now();
      await run('sh', ['-c', `cat ${files.map((f) => `'${f}'`).join(' ')} > /dev/null`]);
      return (performance.now() - t0) / 1000;
    };
    // Like for like: the same files sent by `cat` into a loopback TCP socket (the
    // accepted socket is cat's stdout) and read by curl to /dev/null, as the download is.
    const catServer = createServer((sock) => {
      const child = spawn('cat', files, { stdio: ['ignore', sock, 'inherit'] });
      child.once('exit', () => sock.end());
      sock.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => catServer.listen(0, '127.0.0.1', resolve));
    const catPort = (catServer.address() as AddressInfo).port;
    const catTcp = async (): Promise<{ bytes: number; sec: number }> => {
      const { stdout } = await run('curl', ['-s', '--http0.9', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', `http://127.0.0.1:${catPort}/`]);
      const [b, sec] = stdout.trim().split(' ').map(Number);
      if (b !== bytes) throw new Error(`cat over TCP sent ${b} bytes, expected ${bytes}`);
      return { bytes: b, sec: sec! };
    };
    // curl as the client (as a person downloading would); Node's own client is slower.
    const curl = async (): Promise<{ bytes: number; sec: number }> => {
      const { stdout } = await run('curl', ['-s', '-f', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', range(BASE_MS)]);
      const [b, sec] = stdout.trim().split(' ').map(Number);
      return { bytes: b!, sec: sec! };
    };
    // Alternated, best of 3 each: the machine is shared, and a single pass is noisy.
    let catSec = Infinity;
    let tcpSec = Infinity;
    let dl = { bytes: 0, sec: Infinity };
    for (let i = 0; i < 3; i++) {
      catSec = Math.min(catSec, await cat());
      tcpSec = Math.min(tcpSec, (await catTcp()).sec);
      const d = await curl();
      if (d.sec < dl.sec) dl = d;
    }
    catServer.close();
    // A side that did nothing gives no figures (bench/README.md): the download must have
    // carried the hour (the files' bytes, less their per-segment headers).
    requireWork('playback, throughput', dl.bytes > bytes * 0.9 ? [] : [`video.mp4 of the hour gave ${dl.bytes} bytes, the files hold ${bytes}`]);
    // The same files served as they are over the same HTTP stack (GET …/segments/<startMs>.mp4).
    const rawUrls = Array.from({ length: MINUTES }, (_, k) => `${http}/api/cameras/bench/segments/${BASE_MS + k * 60_000}.mp4`);
    const raw = async (): Promise<number> => {
      const t0 = performance.now();
      await run('sh', ['-c', `curl -s -f ${rawUrls.map((u) => `'${u}'`).join(' ')} > /dev/null`]);
      return (performance.now() - t0) / 1000;
    };
    const rawSec = Math.min(await raw(), await raw());

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
    const servedConc = responses.filter((res) => res.statusCode === 200).length;
    requireWork(
      `playback, ${CLIENTS} concurrent downloads`,
      concBytes > 0 && servedConc > 0 ? [] : [`${servedConc} of ${CLIENTS} were served, ${concBytes} bytes received`],
    );

    // CLIENTS playback sessions at speed 4 (every frame, so 8 s of paced lead is 32 s
    // of video, more than the kernel's socket buffers) whose clients stop reading after
    // the init: the server must stall each at its bound instead of queueing.
    const beforeWs = await rssMb(child.pid!);
    let wsPeak = beforeWs;
    const wsSampler = setInterval(() => void rssMb(child.pid!).then((m) => (wsPeak = Math.max(wsPeak, m))), 100);
    let wsBytes = 0;
    const sockets = await Promise.all(
      Array.from(
        { length: CLIENTS },
        (_, i) =>
          new Promise<WebSocket>((resolve, reject) => {
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
          }),
      ),
    );
    await new Promise((r) => setTimeout(r, 10_000));
    clearInterval(wsSampler);
    const wsStalled = await rssMb(child.pid!);
    for (const ws of sockets) ws.terminate();
    requireWork(`playback, ${CLIENTS} WebSocket sessions`, wsBytes > 0 ? [] : ['the sessions received nothing']);

    const row = (name: string, xs: number[]): string => `| ${name} | ${pct(xs, 50).toFixed(1)} ms | ${pct(xs, 99).toFixed(1)} ms |`;
    console.log(`\n${MINUTES} segments, ${(bytes / 1e6).toFixed(0)} MB; video.mp4 of the whole range: ${(dl.bytes / 1e6).toFixed(0)} MB\n`);
    console.log(`very first request after start (nothing cached or compiled, persisted tables): ${cold.toFixed(1)} ms`);
    console.log(
      `first request of ${coldTables.length} more hours (nothing cached for them, persisted tables): p50 ${pct(coldTables, 50).toFixed(1)} ms, p90 ${pct(coldTables, 90).toFixed(1)} ms, p99 ${pct(coldTables, 99).toFixed(1)} ms, max ${Math.max(...coldTables).toFixed(1)} ms`,
    );
    console.log(`first request of ${coldMoofs.length} hours without persisted tables (moofs read): ${coldMoofs.map((x) => x.toFixed(0)).join(', ')} ms\n`);
    console.log('| time to first byte | p50 | p99 |\n| --- | --- | --- |');
    console.log(row(`video.mp4, ${MINUTES} min, random start (moov built each time)`, moovBuilt));
    console.log(row(`video.mp4, ${MINUTES} min, same range (head cached)`, sameRange));
    console.log(row('/play at a random position', play));
    console.log(row('/play?speed=8 at a random position', trick));
    const rate = dl.bytes / dl.sec;
    console.log(
      `\nthroughput (curl, best of 3): video.mp4 ${(rate / 1e6).toFixed(0)} MB/s; cat of the files into a loopback TCP socket read by curl ${(bytes / 1e6 / tcpSec).toFixed(0)} MB/s: ratio ${(rate / (bytes / tcpSec)).toFixed(2)}; cat to /dev/null ${(bytes / 1e6 / catSec).toFixed(0)} MB/s: ratio ${(rate / (bytes / catSec)).toFixed(2)}; the files as they are over HTTP ${(bytes / 1e6 / rawSec).toFixed(0)} MB/s: ratio ${(rate / (bytes / rawSec)).toFixed(2)}`,
    );
    console.log(
      `${CLIENTS} WebSocket sessions at speed 4 whose clients stop reading: recorder RSS ${beforeWs.toFixed(0)} MB before, ${wsStalled.toFixed(0)} MB after 10 s (peak ${wsPeak.toFixed(0)} MB); the clients had received ${(wsBytes / 1e6).toFixed(1)} MB before stopping`,
    );
    console.log(
      `${CLIENTS} concurrent downloads of ${MINUTES}-min ranges: ${(concBytes / 1e9).toFixed(1)} GB in ${concSec} s (${(concBytes / 1e6 / concSec).toFixed(0)} MB/s); recorder RSS ${idleRss.toFixed(0)} MB before, peak ${fullPeak.toFixed(0)} MB while reading, ${stalledRss.toFixed(0)} MB with all ${CLIENTS} stalled (peak overall ${peak.toFixed(0)} MB)`,
    );
    console.log(`load average at the end: ${load()}`);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
