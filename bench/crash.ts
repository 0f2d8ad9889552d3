/**
 * bench/crash: N cameras of the 1080p clip; the recorder is killed with SIGKILL every
 * `--every` seconds and restarted at once, for `--minutes`. After each restart the
 * video each camera lost at the kill is measured from the index: the kill time minus
 * the end of the last span before it, in GOPs (2 s). Also the restart time (to HTTP up)
 * and whether `recorder check` finds the index and files consistent at the end.
 *
 *   node --import tsx bench/crash.ts --cameras 50 --minutes 10 --every 30
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import { SimCamera } from '../sim/camera.ts';
import {
  CONNECT_STAGGER_MS,
  cameraStates,
  clip,
  outDir,
  percentile,
  putJson,
  recorderProgram,
  requireWork,
  sleep,
  startRecorder,
  type RecorderChild,
} from './harness.ts';

const { values } = parseArgs({
  options: { cameras: { type: 'string', default: '50' }, minutes: { type: 'string', default: '10' }, every: { type: 'string', default: '30' } },
});
const n = Number(values.cameras);
const everyMs = Number(values.every) * 1000;
const runMs = Number(values.minutes) * 60_000;
const GOP_MS = 2000;

const work = await mkdtemp(join(tmpdir(), 'bench-crash-'));
const dataDir = join(work, 'data');
const env = { RECORDER_SEGMENT_SECONDS: '60', RECORDER_MIN_FREE_BYTES: '0', RECORDER_MIN_FREE_RATIO: '0' };
const sim = await SimCamera.start({ file: await clip() });
let rec: RecorderChild = await startRecorder(dataDir, env);
const lostGops: number[] = [];
const restartMs: number[] = [];
let kills = 0;
/** Kills at which no camera had recorded in the `--every` before it (the side did nothing). */
const idleKills: string[] = [];
try {
  for (let i = 0; i < n; i++) {
    await sleep(CONNECT_STAGGER_MS);
    await putJson(`${rec.http}/api/cameras/cam${i}`, { streams: { main: sim.url('file') } });
  }
  const t0 = Date.now();
  await sleep(everyMs);
  while (Date.now() - t0 < runMs) {
    const states = await cameraStates(rec.http);
    const killedAt = Date.now();
    rec.child.kill('SIGKILL');
    await rec.exited;
    kills++;
    const r0 = Date.now();
    rec = await startRecorder(dataDir, env);
    restartMs.push(Date.now() - r0);
    let recording = 0;
    for (let i = 0; i < n; i++) {
      const q = new URLSearchParams({ camera: `cam${i}`, from: new Date(killedAt - everyMs).toISOString(), to: new Date(killedAt).toISOString() });
      const body = (await (await fetch(`${rec.http}/api/recordings?${q.toString()}`)).json()) as { spans: { to: string }[] };
      const last = body.spans.at(-1);
      // No span before the kill in the window: the camera had not recorded yet since the last restart.
      if (last) lostGops.push(Math.max(0, killedAt - Date.parse(last.to)) / GOP_MS);
      if (last) recording++;
    }
    if (recording === 0) idleKills.push(`kill ${kills} at +${Math.round((killedAt - t0) / 1000)} s (cameras before it: ${states})`);
    await sleep(everyMs);
  }
  await rec.stop();
  // A side that did nothing gives no figures (bench/README.md).
  requireWork('crash', [
    ...(kills === 0 ? ['no kill in the run (--minutes shorter than --every)'] : []),
    ...idleKills.map((k) => `no camera had recorded before ${k}`),
  ]);
  const check = await promisify(execFile)(process.execPath, [...(await recorderProgram()), 'check'], {
    env: { ...process.env, RECORDER_DATA_DIR: dataDir, RECORDER_LOG_LEVEL: 'warn' },
  }).then(
    () => 'consistent',
    (err: { code?: number }) => `check exited ${err.code}`,
  );
  const row = {
    cameras: n,
    minutes: Number(values.minutes),
    kills,
    gopsLostPerKillPerCamera: { p50: +percentile(lostGops, 50).toFixed(2), p99: +percentile(lostGops, 99).toFixed(2), max: +Math.max(...lostGops).toFixed(2) },
    restartMs: { p50: percentile(restartMs, 50), max: Math.max(...restartMs) },
    check,
  };
  console.log(JSON.stringify(row));
  writeFileSync(join(outDir, `crash-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.json`), JSON.stringify(row, null, 2));
} finally {
  if (rec.child.exitCode === null && rec.child.signalCode === null) await rec.stop();
  await sim.stop();
  await rm(work, { recursive: true, force: true });
}
