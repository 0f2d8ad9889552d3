/**
 * What the benches share: the pre-encoded 1080p clip (made once into bench/out/), a
 * recorder child process on a free port with N cameras, and small helpers. Benches
 * measure the real recorder (the compiled build `npm start` runs, as a child), never an
 * in-process stand-in.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from '../lib/nats-embedded.ts';

export const outDir = join(import.meta.dirname, 'out');
mkdirSync(outDir, { recursive: true });

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function run(cmd: string, args: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`))));
  });
}

/** A 20-minute 1080p25 4 Mbps H.264 file: 30 s encoded once, then repeated by stream copy. */
export async function clip(): Promise<string> {
  const short = join(outDir, 'clip-1080p25-4M-gop50-30s.mp4');
  const long = join(outDir, 'clip-1080p25-4M-gop50-20min.mp4');
  if (existsSync(long)) return long;
  if (!existsSync(short)) {
    console.error('encoding the 1080p test clip once (about a minute)…');
    await run('ffmpeg', [
      '-v',
      'error',
      '-y',
      '-f',
      'lavfi',
      '-i',
      'testsrc2=size=1920x1080:rate=25',
      '-t',
      '30',
      '-c:v',
      'libx264',
      '-preset',
      'veryfast',
      '-profile:v',
      'main',
      '-b:v',
      '4M',
      '-maxrate',
      '4M',
      '-bufsize',
      '8M',
      '-g',
      '50',
      '-keyint_min',
      '50',
      '-sc_threshold',
      '0',
      '-bf',
      '0',
      '-pix_fmt',
      'yuv420p',
      short,
    ]);
  }
  await run('ffmpeg', ['-v', 'error', '-y', '-stream_loop', '39', '-i', short, '-c', 'copy', long]);
  return long;
}

export async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (e.isFile())
      total += await stat(join(e.parentPath, e.name)).then(
        (s) => s.size,
        () => 0,
      );
  }
  return total;
}

export interface RecorderChild {
  http: string;
  child: ChildProcess;
  exited: Promise<void>;
  /** SIGTERM and wait (segments closed). */
  stop(): Promise<void>;
}

let built: Promise<string> | null = null;

/**
 * Node's arguments that run the recorder the benches measure: the compiled build users
 * run (`npm start`), built once per bench process into bench/out/dist (inside the
 * repository, so it finds node_modules and package.json); with BENCH_SOURCES=1 the
 * TypeScript sources through tsx instead, to compare.
 */
export async function recorderProgram(): Promise<string[]> {
  if (process.env.BENCH_SOURCES) return ['--import', 'tsx', join(import.meta.dirname, '../recorder.ts')];
  built ??= run(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../scripts/build.ts'), join(outDir, 'dist')]).then(() =>
    join(outDir, 'dist', 'recorder.js'),
  );
  return ['--enable-source-maps', await built];
}

/** Starts the recorder on `dataDir` with extra RECORDER_* settings; resolves once HTTP answers. */
export async function startRecorder(dataDir: string, env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<RecorderChild> {
  const port = await freePort();
  // BENCH_RECORDER_NODE_ARGS (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`): profile the recorder of any bench.
  const extraArgs = process.env.BENCH_RECORDER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...extraArgs, ...nodeArgs, ...(await recorderProgram())], {
    env: { ...process.env, RECORDER_DATA_DIR: dataDir, RECORDER_HTTP: `127.0.0.1:${port}`, RECORDER_LOG_LEVEL: 'warn', RECORDER_SEGMENT_SECONDS: '60', ...env },
    stdio: ['ignore', process.env.BENCH_RECORDER_STDOUT ? 'inherit' : 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const http = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${http}/api/health`)).ok) break;
    } catch {
      if (i > 150 || child.exitCode !== null) throw new Error('recorder did not start');
      await sleep(200);
    }
  }
  return {
    http,
    child,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * Pause between starting cameras: GStreamer's RTSP server (the simulated camera) stalls
 * every client when a few dozen connect to one shared media at the same instant; real
 * NVRs stagger their connects too.
 */
export const CONNECT_STAGGER_MS = 150;

export async function putJson(url: string, body: unknown): Promise<void> {
  const res = await fetch(url, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`PUT ${url}: ${res.status} ${await res.text()}`);
}

/** Runs `op` from `workers` loops for `seconds`; the ops done per second and their p99 latency. */
export async function timedLoops(
  workers: number,
  seconds: number,
  op: (worker: number, i: number) => Promise<void>,
): Promise<{ perSecond: number; p99Ms: number; n: number }> {
  const lat: number[] = [];
  const until = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; performance.now() < until; i++) {
        const t0 = performance.now();
        await op(w, i);
        lat.push(performance.now() - t0);
      }
    }),
  );
  return { perSecond: Math.round(lat.length / seconds), p99Ms: +percentile(lat, 99).toFixed(1), n: lat.length };
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

/**
 * A side of a bench that did not do its work (a recorder that recorded nothing, a
 * baseline whose ffmpeg all died, viewers that received nothing): the run fails with
 * the reason and prints no figure (bench/README.md, "A side that did nothing"). Thrown
 * inside the bench's try, so its finally still stops what it started; the process
 * exits non-zero with the reason.
 */
export class BenchFailure extends Error {
  constructor(what: string, problems: string[]) {
    super(`${what}: ${problems.join('; ')}`);
    this.name = 'BenchFailure';
  }
}

/** Throws BenchFailure when `problems` names any. */
export function requireWork(what: string, problems: string[]): void {
  if (problems.length > 0) throw new BenchFailure(what, problems);
}

/** Why each camera of a recorder is not recording (status and last error), for a failure's reason. */
export async function cameraStates(http: string): Promise<string> {
  try {
    const body = (await (await fetch(`${http}/api/cameras`)).json()) as { cameras: { id: string; status: string; lastError?: string | null }[] };
    const by = new Map<string, string[]>();
    for (const c of body.cameras) {
      const key = `${c.status}${c.lastError ? ` (${c.lastError.slice(0, 160)})` : ''}`;
      by.set(key, [...(by.get(key) ?? []), c.id]);
    }
    return [...by].map(([k, ids]) => `${ids.length} ${k}`).join(', ');
  } catch (err) {
    return `camera states unknown: ${(err as Error).message}`;
  }
}
