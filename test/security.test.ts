/**
 * Security (issue 8): users bound to pools over real HTTP, with real video from a
 * simulated camera; every permission rule is tried from the wrong side. Also wrong and
 * missing credentials, path traversal, oversized bodies, header injection, HTTP bound
 * beyond loopback without auth, and the NATS client's user/password, token, nkey and
 * TLS options against a real nats-server.
 */
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Fastify from 'fastify';
import WebSocket from 'ws';
import { connect, nkeys } from 'nats';
import { SimCamera, freePort } from '../sim/camera.ts';
import { configSchema, loadConfig } from '../lib/config.ts';
import { createLogger, silentLogger } from '../lib/log.ts';
import { RecorderError, errorBody, toRecorderError } from '../lib/errors.ts';
import { systemClock } from '../lib/time.ts';
import { RecorderIndex } from '../index/db.ts';
import { RecorderNode } from '../node.ts';
import { natsAuthOptions } from '../api/nats.ts';
import { access, installAuth } from '../security/http-auth.ts';
import { attachmentDisposition } from '../security/headers.ts';
import { UserStore } from '../security/users.ts';
import { startNatsServer } from './helpers/nats-server.ts';
import { startNode, tempDir, waitFor } from './helpers/recorder.ts';

const ADMIN_TOKEN = 'admin-token-for-security-tests-0123';

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

/** The answers these tests read, as far as they read them. */
interface ErrorAnswer {
  error: { code: string };
}
interface Span {
  from: string;
  to: string;
}
interface CameraList {
  cameras: { id: string }[];
}
interface LockList {
  locks: { id: string; camera: string }[];
}
interface LabelList {
  labels: { text: string }[];
}

/** An HTTP call; `T` is the JSON answer as the caller reads it (null when the answer is not JSON). */
async function call<T = unknown>(
  url: string,
  auth: string | undefined,
  init: RequestInit = {},
): Promise<{ status: number; body: T; headers: Headers; bytes: number }> {
  const headers = new Headers(init.headers);
  if (auth) headers.set('authorization', auth);
  if (init.body !== undefined) headers.set('content-type', 'application/json');
  const res = await fetch(url, { ...init, headers });
  const buf = Buffer.from(await res.arrayBuffer());
  let body: unknown = null;
  if ((res.headers.get('content-type') ?? '').includes('json')) body = JSON.parse(buf.toString('utf8'));
  return { status: res.status, body: body as T, headers: res.headers, bytes: buf.length };
}

test('viewers and operators act only on their pools; admins manage; credentials are checked', async (t) => {
  const sim = await SimCamera.start({ width: 320, height: 240, bitrateKbit: 300 });
  t.teardown(() => sim.stop());
  const n = await startNode(t, { authToken: ADMIN_TOKEN, segmentSeconds: 2 });
  const admin = `Bearer ${ADMIN_TOKEN}`;
  const api = (path: string): string => `${n.http}${path}`;

  // Two pools (over NATS, the VMS's channel), two cameras, both recording (same source, two ingests).
  for (const id of ['poolA', 'poolB']) t.true((await n.request('rec.v1.pool.put', { id, capacityBytes: null, overwrite: 'capacity' })).ok, `pool ${id}`);
  for (const [id, pool] of [
    ['camA', 'poolA'],
    ['camB', 'poolB'],
  ] as const) {
    const r = await call(api(`/api/cameras/${id}`), admin, { method: 'PUT', body: JSON.stringify({ pool, streams: { main: sim.url('h264') } }) });
    t.is(r.status, 200, `put ${id}`);
  }
  // Users, created by the admin over HTTP.
  const users = [
    { name: 'va', role: 'viewer', pools: ['poolA'], password: 'viewer-a-pass' },
    { name: 'oa', role: 'operator', pools: ['poolA'], password: 'operator-a-pass' },
    { name: 'boss', role: 'admin', pools: [], password: 'boss-password' },
  ];
  for (const u of users) {
    const r = await call(api(`/api/users/${u.name}`), admin, { method: 'PUT', body: JSON.stringify({ role: u.role, pools: u.pools, password: u.password }) });
    t.is(r.status, 200, `create ${u.name}`);
    t.false(JSON.stringify(r.body).includes(u.password), 'the password is never echoed');
    t.false(JSON.stringify(r.body).includes('scrypt'), 'nor its hash');
  }
  const va = basic('va', 'viewer-a-pass');
  const oa = basic('oa', 'operator-a-pass');

  // Video in both pools: a span of over 2.5 s each. Any span, not only the first: two
  // cameras joining one shared camera stream at once can see their first attempt cut
  // short (a stall, then a retry), which leaves a short span before the one that grows.
  const t0 = Date.now();
  const long: Record<string, { from: string; to: string }> = {};
  for (const cam of ['camA', 'camB']) {
    let seen: unknown = null;
    long[cam] = await waitFor(
      `${cam} video`,
      async () => {
        const r = await call<{ spans: Span[] }>(api(`/api/recordings?camera=${cam}&from=${t0 - 60_000}&to=${Date.now() + 60_000}`), admin);
        seen = r.body;
        const spans = r.status === 200 ? r.body.spans : [];
        return spans.find((s) => Date.parse(s.to) - Date.parse(s.from) > 2500) ?? null;
      },
      90_000,
    ).catch(async (err: Error) => {
      const state = await call(api(`/api/cameras/${cam}`), admin);
      throw new Error(`${err.message}; search ${JSON.stringify(seen)}; camera ${JSON.stringify(state.body)}`);
    });
  }
  const from = t0 - 60_000;
  const to = Date.now() + 60_000;
  const spanA = long.camA!;
  const spanB = long.camB!;
  // The two ingests start apart (each joins the shared stream at its next keyframe and is
  // anchored on its own arrival; more apart on a loaded machine): instants used on both
  // cameras lie after the later start, so both have video there.
  const bothFrom = Math.max(Date.parse(spanA.from), Date.parse(spanB.from));
  const at = bothFrom + 500;
  const segFile = async (cam: string): Promise<string> => {
    const m3u8 = await fetch(api(`/api/cameras/${cam}/video.m3u8?from=${from}&to=${to}`), { headers: { authorization: admin } }).then((r) => r.text());
    return /segments\/(\d+\.mp4)/.exec(m3u8)![1]!;
  };
  const fileA = await segFile('camA');
  const fileB = await segFile('camB');

  // ---- credentials ----------------------------------------------------------
  const noAuth = await call<ErrorAnswer>(api('/api/cameras'), undefined);
  t.is(noAuth.status, 401, 'missing credentials');
  t.is(noAuth.body.error.code, 'UNAUTHORIZED');
  t.is(noAuth.headers.get('www-authenticate'), 'Bearer realm="recorder"', 'no Basic challenge: browsers would pop a dialog over the UI');
  t.is((await call(api('/api/cameras'), basic('va', 'wrong-password'))).status, 401, 'wrong password');
  t.is((await call(api('/api/cameras'), basic('nobody', 'viewer-a-pass'))).status, 401, 'unknown user');
  t.is((await call(api('/api/cameras'), 'Bearer not-the-token-0123456789')).status, 401, 'wrong token');
  t.is((await call(api('/api/cameras'), 'Bearer va.forged-secret')).status, 401, 'forged user token');
  t.is((await call(api('/api/cameras'), 'Basic !!!not-base64')).status, 401, 'malformed Basic');
  t.is((await call(api('/api/cameras'), `${admin}x`)).status, 401, 'token with a trailing byte');
  t.is((await call(api('/api/health'), undefined)).status, 200, 'health stays public (liveness probes)');

  // ---- seeing ----------------------------------------------------------------
  const listA = await call<CameraList>(api('/api/cameras'), va);
  t.is(listA.status, 200);
  t.deepEqual(
    listA.body.cameras.map((c) => c.id),
    ['camA'],
    'a viewer of A lists only A',
  );
  t.deepEqual((await call<CameraList>(api('/api/cameras'), admin)).body.cameras.map((c) => c.id).sort(), ['camA', 'camB']);
  t.is((await call(api('/api/cameras/camA'), va)).status, 200);
  const getB = await call<ErrorAnswer>(api('/api/cameras/camB'), va);
  t.is(getB.status, 404, 'pool B is invisible to a viewer of A');
  t.is(getB.body.error.code, 'CAMERA_NOT_FOUND');
  t.is((await call(api(`/api/recordings?camera=camA&from=${from}&to=${to}`), va)).status, 200, 'search A');
  t.is((await call(api(`/api/recordings?camera=camB&from=${from}&to=${to}`), va)).status, 404, 'search B');

  // ---- playing, downloading, frames, HLS ---------------------------------------
  const mediaPaths = (cam: string, file: string): string[] => [
    `/api/cameras/${cam}/play?from=${from}&to=${to}`,
    `/api/cameras/${cam}/video.mp4?from=${from}&to=${to}`,
    `/api/cameras/${cam}/frame.jpg?at=${at}`,
    `/api/cameras/${cam}/thumbnails?from=${from}&to=${to}&count=2`,
    `/api/cameras/${cam}/video.m3u8?from=${from}&to=${to}`,
    `/api/cameras/${cam}/segments/${file}`,
  ];
  for (const p of mediaPaths('camA', fileA)) {
    const r = await call(api(p), va);
    t.is(r.status, 200, `viewer of A: ${p}`);
    t.true(r.bytes > 0);
  }
  for (const p of mediaPaths('camB', fileB)) {
    const r = await call(api(p), va);
    t.is(r.status, 404, `viewer of A: ${p}`);
    t.is(r.bytes < 300, true, 'no video bytes leak');
    t.is((await call(api(p), oa)).status, 404, `operator of A: ${p}`);
  }
  for (const p of mediaPaths('camB', fileB)) t.is((await call(api(p), admin)).status, 200, `admin: ${p}`);

  // Content-Disposition comes from the camera id through the header sanitizer.
  const dl = await call(api(`/api/cameras/camA/video.mp4?from=${from}&to=${to}`), va);
  t.regex(dl.headers.get('content-disposition') ?? '', /^attachment; filename="camA_[0-9A-Za-z_-]+\.mp4"$/);

  // ---- writing: events, manual recording (operator), cameras and deletion (admin) ----
  const event = { type: 'motion', action: 'pulse', seconds: 1 };
  const ev = await call<ErrorAnswer>(api('/api/cameras/camA/events'), va, { method: 'POST', body: JSON.stringify(event) });
  t.is(ev.status, 403, 'a viewer cannot trigger events');
  t.is(ev.body.error.code, 'FORBIDDEN');
  t.is((await call(api('/api/cameras/camA/manual/start'), va, { method: 'POST' })).status, 403, 'nor manual recording');
  t.is((await call(api('/api/cameras/camA/events'), oa, { method: 'POST', body: JSON.stringify(event) })).status, 200, 'operator of A: event on A');
  t.is((await call(api('/api/cameras/camA/manual/start'), oa, { method: 'POST' })).status, 200, 'operator of A: manual on A');
  t.is((await call(api('/api/cameras/camA/manual/stop'), oa, { method: 'POST' })).status, 200);
  t.is((await call(api('/api/cameras/camB/events'), oa, { method: 'POST', body: JSON.stringify(event) })).status, 404, 'operator of A: not on B');
  t.is((await call(api('/api/cameras/camB/manual/start'), oa, { method: 'POST' })).status, 404);
  for (const auth of [va, oa]) {
    t.is((await call(api('/api/cameras/camA?purge=1'), auth, { method: 'DELETE' })).status, 403, 'only admins delete video of their pool');
    t.is((await call(api('/api/cameras/camB?purge=1'), auth, { method: 'DELETE' })).status, 404, 'nor of another pool');
    t.is(
      (await call(api('/api/cameras/camA'), auth, { method: 'PUT', body: JSON.stringify({ pool: 'poolA', streams: { main: sim.url('h264') } }) })).status,
      403,
      'nor configure cameras',
    );
    t.is((await call(api('/api/cameras/camA/schedule'), auth, { method: 'PUT', body: JSON.stringify({ slots: [] }) })).status, 403, 'nor schedules');
    t.is(
      (await call(api('/api/cameras/camNew'), auth, { method: 'PUT', body: JSON.stringify({ pool: 'poolA', streams: { main: sim.url('h264') } }) })).status,
      404,
      'nor create cameras',
    );
  }
  t.true(
    (await call<{ spans: Span[] }>(api(`/api/recordings?camera=camA&from=${from}&to=${to}`), admin)).body.spans.length > 0,
    'the refused deletes deleted nothing',
  );

  // ---- locks and labels (the storage routes, declared through the seam) ------------------
  const clip = (camera: string): string => JSON.stringify({ camera, from: new Date(bothFrom).toISOString(), to: new Date(bothFrom + 1000).toISOString() });
  const lockVa = await call<ErrorAnswer>(api('/api/locks'), va, { method: 'POST', body: clip('camA') });
  t.is(lockVa.status, 403, 'a viewer cannot lock');
  t.is(lockVa.body.error.code, 'FORBIDDEN');
  t.is((await call(api('/api/locks'), va, { method: 'POST', body: clip('camB') })).status, 404, 'nor lock another pool');
  t.is((await call(api('/api/locks'), oa, { method: 'POST', body: clip('camB') })).status, 404, 'operator of A cannot lock B');
  t.is((await call(api('/api/locks'), oa, { method: 'POST', body: clip('camA') })).status, 200, 'operator of A locks A');
  t.is((await call(api('/api/locks'), admin, { method: 'POST', body: clip('camB') })).status, 200, 'admin locks B');
  const locksSeen = (await call<LockList>(api('/api/locks'), va)).body.locks.map((l) => l.camera);
  t.deepEqual(locksSeen, ['camA'], 'a viewer of A lists only the locks of A');
  const lockB = (await call<LockList>(api('/api/locks?camera=camB'), admin)).body.locks[0] as { id: string };
  t.is((await call(api(`/api/locks?camera=camB`), va)).status, 404);
  t.not((await call(api(`/api/locks/${lockB.id}`), oa, { method: 'DELETE' })).status, 200, 'operator of A cannot unlock B by id');
  t.is((await call<LockList>(api('/api/locks?camera=camB'), admin)).body.locks.length, 1, 'B stays locked');
  t.is((await call(api(`/api/locks?camera=camB&from=${encodeURIComponent(spanA.from)}&to=${to}`), oa, { method: 'DELETE' })).status, 404, 'nor by range');
  const labelB = await call<{ label: { id: string } }>(api('/api/labels'), admin, {
    method: 'POST',
    body: JSON.stringify({ ...JSON.parse(clip('camB')), text: 'pool B only' }),
  });
  t.is(labelB.status, 200);
  t.is(
    (await call(api('/api/labels'), va, { method: 'POST', body: JSON.stringify({ ...JSON.parse(clip('camA')), text: 'x' }) })).status,
    403,
    'viewers do not label',
  );
  t.is(
    (await call(api('/api/labels'), oa, { method: 'POST', body: JSON.stringify({ ...JSON.parse(clip('camA')), text: 'pool A' }) })).status,
    200,
    'operators label their pool',
  );
  t.deepEqual(
    (await call<LabelList>(api('/api/labels'), va)).body.labels.map((l) => l.text),
    ['pool A'],
    "B's labels are not listed to A",
  );
  t.not((await call(api(`/api/labels/${labelB.body.label.id}`), oa, { method: 'DELETE' })).status, 200, 'nor deleted by id');
  t.not(
    (await call(api(`/api/labels/${labelB.body.label.id}`), oa, { method: 'PATCH', body: JSON.stringify({ text: 'mine now' }) })).status,
    200,
    'nor edited',
  );
  t.deepEqual(
    (await call<LabelList>(api('/api/labels?camera=camB'), admin)).body.labels.map((l) => l.text),
    ['pool B only'],
  );
  t.is((await call(api('/api/pools/poolB'), va)).status === 200, false, 'pool B is not readable to a viewer of A');
  t.is(
    (await call(api('/api/pools/poolA'), oa, { method: 'PUT', body: JSON.stringify({ capacityBytes: null, overwrite: 'capacity' }) })).status,
    403,
    'pools are for admins',
  );
  t.deepEqual(
    (await call<{ pools: { id: string }[] }>(api('/api/pools'), va)).body.pools.map((p) => p.id),
    ['poolA'],
  );

  // ---- operations and user management are admin-only -------------------------------
  for (const auth of [va, oa]) {
    t.is((await call(api('/metrics'), auth)).status, 403);
    t.is((await call(api('/api/system'), auth)).status, 403);
    t.is((await call(api('/api/users'), auth)).status, 403);
    t.is((await call(api('/api/users/va'), auth, { method: 'PUT', body: JSON.stringify({ role: 'admin' }) })).status, 403, 'no self-promotion');
  }
  const boss = basic('boss', 'boss-password');
  t.is((await call(api('/api/users'), boss)).status, 200, 'an admin user manages users');
  t.deepEqual((await call<{ user: unknown }>(api('/api/me'), va)).body.user, { name: 'va', role: 'viewer', pools: ['poolA'] });

  // Tokens: issued once by an admin, work as Bearer and as ?access_token (for <img>/<video>).
  const issued = await call<{ token: string }>(api('/api/users/va/token'), boss, { method: 'POST' });
  t.is(issued.status, 200);
  const vaToken = issued.body.token;
  t.is((await call<CameraList>(api('/api/cameras'), `Bearer ${vaToken}`)).body.cameras.length, 1);
  t.is((await call(api(`/api/cameras/camA/frame.jpg?at=${at}&access_token=${encodeURIComponent(vaToken)}`), undefined)).status, 200);
  t.is((await call(api(`/api/cameras/camB/frame.jpg?at=${at}&access_token=${encodeURIComponent(vaToken)}`), undefined)).status, 404);
  t.false(JSON.stringify((await call(api('/api/users'), boss)).body).includes(vaToken.split('.')[1]!), 'tokens are stored hashed');
  // WebSocket routes (live view) go through the same seam; browsers send the token as a subprotocol.
  const wsStatus = (cam: string, protocols: string[]): Promise<number> =>
    new Promise((resolve) => {
      const ws = new WebSocket(`${n.http.replace(/^http/, 'ws')}/api/cameras/${cam}/live`, protocols);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => {
        resolve(101);
        ws.close();
      });
      ws.on('error', () => undefined);
    });
  const wsToken = `bearer.${Buffer.from(vaToken).toString('base64url')}`;
  t.is(await wsStatus('camA', ['recorder.v1']), 401, 'live without a token');
  t.is(await wsStatus('camA', ['recorder.v1', wsToken]), 101, 'live of pool A for a viewer of A');
  t.is(await wsStatus('camB', ['recorder.v1', wsToken]), 404, 'no live of pool B');
  // A new password takes effect; the old one stops working.
  t.is(
    (await call(api('/api/users/va'), boss, { method: 'PUT', body: JSON.stringify({ role: 'viewer', pools: ['poolA'], password: 'new-viewer-pass' }) })).status,
    200,
  );
  t.is((await call(api('/api/cameras'), va)).status, 401, 'old password refused');
  t.is((await call(api('/api/cameras'), basic('va', 'new-viewer-pass'))).status, 200);
  // Bad user input: short password, bad role, bad name; the last admin stays.
  t.is(
    (await call<ErrorAnswer>(api('/api/users/x1'), boss, { method: 'PUT', body: JSON.stringify({ role: 'viewer', password: 'short' }) })).body.error.code,
    'VALIDATION_FAILED',
  );
  t.is((await call(api('/api/users/x1'), boss, { method: 'PUT', body: JSON.stringify({ role: 'root' }) })).status, 400);
  t.is((await call(api('/api/users/..%2Fx'), boss, { method: 'PUT', body: JSON.stringify({ role: 'viewer' }) })).status, 400);
  t.is((await call(api('/api/users/boss'), boss, { method: 'DELETE' })).status, 400, 'the last admin user cannot be removed');
  t.is((await call(api('/api/users/oa'), boss, { method: 'DELETE' })).status, 200);
  t.is((await call(api('/api/cameras'), oa)).status, 401, 'a removed user is locked out');

  // ---- path traversal ---------------------------------------------------------------
  const traversals = [
    '/api/cameras/..%2F..%2Fetc%2Fpasswd/video.mp4?from=0&to=1',
    '/api/cameras/..%2Findex/frame.jpg?at=0',
    '/api/cameras/%2E%2E/play?from=0',
    '/api/cameras/camA%00/play?from=0',
    `/api/recordings?camera=..%2F..%2Fetc&from=${from}&to=${to}`,
  ];
  for (const p of traversals) {
    const r = await rawGet(n.http, p, admin);
    t.is(r.status, 400, `traversal in a camera id: ${p}`);
    t.is(r.body.error.code, 'VALIDATION_FAILED');
  }
  for (const file of [
    '..%2F..%2F..%2F..%2Findex%2Fdata.mdb',
    '..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd',
    `${fileA.replace('.mp4', '')}%2F..%2F..%2Fdata.mdb`,
    '%2Fetc%2Fpasswd',
    '..',
    '%2E%2E',
  ]) {
    const r = await rawGet(n.http, `/api/cameras/camA/segments/${file}`, admin);
    t.is(r.status, 404, `traversal in a segment name: ${file}`);
    t.is(r.body.error.code, 'NOT_FOUND');
  }
  // Unnormalized paths (as curl --path-as-is sends them) never reach a file either.
  for (const p of ['/api/cameras/camA/segments/../../../../index/data.mdb', '/api/cameras/../../../../etc/passwd']) {
    const r = await rawGet(n.http, p, admin);
    t.is(r.status, 404, p);
    t.is(typeof r.body.error.code, 'string');
  }
  const badPut = await call(api('/api/cameras/..%2F..%2Fx'), admin, {
    method: 'PUT',
    body: JSON.stringify({ pool: 'poolA', streams: { main: sim.url('h264') } }),
  });
  t.is(badPut.status, 400, 'a camera id that is a path is refused over HTTP');
  const badNats = await n.request('rec.v1.camera.put', { id: '../../x', pool: 'poolA', streams: { main: sim.url('h264') } });
  t.is(badNats.error?.code, 'VALIDATION_FAILED', 'and over NATS');

  // ---- header injection ----------------------------------------------------------------
  const crlf = await call(api('/api/cameras/a%0D%0ASet-Cookie:x'), admin, {
    method: 'PUT',
    body: JSON.stringify({ pool: 'poolA', streams: { main: sim.url('h264') } }),
  });
  t.is(crlf.status, 400, 'CR/LF in a camera id is refused');
  t.is(crlf.headers.get('set-cookie'), null);

  // ---- oversized bodies ---------------------------------------------------------------------
  const big = JSON.stringify({ pool: 'poolA', streams: { main: sim.url('h264') }, name: 'x'.repeat(2 * 1024 * 1024) });
  const tooBig = await call<ErrorAnswer>(api('/api/cameras/camBig'), admin, { method: 'PUT', body: big });
  t.is(tooBig.status, 413);
  t.is(tooBig.body.error.code, 'PAYLOAD_TOO_LARGE');
  t.is((await call(api('/api/cameras/camBig'), admin)).status, 404, 'nothing was created');
});

/** A GET with the path sent exactly as given (fetch would normalize `..` and `%2E`). */
function rawGet(base: string, path: string, auth: string): Promise<{ status: number; body: ErrorAnswer }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path, method: 'GET', headers: { authorization: auth } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = null;
        try {
          body = JSON.parse(text);
        } catch {
          body = { raw: text.slice(0, 200) };
        }
        resolve({ status: res.statusCode ?? 0, body: body as ErrorAnswer });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

test('the seam: routes declaring lock/delete on a body camera, undeclared routes admin-only', async (t) => {
  const dir = await tempDir(t);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const users = new UserStore(index.users, systemClock);
  await users.put({ name: 'admin1', role: 'admin', password: 'admin-password' });
  await users.put({ name: 'va', role: 'viewer', pools: ['A'], password: 'viewer-password' });
  await users.put({ name: 'oa', role: 'operator', pools: ['A'], password: 'operator-password' });
  await users.put({ name: 'oall', role: 'operator', pools: ['*'], password: 'operator-password' });
  const cameras: Record<string, string> = { camA: 'A', camB: 'B' };
  const app = Fastify({ logger: false });
  const seam = installAuth(app, {
    users,
    required: false,
    log: silentLogger,
    cameraPool: (id) => {
      if (!cameras[id]) throw new RecorderError('CAMERA_NOT_FOUND', `unknown camera ${id}`);
      return { id, pool: cameras[id] };
    },
  });
  app.setErrorHandler((err, _req, reply) => {
    const e = toRecorderError(err);
    void reply.code(e.status).send({ error: errorBody(e) });
  });
  // As the lock, label and pool routes declare themselves.
  app.post('/api/locks', access('lock', { camera: 'body.camera' }), (_req, reply) => {
    void reply.send({ locked: true });
  });
  app.delete('/api/recordings', access('delete', { camera: 'query.camera' }), (_req, reply) => {
    void reply.send({ deleted: true });
  });
  app.put<{ Params: { id: string } }>('/api/pools/:id', access('admin', { pool: 'params.id' }), (_req, reply) => {
    void reply.send({ pool: true });
  });
  // A target found by lookup: label id → its camera.
  const labels: Record<string, string> = { l1: 'camA', l2: 'camB' };
  app.delete<{ Params: { id: string } }>('/api/labels/:id', access('write', { camera: (req) => labels[(req.params as { id: string }).id] }), (_req, reply) => {
    void reply.send({ deleted: true });
  });
  app.get('/api/undeclared', (_req, reply) => {
    void reply.send({ secret: true });
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  t.deepEqual(seam.undeclared(), ['GET /api/undeclared']);
  const addr = app.server.address() as { port: number };
  const url = `http://127.0.0.1:${addr.port}`;
  const lock = (auth: string, camera: string): Promise<number> =>
    call(`${url}/api/locks`, auth, { method: 'POST', body: JSON.stringify({ camera, from: 0, to: 1 }) }).then((r) => r.status);
  const va = basic('va', 'viewer-password');
  const oa = basic('oa', 'operator-password');
  const oall = basic('oall', 'operator-password');
  const adm = basic('admin1', 'admin-password');
  t.is(await lock(va, 'camA'), 403, 'viewer of A cannot lock A');
  t.is(await lock(va, 'camB'), 404, 'viewer of A cannot lock B');
  t.is(await lock(oa, 'camA'), 200, 'operator of A locks A');
  t.is(await lock(oa, 'camB'), 404, 'operator of A cannot lock B');
  t.is(await lock(oall, 'camB'), 200, 'operator of every pool locks B');
  t.is(await lock(adm, 'camB'), 200);
  t.is(await lock(oa, '../camA'), 400, 'ids are validated wherever they come from');
  for (const auth of [va, oa]) t.is((await call(`${url}/api/recordings?camera=camA`, auth, { method: 'DELETE' })).status, 403, 'deleting video is for admins');
  t.is((await call(`${url}/api/recordings?camera=camB`, va, { method: 'DELETE' })).status, 404);
  t.is((await call(`${url}/api/recordings?camera=camA`, adm, { method: 'DELETE' })).status, 200);
  t.is((await call(`${url}/api/pools/A`, oa, { method: 'PUT', body: '{}' })).status, 403, 'pools are for admins');
  t.is((await call(`${url}/api/pools/A`, adm, { method: 'PUT', body: '{}' })).status, 200);
  t.is((await call(`${url}/api/labels/l1`, oa, { method: 'DELETE' })).status, 200, 'operator of A deletes a label of A');
  t.is((await call(`${url}/api/labels/l2`, oa, { method: 'DELETE' })).status, 404, 'not one of B, found by its id');
  t.is((await call(`${url}/api/labels/l1`, va, { method: 'DELETE' })).status, 403, 'viewers do not write labels');
  t.is((await call(`${url}/api/undeclared`, oall)).status, 403, 'a route that declares nothing is admin-only');
  t.is((await call(`${url}/api/undeclared`, adm)).status, 200);
  t.is((await call(`${url}/api/undeclared`, undefined)).status, 401, 'users exist: no anonymous access');
});

test('HTTP beyond loopback without authentication is refused at start', async (t) => {
  const dir = await tempDir(t);
  const log = createLogger('silent');
  t.is(
    errCode(() => loadConfig([], { RECORDER_HTTP: '0.0.0.0:8080' })),
    'CONFIG_INVALID',
  );
  t.is(loadConfig([], { RECORDER_HTTP: '0.0.0.0:8080', RECORDER_AUTH: 'required' }).config.auth, 'required');
  // The node itself refuses too (a config built in code, not parsed from the command line).
  const port = await freePort();
  const open = configSchema.parse({ dataDir: dir, http: `0.0.0.0:${port}`, logLevel: 'silent' });
  const refused = await RecorderNode.start({ config: open, log }).then(
    () => null,
    (err: unknown) => err,
  );
  t.true(refused instanceof RecorderError && refused.code === 'CONFIG_INVALID', String(refused));
  // auth=required with nobody able to log in is refused as well…
  const required = configSchema.parse({ dataDir: dir, http: `0.0.0.0:${port}`, auth: 'required', logLevel: 'silent' });
  const refused2 = await RecorderNode.start({ config: required, log }).then(
    () => null,
    (err: unknown) => err,
  );
  t.true(refused2 instanceof RecorderError && refused2.code === 'CONFIG_INVALID', String(refused2));
  await t.throwsAsync(fetch(`http://127.0.0.1:${port}/api/health`), undefined, 'nothing listens');
  // …and starts once an admin exists (created as `recorder user add` does), asking for credentials.
  const index = await RecorderIndex.open(dir);
  await new UserStore(index.users, systemClock).put({ name: 'root', role: 'admin', password: 'root-password' });
  await index.close();
  const n = await startNode(t, { http: '127.0.0.1:0', auth: 'required' }, dir);
  t.is((await call(`${n.http}/api/cameras`, undefined)).status, 401);
  t.is((await call(`${n.http}/api/cameras`, basic('root', 'root-password'))).status, 200);
});

test('the CLI creates the first admin with a password from stdin', async (t) => {
  const dir = await tempDir(t);
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(import.meta.dirname, '../recorder.ts'),
      'user',
      'add',
      'first',
      '--role',
      'admin',
      '--password-stdin',
      '--token',
      '--data-dir',
      dir,
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  t.teardown(() => child.kill('SIGKILL'));
  child.stdin.end('first-admin-pass\n');
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  t.is(code, 0);
  const printed = JSON.parse(out) as { user: { name: string; role: string; password: boolean; token: boolean }; token: string };
  t.like(printed.user, { name: 'first', role: 'admin', password: true, token: true });
  const n = await startNode(t, {}, dir);
  t.is((await call(`${n.http}/api/cameras`, undefined)).status, 401, 'a user exists: auth is on, even on loopback');
  t.is((await call(`${n.http}/api/cameras`, basic('first', 'first-admin-pass'))).status, 200);
  t.is((await call(`${n.http}/api/cameras`, `Bearer ${printed.token}`)).status, 200);
});

test('header values from ids are sanitized', (t) => {
  t.is(attachmentDisposition('cam_2026-01-01T00-00-00-000Z.mp4'), 'attachment; filename="cam_2026-01-01T00-00-00-000Z.mp4"');
  t.is(attachmentDisposition('a"\r\nSet-Cookie: x=1.mp4'), 'attachment; filename="a___Set-Cookie__x_1.mp4"');
  t.is(attachmentDisposition('kamera-ü.mp4'), 'attachment; filename="kamera-_.mp4"');
});

// ---- NATS client authentication against a real nats-server -----------------------------

/** nats declares its `nkeys` export as `any`: the part of nkeys.js used here. */
const userKeys = nkeys as { createUser(): { getSeed(): Uint8Array; getPublicKey(): string } };

async function tryConnect(server: string, opts: object): Promise<string> {
  try {
    // The timeout only bounds a failure: a refusal comes back at once, and on a loaded
    // CI machine the TLS handshake alone can take seconds.
    const nc = await connect({ servers: server, reconnect: false, timeout: 30_000, ...opts });
    await nc.flush();
    await nc.close();
    return 'ok';
  } catch (err) {
    return String((err as { code?: string }).code ?? (err as Error).message);
  }
}

/** nats-server on a config written for its port. */
async function startNatsWithConfig(t: import('ava').ExecutionContext, conf: (port: number) => string): Promise<string> {
  const dir = await tempDir(t);
  const server = await startNatsServer(t, async (port) => {
    const file = join(dir, `nats-${port}.conf`);
    await writeFile(file, conf(port));
    return ['-c', file];
  });
  return server.hostPort;
}

test('NATS client: user/password, token, nkey and TLS from the settings', async (t) => {
  const dir = await tempDir(t);
  // user/password
  const up = await startNatsWithConfig(t, (p) => `listen: 127.0.0.1:${p}\nauthorization { user: rec, password: "s3cret-pass" }\n`);
  t.is(await tryConnect(up, natsAuthOptions({ natsUser: 'rec', natsPassword: 's3cret-pass' })), 'ok');
  t.not(await tryConnect(up, natsAuthOptions({ natsUser: 'rec', natsPassword: 'wrong' })), 'ok', 'wrong password refused by the server');
  t.not(await tryConnect(up, natsAuthOptions({})), 'ok', 'no credentials refused');
  // token
  const tok = await startNatsWithConfig(t, (p) => `listen: 127.0.0.1:${p}\nauthorization { token: "nats-token-123" }\n`);
  t.is(await tryConnect(tok, natsAuthOptions({ natsToken: 'nats-token-123' })), 'ok');
  t.not(await tryConnect(tok, natsAuthOptions({ natsToken: 'nope' })), 'ok');
  // nkey: the seed stays in a file
  const kp = userKeys.createUser();
  const seedFile = join(dir, 'user.nk');
  await writeFile(seedFile, `${new TextDecoder().decode(kp.getSeed())}\n`, { mode: 0o600 });
  const nk = await startNatsWithConfig(t, (p) => `listen: 127.0.0.1:${p}\nauthorization { users: [ { nkey: ${kp.getPublicKey()} } ] }\n`);
  t.is(await tryConnect(nk, natsAuthOptions({ natsNkeySeedFile: seedFile })), 'ok');
  const otherSeed = join(dir, 'other.nk');
  await writeFile(otherSeed, new TextDecoder().decode(userKeys.createUser().getSeed()));
  t.not(await tryConnect(nk, natsAuthOptions({ natsNkeySeedFile: otherSeed })), 'ok', 'another key is refused');
  // bad settings are typed errors before any connection
  const bad = join(dir, 'bad.nk');
  await writeFile(bad, 'not a seed');
  t.is(
    errCode(() => natsAuthOptions({ natsNkeySeedFile: bad })),
    'CONFIG_INVALID',
  );
  t.is(
    errCode(() => natsAuthOptions({ natsNkeySeedFile: join(dir, 'missing.nk') })),
    'CONFIG_INVALID',
  );
  t.is(
    errCode(() => natsAuthOptions({ natsUser: 'only-user' })),
    'CONFIG_INVALID',
  );
  t.is(
    errCode(() => natsAuthOptions({ natsTlsCert: 'c.pem' })),
    'CONFIG_INVALID',
  );
  // TLS with our own CA and a client certificate the server verifies
  const run = promisify(execFile);
  const f = (n: string): string => join(dir, n);
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=test-ca', '-keyout', f('ca.key'), '-out', f('ca.pem')]);
  for (const [name, ext] of [
    ['server', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
    ['client', 'extendedKeyUsage=clientAuth'],
  ] as const) {
    await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`)]);
    await writeFile(f(`${name}.ext`), `${ext}\n`);
    // (server.ext gets DNS too: some TLS stacks check a name even when dialing an IP)
    await run('openssl', [
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f('ca.pem'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      f(`${name}.ext`),
      '-out',
      f(`${name}.pem`),
    ]);
  }
  const tls = await startNatsWithConfig(
    t,
    (p) => `listen: 127.0.0.1:${p}\ntls { cert_file: "${f('server.pem')}", key_file: "${f('server.key')}", ca_file: "${f('ca.pem')}", verify: true }\n`,
  );
  t.is(await tryConnect(tls, natsAuthOptions({ natsTlsCa: f('ca.pem'), natsTlsCert: f('client.pem'), natsTlsKey: f('client.key') })), 'ok');
  t.not(await tryConnect(tls, natsAuthOptions({ natsTlsCa: f('ca.pem') })), 'ok', 'no client certificate: refused');
  t.not(await tryConnect(tls, natsAuthOptions({})), 'ok', 'no TLS: refused');
});

function errCode(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as RecorderError).code;
  }
}
