/**
 * Every bad input of the contract through the real interfaces (NATS and HTTP on a real
 * node): each gets a typed error, and video already stored stays intact (checked at
 * the end by downloading it again byte for byte).
 */
import test from 'ava';
import { createServer } from 'node:net';
import { SimCamera } from '../sim/camera.ts';
import { freePort } from '../lib/nats-embedded.ts';
import { getJson, startNode, waitFor } from './helpers/recorder.ts';

test('bad bodies, unknown cameras, malformed times and ranges get typed errors; stored video is untouched', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  t.true((await n.request('rec.v1.camera.put', { id: 'good', streams: { main: sim.url('h264') } })).ok);
  const t0 = Date.now() - 5000;
  await waitFor(
    '6 s of video',
    async () => {
      const { body } = await getJson<{ spans: { from: string; to: string }[] }>(`${n.http}/api/recordings?camera=good&from=${t0}&to=${Date.now() + 60_000}`);
      const s = body.spans[0];
      return s && Date.parse(s.to) - Date.parse(s.from) > 6000;
    },
    60_000,
    500,
  );
  const range = `from=${t0}&to=${t0 + 4000 + 5000}`;
  const before = Buffer.from(await (await fetch(`${n.http}/api/cameras/good/video.mp4?${range}`)).arrayBuffer());

  // Invalid camera bodies over NATS: schema errors with the offending path.
  const badCameras: [string, unknown][] = [
    ['no streams', { id: 'x' }],
    ['not rtsp', { id: 'x', streams: { main: 'http://cam/video' } }],
    ['path traversal id', { id: '../etc', streams: { main: 'rtsp://h/s' } }],
    ['unknown key', { id: 'x', streams: { main: 'rtsp://h/s' }, colour: 'red' }],
    ['sub without url', { id: 'x', streams: { main: 'rtsp://h/s' }, record: { stream: 'sub' } }],
    ['array body', [1, 2]],
  ];
  for (const [what, body] of badCameras) {
    const r = await n.request('rec.v1.camera.put', body);
    t.false(r.ok, what);
    t.is(r.error?.code, 'VALIDATION_FAILED', what);
  }
  const notJson = JSON.parse((await n.nc.request('rec.v1.camera.put', 'not json', { timeout: 5000 })).string()) as { error: { code: string } };
  t.is(notJson.error.code, 'BAD_JSON');

  // Unknown cameras.
  t.is((await n.request('rec.v1.camera.get', { id: 'nope' })).error?.code, 'CAMERA_NOT_FOUND');
  t.is((await n.request('rec.v1.camera.delete', { id: 'nope' })).error?.code, 'CAMERA_NOT_FOUND');
  t.is((await n.request('rec.v1.schedule.put', { camera: 'nope', slots: [] })).error?.code, 'CAMERA_NOT_FOUND');
  t.is((await getJson(`${n.http}/api/cameras/nope`)).status, 404);
  t.is((await fetch(`${n.http}/api/cameras/nope/video.mp4?${range}`)).status, 404);

  // Invalid schedules.
  for (const slots of [
    [{ days: [7], start: '08:00', end: '09:00', type: 'timing' }],
    [{ days: [1], start: '25:00', end: '09:00', type: 'timing' }],
    [{ days: [], start: '08:00', end: '09:00', type: 'timing' }],
    [{ days: [1], start: '08:00', end: '09:00', type: 'sometimes' }],
    [{ days: [1], start: '08:00', end: '08:00', type: 'timing' }],
    [
      { days: [1], start: '08:00', end: '12:00', type: 'timing' },
      { days: [1], start: '11:00', end: '13:00', type: 'timing' },
    ],
  ]) {
    t.is((await n.request('rec.v1.schedule.put', { camera: 'good', slots })).error?.code, 'VALIDATION_FAILED', JSON.stringify(slots));
  }
  t.is((await n.request('rec.v1.schedule.put', { camera: 'good', slots: [], timeZone: 'Mars/Olympus' })).error?.code, 'VALIDATION_FAILED');

  // Malformed times and ranges.
  t.is((await n.request('rec.v1.search', { camera: 'good', from: 'yesterday', to: 'now' })).error?.code, 'BAD_TIME');
  t.is((await n.request('rec.v1.search', { camera: 'good', from: t0 + 1000, to: t0 })).error?.code, 'BAD_TIME');
  const badTime = await getJson<{ error: { code: string } }>(`${n.http}/api/cameras/good/video.mp4?from=soon&to=later`);
  t.is(badTime.status, 400);
  t.is(badTime.body.error.code, 'BAD_TIME');
  t.is((await getJson(`${n.http}/api/recordings?camera=good&from=${t0}`)).status, 400, 'missing to');
  const noVideo = await getJson<{ error: { code: string } }>(`${n.http}/api/cameras/good/video.mp4?from=2020-01-01T00:00:00Z&to=2020-01-01T01:00:00Z`);
  t.is(noVideo.status, 404);
  t.is(noVideo.body.error.code, 'NO_VIDEO');

  // Range headers.
  const len = before.length;
  const r416 = await fetch(`${n.http}/api/cameras/good/video.mp4?${range}`, { headers: { range: `bytes=${len}-` } });
  t.is(r416.status, 416);
  t.is(r416.headers.get('content-range'), `bytes */${len}`);
  t.is((await fetch(`${n.http}/api/cameras/good/video.mp4?${range}`, { headers: { range: 'bytes=0-1,4-5' } })).status, 400);
  const partial = await fetch(`${n.http}/api/cameras/good/video.mp4?${range}`, { headers: { range: 'bytes=100-' } });
  t.is(partial.status, 206);
  t.true(Buffer.from(await partial.arrayBuffer()).equals(before.subarray(100)), 'a resumed download continues the same bytes');
  const stale = await fetch(`${n.http}/api/cameras/good/video.mp4?${range}`, { headers: { range: 'bytes=100-', 'if-range': '"stale"' } });
  t.is(stale.status, 200, 'If-Range with another ETag gets the whole body');
  await stale.arrayBuffer();

  // Raw segment files (HLS byte ranges): unknown names 404, ranges past the durable bytes 416.
  const seg = [...n.node.index.segments.all('good')][0]!;
  const segUrl = `${n.http}/api/cameras/good/segments/${seg.startMs}.mp4`;
  const head = await fetch(segUrl, { headers: { range: 'bytes=0-7' } });
  t.is(head.status, 206);
  t.is(Buffer.from(await head.arrayBuffer()).toString('latin1', 4, 8), 'ftyp');
  t.is((await fetch(`${n.http}/api/cameras/good/segments/123.mp4`)).status, 404);
  t.is((await fetch(`${n.http}/api/cameras/good/segments/..%2F..%2Findex.mp4`)).status, 404);
  t.is((await fetch(segUrl, { headers: { range: 'bytes=999999999-' } })).status, 416);
  t.is((await fetch(`${n.http}/api/cameras/good/video.m3u8?from=2020-01-01T00:00:00Z&to=2020-01-01T01:00:00Z`)).status, 404);

  // A URL that refuses, and one that speaks garbage: the camera backs off with a reason.
  const closedPort = await freePort();
  const garbage = createServer((s) => s.end('HTTP/1.0 200 OK\r\n\r\nthis is not rtsp\r\n'));
  await new Promise<void>((r) => garbage.listen(0, '127.0.0.1', r));
  t.teardown(() => garbage.close());
  const garbagePort = (garbage.address() as { port: number }).port;
  for (const [id, url] of [
    ['refuses', `rtsp://127.0.0.1:${closedPort}/x`],
    ['garbage', `rtsp://127.0.0.1:${garbagePort}/x`],
  ] as const) {
    t.true((await n.request('rec.v1.camera.put', { id, streams: { main: url } })).ok);
    const cam = await waitFor(
      `${id} backs off`,
      async () => {
        const { body } = await getJson<{ camera: { status: string; lastError: string | null } }>(`${n.http}/api/cameras/${id}`);
        return body.camera.status === 'backoff' && body.camera.lastError ? body.camera : null;
      },
      30_000,
    );
    t.truthy(cam.lastError, id);
  }

  // Nothing stored was harmed.
  const after = Buffer.from(await (await fetch(`${n.http}/api/cameras/good/video.mp4?${range}`)).arrayBuffer());
  t.true(after.equals(before));
});
