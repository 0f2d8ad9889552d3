/**
 * Snapshots from the recording (issue 16 item 1) on a real camera: on request for a
 * recorded instant (the I-frame at or before it, a real JPEG of the camera's size), and
 * on an NVR event (the event's I-frame, typed with the event, once it is recorded); an
 * event flood takes one snapshot, not hundreds; no video there is NO_VIDEO.
 */
import test from 'ava';
import sharp from 'sharp';
import { SimCamera } from '../sim/camera.ts';
import { startNode, waitFor, waitForSpan } from './helpers/recorder.ts';

interface Span {
  from: string;
  to: string;
}
interface Picture {
  id: string;
  at: string;
  type: string;
  width: number;
  height: number;
  meta?: Record<string, string>;
  error?: { code: string };
}

test('a snapshot on request and on an NVR event: the recorded I-frame as a picture; a flood takes one', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  t.true((await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264') } })).ok);
  const t0 = Date.now() - 5000;
  const span = await waitForSpan(n.http, 'cam', t0, 6_000);
  // On request, at a recorded instant: the I-frame at or before it (GOPs of 2 s).
  const at = Date.parse(span.from) + 3000;
  const res = await fetch(`${n.http}/api/cameras/cam/snapshot?at=${at}`, { method: 'POST' });
  const snap = (await res.json()) as Picture;
  t.is(res.status, 200, JSON.stringify(snap));
  t.is(snap.type, 'snapshot');
  t.true(Date.parse(snap.at) <= at && at - Date.parse(snap.at) <= 2100, `${snap.at} for ${new Date(at).toISOString()}`);
  t.deepEqual([snap.width, snap.height], [320, 240]);
  const jpeg = Buffer.from(await (await fetch(`${n.http}/api/pictures/${snap.id}`)).arrayBuffer());
  t.like(await sharp(jpeg).metadata(), { format: 'jpeg', width: 320, height: 240 });
  // Without `at`: the newest recorded instant's I-frame.
  const newest = await fetch(`${n.http}/api/cameras/cam/snapshot`, { method: 'POST' });
  const newestSnap = (await newest.json()) as Picture;
  t.is(newest.status, 200, JSON.stringify(newestSnap));
  t.true(Date.parse(newestSnap.at) >= Date.parse(span.to) - 2100, `${newestSnap.at} after ${span.to}`);
  // Nothing recorded there: a typed error, nothing stored.
  const none = await fetch(`${n.http}/api/cameras/cam/snapshot?at=${t0 - 3600_000}`, { method: 'POST' });
  t.is(none.status, 404);
  t.is(((await none.json()) as Picture).error!.code, 'NO_VIDEO');

  // An NVR event, then a flood of them in the same second: one picture typed with the event.
  const T = Date.now();
  t.true((await n.request('rec.v1.event.cam', { type: 'motion', action: 'pulse', seconds: 2, at: T })).ok);
  for (let i = 0; i < 50; i++) await n.request('rec.v1.event.cam', { type: 'motion', action: 'pulse', seconds: 2, at: T + i });
  const search = async (): Promise<Picture[]> =>
    ((await (await fetch(`${n.http}/api/pictures?camera=cam&from=${T - 10_000}&to=${T + 60_000}&type=motion`)).json()) as { pictures: Picture[] }).pictures;
  const [ev] = await waitFor('the event snapshot', async () => ((await search()).length > 0 ? search() : null), 60_000, 500);
  t.is(ev!.meta?.event, 'motion');
  t.true(Date.parse(ev!.at) <= T && T - Date.parse(ev!.at) <= 2100, `${ev!.at} for ${new Date(T).toISOString()}`);
  // Later events of the flood were within a second of the first: none more was taken.
  await waitFor(
    'video well past the flood',
    async () => {
      const body = (await (await fetch(`${n.http}/api/recordings?camera=cam&from=${t0}&to=${Date.now() + 60_000}`)).json()) as { spans: Span[] };
      return body.spans.some((s) => Date.parse(s.to) > T + 6000);
    },
    60_000,
    500,
  );
  t.is((await search()).length, 1);
});
