/**
 * bench/soak: the recorder for a long time with every feature on, watching for what
 * grows. A person runs it for hours; its figures and verdict go in bench/README.md
 * ("Soak"). Issue 12: the recorder died after ~10 minutes with MDB_READERS_FULL.
 *
 *   node --import tsx bench/soak.ts --minutes 240 --cameras 6 --sample-seconds 10
 *   npm run bench:soak -- --minutes 30
 *
 * What runs: the compiled recorder as a child (bench/harness.ts `recorderProgram`,
 * like every bench; BENCH_SOURCES=1 for the sources) and one simulated camera server
 * (sim/camera.ts), with cameras in six roles, repeated for more than six:
 *   event  H.264+AAC, an event slot all week with 10 s of pre-record, a motion pulse
 *          of 2 s every 30 s (recorded from 10 s before to 5 s after: 17 s of 30)
 *   smart  H.264 + an ONVIF metadata track (/h264meta): smart stream split off
 *   ps     H.264+AAC recorded as MPEG-PS segments
 *   thin   H.264 in a pool that thins segments older than --thin-after-seconds to
 *          I-frames (thinAfterDays is a fraction of a day, no shifted clock needed)
 *   g711   H.264 + G.711 A-law (/h264pcma): the audio made AAC by the ingest's ffmpeg
 *   mp2p   H.264 + AAC in MPEG-PS over RTP (/h264ps, GB28181 style): our own RTSP
 *          bridge and PS reader instead of ffmpeg
 * Pools `ring` (all but thin; --pool-mb per three cameras) and `thin`
 * (--thin-pool-mb per camera) are small `capacity` pools (at the default 320x240
 * 400 kbit/s, ~2 and ~5 minutes of video) and the retention tick is 200 ms, so
 * overwrite runs all the time. Meanwhile: a lock on a
 * recent range every 60 s (expiring 90 s later), a label every 30 s (the one from five
 * before deleted), a download (video.mp4, and video.ps of the PS camera) every 15 s, a
 * search of each camera every 10 s, a frame.jpg every 10 s, a smart search every 30 s,
 * a live-view WebSocket client connected the whole time, and the camera server
 * restarted every --camera-restart-minutes (every camera drops off, opens a gap, backs
 * off and comes back). Pictures: an alarm picture of a `ring` camera every
 * --picture-ms (default 500) into the `ring` pool, whose pictures may hold
 * --picture-pool-mb (packs of 1 MB, so cover runs all the time), a picture search and a
 * preview every 10 s. S3 (the
 * `@aws-sdk/client-s3` client on the S3 listener): a 256 kB object put every 5 s,
 * read back and compared, the oldest deleted beyond 20, a listing every 10 s.
 *
 * Every --sample-seconds: LMDB reader slots, RSS, heap used, active handles and the
 * event loop's p99 lag (GET /metrics), open fds (/proc/<pid>/fd), child processes
 * (/proc: the recorder's descendants), cameras recording, segment files on disk, pool
 * usage, ffmpeg restarts. Printed as a table as it goes; at the end a summary (first,
 * last, max, and the slope per hour after the warm-up, by least squares) and a verdict.
 * Also written to bench/out/soak-<time>.json.
 *
 * Fails (exit 1, "FAIL" and the reasons, no success line) when: the recorder exits;
 * a camera is not recording, or writes nothing, for longer than --max-down-seconds;
 * reader slots exceed --max-reader-slots; open fds, children or reader slots are
 * higher through the last third of the run than anywhere in the first third after the
 * warm-up (by more than 16 fds, 1 child, 2 slots); a request fails other than the ways
 * a racing retention explains (404 NO_VIDEO, 410, 409 LOCK_SHARE_EXCEEDED, 503); the
 * live viewer receives nothing for --max-down-seconds while its camera records; or a
 * recorder child outlives it. Heap and RSS growth are reported (a suspect, not a
 * failure: they move with caches that fill for minutes).
 *
 * Every child (recorder, its ffmpeg, the camera server) is ended on exit, on Ctrl-C
 * (once: summary then exit 130; twice: kill at once) and on failure. The data dir is
 * removed unless --keep or the run failed (then its path and the recorder's log are
 * printed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, CreateBucketCommand } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import WebSocket from 'ws';
import { freePort } from '../lib/nats-embedded.ts';
import { SimCamera, type SimMount } from '../sim/camera.ts';
import { outDir, putJson, recorderProgram, sleep } from './harness.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    cameras: { type: 'string', default: '6' },
    'sample-seconds': { type: 'string', default: '10' },
    'warmup-minutes': { type: 'string' },
    'max-down-seconds': { type: 'string', default: '90' },
    'max-reader-slots': { type: 'string', default: '16' },
    'segment-seconds': { type: 'string', default: '10' },
    'retention-tick-ms': { type: 'string', default: '200' },
    'pool-mb': { type: 'string', default: '6' },
    'thin-pool-mb': { type: 'string', default: '4' },
    'thin-after-seconds': { type: 'string', default: '180' },
    'camera-restart-minutes': { type: 'string', default: '10' },
    width: { type: 'string', default: '320' },
    height: { type: 'string', default: '240' },
    kbit: { type: 'string', default: '400' },
    'picture-ms': { type: 'string', default: '500' },
    'picture-pool-mb': { type: 'string', default: '4' },
    keep: { type: 'boolean', default: false },
  },
});
const num = (k: keyof typeof values): number => {
  const v = Number(values[k]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${k} must be a number ≥ 0`);
  return v;
};
const runMs = num('minutes') * 60_000;
const nCameras = Math.max(1, Math.round(num('cameras')));
const sampleMs = Math.max(1, num('sample-seconds')) * 1000;
const warmupMs = values['warmup-minutes'] !== undefined ? num('warmup-minutes') * 60_000 : Math.min(5, Math.max(1, num('minutes') / 6)) * 60_000;
const maxDownMs = num('max-down-seconds') * 1000;
const maxSlots = num('max-reader-slots');
const restartMs = num('camera-restart-minutes') * 60_000;

// g711: G.711 audio made AAC by the ingest's ffmpeg; mp2p: MPEG-PS over RTP read by our
// own bridge and PS reader (no ffmpeg): the two ingest paths issue 12 found broken.
type Role = 'event' | 'smart' | 'ps' | 'thin' | 'g711' | 'mp2p';
const ROLES: Role[] = ['event', 'smart', 'ps', 'thin', 'g711', 'mp2p'];
const MOUNT: Record<Role, SimMount> = { event: 'h264aac', smart: 'h264meta', ps: 'h264aac', thin: 'h264', g711: 'h264pcma', mp2p: 'h264ps' };
const cameras = Array.from({ length: nCameras }, (_, i) => {
  const role = ROLES[i % ROLES.length]!;
  return { id: `soak${i + 1}-${role}`, role, pool: role === 'thin' ? 'thin' : 'ring' };
});
const nOf = (pred: (c: (typeof cameras)[number]) => boolean): number => cameras.filter(pred).length;

// ---------------------------------------------------------------- state

interface Sample {
  t: number; // ms since start
  rssMb: number;
  heapMb: number;
  handles: number;
  lagMs: number;
  fds: number;
  children: number;
  childCommands: Record<string, number>;
  slots: number;
  recording: number;
  segments: number;
  poolMb: Record<string, number>;
  pictureMb: number;
  deleted: number;
  thinned: number;
  restarts: number;
  faults: number;
  liveKb: number;
  requests: number;
  errors: number;
}

const samples: Sample[] = [];
const failures: string[] = [];
const fail = (why: string): void => {
  if (!failures.includes(why)) failures.push(why);
  console.error(`FAIL: ${why}`);
};
const counts = {
  downloads: 0,
  downloadBytes: 0,
  searches: 0,
  frames: 0,
  smart: 0,
  locks: 0,
  labels: 0,
  labelDeletes: 0,
  events: 0,
  expected: 0,
  ok: 0,
  cameraRestarts: 0,
  liveReconnects: 0,
  pictures: 0,
  pictureReads: 0,
  s3Puts: 0,
  s3Gets: 0,
  s3Deletes: 0,
};
const unexpected: string[] = [];
let liveBytes = 0;
let stopping = false;
let interrupted = false;

const work = await mkdtemp(join(tmpdir(), 'bench-soak-'));
const dataDir = join(work, 'data');
const logFile = join(work, 'recorder.log');
let recorder: ChildProcess | null = null;
let recorderExit: Promise<void> = Promise.resolve();
let sim: SimCamera | null = null;
const sockets = new Set<WebSocket>();
/** The recorder's descendants seen at the last sample: none may outlive it. */
let lastDescendants: number[] = [];

process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
function onSignal(): void {
  if (interrupted) {
    recorder?.kill('SIGKILL');
    for (const pid of lastDescendants) tryKill(pid);
    process.exit(130);
  }
  interrupted = true;
  stopping = true;
  console.error('interrupted: stopping (again to kill at once)');
}

// ---------------------------------------------------------------- recorder and cameras

const S3_KEY = 'SOAKACCESSKEY';
const S3_SECRET = 'soak secret of the soak bench';
let s3Url = '';

async function startRecorder(): Promise<string> {
  const port = await freePort();
  s3Url = `http://127.0.0.1:${await freePort()}`;
  const log = createWriteStream(logFile);
  const child = spawn(process.execPath, await recorderProgram(), {
    env: {
      ...process.env,
      RECORDER_DATA_DIR: dataDir,
      RECORDER_HTTP: `127.0.0.1:${port}`,
      RECORDER_LOG_LEVEL: 'warn',
      RECORDER_SEGMENT_SECONDS: values['segment-seconds'],
      RECORDER_RETENTION_TICK_MS: values['retention-tick-ms'],
      RECORDER_MIN_FREE_BYTES: '0',
      RECORDER_MIN_FREE_RATIO: '0',
      RECORDER_S3: s3Url.slice('http://'.length),
      RECORDER_PICTURE_PACK_BYTES: String(1024 * 1024),
      RECORDER_S3_ACCESS_KEY: S3_KEY,
      RECORDER_S3_SECRET_KEY: S3_SECRET,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  recorder = child;
  recorderExit = new Promise<void>((r) =>
    child.once('exit', (code, signal) => {
      if (!stopping) fail(`the recorder exited (${signal ?? `code ${code}`}) after ${minutes(Date.now() - t0)} min; log: ${logFile}`);
      stopping = true;
      r();
    }),
  );
  const http = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${http}/api/health`)).ok) return http;
    } catch {
      if (i > 300 || child.exitCode !== null) throw new Error(`recorder did not start; log: ${logFile}`);
      await sleep(200);
    }
  }
}

let t0 = Date.now();
const minutes = (ms: number): string => (ms / 60_000).toFixed(1);
const iso = (ms: number): string => new Date(ms).toISOString();

/** The parts of a JSON answer the soak reads. */
interface CallJson {
  error?: { code?: string };
  label?: { id?: string };
}

/** One HTTP request, counted: 2xx ok; the answers retention races explain expected; anything else unexpected. */
async function call(
  http: string,
  method: string,
  path: string,
  body?: unknown,
  raw?: { type: string; bytes: Buffer },
): Promise<{ status: number; bytes: number; json: CallJson | null }> {
  let status = 0;
  let text = '';
  let bytes = 0;
  let json: CallJson | null = null;
  try {
    const res = await fetch(`${http}${path}`, {
      method,
      ...(raw ? { headers: { 'content-type': raw.type }, body: raw.bytes } : {}),
      ...(body !== undefined ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(60_000),
    });
    status = res.status;
    const type = res.headers.get('content-type') ?? '';
    if (type.includes('json') || status >= 400) {
      text = await res.text();
      try {
        json = JSON.parse(text) as CallJson;
      } catch {
        /* not JSON */
      }
    } else {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) bytes += chunk.length;
    }
  } catch (err) {
    if (stopping) return { status: 0, bytes, json };
    text = (err as Error).message;
  }
  const code: string = json?.error?.code ?? '';
  if (status >= 200 && status < 300) counts.ok++;
  else if (
    (status === 404 &&
      (code === 'NO_VIDEO' || code === 'NO_SMART_DATA' || code === 'LOCK_NOT_FOUND' || code === 'LABEL_NOT_FOUND' || code === 'PICTURE_NOT_FOUND')) ||
    status === 410 ||
    status === 503 ||
    (status === 409 && code === 'LOCK_SHARE_EXCEEDED')
  )
    counts.expected++;
  else if (!stopping) {
    const line = `${method} ${path.split('?')[0]} → ${status || 'no answer'} ${code || text.slice(0, 200)}`;
    unexpected.push(`${minutes(Date.now() - t0)} min: ${line}`);
    fail(`unexpected answer: ${line}`);
  }
  return { status, bytes, json };
}

/** Runs `fn` every `ms` (first after `ms`), one at a time, until the run stops. */
function every(ms: number, fn: () => Promise<void>): Promise<void> {
  return (async () => {
    while (!stopping) {
      const next = Date.now() + ms;
      while (!stopping && Date.now() < next) await sleep(Math.min(250, next - Date.now()));
      if (stopping) return;
      try {
        await fn();
      } catch (err) {
        if (!stopping) fail(`load loop: ${(err as Error).message}`);
      }
    }
  })();
}

function liveViewer(http: string, camera: string): void {
  if (stopping) return;
  const ws = new WebSocket(`${http.replace(/^http/, 'ws')}/api/cameras/${camera}/live`, ['recorder.v1']);
  sockets.add(ws);
  ws.on('message', (d: Buffer, binary: boolean) => {
    if (binary) liveBytes += d.length;
  });
  ws.on('error', () => {});
  ws.on('close', () => {
    sockets.delete(ws);
    if (stopping) return;
    counts.liveReconnects++;
    setTimeout(() => liveViewer(http, camera), 1000);
  });
}

// ---------------------------------------------------------------- sampling

/** `name{labels} value` lines of a scrape; labels match as a subset. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number[] {
  const out: number[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]] as [string, string]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) out.push(Number(m[3]));
  }
  return out;
}
const one = (text: string, name: string, labels: Record<string, string> = {}): number => metric(text, name, labels)[0] ?? NaN;
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/** pid's descendants with their command names, from /proc. */
function descendants(root: number): { pid: number; comm: string }[] {
  const children = new Map<number, { pid: number; comm: string }[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const close = stat.lastIndexOf(')');
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push({ pid: Number(name), comm: stat.slice(stat.indexOf('(') + 1, close) });
      children.set(ppid, list);
    } catch {
      /* ended meanwhile */
    }
  }
  const out: { pid: number; comm: string }[] = [];
  const walk = (pid: number): void => {
    for (const c of children.get(pid) ?? []) {
      out.push(c);
      walk(c.pid);
    }
  };
  walk(root);
  return out;
}

async function countSegments(): Promise<number> {
  let n = 0;
  for (const e of await readdir(join(dataDir, 'pools'), { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (e.isFile() && /^\d+\.(mp4|ps)$/.test(e.name)) n++;
  }
  return n;
}

const lastOk = new Map<string, number>(); // camera → last sample time it recorded and wrote
let lastLiveBytes = 0;
let lastLiveGrowth = Date.now();
let lastRequests = 0;

async function sample(http: string): Promise<Sample | null> {
  const pid = recorder?.pid;
  if (!pid || recorder?.exitCode !== null) return null;
  const now = Date.now();
  const metrics = await (await fetch(`${http}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
  const pools = (
    (await (await fetch(`${http}/api/pools`, { signal: AbortSignal.timeout(30_000) })).json()) as {
      pools: { id: string; usageBytes: number; pictureBytes?: number; deletedSegments?: number; thinnedSegments?: number }[];
    }
  ).pools;
  let fds = NaN;
  let rssKb = NaN;
  try {
    fds = readdirSync(`/proc/${pid}/fd`).length;
    rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  } catch {
    return null; // exited meanwhile
  }
  const kids = descendants(pid);
  lastDescendants = kids.map((k) => k.pid);
  const childCommands: Record<string, number> = {};
  for (const k of kids) childCommands[k.comm] = (childCommands[k.comm] ?? 0) + 1;

  let recording = 0;
  for (const c of cameras) {
    const state = one(metrics, 'recorder_camera_state', { camera: c.id, state: 'recording' });
    const lastWriteMs = one(metrics, 'recorder_camera_last_write_timestamp_seconds', { camera: c.id }) * 1000;
    const ok = state === 1 && now - lastWriteMs < maxDownMs;
    if (state === 1) recording++;
    if (ok || !lastOk.has(c.id)) lastOk.set(c.id, ok ? now : (lastOk.get(c.id) ?? now));
    const down = now - lastOk.get(c.id)!;
    if (down > maxDownMs)
      fail(
        `camera ${c.id} not recording for ${Math.round(down / 1000)} s (state ${['stopped', 'connecting', 'recording', 'backoff'].find((s) => one(metrics, 'recorder_camera_state', { camera: c.id, state: s }) === 1)}, last write ${Number.isFinite(lastWriteMs) ? `${Math.round((now - lastWriteMs) / 1000)} s ago` : 'never'})`,
      );
  }
  if (liveBytes > lastLiveBytes) {
    lastLiveBytes = liveBytes;
    lastLiveGrowth = now;
  } else if (now - lastLiveGrowth > maxDownMs && lastOk.get(cameras[0]!.id) === now)
    fail(`the live viewer received nothing for ${Math.round((now - lastLiveGrowth) / 1000)} s while its camera recorded`);

  // Cover keeps the pictures at their quota plus the open pack and one being covered.
  const pictureMb = sum(pools.map((p) => p.pictureBytes ?? 0)) / 1e6;
  if (pictureMb > num('picture-pool-mb') + 3)
    fail(`pictures hold ${pictureMb.toFixed(1)} MB, over their ${num('picture-pool-mb')} MB quota: cover is not keeping up`);
  const slots = one(metrics, 'recorder_lmdb_reader_slots');
  if (slots > maxSlots) fail(`LMDB reader slots at ${slots} (bound ${maxSlots}; MDB_READERS_FULL at 126)`);
  const requests = counts.ok + counts.expected + unexpected.length;
  const s: Sample = {
    t: now - t0,
    rssMb: rssKb / 1024,
    heapMb: one(metrics, 'nodejs_heap_size_used_bytes') / 1e6,
    handles: one(metrics, 'nodejs_active_handles_total'),
    lagMs: one(metrics, 'nodejs_eventloop_lag_p99_seconds') * 1000,
    fds,
    children: kids.length,
    childCommands,
    slots,
    recording,
    segments: await countSegments(),
    poolMb: Object.fromEntries(pools.filter((p) => p.id !== 'default').map((p) => [p.id, p.usageBytes / 1e6])),
    pictureMb,
    deleted: sum(pools.map((p) => p.deletedSegments ?? 0)),
    thinned: sum(pools.map((p) => p.thinnedSegments ?? 0)),
    restarts: sum(metric(metrics, 'recorder_ffmpeg_restarts_total')),
    faults: sum(metric(metrics, 'recorder_alarms_total', { kind: 'camera-fault' })),
    liveKb: liveBytes / 1024,
    requests: requests - lastRequests,
    errors: unexpected.length,
  };
  lastRequests = requests;
  return s;
}

const COLUMNS: [string, (s: Sample) => string][] = [
  ['min', (s) => minutes(s.t)],
  ['rss MB', (s) => s.rssMb.toFixed(1)],
  ['heap MB', (s) => s.heapMb.toFixed(1)],
  ['handles', (s) => String(s.handles)],
  ['lag p99 ms', (s) => s.lagMs.toFixed(0)],
  ['fds', (s) => String(s.fds)],
  ['children', (s) => String(s.children)],
  ['slots', (s) => String(s.slots)],
  ['recording', (s) => `${s.recording}/${nCameras}`],
  ['segments', (s) => String(s.segments)],
  [
    'pools MB',
    (s) =>
      Object.values(s.poolMb)
        .map((v) => v.toFixed(1))
        .join('/'),
  ],
  ['pictures MB', (s) => s.pictureMb.toFixed(1)],
  ['deleted', (s) => String(s.deleted)],
  ['thinned', (s) => String(s.thinned)],
  ['restarts', (s) => String(s.restarts)],
  ['live KB', (s) => s.liveKb.toFixed(0)],
  ['requests', (s) => String(s.requests)],
  ['errors', (s) => String(s.errors)],
];
const WIDTH = COLUMNS.map(([h]) => Math.max(h.length, 8));
const row = (cells: string[]): string => cells.map((c, i) => c.padStart(WIDTH[i]!)).join(' ');

// ---------------------------------------------------------------- summary

/** Least-squares slope of y over x (hours). */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = sum(xs) / n;
  const my = sum(ys) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den > 0 ? num / den : NaN;
}

interface Figure {
  figure: string;
  first: number;
  last: number;
  max: number;
  slopePerHour: number;
  earlyMax: number;
  lateMin: number;
}

function summarize(): { figures: Figure[]; warm: Sample[] } {
  const warm = samples.filter((s) => s.t >= warmupMs);
  const third = Math.max(1, Math.floor(warm.length / 3));
  const early = warm.slice(0, third);
  const late = warm.slice(warm.length - third);
  const pick: [string, (s: Sample) => number][] = [
    ['rss MB', (s) => s.rssMb],
    ['heap used MB', (s) => s.heapMb],
    ['active handles', (s) => s.handles],
    ['open fds', (s) => s.fds],
    ['child processes', (s) => s.children],
    ['LMDB reader slots', (s) => s.slots],
    ['event loop lag p99 ms', (s) => s.lagMs],
    ['segment files', (s) => s.segments],
  ];
  const figures = pick.map(([figure, f]) => ({
    figure,
    first: f(samples[0]!),
    last: f(samples[samples.length - 1]!),
    max: Math.max(...samples.map(f)),
    slopePerHour: slope(
      warm.map((s) => s.t / 3_600_000),
      warm.map(f),
    ),
    earlyMax: early.length ? Math.max(...early.map(f)) : NaN,
    lateMin: late.length ? Math.min(...late.map(f)) : NaN,
  }));
  // Grew and stayed grown: the last third's lowest above the first third's highest.
  if (warm.length >= 6) {
    const grown = (name: string, margin: number): void => {
      const g = figures.find((x) => x.figure === name)!;
      if (g.lateMin > g.earlyMax + margin)
        fail(
          `${name} grew: at least ${g.lateMin} through the last third, at most ${g.earlyMax} in the first third after the warm-up (slope ${g.slopePerHour.toFixed(1)}/h)`,
        );
    };
    grown('open fds', 16);
    grown('child processes', 1);
    grown('LMDB reader slots', 2);
  }
  return { figures, warm };
}

function report(): void {
  if (samples.length === 0) {
    console.log('no samples');
    return;
  }
  const { figures, warm } = summarize();
  const suspects: string[] = [];
  for (const name of ['heap used MB', 'rss MB']) {
    const g = figures.find((x) => x.figure === name)!;
    if (warm.length >= 6 && g.lateMin > g.earlyMax * 1.25)
      suspects.push(`${name}: ${g.earlyMax.toFixed(1)} → at least ${g.lateMin.toFixed(1)} (${g.slopePerHour.toFixed(1)}/h)`);
  }
  const last = samples[samples.length - 1]!;
  console.log('');
  console.log(failures.length > 0 ? 'FAILED — figures of a failed run, not a pass:' : interrupted ? 'interrupted — figures so far:' : 'summary:');
  console.log(
    `${minutes(last.t)} min, ${samples.length} samples every ${sampleMs / 1000} s, slopes after a ${minutes(warmupMs)} min warm-up (${warm.length} samples)`,
  );
  console.log(['figure'.padEnd(22), 'first', 'last', 'max', 'slope/h'].map((c, i) => (i ? c.padStart(10) : c)).join(''));
  for (const g of figures)
    console.log(
      [g.figure.padEnd(22), g.first.toFixed(1), g.last.toFixed(1), g.max.toFixed(1), g.slopePerHour.toFixed(2)]
        .map((c, i) => (i ? c.padStart(10) : c))
        .join(''),
    );
  console.log(
    `children at the end: ${JSON.stringify(last.childCommands)}; pools MB at the end: ${JSON.stringify(Object.fromEntries(Object.entries(last.poolMb).map(([k, v]) => [k, +v.toFixed(1)])))}`,
  );
  console.log(
    `segments deleted by retention ${last.deleted}, thinned ${last.thinned}; ffmpeg restarts ${last.restarts} (camera server restarted ${counts.cameraRestarts} times); camera-fault alarms ${last.faults}`,
  );
  console.log(
    `requests: ${counts.ok} ok, ${counts.expected} expected refusals (retention races, busy), ${unexpected.length} unexpected; downloads ${counts.downloads} (${(counts.downloadBytes / 1e6).toFixed(1)} MB), searches ${counts.searches}, frames ${counts.frames}, smart searches ${counts.smart}, locks ${counts.locks}, labels ${counts.labels} (+${counts.labelDeletes} deleted), events ${counts.events}; live ${(liveBytes / 1e6).toFixed(1)} MB, ${counts.liveReconnects} reconnects; pictures written ${counts.pictures}, read ${counts.pictureReads}; S3 puts ${counts.s3Puts}, gets ${counts.s3Gets}, deletes ${counts.s3Deletes}`,
  );
  for (const u of unexpected.slice(0, 10)) console.log(`  unexpected: ${u}`);
  if (suspects.length) console.log(`suspect (not a failure): ${suspects.join('; ')}`);
  if (failures.length > 0) {
    console.log(`verdict: FAIL`);
    for (const f of failures) console.log(`  - ${f}`);
  } else if (!interrupted) console.log('verdict: PASS (recorder alive, every camera recording, reader slots / fds / children flat)');
  const file = join(outDir, `soak-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.json`);
  writeFileSync(file, JSON.stringify({ args: values, cameras, warmupMs, figures, counts, unexpected, failures, interrupted, samples }, null, 1));
  console.log(`samples: ${file}`);
}

// ---------------------------------------------------------------- run

function tryKill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}
const alive = (pid: number): boolean => {
  try {
    // A zombie still answers kill 0; its stat says Z.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return false;
  }
};

async function cleanup(): Promise<void> {
  stopping = true;
  for (const ws of sockets) ws.terminate();
  const rec = recorder;
  if (rec && rec.exitCode === null && rec.signalCode === null) {
    rec.kill('SIGTERM');
    const timer = setTimeout(() => rec.kill('SIGKILL'), 15_000);
    await recorderExit;
    clearTimeout(timer);
  }
  // ffmpeg children end with the recorder (docs/design/architecture.md: no orphans): check, then make sure.
  await sleep(2000);
  const left = lastDescendants.filter(alive);
  if (left.length > 0) {
    fail(`${left.length} of the recorder's children outlived it (pids ${left.join(', ')})`);
    for (const pid of left) tryKill(pid);
  }
  await sim?.stop();
}

let http = '';
try {
  sim = await SimCamera.start({ width: num('width'), height: num('height'), bitrateKbit: num('kbit'), gop: 50, fps: 25 });
  t0 = Date.now();
  http = await startRecorder();
  const seg = Number(values['segment-seconds']);
  await putJson(`${http}/api/pools/ring`, {
    capacityBytes: Math.round(num('pool-mb') * 1e6 * Math.max(1, nOf((c) => c.pool === 'ring') / 3)),
    overwrite: 'capacity',
    // The alarm pictures are covered too (issue 16): a few MB of them, packs of 1 MB.
    pictureCapacityBytes: Math.round(num('picture-pool-mb') * 1e6),
  });
  await putJson(`${http}/api/pools/thin`, {
    capacityBytes: Math.round(
      num('thin-pool-mb') *
        1e6 *
        Math.max(
          1,
          nOf((c) => c.pool === 'thin'),
        ),
    ),
    overwrite: 'capacity',
    thinAfterDays: num('thin-after-seconds') / 86_400,
  });
  for (const c of cameras) {
    await putJson(`${http}/api/cameras/${c.id}`, {
      pool: c.pool,
      streams: { main: sim.url(MOUNT[c.role]) },
      ...(c.role === 'ps' ? { record: { stream: 'main', format: 'ps' } } : {}),
    });
    if (c.role === 'event')
      await putJson(`${http}/api/cameras/${c.id}/schedule`, {
        timeZone: 'UTC',
        slots: [{ days: [0, 1, 2, 3, 4, 5, 6], start: '00:00', end: '24:00', type: 'event' }],
        preSeconds: 10,
        postSeconds: 5,
      });
    await sleep(300);
  }
  console.error(
    `soak: ${nCameras} cameras (${cameras.map((c) => c.id).join(', ')}), ${minutes(runMs)} min, segments ${seg} s, retention tick ${values['retention-tick-ms']} ms, data ${dataDir}, recorder pid ${recorder!.pid}`,
  );
  liveViewer(http, cameras[0]!.id);

  const recent = (): { from: string; to: string } => ({ from: iso(Date.now() - 40_000), to: iso(Date.now() - 10_000) });
  let turn = 0;
  const pickCamera = (): (typeof cameras)[number] => cameras[turn++ % cameras.length]!;
  const labelIds: string[] = [];
  // Alarm pictures: eight 640x360 JPEGs of noise (no two alike, as camera pictures are).
  const jpegs = await Promise.all(
    Array.from({ length: 8 }, (_, i) =>
      sharp(randomBytes(160 * 90 * 3), { raw: { width: 160, height: 90, channels: 3 } })
        .resize(640, 360)
        .jpeg({ quality: 70 + i })
        .toBuffer(),
    ),
  );
  const pictureIds: string[] = [];
  const ringCameras = cameras.filter((c) => c.pool === 'ring');
  const s3 = new S3Client({ endpoint: s3Url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: S3_KEY, secretAccessKey: S3_SECRET } });
  await s3.send(new CreateBucketCommand({ Bucket: 'soak' }));
  const objectKeys: string[] = [];
  const s3Step = async (what: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      if (!stopping) {
        const line = `S3 ${what} → ${(err as Error).name}: ${(err as Error).message.slice(0, 200)}`;
        unexpected.push(`${minutes(Date.now() - t0)} min: ${line}`);
        fail(`unexpected answer: ${line}`);
      }
    }
  };
  const loops = [
    every(num('picture-ms'), async () => {
      const c = ringCameras[counts.pictures % Math.max(1, ringCameras.length)] ?? cameras[0]!;
      const got = await call(http, 'POST', `/api/pictures?camera=${c.id}&type=alarm&meta.n=${counts.pictures}`, undefined, {
        type: 'image/jpeg',
        bytes: jpegs[counts.pictures % jpegs.length]!,
      });
      counts.pictures++;
      const id = (got.json as { id?: string } | null)?.id;
      if (id) pictureIds.push(id);
      if (pictureIds.length > 200) pictureIds.shift();
    }),
    every(10_000, async () => {
      await call(http, 'GET', `/api/pictures?from=${iso(Date.now() - 600_000)}&to=${iso(Date.now())}&type=alarm&limit=100`);
      const id = pictureIds[Math.floor(pictureIds.length / 2)];
      if (id) await call(http, 'GET', `/api/pictures/${id}?width=160`);
      counts.pictureReads += 2;
    }),
    every(5_000, async () => {
      const key = `clips/${Date.now()}.bin`;
      const body = randomBytes(256 * 1024);
      await s3Step('PutObject', async () => {
        await s3.send(new PutObjectCommand({ Bucket: 'soak', Key: key, Body: body }));
        counts.s3Puts++;
        objectKeys.push(key);
        const back = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: 'soak', Key: key }))).Body!.transformToByteArray());
        counts.s3Gets++;
        if (!back.equals(body)) fail(`S3 object ${key} read back different from what was put`);
      });
      while (objectKeys.length > 20) {
        const old = objectKeys.shift()!;
        await s3Step('DeleteObject', async () => {
          await s3.send(new DeleteObjectCommand({ Bucket: 'soak', Key: old }));
          counts.s3Deletes++;
        });
      }
    }),
    every(10_000, async () => {
      await s3Step('ListObjectsV2', async () => {
        await s3.send(new ListObjectsV2Command({ Bucket: 'soak', Prefix: 'clips/' }));
      });
    }),
    every(30_000, async () => {
      for (const c of cameras.filter((x) => x.role === 'event')) {
        await call(http, 'POST', `/api/cameras/${c.id}/events`, { type: 'motion', action: 'pulse', seconds: 2 });
        counts.events++;
      }
    }),
    every(10_000, async () => {
      for (const c of cameras) {
        await call(http, 'GET', `/api/recordings?camera=${c.id}&from=${iso(Date.now() - 600_000)}&to=${iso(Date.now())}`);
        counts.searches++;
      }
    }),
    every(15_000, async () => {
      const c = pickCamera();
      const r = recent();
      const got = await call(http, 'GET', `/api/cameras/${c.id}/video.mp4?from=${r.from}&to=${r.to}`);
      counts.downloads++;
      counts.downloadBytes += got.bytes;
      if (c.role === 'ps') {
        const ps = await call(http, 'GET', `/api/cameras/${c.id}/video.ps?from=${r.from}&to=${r.to}`);
        counts.downloads++;
        counts.downloadBytes += ps.bytes;
      }
    }),
    every(10_000, async () => {
      await call(http, 'GET', `/api/cameras/${pickCamera().id}/frame.jpg?at=${iso(Date.now() - 15_000)}&width=320`);
      counts.frames++;
    }),
    every(30_000, async () => {
      for (const c of cameras.filter((x) => x.role === 'smart')) {
        await call(http, 'GET', `/api/cameras/${c.id}/smart?from=${iso(Date.now() - 120_000)}&to=${iso(Date.now())}`);
        counts.smart++;
      }
    }),
    every(60_000, async () => {
      const c = cameras.find((x) => x.pool === 'ring') ?? cameras[0]!;
      await call(http, 'POST', '/api/locks', { camera: c.id, from: iso(Date.now() - 30_000), to: iso(Date.now() - 10_000), until: iso(Date.now() + 90_000) });
      counts.locks++;
    }),
    every(30_000, async () => {
      const c = pickCamera();
      const got = await call(http, 'POST', '/api/labels', {
        camera: c.id,
        from: iso(Date.now() - 20_000),
        to: iso(Date.now() - 10_000),
        text: `soak ${counts.labels}`,
      });
      counts.labels++;
      if (got.json?.label?.id) labelIds.push(got.json.label.id);
      if (labelIds.length > 5) {
        await call(http, 'DELETE', `/api/labels/${labelIds.shift()}`);
        counts.labelDeletes++;
      }
    }),
    ...(restartMs > 0
      ? [
          every(restartMs, async () => {
            await sim!.restart();
            counts.cameraRestarts++;
          }),
        ]
      : []),
  ];

  console.log(row(COLUMNS.map(([h]) => h)));
  const end = t0 + runMs;
  while (!stopping) {
    const next = Math.min(end, Date.now() + sampleMs);
    while (!stopping && Date.now() < next) await sleep(Math.min(250, next - Date.now()));
    if (stopping) break;
    const s = await sample(http).catch((err: Error) => {
      if (!stopping) fail(`sampling failed: ${err.message}`);
      return null;
    });
    if (s) {
      samples.push(s);
      console.log(row(COLUMNS.map(([, f]) => f(s))));
    }
    if (Date.now() >= end) break;
  }
  stopping = true;
  await Promise.all(loops);
} catch (err) {
  fail(`soak: ${(err as Error).stack ?? String(err)}`);
} finally {
  await cleanup();
  report();
  if (failures.length > 0 || values.keep) {
    console.log(`data dir kept: ${work} (recorder log: ${logFile})`);
    if (failures.length > 0) {
      try {
        const tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-15);
        console.log(`recorder log, last lines:\n${tail.join('\n')}`);
      } catch {
        /* no log */
      }
    }
  } else await rm(work, { recursive: true, force: true });
}
process.exit(failures.length > 0 ? 1 : interrupted ? 130 : 0);
