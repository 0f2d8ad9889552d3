/**
 * bench/backfill — how fast an edge replay comes in: the simulated camera records its
 * live stream to an SD card (sim/edge_sd.py) for `--record` seconds, then intervals of
 * `--seconds` are pulled over ONVIF replay through the loopback proxy
 * (ingest/edge-replay.ts), with `Rate-Control: no` and with rate control (real time).
 *
 *   node --import tsx bench/backfill.ts [--record 50] [--seconds 20] [--width 320 --height 240]
 *
 * Prints one JSON line per pull: media seconds staged, wall ms, speed (media / wall).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SimCamera } from '../sim/camera.ts';
import { pullEdgeInterval } from '../ingest/edge-replay.ts';

const { values } = parseArgs({
  options: {
    record: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '20' },
    width: { type: 'string', default: '320' },
    height: { type: 'string', default: '240' },
  },
});
const recordS = Number(values.record);
const seconds = Number(values.seconds);
const dir = await mkdtemp(join(tmpdir(), 'bench-backfill-'));
const sim = await SimCamera.start({ sd: join(dir, 'sd'), width: Number(values.width), height: Number(values.height) });
try {
  const startMs = Date.now();
  await new Promise((r) => setTimeout(r, recordS * 1000));
  for (const rateControl of [false, true]) {
    const fromMs = startMs + 4000;
    const toMs = fromMs + seconds * 1000;
    const t0 = performance.now();
    const r = await pullEdgeInterval({
      template: sim.url('edge'),
      mode: 'onvif',
      rateControl,
      fromMs,
      toMs,
      ffmpegPath: 'ffmpeg',
      stagingPath: join(dir, `staging-${rateControl}.mp4`),
      connectTimeoutMs: 10_000,
      stallTimeoutMs: 5_000,
      deadlineMs: 30_000 + seconds * 1500,
      maxBytes: 1024 ** 3,
    });
    const wallMs = performance.now() - t0;
    const mediaS = (r.lastEndMs - r.firstStartMs) / 1000;
    console.log(
      JSON.stringify({
        rateControl,
        askedS: seconds,
        mediaS,
        fragments: r.fragments,
        bytes: r.bytes,
        wallMs: Math.round(wallMs),
        speed: Number((mediaS / (wallMs / 1000)).toFixed(1)),
        clock: r.clockSource,
        startOffMs: r.anchorMs - fromMs,
      }),
    );
  }
} finally {
  await sim.stop();
  await rm(dir, { recursive: true, force: true });
}
