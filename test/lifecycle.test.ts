/**
 * One lifecycle (issue 14, docs/design/lifecycle.md): the node stops in reverse start
 * order behind one AbortSignal, and a request that arrives during the shutdown starts
 * nothing and is answered 503 SHUTTING_DOWN, over HTTP and NATS.
 *
 * The bug this pins: a camera.put that arrived while the node was stopping (the camera
 * supervisor waiting for the open segments to close, NATS and HTTP still serving)
 * started an actor and an ffmpeg that nothing stopped, and they wrote into the index
 * after it was closed.
 */
import test from 'ava';
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'nats';
import { buildHttp } from '../api/http.ts';
import { startNatsApi } from '../api/nats.ts';
import { RecorderIndex } from '../index/db.ts';
import { liveChildCount } from '../lib/child-process.ts';
import { configSchema } from '../lib/config.ts';
import { shuttingDown } from '../lib/lifecycle.ts';
import { silentLogger } from '../lib/log.ts';
import { startEmbeddedNats } from '../lib/nats-embedded.ts';
import type { RecorderService } from '../services/recorder-service.ts';
import { SimCamera } from '../sim/camera.ts';
import { embeddedNatsUser, startNode, tempDir, waitFor } from './helpers/recorder.ts';

/** PUT over one kept-alive connection; resolves with the status and body, or the transport error. */
function put(agent: Agent, base: string, path: string, body: unknown): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const url = new URL(path, base);
    const req = httpRequest(
      { agent, host: url.hostname, port: url.port, path: url.pathname, method: 'PUT', headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (s: string) => (text += s));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', (err) => resolve({ error: err.message }));
      },
    );
    req.on('error', (err) => resolve({ error: err.message }));
    req.end(JSON.stringify(body));
  });
}

test('a camera.put during shutdown starts no actor and no ffmpeg: refused, nothing left running, the index untouched after close', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  t.true((await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264') } })).ok);
  await waitFor(
    'cam recording',
    async () => (await n.request<{ camera: { status: string } }>('rec.v1.camera.get', { id: 'cam' })).camera.status === 'recording',
    60_000,
  );
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  t.teardown(() => agent.destroy());
  // Connections open before the shutdown, as a VMS keeps them.
  await Promise.all([0, 1, 2, 3].map((i) => put(agent, n.http, `/api/cameras/warm-${i}`, {})));

  const replies: { via: string; reply: unknown }[] = [];
  const sends: Promise<void>[] = [];
  let i = 0;
  let stopped = false;
  const stopping = n.node.stop().then(() => (stopped = true));
  // A put every few ms over both edges for as long as the shutdown runs (at most 5 s:
  // before, a shutdown fed new cameras waited for their segments too, for as long as they came).
  const sendUntil = Date.now() + 5000;
  while (!stopped && Date.now() < sendUntil) {
    const id = `late-${i++}`;
    sends.push(
      n.nc
        .request('rec.v1.camera.put', JSON.stringify({ id, streams: { main: sim.url('h264') } }), { timeout: 3000 })
        .then((m) => void replies.push({ via: 'nats', reply: JSON.parse(m.string()) }))
        .catch((err: Error) => void replies.push({ via: 'nats', reply: { transport: err.message } })),
    );
    sends.push(put(agent, n.http, `/api/cameras/${id}-http`, { streams: { main: sim.url('h264') } }).then((r) => void replies.push({ via: 'http', reply: r })));
    await new Promise((r) => setTimeout(r, 3));
  }
  await Promise.all(sends);
  await Promise.race([stopping, new Promise((r) => setTimeout(r, 60_000))]);
  t.true(stopped, 'the node stopped within a minute');
  t.log(`${i} puts on each edge while stopping`);

  const accepted = replies.filter(({ reply }) => (reply as { ok?: boolean }).ok === true || (reply as { status?: number }).status === 200);
  t.deepEqual(accepted, [], 'no put during the shutdown was carried out');
  const typed = replies.filter(({ reply }) => JSON.stringify(reply).includes('SHUTTING_DOWN'));
  for (const { reply } of typed) {
    if ('status' in (reply as object)) t.is((reply as { status: number }).status, 503);
  }
  // Nothing of the node runs on: no ingest ffmpeg, and the index holds no late camera.
  await waitFor('every ingest ffmpeg gone', () => liveChildCount('ffmpeg', 'ingest') === 0, 5000, 50);
  await new Promise((r) => setTimeout(r, 1500)); // an ffmpeg started late would have written by now
  t.is(liveChildCount('ffmpeg', 'ingest'), 0);
  const index = await RecorderIndex.open(n.dataDir);
  t.teardown(() => index.close());
  t.deepEqual(
    index.cameras
      .list()
      .map((c) => c.id)
      .filter((id) => id.startsWith('late-')),
    [],
  );
  t.deepEqual(
    [...index.segments.all()].filter((s) => s.camera.startsWith('late-')).map((s) => s.file),
    [],
  );
});

test('once the shutdown began, HTTP answers every request 503 SHUTTING_DOWN and starts nothing', async (t) => {
  const n = await startNode(t);
  const shutdown = new AbortController();
  shutdown.abort(shuttingDown());
  const app = buildHttp({
    service: n.node.service,
    index: n.node.index,
    dataDir: n.dataDir,
    log: silentLogger,
    ffmpegPath: 'ffmpeg',
    users: n.node.users,
    authRequired: false,
    metrics: n.node.metrics,
    caches: n.node.caches,
    signal: shutdown.signal,
  });
  t.teardown(() => app.close());
  for (const [method, url] of [
    ['PUT', '/api/cameras/late'],
    ['GET', '/api/health'],
    ['GET', '/api/cameras'],
    ['GET', '/no/such/route'],
  ] as const) {
    const res = await app.inject({ method, url, ...(method === 'PUT' ? { payload: { streams: { main: 'rtsp://127.0.0.1:1/x' } } } : {}) });
    t.is(res.statusCode, 503, `${method} ${url}`);
    t.is(res.json<{ error: { code: string } }>().error.code, 'SHUTTING_DOWN', `${method} ${url}`);
    t.is(res.headers.connection, 'close');
  }
  t.false(n.node.supervisor.has('late'));
  t.deepEqual(n.node.service.listCameras(), []);
});

test('once the shutdown began, NATS answers every request SHUTTING_DOWN without calling the service', async (t) => {
  const dataDir = await tempDir(t);
  const config = configSchema.parse({ dataDir });
  const server = await startEmbeddedNats({ dataDir, binary: config.natsServerPath, log: silentLogger, subjectPrefix: 'rec' });
  t.teardown(() => server.stop());
  const nc = await connect({ servers: server.url, user: server.auth.natsUser, pass: server.auth.natsPassword });
  const calls: string[] = [];
  const service = new Proxy(
    {},
    {
      get:
        (_, name) =>
        (...args: unknown[]) =>
          void calls.push(`${String(name)}(${JSON.stringify(args)})`),
    },
  ) as unknown as RecorderService;
  const shutdown = new AbortController();
  const api = await startNatsApi(nc, service, 'rec', silentLogger, shutdown.signal);
  t.teardown(() => api.close());
  const vms = await connect({ servers: server.url, ...embeddedNatsUser(dataDir) });
  t.teardown(() => vms.close());
  shutdown.abort(shuttingDown());
  for (const subject of ['rec.v1.camera.put', 'rec.v1.camera.list', 'rec.v1.search', 'rec.v1.event.cam']) {
    const reply = JSON.parse(
      (await vms.request(subject, JSON.stringify({ id: 'late', streams: { main: 'rtsp://127.0.0.1:1/x' } }), { timeout: 5000 })).string(),
    ) as { ok: boolean; error?: { code: string } };
    t.false(reply.ok, subject);
    t.is(reply.error?.code, 'SHUTTING_DOWN', subject);
  }
  t.deepEqual(calls, [], 'the service was never called');
});
