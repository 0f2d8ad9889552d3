/**
 * bench/mp2p: what one MP2P (MPEG-PS over RTP) camera costs to ingest, our way against
 * the way before it. One simulated camera (sim/mp2p.py, H.264 video only, so ffmpeg
 * can read it too) is pulled by the RTSP bridge (rtsp/mp2p-bridge.ts) and
 *   - ours:   its bytes → PsGopReader → PsLiveFmp4 (ingest/mp2p-ingest.ts's pipeline),
 *   - ffmpeg: its bytes → a loopback socket → `ffmpeg -f mpeg -c copy -f mp4` (frag) →
 *             pipe → Fmp4Splitter (ingest/camera-ingest.ts before issue 12 item 3),
 * one after the other for the same number of seconds; the recorder process's CPU
 * (process.cpuUsage, everything in it: bridge, reader/splitter) plus ffmpeg's CPU from
 * /proc, as percent of one core, and ffmpeg's PSS. Fragments seen, to check both ran.
 *
 *   node --import tsx bench/mp2p.ts --seconds 60 --width 640 --height 360 --bitrate 4000 --pattern snow
 */
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { startMp2pBridge } from '../rtsp/mp2p-bridge.ts';
import { PsGopReader } from '../media/ps/ps-gop-reader.ts';
import { PsLiveFmp4 } from '../media/ps/ps-live-fmp4.ts';
import { SimMp2pCamera } from '../sim/mp2p-camera.ts';
import { cpuTicks, pssKb } from './proc-stats.ts';
import { requireWork } from './harness.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    warmup: { type: 'string', default: '5' },
    width: { type: 'string', default: '640' },
    height: { type: 'string', default: '360' },
    bitrate: { type: 'string', default: '4000' },
    pattern: { type: 'string', default: 'snow' },
  },
});
const seconds = Number(values.seconds);
const warmup = Number(values.warmup);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Result {
  way: string;
  recorderCorePct: number;
  ffmpegCorePct: number;
  totalCorePct: number;
  ffmpegPssMb: number;
  fragments: number;
  mbitPerSec: number;
}

/** CPU of this process over `fn`'s window, in percent of one core. */
async function window(fn: () => { ffmpegPid?: number; fragments(): number; bytes(): number }, way: string): Promise<Result> {
  const probe = fn();
  await sleep(warmup * 1000);
  const c0 = process.cpuUsage();
  const f0 = probe.ffmpegPid ? cpuTicks(probe.ffmpegPid) : 0;
  const n0 = probe.fragments();
  const b0 = probe.bytes();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const ffTicks = probe.ffmpegPid ? cpuTicks(probe.ffmpegPid) - f0 : 0;
  // A way that did nothing gives no figures (bench/README.md): it must have made
  // fragments from the camera's bytes in the window, and its ffmpeg must still run.
  const problems: string[] = [];
  if (probe.bytes() <= b0) problems.push('the bridge received nothing from the camera in the window');
  if (probe.fragments() <= n0) problems.push('no fragment came out in the window');
  if (probe.ffmpegPid && cpuTicks(probe.ffmpegPid) === 0) problems.push('its ffmpeg exited');
  requireWork(`mp2p, ${way}`, problems);
  const recorderCorePct = ((c.user + c.system) / 1e6 / wall) * 100;
  const ffmpegCorePct = (ffTicks / 100 / wall) * 100;
  return {
    way,
    recorderCorePct: +recorderCorePct.toFixed(2),
    ffmpegCorePct: +ffmpegCorePct.toFixed(2),
    totalCorePct: +(recorderCorePct + ffmpegCorePct).toFixed(2),
    ffmpegPssMb: probe.ffmpegPid ? +(pssKb(probe.ffmpegPid) / 1024).toFixed(1) : 0,
    fragments: probe.fragments() - n0,
    mbitPerSec: +(((probe.bytes() - b0) * 8) / wall / 1e6).toFixed(2),
  };
}

const cam = await SimMp2pCamera.start({
  width: Number(values.width),
  height: Number(values.height),
  bitrateKbit: Number(values.bitrate),
  pattern: values.pattern,
});
const results: Result[] = [];
try {
  // Ours.
  {
    const reader = new PsGopReader();
    const fmp4 = new PsLiveFmp4();
    let fragments = 0;
    let bytes = 0;
    const bridge = await startMp2pBridge(cam.url('h264'), 10_000, {
      onBytes(b, gap) {
        bytes += b.length;
        if (gap) reader.discontinuity();
        for (const g of reader.push(b)) for (const c of fmp4.push(g)) if (c.kind === 'fragment') fragments++;
      },
    });
    results.push(await window(() => ({ fragments: () => fragments, bytes: () => bytes }), 'ours (PS reader + fMP4 writer, in process)'));
    bridge.close();
  }
  await sleep(1000);
  // ffmpeg, as before.
  {
    let sock: Socket | null = null;
    const pending: Buffer[] = [];
    let bytes = 0;
    const server = createServer((s) => {
      sock = s;
      s.on('error', () => undefined);
      for (const b of pending.splice(0)) s.write(b);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const bridge = await startMp2pBridge(cam.url('h264'), 10_000, {
      onBytes(b) {
        bytes += b.length;
        if (sock) sock.write(b);
        else pending.push(Buffer.from(b));
      },
    });
    const ff = spawn(
      'ffmpeg',
      [
        '-nostdin',
        '-hide_banner',
        '-loglevel',
        'warning',
        '-f',
        'mpeg',
        '-i',
        `tcp://127.0.0.1:${port}`,
        '-map',
        '0:v:0',
        '-c',
        'copy',
        '-f',
        'mp4',
        '-movflags',
        'frag_keyframe+empty_moov+default_base_moof',
        'pipe:1',
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const splitter = new Fmp4Splitter();
    ff.stdout.pipe(splitter);
    let fragments = 0;
    splitter.on('data', (c: Fmp4Chunk) => {
      if (c.kind === 'fragment') fragments++;
    });
    results.push(await window(() => ({ ffmpegPid: ff.pid!, fragments: () => fragments, bytes: () => bytes }), 'ffmpeg -f mpeg (before)'));
    ff.kill('SIGKILL');
    bridge.close();
    (sock as Socket | null)?.destroy();
    server.close();
  }
} finally {
  await cam.stop();
}
console.log(JSON.stringify({ seconds, width: Number(values.width), height: Number(values.height), bitrateKbit: Number(values.bitrate), results }, null, 2));
