/**
 * bench/cluster-cpu: the CPU a node spends on cluster duties (issue 15 "the CPU a node
 * spends on cluster duties at 100 cameras"; bench/README.md "bench/cluster-cpu").
 *
 *   node --import tsx bench/cluster-cpu.ts --cameras 100 --seconds 60 --rounds 2
 *
 * The same recorder (the compiled build) recording the same cameras of one simulated
 * camera, alternately: alone with its embedded nats-server (baseline), and as a node of
 * a cluster (three nats-servers clustered on loopback, its tick reading every camera's
 * owner key each 500 ms, heartbeats, a fence check per GOP, the holders catalog, the
 * copy stream's consumer). Per side, once every camera records, CPU over `--seconds` of
 * the recorder's own process (where the cluster duties run), of its ffmpeg children, and
 * of the NATS servers (the embedded one; the cluster's three). A side on which a camera
 * is not recording at the start or the end of its window fails the run.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SimCamera } from '../sim/camera.ts';
import { startNatsCluster, type NatsCluster } from '../sim/nats-cluster.ts';
import { BenchFailure, CONNECT_STAGGER_MS, cameraStates, putJson, requireWork, sleep, startRecorder, type RecorderChild } from './harness.ts';
import { cpuTicks, processTree, ticksToCores } from './proc-stats.ts';

const { values } = parseArgs({ options: { cameras: { type: 'string' }, seconds: { type: 'string' }, rounds: { type: 'string' } } });
const CAMERAS = Number(values.cameras ?? 100);
const SECONDS = Number(values.seconds ?? 60);
const ROUNDS = Number(values.rounds ?? 2);

const dir = await mkdtemp(join(tmpdir(), 'bench-cluster-cpu-'));

interface Side {
  recorderCores: number;
  ffmpegCores: number;
  natsCores: number;
}

async function recordingCount(http: string): Promise<number> {
  const body = (await (await fetch(`${http}/api/cameras`)).json()) as { cameras: { status: string }[] };
  return body.cameras.filter((c) => c.status === 'recording').length;
}

/** The recorder's own ticks, its children's (ffmpeg; the embedded nats-server apart) and the NATS servers'. */
function sample(rec: RecorderChild, natsPids: () => number[]): { recorder: number; ffmpeg: number; nats: number } {
  const nats = new Set(natsPids().flatMap((p) => processTree(p)));
  let ffmpeg = 0;
  for (const pid of processTree(rec.child.pid!)) if (pid !== rec.child.pid && !nats.has(pid)) ffmpeg += cpuTicks(pid);
  let natsTicks = 0;
  for (const pid of nats) natsTicks += cpuTicks(pid);
  return { recorder: cpuTicks(rec.child.pid!), ffmpeg, nats: natsTicks };
}

/** The embedded nats-server under the recorder (its command line names nats-server). */
function embeddedNats(rec: RecorderChild): number[] {
  return processTree(rec.child.pid!).filter((pid) => {
    try {
      return /nats-server/.test(readCmdline(pid));
    } catch {
      return false;
    }
  });
}

function readCmdline(pid: number): string {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
}

async function side(kind: 'alone' | 'cluster', sim: SimCamera, round: number): Promise<Side> {
  let nats: NatsCluster | null = null;
  let rec: RecorderChild | null = null;
  try {
    const env: Record<string, string> = { RECORDER_SEGMENT_SECONDS: '60' };
    if (kind === 'cluster') {
      nats = await startNatsCluster({ dir: join(dir, `nats-${round}`) });
      env.RECORDER_NATS_URL = nats.urls;
    }
    rec = await startRecorder(join(dir, `${kind}-${round}`), env);
    for (let i = 0; i < CAMERAS; i++) {
      const id = `cam${i + 1}`;
      for (let tries = 0; ; tries++) {
        try {
          await putJson(`${rec.http}/api/cameras/${id}`, { streams: { main: sim.url('h264') } });
          break;
        } catch (err) {
          // A cluster node refuses config until its shared state is bound (CLUSTER_UNAVAILABLE).
          if (tries > 120) throw err;
          await sleep(500);
        }
      }
      await sleep(CONNECT_STAGGER_MS);
    }
    const r = rec;
    const deadline = Date.now() + 180_000;
    while ((await recordingCount(r.http)) < CAMERAS) {
      if (Date.now() > deadline) throw new BenchFailure('cluster-cpu', [`${kind}: not every camera recording (${await cameraStates(r.http)})`]);
      await sleep(500);
    }
    // Settled: the starts' own CPU is not measured.
    await sleep(5000);
    const natsPids = (): number[] => (nats ? nats.servers.map((s) => s.pid()).filter((p): p is number => p !== null) : embeddedNats(r));
    const a = sample(r, natsPids);
    await sleep(SECONDS * 1000);
    const b = sample(r, natsPids);
    const recording = await recordingCount(r.http);
    requireWork(
      'cluster-cpu',
      recording < CAMERAS ? [`${kind}: ${CAMERAS - recording} cameras stopped recording in the window (${await cameraStates(r.http)})`] : [],
    );
    return {
      recorderCores: ticksToCores(b.recorder - a.recorder, SECONDS),
      ffmpegCores: ticksToCores(b.ffmpeg - a.ffmpeg, SECONDS),
      natsCores: ticksToCores(b.nats - a.nats, SECONDS),
    };
  } finally {
    await rec?.stop();
    await nats?.stop();
  }
}

try {
  const sim = await SimCamera.start({ width: 160, height: 120, bitrateKbit: 150 });
  try {
    const alone: Side[] = [];
    const cluster: Side[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Alternating sides, so the machine's drift hits both alike.
      if (round % 2 === 0) {
        alone.push(await side('alone', sim, round));
        cluster.push(await side('cluster', sim, round));
      } else {
        cluster.push(await side('cluster', sim, round));
        alone.push(await side('alone', sim, round));
      }
    }
    const mean = (xs: Side[], k: keyof Side): number => Math.round((xs.reduce((n, x) => n + x[k], 0) / xs.length) * 1000) / 1000;
    const sum = (xs: Side[]): Side => ({ recorderCores: mean(xs, 'recorderCores'), ffmpegCores: mean(xs, 'ffmpegCores'), natsCores: mean(xs, 'natsCores') });
    const a = sum(alone);
    const c = sum(cluster);
    console.log(
      JSON.stringify(
        {
          bench: 'cluster-cpu',
          cameras: CAMERAS,
          seconds: SECONDS,
          rounds: ROUNDS,
          aloneCores: a,
          clusterCores: c,
          clusterDutiesRecorderCores: Math.round((c.recorderCores - a.recorderCores) * 1000) / 1000,
          recorderRatio: Math.round((c.recorderCores / a.recorderCores) * 100) / 100,
          perRound: { alone, cluster },
        },
        null,
        2,
      ),
    );
  } finally {
    await sim.stop();
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
