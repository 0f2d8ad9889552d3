/**
 * A corrupt or lost index (issue 13 item 5), through the real command line: a recorder
 * with an admin user, a camera, recorded segments, a lock and a label is stopped, and
 * its index is then cut short, scribbled over, or deleted. The recorder must refuse to
 * start with a clear message and exit status 3 (not die of a signal), `recorder
 * reindex` must rebuild a working index (segments from the files; cameras, users,
 * locks and labels from the config journal), and anonymous access must stay refused
 * throughout (an index without its users used to switch auth off on loopback).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { closeSync, openSync, statSync, writeSync } from 'node:fs';
import { cp, mkdtemp, readdir, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { SimCamera } from '../sim/camera.ts';
import { spawnRecorder, tempDir, waitFor } from './helpers/recorder.ts';

const RECORDER = join(import.meta.dirname, '../recorder.ts');
const ADMIN = `Basic ${Buffer.from('admin:admin-password').toString('base64')}`;

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `recorder <args>` to its end (a start that does not end within 20 s is killed and reported). */
function cli(dataDir: string, args: string[], stdin = ''): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', RECORDER, ...args], {
      env: { ...process.env, RECORDER_DATA_DIR: dataDir, RECORDER_HTTP: '127.0.0.1:0', RECORDER_LOG_LEVEL: 'warn', RECORDER_INDEX_RESERVE_BYTES: '0' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.stdin.end(stdin);
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

async function api<T = Record<string, unknown>>(
  http: string,
  path: string,
  init: RequestInit & { auth?: string | null } = {},
): Promise<{ status: number; body: T }> {
  const headers = new Headers(init.headers);
  if (init.auth !== null) headers.set('authorization', init.auth ?? ADMIN);
  if (init.body !== undefined) headers.set('content-type', 'application/json');
  const res = await fetch(`${http}${path}`, { ...init, headers }).catch((e: unknown) => {
    // undici says only "fetch failed"; the reason is its cause.
    throw new Error(`${init.method ?? 'GET'} ${http}${path}: ${String((e as { cause?: unknown }).cause ?? e)}`);
  });
  return { status: res.status, body: (await res.json()) as T };
}

async function segmentFiles(dataDir: string): Promise<string[]> {
  const entries = await readdir(join(dataDir, 'pools'), { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => e.name)
    .sort();
}

interface Golden {
  dir: string;
  files: string[];
  lock: { id: string; from: string; to: string };
  labelId: string;
}

let golden: Golden;

// One recorded data dir, copied by each test (hooks have no teardown: cleaned up here).
const cleanups: (() => unknown)[] = [];
test.after.always(async () => {
  for (const c of cleanups.reverse()) await c();
});

test.before(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'rec-golden-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const added = await cli(dir, ['user', 'add', 'admin', '--role', 'admin', '--password-stdin'], 'admin-password');
  if (added.code !== 0) throw new Error(`user add: ${added.code} ${added.stderr}`);
  const sim = await SimCamera.start({ gop: 25 });
  const local: (() => unknown)[] = [() => sim.stop()];
  try {
    const hook = { title: 'golden', teardown: (fn: () => unknown) => local.push(fn) } as unknown as import('ava').ExecutionContext;
    const rec = spawnRecorder(hook, { RECORDER_DATA_DIR: dir, RECORDER_HTTP: '127.0.0.1:0', RECORDER_SEGMENT_SECONDS: '2' });
    const http = await rec.http;
    const put = await api(http, '/api/cameras/c', { method: 'PUT', body: JSON.stringify({ streams: { main: sim.url('h264') } }) });
    if (put.status !== 200) throw new Error(`camera put: ${put.status} ${JSON.stringify(put.body)}`);
    await waitFor('4 segment files', async () => (await segmentFiles(dir)).length >= 4, 60_000);
    const from = new Date(Date.now() - 4000).toISOString();
    const to = new Date(Date.now() - 2000).toISOString();
    const lock = await api<{ lock: { id: string } }>(http, '/api/locks', { method: 'POST', body: JSON.stringify({ camera: 'c', from, to }) });
    const label = await api<{ label: { id: string } }>(http, '/api/labels', {
      method: 'POST',
      body: JSON.stringify({ camera: 'c', from, to, text: 'door opened' }),
    });
    if (lock.status !== 200 || label.status !== 200) throw new Error(`lock ${lock.status}, label ${label.status}`);
    rec.child.kill('SIGTERM');
    if ((await rec.exited) !== 0) throw new Error('the golden recorder did not stop cleanly');
    golden = { dir, files: await segmentFiles(dir), lock: { id: lock.body.lock.id, from, to }, labelId: label.body.label.id };
  } finally {
    for (const c of local.reverse()) await c();
  }
});

async function copyOfGolden(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await tempDir(t, 'rec-corrupt-');
  await cp(golden.dir, dir, { recursive: true });
  return dir;
}

function scribbleMiddle(file: string): void {
  const size = statSync(file).size;
  const fd = openSync(file, 'r+');
  const at = Math.floor(size / 4 / 4096) * 4096;
  writeSync(fd, randomBytes(Math.floor(size / 2)), 0, Math.floor(size / 2), at);
  closeSync(fd);
}

/** After reindex: the recorder starts, refuses anonymous requests, and everything is back. */
async function assertRebuilt(t: import('ava').ExecutionContext, dir: string): Promise<void> {
  const rec = spawnRecorder(t, { RECORDER_DATA_DIR: dir, RECORDER_HTTP: '127.0.0.1:0', RECORDER_SEGMENT_SECONDS: '2' });
  const http = await rec.http;
  t.is((await api(http, '/api/users', { auth: null })).status, 401, 'anonymous GET /api/users stays refused');
  t.is((await api(http, '/api/cameras', { auth: null })).status, 401);
  const users = await api<{ users: { name: string }[] }>(http, '/api/users');
  t.is(users.status, 200, 'the admin logs in with the password it had');
  t.deepEqual(
    users.body.users.map((u) => u.name),
    ['admin'],
  );
  t.is((await api(http, '/api/cameras/c')).status, 200, 'the camera is back');
  const locks = await api<{ locks: { id: string }[] }>(http, '/api/locks?camera=c');
  t.deepEqual(
    locks.body.locks.map((l) => l.id),
    [golden.lock.id],
    'the lock is back',
  );
  const labels = await api<{ labels: { id: string; text: string }[] }>(http, '/api/labels?camera=c');
  t.deepEqual(
    labels.body.labels.map((l) => l.text),
    ['door opened'],
    'the label is back',
  );
  const q = new URLSearchParams({ camera: 'c', from: new Date(Date.now() - 3_600_000).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
  const search = await api<{ spans: unknown[] }>(http, `/api/recordings?${q.toString()}`);
  t.true(search.body.spans.length > 0, 'segments are searchable');
  rec.child.kill('SIGTERM');
  t.is(await rec.exited, 0);
}

async function reindexed(t: import('ava').ExecutionContext, dir: string): Promise<Record<string, unknown>> {
  const r = await cli(dir, ['reindex']);
  t.is(r.signal, null, 'reindex is not killed by a signal');
  t.is(r.code, 0, r.stderr.slice(-2000));
  // Log lines (one JSON object each) come first; the report is the indented object at the end.
  const lines = r.stdout.split('\n');
  const report = JSON.parse(lines.slice(lines.indexOf('{')).join('\n')) as Record<string, unknown>;
  t.true((report.reindexed as string[]).length >= golden.files.length - 1, `${(report.reindexed as string[]).length} of ${golden.files.length} files indexed`);
  return report;
}

for (const damage of ['cut short', 'scribbled over'] as const) {
  test(`an index ${damage}: the recorder exits 3 with INDEX_CORRUPT (no signal); reindex sets it aside and rebuilds segments, cameras, users, locks, labels; anonymous access stays refused`, async (t) => {
    const dir = await copyOfGolden(t);
    const file = join(dir, 'index', 'data.mdb');
    if (damage === 'cut short') await truncate(file, Math.floor(statSync(file).size / 2));
    else scribbleMiddle(file);

    const start = await cli(dir, []);
    t.is(start.signal, null, 'not killed by a signal');
    t.is(start.code, 3, start.stderr.slice(-2000));
    t.regex(start.stderr, /INDEX_CORRUPT: the index .*data\.mdb is corrupt \(.+\); it is not opened .* Run `recorder reindex`/);
    if (damage === 'cut short') t.regex(start.stderr, /cut short/);
    const user = await cli(dir, ['user', 'list']);
    t.is(user.code, 3, 'the user command refuses it too');

    const report = await reindexed(t, dir);
    t.regex(String(report.corruptIndexSetAside), /index\.corrupt-/);
    t.deepEqual(report.restoredFromJournal, { cameras: 1, users: 1, pools: 1, locks: 1, labels: 1 });
    await assertRebuilt(t, dir);
  });
}

test('an index deleted by hand: the recorder refuses with INDEX_LOST (its users and locks would be gone, auth off); reindex restores them', async (t) => {
  const dir = await copyOfGolden(t);
  await rm(join(dir, 'index'), { recursive: true });
  const start = await cli(dir, []);
  t.is(start.code, 3, start.stderr.slice(-2000));
  t.regex(start.stderr, /INDEX_LOST: .*it lists 1 camera, 1 user, 1 pool, 1 lock, 1 label.*switch HTTP authentication off.* Run `recorder reindex`/);
  // A first user on the empty index would hide the loss: refused too.
  const add = await cli(dir, ['user', 'add', 'eve', '--role', 'admin', '--password-stdin'], 'eve-password');
  t.is(add.code, 3);
  const report = await reindexed(t, dir);
  t.is(report.corruptIndexSetAside, undefined);
  t.deepEqual(report.restoredFromJournal, { cameras: 1, users: 1, pools: 1, locks: 1, labels: 1 });
  await assertRebuilt(t, dir);
});
