/**
 * A 3-node cluster on one machine (docs/cluster.md): three nats-servers clustered on
 * loopback (sim/nats-cluster.ts), three recorders given all three URLs, a simulated
 * camera serving the demo cameras, put once through NATS and shared by the cluster.
 * Everything lives under one directory (default ./data-cluster) and stops on Ctrl-C;
 * every child dies with this process (lib/child-process.ts).
 *
 *   npx tsx scripts/cluster-demo.ts [--dir DIR] [--cameras N] [--http-port 8081]
 *
 * Recorders listen on 127.0.0.1:8081, :8082, :8083 (from --http-port); their logs are
 * DIR/<node>.log. Kill one (`kill -9 <pid>`, printed) and watch its cameras move.
 */
import { createWriteStream, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from 'nats';
import { spawnChild, type Child } from '../lib/child-process.ts';
import { SimCamera } from '../sim/camera.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';

const { values } = parseArgs({
  options: { dir: { type: 'string' }, cameras: { type: 'string' }, 'http-port': { type: 'string' } },
});
const dir = resolve(values.dir ?? 'data-cluster');
const cameraCount = Number(values.cameras ?? 6);
const httpPort = Number(values['http-port'] ?? 8081);
mkdirSync(dir, { recursive: true });

const stops: (() => Promise<unknown>)[] = [];
const stopAll = async (): Promise<void> => {
  for (const s of stops.reverse()) await s().catch(() => undefined);
};
process.once('SIGINT', () => void stopAll().then(() => process.exit(0)));
process.once('SIGTERM', () => void stopAll().then(() => process.exit(0)));

const nats = await startNatsCluster({ dir: join(dir, 'nats') });
stops.push(() => nats.stop());
console.log(`nats-servers: ${nats.urls}`);
const sim = await SimCamera.start({ width: 320, height: 240 });
stops.push(() => sim.stop());

const recorders: { name: string; child: Child; http: string }[] = [];
for (const [i, name] of ['node1', 'node2', 'node3'].entries()) {
  const http = `127.0.0.1:${httpPort + i}`;
  const log = createWriteStream(join(dir, `${name}.log`), { flags: 'a' });
  const child = spawnChild({
    command: 'recorder',
    file: process.execPath,
    args: ['--import', 'tsx', join(import.meta.dirname, '..', 'recorder.ts')],
    env: {
      ...process.env,
      RECORDER_DATA_DIR: join(dir, name),
      RECORDER_HTTP: http,
      RECORDER_NATS_URL: nats.urls,
      RECORDER_SEGMENT_SECONDS: process.env.RECORDER_SEGMENT_SECONDS ?? '10',
    },
    stdout: 'pipe',
    stopSignal: 'SIGTERM',
    stopGraceMs: 15_000,
    onStderrLine: (line) => log.write(`${line}\n`),
  });
  child.stdout?.pipe(log);
  stops.push(() => child.stop());
  recorders.push({ name, child, http: `http://${http}` });
}

const nc = await connect({ servers: nats.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
stops.push(() => nc.close());
// The first put waits for the cluster's buckets (CLUSTER_UNAVAILABLE until JetStream is ready).
for (let n = 1; n <= cameraCount; n++) {
  const id = `demo${n}`;
  for (let attempt = 0; ; attempt++) {
    try {
      const m = await nc.request('rec.v1.camera.put', JSON.stringify({ id, streams: { main: sim.url('h264') } }), { timeout: 10_000 });
      const r = JSON.parse(m.string()) as { ok: boolean; error?: { code: string; message: string } };
      if (r.ok) break;
      if (attempt > 60) throw new Error(`${r.error?.code}: ${r.error?.message}`);
    } catch (err) {
      if (attempt > 60) throw err;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
console.log(`${cameraCount} demo cameras put through NATS (any node took them; every node mirrors them)`);
for (const r of recorders) console.log(`${r.name}: pid ${r.child.pid}  ${r.http}/  log ${join(dir, `${r.name}.log`)}`);
console.log(`who records what: curl ${recorders[0]!.http}/api/cameras on each node (a camera is "recording" on the node that holds it)`);
console.log('Ctrl-C stops everything.');
