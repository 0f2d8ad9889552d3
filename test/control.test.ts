/**
 * The VMS side of the contract over a real nats-server: the service registration,
 * status events, camera get/list/delete, schedules starting and stopping a camera,
 * and a restart that resumes recording from the persisted configuration.
 */
import test from 'ava';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SimCamera } from '../sim/camera.ts';
import { startNode, waitFor } from './helpers/recorder.ts';

interface CameraReply {
  ok: boolean;
  camera: { id: string; status: string; lastVideoAt: string | null };
}

test('NATS service, status events, schedules, persistence and purge', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);

  // Registered as a NATS service: discovery answers with our endpoints.
  const info = JSON.parse((await n.nc.request('$SRV.INFO.recorder', '', { timeout: 5000 })).string()) as { name: string; endpoints: { subject: string }[] };
  t.is(info.name, 'recorder');
  for (const s of ['rec.v1.camera.put', 'rec.v1.camera.delete', 'rec.v1.camera.list', 'rec.v1.camera.get', 'rec.v1.schedule.put', 'rec.v1.search']) {
    t.true(
      info.endpoints.some((e) => e.subject === s),
      s,
    );
  }

  // Every state change is published on rec.v1.status.<camera>.
  const states: string[] = [];
  const sub = n.nc.subscribe('rec.v1.status.cam');
  void (async () => {
    for await (const m of sub) states.push((JSON.parse(m.string()) as { state: string }).state);
  })();
  t.true((await n.request('rec.v1.camera.put', { id: 'cam', name: 'Gate', streams: { main: sim.url('h264') } })).ok);
  await waitFor('recording status', () => states.includes('recording'), 30_000);
  t.deepEqual(states.slice(0, 2), ['connecting', 'recording']);
  const got = await n.request<CameraReply>('rec.v1.camera.get', { id: 'cam' });
  t.is(got.camera.status, 'recording');
  const list = await n.request<{ cameras: { id: string }[] }>('rec.v1.camera.list', {});
  t.deepEqual(
    list.cameras.map((c) => c.id),
    ['cam'],
  );

  // A plan with no slot now stops the camera; an all-week slot starts it again.
  const now = new Date();
  const otherDay = (now.getUTCDay() + 3) % 7;
  t.true((await n.request('rec.v1.schedule.put', { camera: 'cam', slots: [{ days: [otherDay], start: '00:00', end: '01:00', type: 'timing' }] })).ok);
  await waitFor('stopped by plan', () => states.at(-1) === 'stopped', 10_000);
  t.true(
    (
      await n.request('rec.v1.schedule.put', {
        camera: 'cam',
        timeZone: 'Europe/Paris',
        slots: [{ days: [0, 1, 2, 3, 4, 5, 6], start: '00:00', end: '00:00', type: 'timing' }],
      })
    ).ok,
  );
  await waitFor('recording by plan', () => states.at(-1) === 'recording', 30_000);
  // An open segment is indexed only at the writer's first sync (~4 s of media after the
  // first GOP) or its close: allow for a loaded machine.
  await waitFor('video indexed', async () => (await n.request<CameraReply>('rec.v1.camera.get', { id: 'cam' })).camera.lastVideoAt !== null, 60_000);

  // A restart resumes recording from the persisted camera and plan, with no VMS.
  await n.node.stop();
  const n2 = await startNode(t, {}, n.dataDir);
  await waitFor('resumed', async () => (await n2.request<CameraReply>('rec.v1.camera.get', { id: 'cam' })).camera.status === 'recording', 30_000);

  // Delete with purge stops the camera and removes its video.
  const del = await n2.request<{ purged: number }>('rec.v1.camera.delete', { id: 'cam', purge: true });
  t.true(del.ok);
  t.true(del.purged >= 1);
  t.is((await n2.request('rec.v1.camera.get', { id: 'cam' })).error?.code, 'CAMERA_NOT_FOUND');
  const files = await readdir(join(n.dataDir, 'pools', 'default', 'cam'), { recursive: true }).catch(() => []);
  t.deepEqual(
    files.filter((f) => String(f).endsWith('.mp4')),
    [],
  );
  sub.unsubscribe();
});
