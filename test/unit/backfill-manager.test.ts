/**
 * The back-fill manager's bookkeeping against a real LMDB index in a temp dir (no
 * camera: pulls go to a port where nothing listens): gaps the recorder left while it
 * was down, the periodic sync, and a manual request over gaps and video.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackfillManager, type BackfillProgress } from '../../backfill/manager.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { CameraConfig, GapRecord, SchedulePlan } from '../../index/records.ts';
import { configSchema } from '../../lib/config.ts';
import { createLogger } from '../../lib/log.ts';
import { freePort } from '../../lib/nats-embedded.ts';

const NOW = Date.UTC(2026, 10, 25, 12, 0, 0); // a Wednesday
const H = 3600_000;

async function setup(t: import('ava').ExecutionContext, plan?: SchedulePlan) {
  const dir = await mkdtemp(join(tmpdir(), 'bfm-'));
  const index = await RecorderIndex.open(dir);
  t.teardown(async () => {
    await index.close();
    await rm(dir, { recursive: true, force: true });
  });
  const camera: CameraConfig = {
    id: 'c',
    pool: 'default',
    streams: { main: 'rtsp://127.0.0.1:1/x' },
    record: { stream: 'main', format: 'mp4' },
    edge: { replayUrl: `rtsp://127.0.0.1:${await freePort()}/edge`, mode: 'onvif', rateControl: false },
  };
  await index.cameras.put('c', camera);
  if (plan) await index.schedules.put('c', plan);
  const seg = (startMs: number, endMs: number) =>
    index.segments.put({
      camera: 'c',
      startMs,
      endMs,
      file: `pools/default/c/x/${startMs}.mp4`,
      format: 'mp4',
      pool: 'default',
      stream: 'main',
      bytes: 1,
      initSize: 1,
      mimeType: 'video/mp4',
      codecKey: 'k',
      types: [{ type: 'timing', fromMs: startMs }],
      gops: new Uint8Array(0),
      open: false,
      flags: {},
    });
  const progress: BackfillProgress[] = [];
  const config = configSchema.parse({ dataDir: dir, backfillSyncHours: 6, backfillDelayMs: 1000, backfillMaxAttempts: 3, logLevel: 'silent' });
  const manager = new BackfillManager({
    index,
    config,
    clock: { nowMs: () => NOW },
    log: createLogger('silent', process.stderr),
    camera: (id) => (id === 'c' ? camera : undefined),
    cameras: () => [camera],
    raiseAlarm: () => undefined,
    publish: (p) => progress.push(p),
  });
  t.teardown(() => manager.stop());
  const gaps = (): GapRecord[] => index.gaps.ofCamera('c');
  return { index, manager, seg, gaps };
}

test('at start, the time from the last segment to now becomes a gap where the plan wanted timing; open gaps end now', async (t) => {
  const plan: SchedulePlan = {
    camera: 'c',
    timeZone: 'UTC',
    preSeconds: 0,
    postSeconds: 0,
    slots: [
      { days: [3], start: '06:00', end: '09:00', type: 'timing' },
      { days: [3], start: '10:00', end: '23:00', type: 'timing' },
    ],
  };
  const { manager, seg, gaps, index } = await setup(t, plan);
  await seg(NOW - 5 * H, NOW - 4 * H); // 07:00-08:00
  await index.gaps.put({ camera: 'c', startMs: NOW - 4 * H, endMs: null, state: 'open', reason: 'camera offline', attempts: 0 });
  await manager.start();
  await manager.stop(); // ends the attempts queued at start (they do not count)
  const g = gaps();
  t.is(g[0]!.startMs, NOW - 4 * H);
  t.is(g[0]!.endMs, NOW, 'the open gap ends at the start');
  t.is(g[0]!.reason, 'camera offline');
  t.is(g.length, 1, 'the open gap already accounts for the time until now');
});

test('at start without an open gap: one gap per planned interval since the last segment', async (t) => {
  const plan: SchedulePlan = {
    camera: 'c',
    timeZone: 'UTC',
    preSeconds: 0,
    postSeconds: 0,
    slots: [
      { days: [3], start: '06:00', end: '09:00', type: 'timing' },
      { days: [3], start: '10:00', end: '23:00', type: 'timing' },
    ],
  };
  const { manager, seg, gaps } = await setup(t, plan);
  await seg(NOW - 5 * H, NOW - 4 * H); // until 08:00
  await manager.start();
  await manager.stop();
  t.deepEqual(
    gaps().map((g) => [g.startMs - NOW, g.endMs! - NOW, g.reason]),
    [
      [-4 * H, -3 * H, 'recorder was not running'],
      [-2 * H, 0, 'recorder was not running'],
    ],
  );
});

test('the periodic sync turns unaccounted holes between video into gaps, not before the first segment', async (t) => {
  const { manager, seg, gaps, index } = await setup(t);
  await seg(NOW - 3 * H, NOW - 2 * H);
  await seg(NOW - 2 * H + 60_000, NOW - H); // a 1 min hole nobody recorded as a gap
  await seg(NOW - H + 500, NOW - 30 * 60_000); // a 0.5 s hole: not a gap
  await index.gaps.put({ camera: 'c', startMs: NOW - 30 * 60_000, endMs: NOW - 20 * 60_000, state: 'filled', reason: 'camera offline', attempts: 1 });
  await seg(NOW - 20 * 60_000, NOW - 5000); // live, the last seconds still arriving
  await manager.sync();
  await manager.stop();
  const found = gaps().filter((g) => g.reason === 'found by the periodic sync');
  t.deepEqual(
    found.map((g) => [g.startMs - NOW, g.endMs! - NOW]),
    [[-2 * H, -2 * H + 60_000]],
  );
});

test('a manual request splits gaps at its edges, adds records for holes without one and leaves video alone', async (t) => {
  const { manager, seg, gaps, index } = await setup(t);
  await seg(NOW - 3 * H, NOW - 2 * H);
  await index.gaps.put({ camera: 'c', startMs: NOW - 2 * H, endMs: NOW - H, state: 'unavailable', reason: 'camera offline', attempts: 3 });
  await seg(NOW - H, NOW - 30 * 60_000);
  const asked = await manager.request('c', NOW - 2.5 * H, NOW - 1.5 * H);
  await manager.stop();
  t.deepEqual(
    asked.map((g) => [g.startMs - NOW, g.endMs! - NOW, g.state, g.attempts]),
    [[-2 * H, -1.5 * H, 'pending', 0]],
    'the unavailable gap is tried again, from its first attempt',
  );
  t.deepEqual(
    gaps().map((g) => [g.startMs - NOW, g.endMs! - NOW]),
    [
      [-2 * H, -1.5 * H],
      [-1.5 * H, -H],
    ],
  );
  t.is(gaps()[1]!.state, 'unavailable', 'outside the range it stays as it was');
  const before = await manager.request('c', NOW - 4 * H, NOW - 3 * H).catch((e: Error) => e);
  t.true(Array.isArray(before));
  await t.throwsAsync(() => manager.request('c', NOW - H, NOW + H), { message: /future/ });
  await t.throwsAsync(() => manager.request('nope', NOW - H, NOW - 1000), { message: /no edge storage/ });
});
