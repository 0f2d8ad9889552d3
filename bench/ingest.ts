/**
 * bench/ingest: N cameras of a pre-encoded 1080p 4 Mbps H.264 stream (served by the
 * simulated camera from a file, no encoding), recorded by the recorder and, at the same
 * time in the same process tree, by a bare `ffmpeg -c copy -f segment` per camera
 * (the baseline). Reports CPU and PSS per camera for both, their ratio, fragments lost
 * and disk bytes written. Method and figures: bench/README.md.
 *
 *   node --import tsx bench/ingest.ts --cameras 25,50,100 --seconds 60 [--ingest ffmpeg]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SimCamera } from '../sim/camera.ts';
import { breakdownCores, recorderBreakdown, sampleTrees, threadTicks, ticksToCores, type ThreadTicks } from './proc-stats.ts';
import {
  BenchFailure,
  CONNECT_STAGGER_MS,
  cameraStates,
  clip,
  dirBytes,
  outDir,
  putJson,
  requireWork,
  sleep,
  startRecorder as startRecorderChild,
} from './harness.ts';

async function startRecorder(n: number, url: (i: number) => string, dir: string): Promise<Group & { http: string }> {
  // --cpu-prof: V8 profile of the recorder's main thread, written at its exit (bench/out/prof).
  const rec = await startRecorderChild(dir, { RECORDER_INGEST: ingest }, [
    ...(values['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${join(outDir, 'prof')}`] : []),
    ...(values['node-arg'] ?? []),
  ]);
  for (let i = 0; i < n; i++) {
    await putJson(`${rec.http}/api/cameras/cam${i}`, { streams: { main: url(i) } });
    await sleep(CONNECT_STAGGER_MS);
  }
  return {
    http: rec.http,
    roots: [rec.child.pid!],
    exited: () => (rec.child.exitCode !== null || rec.child.signalCode !== null ? 1 : 0),
    stop: () => rec.stop(),
  };
}

const { values } = parseArgs({
  options: {
    cameras: { type: 'string', default: '25,50' },
    seconds: { type: 'string', default: '60' },
    warmup: { type: 'string', default: '15' },
    mode: { type: 'string', default: 'both' },
    'cpu-prof': { type: 'boolean', default: false },
    // Extra flags for the recorder's node (e.g. --max-semi-space-size=16), to try GC settings.
    'node-arg': { type: 'string', multiple: true },
    // An H.264 MP4 of your own instead of the 1080p bench clip (figures then compare to nothing published).
    clip: { type: 'string' },
    // Each N this many times, with a median and the count of runs thrown away.
    runs: { type: 'string', default: '1' },
    // Who reads the cameras in the recorder: native (our own RTSP client, the default) or ffmpeg (one process per camera).
    ingest: { type: 'string', default: 'native' },
  },
});
if (values.ingest !== 'ffmpeg' && values.ingest !== 'native') throw new Error(`--ingest is ffmpeg or native, not ${values.ingest}`);
const ingest: 'ffmpeg' | 'native' = values.ingest;
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a whole number of at least 1, not ${values.runs}`);
const counts = values.cameras.split(',').map(Number);
const windowSec = Number(values.seconds);
const warmupSec = Number(values.warmup);
interface Group {
  roots: number[];
  /** How many of the side's processes (roots) have exited. */
  exited(): number;
  stop(): Promise<void>;
}

async function startBaseline(n: number, url: (i: number) => string, dir: string): Promise<Group> {
  const procs: ChildProcess[] = [];
  for (let i = 0; i < n; i++) {
    if (i > 0) await sleep(CONNECT_STAGGER_MS);
    const camDir = join(dir, `cam${i}`);
    mkdirSync(camDir, { recursive: true });
    procs.push(
      spawn(
        'ffmpeg',
        [
          '-nostdin',
          '-v',
          'error',
          '-rtsp_transport',
          'tcp',
          '-i',
          url(i),
          '-c',
          'copy',
          '-f',
          'segment',
          '-segment_time',
          '60',
          '-reset_timestamps',
          '1',
          join(camDir, '%05d.mp4'),
        ],
        { stdio: 'ignore' },
      ),
    );
  }
  return {
    roots: procs.map((p) => p.pid!),
    exited: () => procs.filter((p) => p.exitCode !== null || p.signalCode !== null).length,
    async stop() {
      // SIGINT lets ffmpeg finish its file; one stuck on a stalled RTSP read gets SIGKILL.
      await Promise.all(
        procs.map(
          (p) =>
            new Promise((r) => {
              if (p.exitCode !== null || p.signalCode !== null) return r(null);
              const force = setTimeout(() => p.kill('SIGKILL'), 5000);
              p.once('exit', () => (clearTimeout(force), r(null)));
              p.kill('SIGINT');
            }),
        ),
      );
    },
  };
}

/** All baseline ffmpeg processes' user and system time together. */
function baselineBreakdown(roots: number[]): ThreadTicks {
  const all = { user: 0, sys: 0 };
  for (const pid of roots) {
    for (const t of Object.values(threadTicks(pid))) {
      all.user += t.user;
      all.sys += t.sys;
    }
  }
  return { ffmpeg: all };
}

/** bench/floor-recorder.ts: the same ffmpeg per camera piped into one Node process that only appends to files. */
async function startFloor(n: number, url: (i: number) => string, dir: string): Promise<Group> {
  const urls = Array.from({ length: n }, (_, i) => url(i));
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, process.env.FLOOR_SCRIPT ?? 'floor-recorder.ts'), dir, ...urls], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, CONNECT_STAGGER_MS: String(CONNECT_STAGGER_MS) },
  });
  await sleep(n * CONNECT_STAGGER_MS + 1000);
  return {
    roots: [child.pid!],
    exited: () => (child.exitCode !== null || child.signalCode !== null ? 1 : 0),
    // SIGTERM, and SIGKILL 10 s later: a floor that hangs must not hang the bench.
    stop: () =>
      new Promise((r) => {
        if (child.exitCode !== null || child.signalCode !== null) return r();
        const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
        child.once('exit', () => (clearTimeout(kill), r()));
        child.kill('SIGTERM');
      }),
  };
}

interface RecordedStats {
  recordedSec: number;
  gaps: number;
}

async function recorded(http: string, n: number, fromMs: number, toMs: number): Promise<RecordedStats> {
  let recordedSec = 0;
  let gaps = 0;
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${http}/api/recordings?camera=cam${i}&from=${fromMs}&to=${toMs}`);
    const body = (await res.json()) as { spans: { from: string; to: string }[]; gaps: unknown[] };
    for (const s of body.spans) recordedSec += (Date.parse(s.to) - Date.parse(s.from)) / 1000;
    gaps += body.gaps.length;
  }
  return { recordedSec, gaps };
}

interface Row {
  cameras: number;
  side: 'floor' | 'recorder';
  /** Who read the cameras in the recorder (null for a floor). */
  ingest: 'ffmpeg' | 'native' | null;
  windowSec: number;
  baselineCoresPerCam: number | null;
  recorderCoresPerCam: number | null;
  camerasPerCoreAt70: { baseline: number | null; recorder: number | null };
  baselinePssMbPerCam: number | null;
  recorderPssMbPerCam: number | null;
  cpuRatio: number | null;
  recordedShare: number | null;
  gaps: number | null;
  recorderCores: unknown;
  baselineCores: unknown;
  baselineDiskMb: number | null;
  recorderDiskMb: number | null;
}

const perCoreAt70 = (coresPerCam: number | null): number | null => (coresPerCam && coresPerCam > 0 ? Math.floor(0.7 / coresPerCam) : null);

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The runs of one N kept, as medians, with how many were thrown away. */
function summarize(n: number, kept: Row[], thrownAway: number): Record<string, unknown> {
  const of = (f: (r: Row) => number | null): number[] => kept.map(f).filter((x): x is number => x !== null);
  const ratios = of((r) => r.cpuRatio);
  return {
    cameras: n,
    summary: true,
    runsKept: kept.length,
    runsThrownAway: thrownAway,
    cpuRatios: ratios.map((x) => Math.round(x * 100) / 100),
    cpuRatioMedian: median(ratios),
    pssRatioMedian: median(of((r) => (r.recorderPssMbPerCam !== null && r.baselinePssMbPerCam ? r.recorderPssMbPerCam / r.baselinePssMbPerCam : null))),
    recordedShareMin: kept.some((r) => r.recordedShare !== null) ? Math.min(...of((r) => r.recordedShare)) : null,
    camerasPerCoreAt70: { baseline: perCoreAt70(median(of((r) => r.baselineCoresPerCam))), recorder: perCoreAt70(median(of((r) => r.recorderCoresPerCam))) },
  };
}

/** Bytes under `dir` by camera: the first `cam<i>` in a file's path names it. */
async function bytesPerCamera(dir: string, n: number): Promise<number[]> {
  const out = new Array<number>(n).fill(0);
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (!e.isFile()) continue;
    const m = /cam(\d+)/.exec(join(e.parentPath, e.name).slice(dir.length));
    const i = m ? Number(m[1]) : -1;
    if (i >= 0 && i < n)
      out[i]! += await stat(join(e.parentPath, e.name)).then(
        (st) => st.size,
        () => 0,
      );
  }
  return out;
}

/** The cameras of a side that wrote less than half what its median camera wrote in the window. */
function starved(side: string, before: number[], after: number[]): string[] {
  const grew = after.map((b, i) => b - before[i]!);
  const med = median(grew) ?? 0;
  const low = grew.flatMap((g, i) => (g < med / 2 ? [`cam${i}`] : []));
  return low.length > 0 ? [`a camera server stalled: ${side} ${low.join(', ')} wrote less than half the median camera`] : [];
}

/** One run of N cameras; throws BenchFailure when a side did no work in the window. */
async function runOnce(n: number): Promise<Row> {
  const work = await mkdtemp(join(tmpdir(), `bench-ingest-${n}-`));
  // --mode floor: the baseline beside bench/floor-recorder.ts instead of the recorder.
  const floor = values.mode === 'floor';
  const side = floor ? 'floor recorder' : 'recorder';
  const baseDir = join(work, 'baseline');
  const recDir = floor ? join(work, 'floor') : join(work, 'recorder', 'pools');
  let base: Group | null = null;
  let rec: (Group & { http?: string }) | null = null;
  try {
    base = values.mode !== 'recorder' ? await startBaseline(n, url, baseDir) : null;
    rec = floor ? await startFloor(n, url, join(work, 'floor')) : values.mode !== 'baseline' ? await startRecorder(n, url, join(work, 'recorder')) : null;
    await sleep(warmupSec * 1000);
    // The same readings at the window's start and end: CPU ticks and PSS of each side's
    // process tree, the recorder's threads, and the bytes each camera wrote.
    const snapshot = async () => ({
      base: base ? sampleTrees(base.roots) : null,
      rec: rec ? sampleTrees(rec.roots) : null,
      recThreads: rec ? recorderBreakdown(rec.roots[0]!) : null,
      baseThreads: base ? baselineBreakdown(base.roots) : null,
      baseCams: base ? await bytesPerCamera(baseDir, n) : null,
      recBytes: rec ? await dirBytes(recDir) : 0,
      floorCams: floor && rec ? await bytesPerCamera(recDir, n) : null,
    });
    const start = await snapshot();
    const fromMs = Date.now();
    await sleep(windowSec * 1000);
    const toMs = Date.now();
    const end = await snapshot();
    const [b0, b1, r0, r1] = [start.base, end.base, start.rec, end.rec];
    const [bd0, bd1, bb0, bb1] = [start.recThreads, end.recThreads, start.baseThreads, end.baseThreads];
    const sum = (xs: number[] | null): number => (xs ?? []).reduce((a, b) => a + b, 0);

    // A side that did nothing in the window gives no figures (bench/README.md): a
    // recorder that recorded nothing once printed a negative CPU ratio (its dying
    // ffmpeg children took their ticks out of the tree) and a recorded share of 0.
    const problems: string[] = [];
    if (base && b0 && b1) {
      if (sum(end.baseCams) <= sum(start.baseCams)) problems.push(`the baseline wrote nothing in the window (${base.exited()} of its ${n} ffmpeg exited)`);
      if (b1.ticks < b0.ticks)
        problems.push(`the baseline's CPU ticks went down in the window (${b0.ticks} → ${b1.ticks}): ${base.exited()} of its ${n} ffmpeg exited`);
      if (base.exited() > 0) problems.push(`${base.exited()} of the baseline's ${n} ffmpeg exited`);
    }
    // A camera server that stalls starves some cameras of both sides while the rest go
    // on: any camera that wrote less than half the median camera is a stall.
    if (start.baseCams && end.baseCams) problems.push(...starved('baseline', start.baseCams, end.baseCams));
    if (start.floorCams && end.floorCams) problems.push(...starved('floor', start.floorCams, end.floorCams));
    // Video that ended in the window must be indexed; leave two GOPs for the tail.
    let rs: RecordedStats | null = null;
    if (rec && r0 && r1) {
      if (rec.exited() > 0) problems.push(`the ${side} exited`);
      else if (rec.http) {
        rs = await recorded(rec.http, n, fromMs, toMs - 4000);
        if (rs.recordedSec <= 0) problems.push(`the recorder recorded nothing in the window (${rs.gaps} gaps; cameras: ${await cameraStates(rec.http)})`);
      }
      if (floor && end.recBytes <= start.recBytes) problems.push('the floor recorder wrote nothing in the window');
      if (r1.ticks < r0.ticks) problems.push(`the ${side}'s CPU ticks went down in the window (${r0.ticks} → ${r1.ticks}): processes of its tree exited`);
    }
    requireWork(`ingest, ${n} cameras`, problems);

    await rec?.stop();
    await base?.stop();
    const seconds = (toMs - fromMs) / 1000;
    const baselineCoresPerCam = b0 && b1 ? ticksToCores(b1.ticks - b0.ticks, seconds) / n : null;
    const recorderCoresPerCam = r0 && r1 ? ticksToCores(r1.ticks - r0.ticks, seconds) / n : null;
    const row: Row = {
      cameras: n,
      side: floor ? 'floor' : 'recorder',
      ingest: floor ? null : ingest,
      windowSec: Math.round(seconds),
      baselineCoresPerCam,
      recorderCoresPerCam,
      // Capacity a buyer understands: cameras one core carries at 70 % busy, the camera servers not counted.
      camerasPerCoreAt70: { baseline: perCoreAt70(baselineCoresPerCam), recorder: perCoreAt70(recorderCoresPerCam) },
      baselinePssMbPerCam: b1 ? b1.pssKb / 1024 / n : null,
      recorderPssMbPerCam: r1 ? r1.pssKb / 1024 / n : null,
      cpuRatio: b0 && b1 && r0 && r1 ? (r1.ticks - r0.ticks) / Math.max(1, b1.ticks - b0.ticks) : null,
      recordedShare: rs ? rs.recordedSec / (n * (seconds - 4)) : null,
      gaps: rs?.gaps ?? null,
      // Where the CPU goes (cores, whole window): node's threads by kind + ffmpeg children.
      recorderCores: bd0 && bd1 ? breakdownCores(bd0, bd1, seconds) : null,
      baselineCores: bb0 && bb1 ? breakdownCores(bb0, bb1, seconds) : null,
      baselineDiskMb: base ? (await dirBytes(baseDir)) / 1e6 : null,
      recorderDiskMb: rec ? (await dirBytes(recDir)) / 1e6 : null,
    };
    console.log(JSON.stringify(row));
    return row;
  } finally {
    await rec?.stop();
    await base?.stop();
    await rm(work, { recursive: true, force: true });
  }
}

const results: object[] = [];
const file = values.clip ?? (await clip());
// One simulated camera server per CAMERAS_PER_SIM cameras (both sides): GStreamer's RTSP
// server stalls all clients of one shared media somewhere past ~50 TCP clients.
const CAMERAS_PER_SIM = 25;
const sims: SimCamera[] = [];
for (let i = 0; i < Math.ceil(Math.max(...counts) / CAMERAS_PER_SIM); i++) sims.push(await SimCamera.start({ file }));
const url = (i: number): string => sims[Math.floor(i / CAMERAS_PER_SIM) % sims.length]!.url('file');
try {
  for (const n of counts) {
    // --runs K: each N K times. A run where a side stalled (a camera server stopped
    // serving some cameras, a baseline ffmpeg exited, a side wrote nothing) is thrown
    // away and counted; if every run is, the bench fails rather than print figures.
    const kept: Row[] = [];
    const thrown: string[] = [];
    for (let r = 0; r < runs; r++) {
      try {
        kept.push(await runOnce(n));
      } catch (err) {
        if (!(err instanceof BenchFailure)) throw err;
        thrown.push(err.message);
        console.error(`ingest, ${n} cameras, run ${r + 1}: thrown away: ${err.message}`);
        if (thrown.length === runs) throw err;
        // A stalled camera server would stall the next run too: fresh ones.
        for (const [i, sim] of sims.entries()) {
          await sim.stop();
          sims[i] = await SimCamera.start({ file });
        }
      }
    }
    results.push(...kept);
    if (runs > 1) {
      const summary = summarize(n, kept, thrown.length);
      results.push(summary);
      console.log(JSON.stringify(summary));
    }
  }
} finally {
  for (const sim of sims) await sim.stop();
}
writeFileSync(join(outDir, `ingest-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.json`), JSON.stringify(results, null, 2));
