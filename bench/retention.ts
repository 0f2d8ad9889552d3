/**
 * bench/retention: a `capacity` pool under N cameras of the 1080p 4 Mbps clip for a
 * while; pool usage (index, every 2 s) and bytes on disk (every 10 s) against the cap
 * and against invariant 4's bound (cap + one segment per camera). Method and figures:
 * bench/README.md.
 *
 *   node --import tsx bench/retention.ts --cameras 50 --minutes 10 --cap-mb 2000 --segment-seconds 10
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { SimCamera } from '../sim/camera.ts';
import { CONNECT_STAGGER_MS, cameraStates, clip, dirBytes, outDir, putJson, requireWork, sleep, startRecorder } from './harness.ts';

const { values } = parseArgs({
  options: {
    cameras: { type: 'string', default: '50' },
    minutes: { type: 'string', default: '10' },
    'cap-mb': { type: 'string', default: '2000' },
    'segment-seconds': { type: 'string', default: '10' },
  },
});
const n = Number(values.cameras);
const capBytes = Number(values['cap-mb']) * 1e6;
const segmentSeconds = Number(values['segment-seconds']);
const runMs = Number(values.minutes) * 60_000;

const work = await mkdtemp(join(tmpdir(), 'bench-retention-'));
const sim = await SimCamera.start({ file: await clip() });
const rec = await startRecorder(join(work, 'data'), {
  RECORDER_SEGMENT_SECONDS: String(segmentSeconds),
  RECORDER_MIN_FREE_BYTES: '0',
  RECORDER_MIN_FREE_RATIO: '0',
});
try {
  await putJson(`${rec.http}/api/pools/bench`, { capacityBytes: capBytes, overwrite: 'capacity' });
  for (let i = 0; i < n; i++) {
    await sleep(CONNECT_STAGGER_MS);
    await putJson(`${rec.http}/api/cameras/cam${i}`, { pool: 'bench', streams: { main: sim.url('file') } });
  }
  const t0 = Date.now();
  let maxUsage = 0;
  let maxDisk = 0;
  let samples = 0;
  let overCap = 0;
  let nextDisk = 0;
  let pool = { usageBytes: 0, deletedSegments: 0 };
  while (Date.now() - t0 < runMs) {
    pool = ((await (await fetch(`${rec.http}/api/pools/bench`)).json()) as { pool: typeof pool }).pool;
    maxUsage = Math.max(maxUsage, pool.usageBytes);
    samples++;
    if (pool.usageBytes > capBytes) overCap++;
    if (Date.now() >= nextDisk) {
      maxDisk = Math.max(maxDisk, await dirBytes(join(work, 'data', 'pools', 'bench')));
      nextDisk = Date.now() + 10_000;
    }
    await sleep(2000);
  }
  // A side that did nothing gives no figures (bench/README.md): the cameras must have
  // recorded, and filled the pool to its cap, or retention never ran and the bound
  // says nothing.
  requireWork('retention', [
    ...(maxUsage === 0 ? [`the recorder recorded nothing (cameras: ${await cameraStates(rec.http)})`] : []),
    ...(maxUsage > 0 && pool.deletedSegments === 0
      ? [`the pool never reached its cap (at most ${(maxUsage / 1e6).toFixed(1)} of ${capBytes / 1e6} MB): retention deleted nothing`]
      : []),
  ]);
  // One segment per camera at 4 Mbps (+ init and container overhead, ~2 %).
  const segmentBytes = (4e6 / 8) * segmentSeconds * 1.02;
  const bound = capBytes + n * segmentBytes;
  const row = {
    cameras: n,
    minutes: Number(values.minutes),
    capMB: capBytes / 1e6,
    boundMB: +(bound / 1e6).toFixed(1),
    maxUsageMB: +(maxUsage / 1e6).toFixed(1),
    maxUsageOverCap: +(maxUsage / capBytes).toFixed(3),
    maxDiskMB: +(maxDisk / 1e6).toFixed(1),
    samplesOverCap: `${overCap}/${samples}`,
    withinBound: maxUsage <= bound && maxDisk <= bound,
    deletedSegments: pool.deletedSegments,
  };
  console.log(JSON.stringify(row));
  writeFileSync(join(outDir, `retention-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.json`), JSON.stringify(row, null, 2));
} finally {
  await rec.stop();
  await sim.stop();
  await rm(work, { recursive: true, force: true });
}
