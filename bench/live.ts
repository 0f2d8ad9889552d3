/**
 * bench/live: what live view costs the recorder. One simulated camera (H.264 or H.265)
 * recorded by a recorder child; CPU of the recorder's process tree (node + its ffmpeg
 * children) over a window with no viewer, with N direct viewers of
 * WS /api/cameras/:id/live, and with one `?preview=1` viewer (the H.264 transcode).
 * The viewers run in this process, so their own cost is not counted.
 *
 *   node --import tsx bench/live.ts --codec h265aac --viewers 10 --seconds 30
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { SimCamera } from '../sim/camera.ts';
import { sampleTrees, ticksToCores } from './proc-stats.ts';
import { cameraStates, putJson, requireWork, sleep, startRecorder } from './harness.ts';

const { values } = parseArgs({
  options: {
    codec: { type: 'string', default: 'h265aac' },
    viewers: { type: 'string', default: '10' },
    seconds: { type: 'string', default: '30' },
    width: { type: 'string', default: '640' },
    height: { type: 'string', default: '360' },
  },
});
const windowSec = Number(values.seconds);
const mount = values.codec === 'h264aac' ? 'h264aac' : 'h265aac';

const sim = await SimCamera.start({ width: Number(values.width), height: Number(values.height), bitrateKbit: 1000 });
const dir = await mkdtemp(join(tmpdir(), 'bench-live-'));
const rec = await startRecorder(dir);
const sockets: WebSocket[] = [];
/** Bytes received by each viewer socket. */
const received = new Map<WebSocket, number>();
let bytes = 0;
function viewer(preview: boolean): void {
  const ws = new WebSocket(`${rec.http.replace(/^http/, 'ws')}/api/cameras/cam/live${preview ? '?preview=1' : ''}`, ['recorder.v1']);
  received.set(ws, 0);
  ws.on('message', (d: Buffer) => {
    bytes += d.length;
    received.set(ws, received.get(ws)! + d.length);
  });
  sockets.push(ws);
}
/** Recorded seconds of the camera in [fromMs, toMs). */
async function recordedSec(fromMs: number, toMs: number): Promise<number> {
  const body = (await (await fetch(`${rec.http}/api/recordings?camera=cam&from=${fromMs}&to=${toMs}`)).json()) as { spans: { from: string; to: string }[] };
  return body.spans.reduce((n, x) => n + (Date.parse(x.to) - Date.parse(x.from)) / 1000, 0);
}
async function measure(label: string): Promise<Record<string, unknown>> {
  await sleep(5000); // settle
  const b0 = bytes;
  const v0 = new Map(sockets.map((ws) => [ws, received.get(ws)!]));
  const s0 = sampleTrees([rec.child.pid!]);
  const fromMs = Date.now();
  await sleep(windowSec * 1000);
  const s1 = sampleTrees([rec.child.pid!]);
  // A side that did nothing gives no figures (bench/README.md): the camera must have
  // been recorded through the window and every viewer must have received video.
  const problems: string[] = [];
  if (rec.child.exitCode !== null || rec.child.signalCode !== null) problems.push('the recorder exited');
  else {
    const sec = await recordedSec(fromMs, Date.now() - 4000);
    if (sec <= 0) problems.push(`the recorder recorded nothing in the window (camera: ${await cameraStates(rec.http)})`);
  }
  const silent = sockets.filter((ws) => received.get(ws)! <= v0.get(ws)!).length;
  if (silent > 0) problems.push(`${silent} of ${sockets.length} viewers received nothing in the window`);
  if (s1.ticks < s0.ticks) problems.push(`the recorder's CPU ticks went down in the window (${s0.ticks} → ${s1.ticks}): processes of its tree exited`);
  requireWork(`live, ${label}`, problems);
  const row = {
    case: label,
    recorderCores: Number(ticksToCores(s1.ticks - s0.ticks, windowSec).toFixed(3)),
    processes: s1.processes,
    pssMb: Math.round(s1.pssKb / 1024),
    viewerMbitPerSec: Number((((bytes - b0) * 8) / windowSec / 1e6).toFixed(2)),
  };
  console.log(JSON.stringify(row));
  return row;
}
try {
  await putJson(`${rec.http}/api/cameras/cam`, { streams: { main: sim.url(mount) } });
  await sleep(10_000);
  await measure('no viewer');
  for (let i = 0; i < Number(values.viewers); i++) viewer(false);
  await measure(`${values.viewers} direct viewers`);
  for (const s of sockets.splice(0)) s.close();
  viewer(true);
  await measure('1 preview viewer (240-line H.264 transcode)');
} finally {
  for (const s of sockets) s.terminate();
  await rec.stop();
  await sim.stop();
  await rm(dir, { recursive: true, force: true });
}
