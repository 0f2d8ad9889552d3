/**
 * Operations (issue 8): Prometheus metrics that move with a real camera (and with
 * retention deleting from a tiny pool), system info
 * over HTTP and NATS, and alarms published on a real nats-server — disk near full
 * (threshold set low) and camera offline (the simulated camera vanishes).
 */
import test from 'ava';
import { resolve } from 'node:path';
import { connect, type Msg } from 'nats';
import { SimCamera } from '../sim/camera.ts';
import { startNatsServer } from './helpers/nats-server.ts';
import { startNode, waitFor } from './helpers/recorder.ts';

interface AlarmMsg {
  kind: string;
  camera?: string;
  at: string;
  message: string;
  details?: Record<string, unknown>;
}

/** The value of one sample line `name{labels} value`, labels given in any order. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = new Map([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]] as const));
    if (Object.entries(labels).every(([k, v]) => got.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}

test('metrics move with a recording camera; system info; alarms on NATS when the disk fills and the camera vanishes', async (t) => {
  // An external nats-server, subscribed to before the node starts, so no alarm is missed.
  const { url: natsUrl } = await startNatsServer(t, (port) => ['-a', '127.0.0.1', '-p', String(port)]);
  const watcher = await connect({ servers: natsUrl, reconnect: false });
  t.teardown(() => watcher.close());
  const alarms: AlarmMsg[] = [];
  const subjects: string[] = [];
  watcher.subscribe('rec.v1.alarm.>', {
    callback: (_err, m: Msg) => {
      subjects.push(m.subject);
      alarms.push(JSON.parse(m.string()) as AlarmMsg);
    },
  });
  await watcher.flush();

  const sim = await SimCamera.start({ width: 320, height: 240, bitrateKbit: 400 });
  t.teardown(() => sim.stop());
  // Disk threshold 1%: any real disk is "near full"; sampled every second.
  // ingest ffmpeg: the children metric is checked on the recording camera's ffmpeg.
  const n = await startNode(t, { natsUrl, segmentSeconds: 2, alarmDiskPercent: 1, healthSampleSeconds: 1, ingest: 'ffmpeg' });

  const disk = await waitFor('disk-near-full alarm', () => alarms.find((a) => a.kind === 'disk-near-full'), 30_000);
  t.is(subjects[alarms.indexOf(disk)], 'rec.v1.alarm.disk-near-full');
  t.is(disk.details?.path, resolve(n.dataDir));
  t.regex(disk.message, /full/);
  t.false(Number.isNaN(Date.parse(disk.at)));

  t.true((await n.request('rec.v1.pool.put', { id: 'p1', capacityBytes: 1024 ** 3, overwrite: 'capacity' })).ok);
  t.true((await n.request('rec.v1.camera.put', { id: 'cam1', pool: 'p1', streams: { main: sim.url('h264') } })).ok);
  // A pool too small for more than a few segments: retention deletes, metrics count it.
  t.true((await n.request('rec.v1.pool.put', { id: 'tiny', capacityBytes: 250_000, overwrite: 'capacity' })).ok);
  t.true((await n.request('rec.v1.camera.put', { id: 'cam2', pool: 'tiny', streams: { main: sim.url('h264') } })).ok);
  const cam = { camera: 'cam1', pool: 'p1' };
  const scrape = async (): Promise<string> => {
    const res = await fetch(`${n.http}/metrics`);
    t.is(res.status, 200);
    t.regex(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    return res.text();
  };

  const first = await waitFor(
    'fragments counted',
    async () => {
      const m = await scrape();
      return (sample(m, 'recorder_camera_fragments_total', cam) ?? 0) > 0 ? m : null;
    },
    90_000,
  );
  t.is(sample(first, 'recorder_camera_state', { ...cam, state: 'recording' }), 1);
  t.is(sample(first, 'recorder_camera_state', { ...cam, state: 'backoff' }), 0);
  // Later scrapes show more fragments, more bytes, a newer last write, a bitrate.
  const second = await waitFor(
    'metrics moving',
    async () => {
      const m = await scrape();
      const more = (sample(m, 'recorder_camera_fragments_total', cam) ?? 0) > sample(first, 'recorder_camera_fragments_total', cam)!;
      const later =
        (sample(m, 'recorder_camera_last_write_timestamp_seconds', cam) ?? 0) > (sample(first, 'recorder_camera_last_write_timestamp_seconds', cam) ?? 0);
      return more && later ? m : null;
    },
    60_000,
  );
  t.true(sample(second, 'recorder_camera_bytes_written_total', cam)! > sample(first, 'recorder_camera_bytes_written_total', cam)!);
  const lastWrite = sample(second, 'recorder_camera_last_write_timestamp_seconds', cam)!;
  t.true(Math.abs(lastWrite - Date.now() / 1000) < 120, 'last write is recent wall-clock time');
  const bitrate = sample(second, 'recorder_camera_bitrate_bits_per_second', cam)!;
  t.true(bitrate > 50_000 && bitrate < 5_000_000, `bitrate ${bitrate} is in the camera's range`);
  t.true(sample(second, 'recorder_pool_usage_bytes', { pool: 'p1' })! > 0, 'pool usage');
  t.is(sample(second, 'recorder_pool_capacity_bytes', { pool: 'p1' }), 1024 ** 3);
  t.is(sample(second, 'recorder_ffmpeg_restarts_total', { camera: 'cam1' }) ?? 0, 0);
  t.true(sample(second, 'process_cpu_seconds_total')! > 0, 'process CPU');
  t.true(sample(second, 'process_resident_memory_bytes')! > 10e6, 'process memory');
  t.true(sample(second, 'recorder_alarms_total', { kind: 'disk-near-full' })! >= 1);
  // Long-run health (issue 12): reader slots held, descriptors, live ffmpeg children.
  const slots = sample(second, 'recorder_lmdb_reader_slots')!;
  t.true(slots >= 1 && slots < 126, `reader slots ${slots}`);
  t.true(sample(second, 'process_open_fds')! > 0, 'open descriptors');
  t.true(sample(second, 'recorder_child_processes', { command: 'ffmpeg' })! >= 1, "the recording camera's ffmpeg is counted");

  const deleted = await waitFor(
    'retention deletions counted',
    async () => {
      const m = await scrape();
      return (sample(m, 'recorder_pool_deleted_segments_total', { pool: 'tiny' }) ?? 0) >= 2 ? m : null;
    },
    90_000,
  );
  t.true(sample(deleted, 'recorder_pool_deleted_bytes_total', { pool: 'tiny' })! > 0);
  t.is(sample(deleted, 'recorder_pool_capacity_bytes', { pool: 'tiny' }), 250_000);
  t.is(sample(deleted, 'recorder_pool_deleted_segments_total', { pool: 'p1' }) ?? 0, 0, 'the big pool deleted nothing');
  t.true(sample(deleted, 'recorder_pool_usage_bytes', { pool: 'tiny' })! < 250_000 + 1_000_000, 'usage held near the capacity');

  // System info, over HTTP and NATS.
  const sys = (await (await fetch(`${n.http}/api/system`)).json()) as {
    system: {
      version: string;
      cpu: { cores: number };
      memory: { totalBytes: number; processRssBytes: number };
      disks: { path: string; totalBytes: number; availableBytes: number }[];
    };
  };
  t.regex(sys.system.version, /^\d+\.\d+\.\d+/);
  t.true(sys.system.cpu.cores >= 1);
  t.true(sys.system.memory.totalBytes > sys.system.memory.processRssBytes);
  t.is(sys.system.disks[0]!.path, resolve(n.dataDir));
  t.true(sys.system.disks[0]!.totalBytes >= sys.system.disks[0]!.availableBytes);
  const natsSys = await n.request<{ system: typeof sys.system }>('rec.v1.system.info', {});
  t.true(natsSys.ok);
  t.is(natsSys.system.version, sys.system.version);
  t.is(natsSys.system.disks[0]!.path, resolve(n.dataDir));

  // The camera vanishes: an offline alarm on NATS, the state leaves recording, a gap
  // opens and ffmpeg is restarted (after the backoff).
  await sim.stop();
  const offline = await waitFor('camera-offline alarm', () => alarms.find((a) => a.kind === 'camera-offline' && a.camera === 'cam1'), 90_000);
  t.is(subjects[alarms.indexOf(offline)], 'rec.v1.alarm.camera-offline');
  const after = await waitFor(
    'restart counted',
    async () => {
      const m = await scrape();
      return (sample(m, 'recorder_ffmpeg_restarts_total', { camera: 'cam1' }) ?? 0) >= 1 ? m : null;
    },
    60_000,
  );
  t.is(sample(after, 'recorder_camera_state', { ...cam, state: 'recording' }), 0);
  t.true((sample(after, 'recorder_camera_gaps', { ...cam, state: 'open' }) ?? 0) >= 1, 'an open gap');
  t.true(sample(after, 'recorder_alarms_total', { kind: 'camera-offline' })! >= 1);
  t.true(sample(after, 'recorder_camera_fragments_total', cam)! >= sample(second, 'recorder_camera_fragments_total', cam)!, 'counters never go back');
});
