/**
 * bench/flood: thousands of clients asking for downloads at once. One camera of the
 * 1080p 4 Mbps clip is recorded for `--record` seconds; then `--clients` concurrent
 * `video.mp4` requests of that range are opened (each its own connection) and every
 * client that gets a 200 stops reading, the way a stuck player does, for `--hold`
 * seconds. Reports how many were served and how many refused (503 TOO_MANY_STREAMS
 * past RECORDER_MAX_STREAMS), how fast a refusal comes, and the recorder's RSS
 * (VmRSS, sampled every 100 ms) before, at the peak and after. Figures: bench/README.md.
 *
 *   node --import tsx bench/flood.ts --clients 2000 --record 20 --hold 10 [--max-streams 500]
 */
import { readFileSync } from 'node:fs';
import { request, type ClientRequest } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SimCamera } from '../sim/camera.ts';
import { BenchFailure, cameraStates, clip, percentile, putJson, requireWork, sleep, startRecorder } from './harness.ts';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '2000' },
    record: { type: 'string', default: '20' },
    hold: { type: 'string', default: '10' },
    'max-streams': { type: 'string', default: '500' },
  },
});
const clients = Number(values.clients);

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

const work = await mkdtemp(join(tmpdir(), 'bench-flood-'));
const sim = await SimCamera.start({ file: await clip() });
const rec = await startRecorder(join(work, 'data'), { RECORDER_SEGMENT_SECONDS: '10', RECORDER_MAX_STREAMS: values['max-streams'] });
const open: ClientRequest[] = [];
try {
  await putJson(`${rec.http}/api/cameras/cam`, { streams: { main: sim.url('file') } });
  await sleep((Number(values.record) + 6) * 1000);
  const search = (await (await fetch(`${rec.http}/api/recordings?camera=cam&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z`)).json()) as {
    spans: { from: string; to: string }[];
  };
  const span = search.spans[0];
  // A side that did nothing gives no figures (bench/README.md).
  if (!span) throw new BenchFailure('flood', [`the recorder recorded nothing in ${values.record} s (camera: ${await cameraStates(rec.http)})`]);
  const url = `${rec.http}/api/cameras/cam/video.mp4?from=${span.from}&to=${span.to}`;
  const pid = rec.child.pid!;
  const before = rssMb(pid);
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 100);

  const statuses = new Map<number, number>();
  const refusalMs: number[] = [];
  const servedMs: number[] = [];
  const started = Date.now();
  await Promise.all(
    Array.from(
      { length: clients },
      () =>
        new Promise<void>((resolve) => {
          const t0 = Date.now();
          const req = request(url, { agent: false }, (res) => {
            statuses.set(res.statusCode ?? 0, (statuses.get(res.statusCode ?? 0) ?? 0) + 1);
            if (res.statusCode === 200) {
              servedMs.push(Date.now() - t0);
              res.pause(); // a stuck player: never reads another byte
            } else {
              refusalMs.push(Date.now() - t0);
              res.resume();
            }
            resolve();
          });
          req.on('error', () => {
            statuses.set(-1, (statuses.get(-1) ?? 0) + 1);
            resolve();
          });
          req.end();
          open.push(req);
        }),
    ),
  );
  const allAnsweredMs = Date.now() - started;
  await sleep(Number(values.hold) * 1000);
  const metrics = await (await fetch(`${rec.http}/metrics`)).text();
  const inFlight = Number(/^recorder_media_streams (\S+)$/m.exec(metrics)?.[1] ?? NaN);
  for (const r of open) r.destroy();
  await sleep(3000);
  clearInterval(sampler);
  const after = rssMb(pid);
  const served = statuses.get(200) ?? 0;
  requireWork('flood', served > 0 ? [] : [`no client was served (statuses ${JSON.stringify(Object.fromEntries(statuses))})`]);
  const result = {
    clients,
    maxStreams: Number(values['max-streams']),
    rangeSeconds: (Date.parse(span.to) - Date.parse(span.from)) / 1000,
    statuses: Object.fromEntries(statuses),
    streamsInFlightWhileHeld: inFlight,
    allAnsweredMs,
    servedFirstResponseMs: { p50: percentile(servedMs, 50), p99: percentile(servedMs, 99) },
    refusalMs: refusalMs.length ? { p50: percentile(refusalMs, 50), p99: percentile(refusalMs, 99) } : null,
    rssMb: { before: +before.toFixed(0), peak: +peak.toFixed(0), after: +after.toFixed(0) },
    rssPerServedStreamMb: served ? +((peak - before) / served).toFixed(2) : null,
  };
  console.log(JSON.stringify(result));
} finally {
  for (const r of open) r.destroy();
  await rec.stop();
  await sim.stop();
  await rm(work, { recursive: true, force: true });
}
