/**
 * Failure model (docs/design/architecture.md section 7) through real processes: a camera that drops off
 * and comes back, a recorder killed with SIGKILL, a NATS server that goes away.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { rm, writeFile } from 'node:fs/promises';
import { connect } from 'nats';
import { SimCamera } from '../sim/camera.ts';
import { freePort } from '../lib/nats-embedded.ts';
import { RecorderIndex } from '../index/db.ts';
import { ffprobe, decodeErrors, nonIncreasingDts } from './helpers/media.ts';
import { startNatsServer, type TestNatsServer } from './helpers/nats-server.ts';
import { getJson, spawnRecorder, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';

const run = promisify(execFile);

interface SearchBody {
  spans: { from: string; to: string }[];
  gaps: { from: string; to: string; state: string; reason: string }[];
}

async function search(http: string, camera: string, fromMs: number): Promise<SearchBody> {
  const q = new URLSearchParams({ camera, from: new Date(fromMs).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
  const { status, body } = await getJson<SearchBody>(`${http}/api/recordings?${q.toString()}`);
  if (status !== 200) throw new Error(`search ${status}`);
  return body;
}

async function cameraState(n: TestNode | string, id: string): Promise<string> {
  const http = typeof n === 'string' ? n : n.http;
  const { body } = await getJson<{ camera: { status: string } }>(`${http}/api/cameras/${id}`);
  return body.camera.status;
}

async function ffmpegChildrenFor(url: string): Promise<string[]> {
  try {
    const { stdout } = await run('pgrep', ['-af', `ffmpeg.*${url.replace(/[.]/g, '\\.')}`]);
    return stdout.split('\n').filter((l) => l.trim() && !l.includes('pgrep'));
  } catch {
    return [];
  }
}

test('a camera that drops off for 10 s leaves one gap of about that length and recording resumes by itself', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t, { backoffMaxMs: 4000 });
  const t0 = Date.now();
  t.true((await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264') } })).ok);
  await waitFor('recording', async () => (await cameraState(n, 'cam')) === 'recording', 30_000);
  await new Promise((r) => setTimeout(r, 6000));

  const alarms: { kind: string; camera: string }[] = [];
  const alarmSub = n.nc.subscribe('rec.v1.alarm.>');
  void (async () => {
    for await (const m of alarmSub) alarms.push(JSON.parse(m.string()) as { kind: string; camera: string });
  })();
  await n.nc.flush();

  // The camera vanishes mid-GOP: its RTSP server is stopped (it streams until it has exited).
  await sim.stop();
  const offAt = Date.now();
  await waitFor('backoff', async () => (await cameraState(n, 'cam')) === 'backoff', 30_000);
  // The state is in memory; the open gap is put to the index with it and committed a
  // moment later (an asynchronous LMDB write): a search right away may not see it yet.
  const during = await waitFor(
    'the gap in the index',
    async () => {
      const r = await search(n.http, 'cam', t0);
      return r.gaps.length > 0 ? r : null;
    },
    10_000,
  );
  t.is(during.gaps.length, 1, 'an open gap is visible while the camera is away');
  t.is(during.gaps[0]!.state, 'open');
  await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - offAt))));
  await sim.restart();
  const onAt = Date.now();

  await waitFor('recording again', async () => (await cameraState(n, 'cam')) === 'recording', 30_000);
  const after = await waitFor(
    'video after the gap',
    async () => {
      const r = await search(n.http, 'cam', t0);
      return r.spans.length === 2 && Date.parse(r.spans[1]!.to) - Date.parse(r.spans[1]!.from) > 2000 ? r : null;
    },
    30_000,
    500,
  );
  t.is(after.gaps.length, 1);
  const gap = after.gaps[0]!;
  t.not(gap.state, 'open');
  const gapSec = (Date.parse(gap.to) - Date.parse(gap.from)) / 1000;
  // Offline 10 s; the gap also holds the unfinished GOP and the reconnect delay.
  t.true(gapSec >= 9 && gapSec <= 10 + 2 + 4 + 3, `gap ${gapSec} s`);
  // 500 ms: the precision of anchoring a session on the wall clock (arrival minus GOP duration).
  t.true(
    Date.parse(gap.from) <= offAt + 500 && Date.parse(gap.to) >= onAt - 500,
    `the gap ${gap.from}..${gap.to} covers the outage ${new Date(offAt).toISOString()}..${new Date(onAt).toISOString()}`,
  );
  t.is(Date.parse(after.spans[0]!.to), Date.parse(gap.from));
  t.is(Date.parse(after.spans[1]!.from), Date.parse(gap.to));
  // One offline alarm for the outage, not one per reconnect attempt. (Machine alarms —
  // cpu-high, memory-high, disk-near-full — carry no camera and depend on the host.)
  t.deepEqual(
    alarms.filter((x) => x.camera !== undefined).map((x) => [x.kind, x.camera]),
    [['camera-offline', 'cam']],
  );
  alarmSub.unsubscribe();

  // HLS over the gap: byte ranges into the segment files, a discontinuity at the gap,
  // and ffmpeg's HLS client reads all of it.
  const hlsFrom = Date.parse(after.spans[0]!.from);
  const hlsTo = Date.parse(after.spans[1]!.to);
  const playlistUrl = `${n.http}/api/cameras/cam/video.m3u8?from=${hlsFrom}&to=${hlsTo}`;
  const playlist = await (await fetch(playlistUrl)).text();
  t.true(playlist.startsWith('#EXTM3U'));
  t.true(playlist.includes('#EXT-X-DISCONTINUITY'), playlist);
  t.true(playlist.includes('#EXT-X-ENDLIST'));
  const hlsOut = join(n.dataDir, 'hls.mp4');
  await run('ffmpeg', ['-v', 'error', '-y', '-i', playlistUrl, '-c', 'copy', hlsOut]);
  const recorded = (hlsTo - hlsFrom - (Date.parse(gap.to) - Date.parse(gap.from))) / 1000;
  const hlsProbe = await ffprobe(hlsOut);
  t.true(Math.abs(hlsProbe.durationSec - recorded) < 2.5, `HLS ${hlsProbe.durationSec} s vs ${recorded} s recorded`);
  // ffmpeg's HLS client does not offset timestamps at a discontinuity (players do), so
  // its remux of two sessions repeats DTS values; anything else would be a real error.
  const hlsErrors = (await decodeErrors(hlsOut)).split('\n').filter((l) => l && !l.includes('non monotonically increasing dts'));
  t.deepEqual(hlsErrors, []);

  // /play across the gap: the hole is skipped, decode times continue, nothing stalls.
  const play = await fetch(`${n.http}/api/cameras/cam/play?from=${hlsFrom}&to=${hlsTo}`);
  t.is(play.status, 200);
  const playFile = join(n.dataDir, 'play.mp4');
  await writeFile(playFile, Buffer.from(await play.arrayBuffer()));
  const playProbe = await ffprobe(playFile);
  t.true(Math.abs(playProbe.durationSec - recorded) < 2.5, `play ${playProbe.durationSec} s vs ${recorded} s recorded`);
  t.deepEqual(await nonIncreasingDts(playFile), [], 'decode times strictly increase across the gap');
  // ffmpeg's null muxer counts in frames (1/25 s); the camera's last frame before it
  // vanished can land on the same frame tick as the next, which it reports; nothing else.
  const playErrors = (await decodeErrors(playFile)).split('\n').filter((l) => l && !l.includes('non monotonically increasing dts'));
  t.deepEqual(playErrors, []);
});

test('kill -9 mid-recording: index matches the files, video before the kill plays, at most the last GOP is lost, recording resumes', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const dataDir = await tempDir(t);
  const env = { RECORDER_DATA_DIR: dataDir, RECORDER_HTTP: `127.0.0.1:${await freePort()}`, RECORDER_SEGMENT_SECONDS: '4' };
  const first = spawnRecorder(t, env);
  const http = await first.http;
  const put = await fetch(`${http}/api/cameras/cam`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ streams: { main: sim.url('h264aac') } }),
  });
  t.is(put.status, 200, await put.text());
  const t0 = Date.now();
  await waitFor(
    '9 s of video',
    async () => {
      const s = (await search(http, 'cam', t0 - 5000)).spans[0];
      return s && Date.parse(s.to) - Date.parse(s.from) > 9000;
    },
    60_000,
    500,
  );

  const killedAt = Date.now();
  first.child.kill('SIGKILL');
  await first.exited;
  // ffmpeg notices the closed pipe at its next write (within one GOP) and exits.
  await waitFor('no ffmpeg left behind', async () => (await ffmpegChildrenFor(sim.url('h264aac'))).length === 0, 10_000);
  const nats = await run('pgrep', ['-af', `nats-server.*${dataDir}`]).then(
    (r) => r.stdout.trim(),
    () => '',
  );
  await waitFor(
    'no nats-server left behind',
    async () =>
      await run('pgrep', ['-f', `nats-server.*${dataDir}`]).then(
        () => false,
        () => true,
      ),
    10_000,
  ).catch(() => t.fail(`nats-server still running: ${nats}`));

  // The recorder's own check before restart: the files hold at least what the index says.
  const second = spawnRecorder(t, env);
  const http2 = await second.http;
  const before = (await search(http2, 'cam', t0 - 5000)).spans[0]!;
  const lostMs = killedAt - Date.parse(before.to);
  t.true(lostMs <= 2 * 2000 + 1500, `lost ${lostMs} ms at the kill (one GOP in flight + one being assembled by ffmpeg)`);
  await waitFor('recording resumes', async () => (await cameraState(http2, 'cam')) === 'recording', 30_000);

  const res = await fetch(`${http2}/api/cameras/cam/video.mp4?from=${encodeURIComponent(before.from)}&to=${encodeURIComponent(before.to)}`);
  t.is(res.status, 200);
  const file = join(dataDir, 'before-kill.mp4');
  await writeFile(file, Buffer.from(await res.arrayBuffer()));
  t.true((await ffprobe(file)).durationSec > 8);
  t.is(await decodeErrors(file), '');

  second.child.kill('SIGTERM');
  t.is(await second.exited, 0, 'SIGTERM exits 0 after closing segments');
  const check = await run(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../recorder.ts'), 'check'], {
    env: { ...process.env, ...env, RECORDER_LOG_LEVEL: 'silent' },
  }).then(
    (r) => ({ code: 0, out: r.stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
  );
  t.is(check.code, 0, check.out);
  const index = await RecorderIndex.open(dataDir);
  t.teardown(() => index.close());
  for (const seg of index.segments.all('cam')) {
    t.false(seg.open);
    t.true((await ffprobe(join(dataDir, seg.file))).durationSec > 0.5, seg.file);
  }
});

test('recording goes on while an external NATS server is away, and the service answers again when it is back', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const natsDir = await tempDir(t, 'nats-');
  // Killed after the recorder and the client have closed (teardowns run last-in first-out):
  // closing a nats.js connection while it is dialling can leave it retrying.
  const natsServers: TestNatsServer[] = [];
  t.teardown(() => Promise.all(natsServers.map((s) => s.stop())));
  const natsArgs = (port: number): string[] => ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', natsDir];
  const first = await startNatsServer(t, natsArgs, { stoppedByCaller: true });
  natsServers.push(first);
  const port = first.port;
  const n = await startNode(t, { natsUrl: `nats://127.0.0.1:${port}` });
  t.true((await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264') } })).ok);
  await waitFor('recording', async () => (await cameraState(n, 'cam')) === 'recording', 30_000);

  first.crash();
  const downAt = Date.now();
  await new Promise((r) => setTimeout(r, 8000));
  // The index end moves at the writer's syncs (every ~4 s of media) and segment closes,
  // so 4 s past `downAt` can first show ~8 s later, more on a loaded machine: wait for
  // it (NATS stays down meanwhile). waitFor fails the test if video stops flowing.
  await waitFor(
    'video to keep flowing while NATS is down',
    async () => {
      const spans = (await search(n.http, 'cam', downAt - 30_000)).spans;
      return spans.length === 1 && Date.parse(spans[0]!.to) > downAt + 4000;
    },
    30_000,
    500,
  );
  t.is(await cameraState(n, 'cam'), 'recording');

  // Back on the same address the recorder knows.
  natsServers.push(await startNatsServer(t, natsArgs, { port, stoppedByCaller: true }));
  const reply = await waitFor(
    'service answers again',
    async () => {
      const msg = await n.nc.request('rec.v1.camera.list', '{}', { timeout: 1000 });
      return JSON.parse(msg.string()) as { ok: boolean; cameras: unknown[] };
    },
    20_000,
    500,
  );
  t.true(reply.ok);
  t.is(reply.cameras.length, 1);
});

test('a segment file that vanished while the recorder was down is dropped from the index with an alarm', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const natsDir = await tempDir(t, 'nats-');
  const { url: natsUrl } = await startNatsServer(t, (port) => ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', natsDir]);
  const a = await startNode(t, { natsUrl, segmentSeconds: 2 });
  t.true((await a.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264') } })).ok);
  await waitFor('three segments', () => [...a.node.index.segments.all('cam')].filter((s) => !s.open).length >= 3, 40_000, 500);
  await a.node.stop();

  const index = await RecorderIndex.open(a.dataDir);
  const victim = [...index.segments.all('cam')][1]!;
  await index.close();
  await rm(join(a.dataDir, victim.file));

  const watcher = await connect({ servers: natsUrl });
  t.teardown(() => watcher.close());
  const alarms: { kind: string; camera: string; message: string }[] = [];
  const sub = watcher.subscribe('rec.v1.alarm.index');
  void (async () => {
    for await (const m of sub) alarms.push(JSON.parse(m.string()) as { kind: string; camera: string; message: string });
  })();
  await watcher.flush();
  const b = await startNode(t, { natsUrl, segmentSeconds: 2 }, a.dataDir);
  await waitFor('index alarm', () => alarms.length > 0, 10_000);
  t.is(alarms[0]!.camera, 'cam');
  t.true(alarms[0]!.message.includes(victim.file));
  t.is(b.node.index.segments.get('cam', victim.startMs), undefined);
  t.is(b.node.reconcileReport?.droppedEntries.length, 1);
});
