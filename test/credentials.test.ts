/**
 * Camera passwords (issue 12 item 6): a camera configured with a password in its URL
 * that records (the simulated camera), and one whose URL points at a closed port (ffmpeg
 * then quotes the URL, password included, in its error). Admins see
 * the URLs whole; a viewer over HTTP, every NATS reply, every status and alarm publish,
 * search's gap reasons and the whole log see `***` in their place. A PUT of what a
 * viewer was shown keeps the stored password (the camera goes on recording); `***` for
 * another host is refused.
 */
import test from 'ava';
import { Writable } from 'node:stream';
import { connect } from 'nats';
import { SimCamera, freePort } from '../sim/camera.ts';
import { configSchema } from '../lib/config.ts';
import { createLogger } from '../lib/log.ts';
import { RecorderNode } from '../node.ts';
import { embeddedNatsUser, tempDir, waitFor } from './helpers/recorder.ts';

const ADMIN_TOKEN = 'admin-token-for-credential-tests-0123';
const PASSWORD = 'cam-Secret-1';
const WRONG = 'Wrong-Pass-2';

interface CameraView {
  id: string;
  status: string;
  lastError: string | null;
  streams: { main: string };
}
interface CameraAnswer {
  camera: CameraView;
}
interface CameraList {
  cameras: CameraView[];
}

async function call<T = unknown>(url: string, auth: string, init: RequestInit = {}): Promise<{ status: number; body: T; text: string }> {
  const headers = new Headers(init.headers);
  headers.set('authorization', auth);
  if (init.body !== undefined) headers.set('content-type', 'application/json');
  const res = await fetch(url, { ...init, headers });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T, text };
}

test('camera passwords reach admins only: never a viewer, NATS, status, search or the log', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  const dir = await tempDir(t);
  const config = configSchema.parse({
    dataDir: dir,
    http: '127.0.0.1:0',
    authToken: ADMIN_TOKEN,
    segmentSeconds: 6,
    logLevel: 'debug',
    minFreeBytes: 0,
    minFreeRatio: 0,
  });
  const node = await RecorderNode.start({ config, log: createLogger('debug', sink) });
  t.teardown(() => node.stop());
  await node.natsReady();
  const nc = await connect({ servers: node.natsUrl!, ...embeddedNatsUser(dir) });
  t.teardown(() => nc.close());
  const published: string[] = [];
  for (const subject of ['rec.v1.status.>', 'rec.v1.alarm.>']) {
    const sub = nc.subscribe(subject);
    void (async () => {
      for await (const m of sub) published.push(m.string());
    })();
  }
  const nats = async <T>(subject: string, body: unknown): Promise<T> =>
    JSON.parse((await nc.request(subject, JSON.stringify(body), { timeout: 10_000 })).string()) as T;
  const api = (path: string): string => `${node.httpUrl}${path}`;
  const admin = `Bearer ${ADMIN_TOKEN}`;
  // The simulated camera asks for no credentials: it takes any.
  const good = sim.url('h264').replace('rtsp://', `rtsp://admin:${PASSWORD}@`);
  const bad = `rtsp://admin:${WRONG}@127.0.0.1:${await freePort()}/h264`;
  const goodShown = good.replace(PASSWORD, '***');

  const put = await call<CameraAnswer>(api('/api/cameras/cam'), admin, { method: 'PUT', body: JSON.stringify({ streams: { main: good } }) });
  t.is(put.status, 200);
  t.is(put.body.camera.streams.main, good, 'the admin who put it gets it back whole');
  t.is((await call(api('/api/cameras/wrong'), admin, { method: 'PUT', body: JSON.stringify({ streams: { main: bad } }) })).status, 200);
  t.is(
    (await call(api('/api/users/v'), admin, { method: 'PUT', body: JSON.stringify({ role: 'viewer', pools: ['*'], password: 'viewer-pass-1' }) })).status,
    200,
  );
  const viewer = `Basic ${Buffer.from('v:viewer-pass-1').toString('base64')}`;

  await waitFor('cam recording', async () => (await call<CameraAnswer>(api('/api/cameras/cam'), admin)).body.camera.status === 'recording', 60_000);
  const failed = await waitFor(
    'the closed port refused',
    async () => (await call<CameraAnswer>(api('/api/cameras/wrong'), admin)).body.camera.lastError,
    60_000,
  );

  // ---- what each one sees ---------------------------------------------------------
  const adminList = await call<CameraList>(api('/api/cameras'), admin);
  t.deepEqual(adminList.body.cameras.map((c) => c.streams.main).sort(), [bad, good].sort(), 'admins see the URLs whole');
  const viewerList = await call<CameraList>(api('/api/cameras'), viewer);
  t.is(viewerList.status, 200);
  t.deepEqual(viewerList.body.cameras.map((c) => [c.id, c.streams.main]).sort(), [
    ['cam', goodShown],
    ['wrong', bad.replace(WRONG, '***')],
  ]);
  const viewerGet = await call<CameraAnswer>(api('/api/cameras/wrong'), viewer);
  t.is(viewerGet.body.camera.streams.main, bad.replace(WRONG, '***'));
  t.is(typeof viewerGet.body.camera.lastError, 'string');
  const natsList = await nats<CameraList>('rec.v1.camera.list', {});
  t.deepEqual(natsList.cameras.map((c) => c.streams.main).sort(), [goodShown, bad.replace(WRONG, '***')].sort(), 'NATS carries no principal: redacted');
  const natsGet = await nats<CameraAnswer>('rec.v1.camera.get', { id: 'wrong' });
  const search = await call(api(`/api/recordings?camera=wrong&from=${Date.now() - 600_000}&to=${Date.now() + 60_000}`), viewer);
  t.is(search.status, 200);
  for (const [what, text] of [
    ['viewer list', viewerList.text],
    ['viewer get', viewerGet.text],
    ['NATS list', JSON.stringify(natsList)],
    ['NATS get', JSON.stringify(natsGet)],
    ['search', search.text],
    ['admin lastError', failed],
  ] as const) {
    t.false(text.includes(PASSWORD) || text.includes(WRONG), `${what}: ${text}`);
  }

  // ---- a client sends back what it was shown ------------------------------------
  const back = await call<CameraAnswer>(api('/api/cameras/cam'), admin, {
    method: 'PUT',
    body: JSON.stringify({ name: 'Gate', streams: { main: goodShown } }),
  });
  t.is(back.status, 200, back.text);
  t.is(back.body.camera.streams.main, good, 'the stored password is kept');
  t.true((await nats<{ ok: boolean }>('rec.v1.camera.put', { id: 'cam', name: 'Gate 2', streams: { main: goodShown } })).ok, 'over NATS too');
  t.is((await call<CameraAnswer>(api('/api/cameras/cam'), admin)).body.camera.streams.main, good);
  const elsewhere = await call<{ error: { code: string } }>(api('/api/cameras/cam'), admin, {
    method: 'PUT',
    body: JSON.stringify({ streams: { main: goodShown.replace('127.0.0.1', 'localhost') } }),
  });
  t.is(elsewhere.status, 400, 'the password never travels to another host');
  t.is(elsewhere.body.error.code, 'VALIDATION_FAILED');
  t.is((await call(api('/api/cameras/cam'), viewer, { method: 'PUT', body: JSON.stringify({ streams: { main: goodShown } }) })).status, 403);
  // Still the right password: recording goes on after the re-configuration.
  const since = Date.now();
  await waitFor(
    'cam records after the PUT',
    async () => {
      const r = await call<{ spans: { to: string }[] }>(api(`/api/recordings?camera=cam&from=${since - 60_000}&to=${Date.now() + 60_000}`), admin);
      return r.body.spans.some((s) => Date.parse(s.to) > since + 2000);
    },
    60_000,
  );

  // ---- publishes and the log ------------------------------------------------------
  t.true(published.length > 0);
  for (const m of published) t.false(m.includes(PASSWORD) || m.includes(WRONG), m);
  t.true(lines.length > 0);
  t.true(lines.some((l) => l.includes('camera configured')));
  for (const l of lines) t.false(l.includes(PASSWORD) || l.includes(WRONG), l);
  // ffmpeg quotes its input URL in its errors: they reached the log, the status and
  // lastError, with the mark in place of the password.
  t.true(failed.includes('admin:***@'), failed);
  t.true(lines.some((l) => l.includes('admin:***@')));
  t.true(published.some((m) => m.includes('admin:***@')));
});
